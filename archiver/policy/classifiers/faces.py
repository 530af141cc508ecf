"""Faces: BlazeFace (short- and full-range models shipped inside the ``mediapipe`` wheel) with
OpenCV Haar cascades (shipped inside the opencv-python wheel, ``cv2.data``) as proposals; offline.

Generative decoding can change a face's identity, so recall matters most; but a detector that
fires on flowers and sewing machines sends good photos to lossless for nothing. So:

- Candidates come from two detectors: BlazeFace (run by the LiteRT interpreter, see
  ``BlazeFace``) on the whole image (full-range model: faces up to ~5 m; short-range model:
  close-ups) and, for large images, on 2x2 overlapping tiles; and the Haar cascades (frontal
  default and alt2, profile also on the mirrored image) on a ~0.25 MP working copy, down to
  ~4.5% of the short side.
- Every candidate is *confirmed* by BlazeFace's short-range model on a crop around it, cut from
  the original pixels, where even a small face fills the model's input (as the text classifier
  confirms its detector's boxes by reading them). A face is found when a candidate's crop scores
  >= ``CROP_MIN``, or when the cascades alone are very sure (``HAAR_SURE`` times their neighbour
  threshold). Unconfirmed candidates are reported as ``weak_regions``: not enough to block
  diffusion, but the engine adds them to the protected regions so that the quality guard checks
  them.

Thresholds (bench/classifiers.py, docs/policies.md). On the 43 photos of people in
classify/faces the best confirmed candidate's crop scores >= 0.907 and the best cascade hit has
>= 3.3 times its threshold. On the 93 people-free ImageNet photos of bench/negatives.txt (the
part used to choose) false candidates' crops reach 0.676 (a ladybird), false cascade hits 1.5
times the threshold. ``CROP_MIN`` = 0.8 lies between; ``HAAR_SURE`` = 2.

Cascade settings: a face needs 6 neighbours (frontal), 6 (alt2) or 4 (profile); candidates
need half. Smallest face searched: 20 px on the working copy, about 5% of the short side of a
3:2 photo. Score of a face: its crop's BlazeFace score; for a cascade-only face
``0.5 + 0.5 * (neighbours - threshold) / (2 * threshold)`` clipped to 1.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


import numpy as np

from . import ClassifierResult, box_area_fraction, scale_boxes
from ...quiet import quiet_stderr
from .thread_models import PerThreadModels

WORK_PIXELS = 250_000
CASCADES = {
    "frontal": "haarcascade_frontalface_default.xml",
    "frontal_alt2": "haarcascade_frontalface_alt2.xml",
    "profile": "haarcascade_profileface.xml",
}
#: neighbours a detection needs to count as a face, per cascade
THRESHOLD = {"frontal": 6, "frontal_alt2": 6, "profile": 4}
SCALE_FACTOR = 1.2
#: smallest face searched, as a share of the working image's shorter side
MIN_FACE_FRACTION = 0.045

#: BlazeFace short-range score on a candidate's crop that confirms a face
CROP_MIN = 0.8
#: BlazeFace detections from this score on are candidates (and weak regions when not confirmed)
WEAK_MIN = 0.3
#: a cascade hit this many times its neighbour threshold counts without confirmation
HAAR_SURE = 2.0
#: crop around a cascade candidate for confirmation: side = CROP_EXPAND x the candidate's side
CROP_EXPAND = 2.0
CROP_SIDE = 256
#: images whose shorter side is at least this many pixels are also searched in 2x2 tiles
TILE_MIN_SIDE = 800

_models = PerThreadModels()


def _build_cascades() -> dict:
    import cv2  # heavy: cv2, slow to import

    c = {}
    for k, f in CASCADES.items():
        cc = cv2.CascadeClassifier(cv2.data.haarcascades + f)
        if cc.empty():
            raise RuntimeError(f"OpenCV cascade {f} could not be loaded from {cv2.data.haarcascades}")
        c[k] = cc
    return c


def _cascades():
    """One set of cascades per thread (CascadeClassifier is not thread-safe)."""
    return _models.get("cascades", _build_cascades)


#: BlazeFace models in the mediapipe wheel: input side, SSD anchor strides and anchors per cell
#: (mediapipe/modules/face_detection/face_detection_{short,full}_range*.pbtxt)
BLAZE = {
    "short": ("face_detection_short_range.tflite", 128, (8, 16), (2, 6)),
    "full": ("face_detection_full_range_sparse.tflite", 192, (4,), (1,)),
}


def _anchor_centres(size: int, strides, per_cell) -> np.ndarray:
    """SSD anchor centres (x, y) in 0..1, cell by cell; BlazeFace's anchors have a fixed size of 1."""
    out = []
    for stride, n in zip(strides, per_cell):
        g = size // stride
        ys, xs = np.meshgrid((np.arange(g) + 0.5) / g, (np.arange(g) + 0.5) / g, indexing="ij")
        out.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], 1), n, axis=0))
    return np.concatenate(out).astype(np.float32)


#: the release whose wheel carries the two models; installed without its dependencies (README):
#: archiver reads the files and never imports mediapipe
MODEL_PACKAGE = "mediapipe==0.10.21"


class BlazeFace:
    """One BlazeFace model from the mediapipe wheel, run by the LiteRT interpreter (``ai-edge-litert``).

    mediapipe's own graph runner is not fork-safe (a worker forked after the parent ran it aborts
    in malloc), so only the model files come from mediapipe; the pre- and post-processing of its
    face-detection graph (letterbox to a square in [-1, 1], anchor decoding, sigmoid scores,
    weighted non-maximum suppression at IoU 0.3) is done here."""

    def __init__(self, kind: str) -> None:
        from ai_edge_litert.interpreter import Interpreter  # heavy: ai_edge_litert, optional

        name, self.size, strides, per_cell = BLAZE[kind]
        spec = importlib.util.find_spec("mediapipe")  # located, never imported (its import costs ~2.5 s)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"the mediapipe package (BlazeFace models) is not installed: "
                               f"pip install --no-deps {MODEL_PACKAGE} (README, Set up)")
        path = Path(list(spec.submodule_search_locations)[0]) / "modules" / "face_detection" / name
        with quiet_stderr():  # TFLite announces its XNNPACK delegate on fd 2
            self.it = Interpreter(model_path=str(path), num_threads=1)
            self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]["index"]
        outs = sorted(self.it.get_output_details(), key=lambda o: -o["shape"][-1])
        self.reg, self.cls = outs[0]["index"], outs[1]["index"]
        self.anchors = _anchor_centres(self.size, strides, per_cell)

    def __call__(self, rgb: np.ndarray, min_score: float) -> list[tuple[float, tuple[int, int, int, int]]]:
        import cv2  # heavy: cv2, slow to import

        h, w = rgb.shape[:2]
        n = self.size
        f = n / max(h, w)
        rw, rh = max(1, round(w * f)), max(1, round(h * f))
        px, py = (n - rw) // 2, (n - rh) // 2
        x = np.full((n, n, 3), -1.0, np.float32)  # letterbox border: black, as mediapipe pads
        small = cv2.resize(np.ascontiguousarray(rgb), (rw, rh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        x[py : py + rh, px : px + rw] = small.astype(np.float32) / 127.5 - 1.0
        self.it.set_tensor(self.inp, x[None])
        self.it.invoke()
        raw = self.it.get_tensor(self.reg)[0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(self.it.get_tensor(self.cls)[0, :, 0].astype(np.float64), -100, 100)))
        keep = np.nonzero(scores >= min_score)[0]
        if not len(keep):
            return []
        a, r = self.anchors[keep], raw[keep, :4] / n
        cx, cy, bw, bh = a[:, 0] + r[:, 0], a[:, 1] + r[:, 1], r[:, 2], r[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * n  # letterboxed pixels
        boxes = (boxes - [px, py, px, py]) / f  # original pixels
        out = []
        for score, box in _weighted_nms(scores[keep], boxes):
            l, t, rr, b = box
            l, t, rr, b = max(0, int(l)), max(0, int(t)), min(w, int(np.ceil(rr))), min(h, int(np.ceil(b)))
            if rr > l and b > t:
                out.append((float(score), (l, t, rr, b)))
        return out


def _weighted_nms(scores: np.ndarray, boxes: np.ndarray, iou: float = 0.3):
    """mediapipe's WEIGHTED non-maximum suppression: each cluster's box is the score-weighted mean."""
    order = list(np.argsort(-scores))
    while order:
        top = order[0]
        ov = [i for i in order if _iou(boxes[top], boxes[i]) > iou]
        wts = scores[ov][:, None]
        yield scores[top], (boxes[ov] * wts).sum(0) / wts.sum()
        order = [i for i in order if i not in ov]


def _build_blazeface() -> dict:
    return {k: BlazeFace(k) for k in BLAZE}


def _blazeface():
    return _models.get("blazeface", _build_blazeface)


def blaze(rgb: np.ndarray, model: str) -> list[tuple[float, tuple[int, int, int, int]]]:
    """BlazeFace detections on an RGB uint8 array: [(score, (left, top, right, bottom))] in its pixels."""
    return _blazeface()[model](rgb, WEAK_MIN)


def _tiles(w: int, h: int) -> list[tuple[int, int, int, int]]:
    """2x2 tiles of 2/3 of each side, overlapping by 1/3: a face cut by one tile's edge lies whole in another."""
    tw, th = (2 * w) // 3, (2 * h) // 3
    return [(x, y, x + tw, y + th) for y in (0, h - th) for x in (0, w - tw)]


def blaze_search(rgb: np.ndarray) -> list[tuple[float, str, tuple[int, int, int, int]]]:
    """BlazeFace over the whole image (both models) and, for large images, over tiles."""
    found = [(s, "full", b) for s, b in blaze(rgb, "full")] + [(s, "short", b) for s, b in blaze(rgb, "short")]
    h, w = rgb.shape[:2]
    if min(h, w) >= TILE_MIN_SIDE:
        for l, t, r, b in _tiles(w, h):
            for s, (bl, bt, br, bb) in blaze(rgb[t:b, l:r], "full"):
                found.append((s, "full", (bl + l, bt + t, br + l, bb + t)))
    return found


def confirm(rgb: np.ndarray, box) -> float:
    """BlazeFace short-range score on a crop around a candidate box (original pixels); 0 when it sees no face."""
    import cv2  # heavy: cv2, slow to import

    h, w = rgb.shape[:2]
    l, t, r, b = box
    cx, cy, side = (l + r) / 2, (t + b) / 2, max(r - l, b - t) * CROP_EXPAND
    L, T = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    R, B = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    if R - L < 8 or B - T < 8:
        return 0.0
    crop = rgb[T:B, L:R]
    f = CROP_SIDE / max(crop.shape[:2])
    crop = cv2.resize(crop, (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))),
                      interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    return max((s for s, _ in blaze(crop, "short")), default=0.0)


def _iou(a, b) -> float:
    l, t = max(a[0], b[0]), max(a[1], b[1])
    r, btm = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, r - l) * max(0, btm - t)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua else 0.0


def detect(gray: np.ndarray) -> list[dict]:
    """Raw detections on a grey working image: [{box, cascade, neighbours}]."""
    import cv2  # heavy: cv2, slow to import

    h, w = gray.shape
    min_side = max(20, int(MIN_FACE_FRACTION * min(h, w)))
    found = []
    cas = _cascades()
    for name, c in cas.items():
        passes = [(gray, False)]
        if name == "profile":
            passes.append((cv2.flip(gray, 1), True))
        for g, flipped in passes:
            boxes, neigh = c.detectMultiScale2(
                g, scaleFactor=SCALE_FACTOR, minNeighbors=max(2, THRESHOLD[name] // 2), minSize=(min_side, min_side)
            )
            for (x, y, bw, bh), n in zip(boxes, neigh):
                if flipped:
                    x = w - x - bw
                found.append({"box": (int(x), int(y), int(x + bw), int(y + bh)), "cascade": name,
                              "neighbours": int(n), "strength": int(n) / THRESHOLD[name]})
    return found


def merge(dets: list[dict]) -> list[dict]:
    """Group detections of the same face across cascades; the strongest one gives the box."""
    faces: list[dict] = []
    for d in sorted(dets, key=lambda d: -d["strength"]):
        for f in faces:
            if _iou(f["box"], d["box"]) > 0.3:
                f["cascades"].add(d["cascade"])
                break
        else:
            faces.append({"box": d["box"], "cascades": {d["cascade"]}, "neighbours": d["neighbours"], "strength": d["strength"]})
    for f in faces:
        s = 0.5 + 0.5 * (f["strength"] - 1.0) / 2.0 + (0.1 if len(f["cascades"]) > 1 else 0.0)
        f["score"] = float(min(1.0, max(0.0, s)))
    return faces


def classify(subject) -> ClassifierResult:
    import cv2  # heavy: cv2, slow to import

    img = subject.image
    w0, h0 = img.width, img.height
    rgb = np.asarray(img.rgb)
    # cascades on a fixed working size: downscale big images (speed), upscale small ones (small faces)
    work, _ = subject.work(WORK_PIXELS)
    f = (WORK_PIXELS / float(w0 * h0)) ** 0.5
    if f > 1.05:
        work = cv2.resize(work, (max(1, round(w0 * f)), max(1, round(h0 * f))), interpolation=cv2.INTER_LINEAR)
    gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(work), cv2.COLOR_RGB2GRAY))
    scale = w0 / gray.shape[1]

    cands: list[tuple[tuple[int, int, int, int], str, dict | None]] = []  # (box, found by, cascade hit)
    for sc, model, box in blaze_search(rgb):
        cands.append((box, f"BlazeFace {model}-range {sc:.2f}", None))
    for c in merge(detect(gray)):
        box = scale_boxes([c["box"]], scale, w0, h0)
        if box:
            cands.append((box[0], "+".join(sorted(c["cascades"])) + " cascade", c))
    faces: list[dict] = []  # {box (original pixels), score, by}
    weak: list = []
    checked: list[tuple[tuple[int, int, int, int], float]] = []
    for box, by, c in cands:
        if any(_iou(box, x["box"]) > 0.3 for x in faces):
            continue  # this face is already confirmed
        conf = next((v for b, v in checked if _iou(box, b) > 0.5), None)
        if conf is None:
            conf = confirm(rgb, box)
            checked.append((box, conf))
        if conf >= CROP_MIN:
            faces.append({"box": box, "score": conf, "by": f"{by}, confirmed by BlazeFace on its crop ({conf:.2f})"})
        elif c is not None and c["strength"] >= HAAR_SURE:
            faces.append({"box": box, "score": c["score"], "by": f"{by} alone ({c['neighbours']} neighbours)"})
        else:
            weak.append(box)
    faces = _dedupe(faces)
    faces.sort(key=lambda x: -x["score"])
    boxes = [x["box"] for x in faces]
    score = max((x["score"] for x in faces), default=0.0)
    area = box_area_fraction(boxes, w0, h0)
    if faces:
        reason = f"{len(faces)} face(s): {faces[0]['by']}" + (f" (+{len(faces) - 1} more)" if len(faces) > 1 else "")
    else:
        reason = "no face: no BlazeFace or Haar cascade candidate confirmed by BlazeFace on its crop"
        if weak:
            reason += f" ({len(weak)} weak candidate(s) kept for the quality guard)"
    return ClassifierResult(
        name="faces",
        score=float(score),
        found=bool(faces),
        regions=boxes,
        reason=reason,
        details={
            "count": len(faces),
            "area": area,
            "max_size": max((max(b[2] - b[0], b[3] - b[1]) for b in boxes), default=0),
            "scores": [round(x["score"], 3) for x in faces],
            "by": [x["by"] for x in faces],
            "weak_regions": [b for b in weak if not any(_iou(b, x) > 0.3 for x in boxes)],
        },
    )


def _dedupe(faces: list[dict]) -> list[dict]:
    """One entry per face when models and tiles saw it more than once (the best score keeps it)."""
    out: list[dict] = []
    for x in sorted(faces, key=lambda x: -x["score"]):
        if not any(_iou(x["box"], y["box"]) > 0.3 for y in out):
            out.append(x)
    return out

"""Faces: OpenCV Haar cascades (shipped inside the opencv-python wheel, ``cv2.data``), offline.

Generative decoding can change a face's identity, so recall matters more than precision here.
Cascades: frontal (default and alt2) and profile, the profile also on the mirrored image (the
cascade only knows one side). The image is first brought to a fixed working size of ~0.25 MP (small
images upscaled so that small faces reach the cascades' 20-24 px window, large ones downscaled
for speed), luma equalised; boxes are mapped back to original pixels.

Settings were chosen on the shared data (bench/classifiers.py): on the 43 face photos the
frontal cascade's best detection has >= 14 neighbours, on people-free Kodak photos false
frontal and alt2 hits reach 5 (kodim19's lifebuoy, kodim22) and profile ones 2, hence the
thresholds 6, 6 and 4 below.
alt2 found no face the others missed on this data, but it gives large close-up faces a second
chance (kodim15: frontal 9, alt2 8 neighbours) for one more pass.
0.18 MP would save 32% CPU but leaves large faces (kodim15's child) with 5-7 neighbours, too
close to the threshold; 0.25 MP gives them 9-10. Smallest face searched: 20 px, about 5% of the
short side of a 3:2 photo.

Score of a face: ``0.5 + 0.5 * (neighbours - threshold) / (2 * threshold)`` clipped to 1
(0.5 = just at the threshold), +0.1 when several cascades agree. Candidates with at least half
the threshold are reported as ``weak_regions``: not enough to block diffusion, but the engine
adds them to the protected regions so the quality guard checks them.
"""

from __future__ import annotations


import numpy as np

from . import ClassifierResult, box_area_fraction, scale_boxes
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

_models = PerThreadModels()


def _build_cascades() -> dict:
    import cv2

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


def _iou(a, b) -> float:
    l, t = max(a[0], b[0]), max(a[1], b[1])
    r, btm = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, r - l) * max(0, btm - t)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua else 0.0


def detect(gray: np.ndarray) -> list[dict]:
    """Raw detections on a grey working image: [{box, cascade, neighbours}]."""
    import cv2

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
    import cv2

    img = subject.image
    w0, h0 = img.width, img.height
    # fixed working size: downscale big images (speed), upscale small ones (small faces)
    rgb, _ = subject.work(WORK_PIXELS)
    f = (WORK_PIXELS / float(w0 * h0)) ** 0.5
    if f > 1.05:
        rgb = cv2.resize(rgb, (max(1, round(w0 * f)), max(1, round(h0 * f))), interpolation=cv2.INTER_LINEAR)
    gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))
    scale = w0 / gray.shape[1]
    cands = merge(detect(gray))
    cands.sort(key=lambda f: -f["score"])
    faces = [f for f in cands if f["strength"] >= 1.0]
    weak = [f for f in cands if f["strength"] < 1.0]
    boxes = scale_boxes([f["box"] for f in faces], scale, w0, h0)
    score = max((f["score"] for f in cands), default=0.0)
    area = box_area_fraction(boxes, w0, h0)
    if faces:
        reason = (
            f"{len(faces)} face(s) by Haar cascades (best score {score:.2f}, "
            f"{'+'.join(sorted(faces[0]['cascades']))}, {faces[0]['neighbours']} neighbours)"
        )
    else:
        reason = "no face found by the frontal, frontal_alt2 and profile Haar cascades"
        if weak:
            reason += f" ({len(weak)} weak candidate(s) below the threshold, best score {score:.2f})"
    return ClassifierResult(
        name="faces",
        score=score,
        found=bool(faces),
        regions=boxes,
        reason=reason,
        details={
            "count": len(faces),
            "area": area,
            "max_size": max((max(b[2] - b[0], b[3] - b[1]) for b in boxes), default=0),
            "scores": [round(f["score"], 3) for f in faces],
            "weak_regions": scale_boxes([f["box"] for f in weak], scale, w0, h0),
        },
    )

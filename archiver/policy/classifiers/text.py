"""Text: the PP-OCRv4 text detection network shipped in rapidocr-onnxruntime, run offline with
onnxruntime through rapidocr's own ``TextDetector`` pieces (DB post-processing), confirmed by
the package's recognition network on the best candidates.

Working resolution: the image is brought to at most ``WORK_PIXELS``; a smaller image is enlarged
(up to ``MAX_UPSCALE``) until its short side is ``DET_MIN_SIDE``. In a thumbnail-sized photo
lettering is a few pixels tall and the network does not respond to it at all; enlarged, it does
(the package's own default enlarges small images further, to a 736 px short side).

Why confirm: the detector alone fires on brickwork, shutters, foliage and animals. A candidate is
*confirmed* when the recognizer, reading the candidate's own quadrilateral cut out and
straightened (slanted or rotated lettering is read level, as PP-OCR itself does), finds at least
two letters/digits with confidence >= ``MIN_REC_CONF``. A candidate not confirmed upright is read
again turned by 180 degrees (lettering along the bottom of a dial or badge, upside-down signs);
that second try confirms only at >= ``TURNED_MIN_CONF``, since it is one more chance for noise.
Documents are cheap to call: ``MANY`` or more candidates with a box score >= ``WEAK_SCORE``
count as text without recognition. Unconfirmed candidates with a box score >= ``WEAK_SCORE``
are reported as ``weak_regions`` (the engine protects them in the quality guard).

Score: 1.0 for a document-like image (many lines); otherwise the best recognition confidence
among the candidates (halved for single characters). ``found`` when anything is confirmed.
Boxes are mapped back to the original pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import ClassifierResult, box_area_fraction, scale_boxes
from .thread_models import PerThreadModels

WORK_PIXELS = 1_000_000
#: the detector sees at least this short side (small images are enlarged, see the module doc)
DET_MIN_SIDE = 544
#: ... but never enlarged more than this
MAX_UPSCALE = 2.0
MIN_BOX_PX = 6
#: candidate boxes the DB post-processing keeps (its own box score)
BOX_THRESH = 0.4
#: candidates this sure count towards MANY and are reported as weak regions when unconfirmed
WEAK_SCORE = 0.5
#: this many candidates = a document or sign-covered image; no recognition needed
MANY = 6
#: recognition confidence that confirms a candidate as text
MIN_REC_CONF = 0.6
#: a candidate read turned by 180 degrees is confirmed only this clearly (two tries, one chance more for noise)
TURNED_MIN_CONF = 0.8
#: at most this many candidates are read (best box scores first)
MAX_VERIFY = 12
_models = PerThreadModels()


def model_path(kind: str = "det") -> Path:
    import rapidocr_onnxruntime  # heavy: rapidocr/onnxruntime, optional and slow to import

    p = Path(rapidocr_onnxruntime.__file__).parent / "models" / f"ch_PP-OCRv4_{kind}_infer.onnx"
    if not p.is_file():
        raise RuntimeError(f"text detection model missing from the rapidocr-onnxruntime package: {p}")
    return p


def _build_detector():
    from rapidocr_onnxruntime.ch_ppocr_det import TextDetector  # heavy: rapidocr/onnxruntime, optional and slow to import

    threads = max(1, min(4, os.cpu_count() or 1))
    d = TextDetector(
        {
            "model_path": str(model_path()),
            "limit_side_len": 1280,
            "limit_type": "max",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "thresh": 0.3,
            "box_thresh": BOX_THRESH,
            "max_candidates": 1000,
            "unclip_ratio": 1.6,
            "use_dilation": True,
            "score_mode": "fast",
            "intra_op_num_threads": threads,
            "inter_op_num_threads": 1,
            "use_cuda": False,
            "use_dml": False,
        }
    )
    return d


def _detector():
    return _models.get("detector", _build_detector)


def _build_recognizer():
    from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer  # heavy: rapidocr/onnxruntime, optional and slow to import

    r = TextRecognizer(
        {
            "model_path": str(model_path("rec")),
            "rec_img_shape": [3, 48, 320],
            "rec_batch_num": MAX_VERIFY,
            "intra_op_num_threads": max(1, min(4, os.cpu_count() or 1)),
            "inter_op_num_threads": 1,
            "use_cuda": False,
            "use_dml": False,
        }
    )
    return r


def _recognizer():
    return _models.get("recognizer", _build_recognizer)


def det_scale(h: int, w: int) -> float:
    """The factor (>= 1) by which an ``h`` x ``w`` working copy is enlarged for the detector."""
    up = min(MAX_UPSCALE, DET_MIN_SIDE / max(1, min(h, w)), (WORK_PIXELS / max(1, h * w)) ** 0.5)
    return max(1.0, up)


def detect(rgb: np.ndarray, min_px: float = MIN_BOX_PX) -> list[tuple[np.ndarray, float]]:
    """Candidate text quadrilaterals (4x2 float, clockwise from top-left, in ``rgb``'s pixels)
    with the detector's box score, best first; boxes under ``min_px`` wide or high are dropped."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    det = _detector()
    h, w = bgr.shape[:2]
    x = det.get_preprocess(max(h, w))(bgr)
    if x is None:
        return []
    pred = det.infer(x)[0]
    quads, scores = det.postprocess_op(pred, (h, w))
    out = []
    for q, s in zip(quads, scores):
        q = np.asarray(q, dtype=np.float32)
        l, t, r, b = _axis_box(q, w, h)
        if b - t >= min_px and r - l >= min_px:
            out.append((q, float(s)))
    out.sort(key=lambda c: -c[1])
    return out


def _axis_box(q: np.ndarray, w: int, h: int) -> tuple[int, int, int, int]:
    l, t = np.clip(q.min(axis=0), 0, None)
    r, b = q.max(axis=0)
    return int(l), int(t), int(np.ceil(min(r, w))), int(np.ceil(min(b, h)))


def crop(img: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The quadrilateral ``q`` cut out and straightened (perspective warp), turned to run
    horizontally when it is much higher than wide, as PP-OCR reads its candidates."""
    import cv2  # heavy: cv2, slow to import

    w = max(1, int(max(np.linalg.norm(q[0] - q[1]), np.linalg.norm(q[2] - q[3]))))
    h = max(1, int(max(np.linalg.norm(q[0] - q[3]), np.linalg.norm(q[1] - q[2]))))
    m = cv2.getPerspectiveTransform(q.astype(np.float32), np.float32([[0, 0], [w, 0], [w, h], [0, h]]))
    c = cv2.warpPerspective(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    if h >= 1.5 * w:
        c = np.rot90(c)
    return np.ascontiguousarray(c)


def read(rgb: np.ndarray, quads) -> list[tuple[str, float]]:
    """Recognise the text in each quadrilateral (for confirmation only; the text is not kept)."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    res, _ = _recognizer()([crop(bgr, np.asarray(q, dtype=np.float32)) for q in quads])
    return [(str(t), float(c)) for t, c in res]


def _chars(s: str) -> int:
    return sum(1 for ch in s if ch.isalnum())


def confirms(txt: str, conf: float) -> bool:
    """Whether a read confirms its candidate as text."""
    return _chars(txt) >= 2 and conf >= MIN_REC_CONF


def classify(subject) -> ClassifierResult:
    import cv2  # heavy: cv2, slow to import

    rgb, scale = subject.work(WORK_PIXELS)
    img = subject.image
    h, w = rgb.shape[:2]
    up = det_scale(h, w)
    det_rgb = rgb if up == 1.0 else cv2.resize(rgb, (round(w * up), round(h * up)), interpolation=cv2.INTER_CUBIC)
    cands = detect(det_rgb, MIN_BOX_PX * up)
    dh, dw = det_rgb.shape[:2]
    strong = [c for c in cands if c[1] >= WEAK_SCORE]
    confirmed, weak = [], []
    if len(strong) >= MANY:
        confirmed = [q for q, _ in cands]
        score, verified = 1.0, False
    else:
        verified, score = True, 0.0
        todo = cands[:MAX_VERIFY]
        reads = read(det_rgb, [q for q, _ in todo]) if todo else []
        ok = [confirms(t, c) for t, c in reads]
        again = [i for i, k in enumerate(ok) if not k]
        if again:  # upside down? read the unconfirmed ones turned by 180 degrees, keep the better read
            turned = read(det_rgb, [np.roll(todo[i][0], 2, axis=0) for i in again])
            for i, r in zip(again, turned):
                ok[i] = _chars(r[0]) >= 2 and r[1] >= TURNED_MIN_CONF
                if r[1] > reads[i][1]:
                    reads[i] = r
        for (q, s), (txt, conf), k in zip(todo, reads, ok):
            score = max(score, conf if _chars(txt) >= 2 else conf * 0.5)
            if k:
                confirmed.append(q)
            elif s >= WEAK_SCORE:
                weak.append(q)
        weak += [q for q, s in cands[MAX_VERIFY:] if s >= WEAK_SCORE]

    def boxes(quads):
        return scale_boxes([tuple(b / up for b in _axis_box(q, dw, dh)) for q in quads], scale, img.width, img.height)

    regions = boxes(confirmed)
    area = box_area_fraction(regions, img.width, img.height)
    count = len(regions)
    if count and not verified:
        reason = f"{count} text lines by the PP-OCRv4 detector covering {area:.1%} of the image (document-like)"
    elif count:
        reason = f"{count} text region(s) detected and read by PP-OCRv4 (best confidence {score:.2f}), {area:.1%} of the image"
    elif cands:
        reason = f"no text: {len(cands)} detector candidate(s) not confirmed by recognition (best {score:.2f})"
    else:
        reason = "no text found by the PP-OCRv4 text detector"
    return ClassifierResult(
        name="text",
        score=float(min(1.0, score)),
        found=count > 0,
        regions=regions,
        reason=reason,
        details={
            "count": count,
            "area": area,
            "candidates": len(cands),
            "verified": verified,
            "det_scale": round(up, 3),
            "weak_regions": boxes(weak),
        },
    )

"""Text: the PP-OCRv4 text *detection* network shipped in rapidocr-onnxruntime, run offline with
onnxruntime through rapidocr's own ``TextDetector`` (DB post-processing). Recognition is not
needed: we only need to know where text is, so that no digit or letter is regenerated.

The image is brought to at most ``WORK_PIXELS`` (boxes mapped back). Score = the largest of
``count / 3`` and ``area / 2%`` (clipped to 1): one tiny box is weak evidence, three lines or
2% of the picture covered in text is certain. ``found`` when at least one box survives the
detector's own box threshold and is at least ``MIN_BOX_PX`` high.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from . import ClassifierResult, box_area_fraction, scale_boxes

WORK_PIXELS = 1_000_000
MIN_BOX_PX = 6
_local = threading.local()


def model_path() -> Path:
    import rapidocr_onnxruntime

    p = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    if not p.is_file():
        raise RuntimeError(f"text detection model missing from the rapidocr-onnxruntime package: {p}")
    return p


def _detector():
    d = getattr(_local, "detector", None)
    if d is None:
        from rapidocr_onnxruntime.ch_ppocr_det import TextDetector

        threads = max(1, min(4, os.cpu_count() or 1))
        d = TextDetector(
            {
                "model_path": str(model_path()),
                "limit_side_len": 1280,
                "limit_type": "max",
                "mean": [0.5, 0.5, 0.5],
                "std": [0.5, 0.5, 0.5],
                "thresh": 0.3,
                "box_thresh": 0.5,
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
        _local.detector = d
    return d


def detect(rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Axis-aligned boxes of text lines in a working RGB array."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    quads, _ = _detector()(bgr)
    boxes = []
    if quads is None:
        return boxes
    for q in quads:
        q = np.asarray(q)
        l, t = q.min(axis=0)
        r, b = q.max(axis=0)
        if b - t >= MIN_BOX_PX and r - l >= MIN_BOX_PX:
            boxes.append((int(l), int(t), int(np.ceil(r)), int(np.ceil(b))))
    return boxes


def classify(subject) -> ClassifierResult:
    rgb, scale = subject.work(WORK_PIXELS)
    img = subject.image
    boxes = scale_boxes(detect(rgb), scale, img.width, img.height)
    area = box_area_fraction(boxes, img.width, img.height)
    count = len(boxes)
    score = min(1.0, max(count / 3.0, area / 0.02)) if count else 0.0
    if count:
        reason = f"{count} text region(s) by the PP-OCRv4 detector covering {area:.1%} of the image"
    else:
        reason = "no text found by the PP-OCRv4 text detector"
    return ClassifierResult(
        name="text",
        score=score,
        found=count > 0,
        regions=boxes,
        reason=reason,
        details={"count": count, "area": area},
    )

"""Classifiers: what is in an image that generative compression could damage.

Each classifier module (``faces``, ``text``, ``texture``, ``evidence``) has ``classify(subject) ->
ClassifierResult``. They are imported and run only when a policy condition needs them, so a
path-only rule never pays for a detector (or for importing OpenCV / onnxruntime).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ...errors import InputError

#: classifier name -> module implementing ``classify(subject)``
NAMES = ("evidence", "texture", "text", "faces")

#: relative cost, used to evaluate cheap conditions first inside all/any
COST = {"evidence": 1, "texture": 10, "text": 100, "faces": 100}

#: fields a policy may test, per classifier (besides these, ``<name>`` alone means ``<name>.found``)
COMMON_FIELDS = ("score", "found", "count", "area")
FIELDS: dict[str, tuple[str, ...]] = {
    "evidence": COMMON_FIELDS + ("markers",),
    "faces": COMMON_FIELDS + ("max_size",),
    "text": COMMON_FIELDS + ("candidates", "verified"),
    "texture": COMMON_FIELDS
    + (
        "graphics",
        "graphics_score",
        "edge_density",
        "flat_share",
        "flat_unclipped",
        "top_colors",
        "textured",
        "colors",
        "hf_energy",
        "saturation",
    ),
}

Box = tuple[int, int, int, int]


@dataclass
class ClassifierResult:
    """A classifier's finding: a score in 0..1, whether the class is present, boxes
    (left, top, right, bottom) in original pixel coordinates and a sentence a person can check."""

    name: str
    score: float
    found: bool
    regions: list[Box] = field(default_factory=list)
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def get(self, attr: str) -> Any:
        if attr in ("score", "found", "regions", "reason", "error"):
            return getattr(self, attr)
        if attr == "count" and "count" not in self.details:
            return len(self.regions)
        return self.details.get(attr)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "score": round(float(self.score), 4),
            "found": bool(self.found),
            "regions": [list(map(int, b)) for b in self.regions],
            "reason": self.reason,
            "details": _plain(self.details),
            "seconds": round(self.seconds, 4),
        }
        if self.error:
            d["error"] = self.error
        return d


def _plain(v: Any) -> Any:
    """numpy scalars and tuples into JSON-friendly Python values."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, float):
        return round(v, 4)
    return v


#: when a classifier itself fails, assume the unsafe class is present (when in doubt, protect)
_UNSAFE_ON_ERROR = {
    "faces": dict(score=1.0, found=True),
    "text": dict(score=1.0, found=True),
    "evidence": dict(score=1.0, found=True),
    "texture": dict(score=0.0, found=False, details={"graphics": True, "graphics_score": 1.0}),
}


def get_classifier(name: str) -> Callable[[Any], ClassifierResult]:
    if name not in NAMES:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}").classify


def run_classifier(name: str, subject, fn: Callable | None = None) -> ClassifierResult:
    """Run one classifier, timing it; a failure inside it protects the image instead of crashing.
    Unreadable images (``InputError``) still propagate: those are bad files, not doubtful ones."""
    fn = fn or get_classifier(name)
    t0 = time.perf_counter()
    try:
        res = fn(subject)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a detector bug must not let an image through unprotected
        kw = dict(_UNSAFE_ON_ERROR[name])
        res = ClassifierResult(
            name=name,
            reason=f"{name} classifier failed ({type(e).__name__}: {e}); assuming unsafe",
            error=f"{type(e).__name__}: {e}",
            details=kw.pop("details", {}),
            **kw,
        )
    res.seconds = time.perf_counter() - t0
    return res


def scale_boxes(boxes, scale: float, width: int, height: int) -> list[Box]:
    """Map boxes found on a downscaled working copy back to original pixels (clipped)."""
    out = []
    for l, t, r, b in boxes:
        l2 = max(0, min(width, int(round(l * scale))))
        t2 = max(0, min(height, int(round(t * scale))))
        r2 = max(0, min(width, int(round(r * scale))))
        b2 = max(0, min(height, int(round(b * scale))))
        if r2 > l2 and b2 > t2:
            out.append((l2, t2, r2, b2))
    return out


def box_area_fraction(boxes: list[Box], width: int, height: int) -> float:
    """Share of the image covered by the union of boxes (overlaps counted once)."""
    if not boxes or width <= 0 or height <= 0:
        return 0.0
    import numpy as np  # heavy: numpy, which policy.classifiers does not load at import

    # rasterise on a coarse grid: exact enough and immune to overlap double counting
    s = max(1.0, max(width, height) / 512)
    gw, gh = int(np.ceil(width / s)), int(np.ceil(height / s))
    m = np.zeros((gh, gw), bool)
    for l, t, r, b in boxes:
        m[int(t / s) : int(np.ceil(b / s)), int(l / s) : int(np.ceil(r / s))] = True
    return float(m.mean())

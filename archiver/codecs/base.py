"""What every codec is: encode, decode, verify, restore, and a declared exactness.

A codec turns an original (``Source``) into artifact bytes plus the facts the catalog records
(``Encoded``), and back. It says up front how exact it is (``Exactness``), and it judges its own
output: ``verify`` at encode time against the original (the quality floor for approximate codecs,
identity for exact ones), ``restore`` later against what the catalog recorded (so a scrub and a
restore ask the same question). Codecs never read configuration: ``CodecSettings`` is built by
the caller. Heavy libraries (torch, the backbone, pillow plugins) load lazily, on first use.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, ClassVar, Optional

from PIL import Image

from .. import likeness
from ..errors import ArchiverError
from ..imageio import LoadedImage


class Exactness(str, Enum):
    """How close a restore comes to the original, as the codec guarantees it."""

    BYTES = "bytes"  # the original file, byte for byte
    PIXELS = "pixels"  # the same pixels and metadata; the file bytes may differ
    APPROX = "approx"  # an approximation that met the quality floor when it was made


class CodecRefused(ArchiverError):
    """This codec cannot serve this image (unsupported mode, output not smaller, floor not
    reachable, no backbone): the caller moves on to the next codec in the policy's list."""

    exit_code = 3


class CodecBeaten(CodecRefused):
    """This codec cannot get under ``Target.max_bytes``: another candidate is already smaller at
    the same target (or, for a JPEG, its exact transcode less the margin). A loss, not a failure."""


@dataclass
class Source:
    """The original as the codecs see it: decoded pixels, its file bytes, and the regions a
    policy protects (faces, text), in pixels (left, top, right, bottom)."""

    image: LoadedImage
    data: bytes
    regions: list[tuple[int, int, int, int]] = field(default_factory=list)
    #: the perceptual reference of the whole image and of each region, prepared once per source
    _scorers: dict = field(default_factory=dict, repr=False, compare=False)
    #: measurements of reconstructions already seen, by (pixel digest, measure): a search probe,
    #: the ranking and the read-back check of the same pixels score them once
    _measured: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def pixels(self) -> int:
        return max(1, self.image.width * self.image.height)

    def scorer(self, box: Optional[tuple[int, int, int, int]] = None):
        """The SSIMULACRA2 reference of the image (``box``: of that crop), prepared once and kept
        for every candidate of every codec; None when the image or crop is too small to score."""
        if box not in self._scorers:
            from ..perceptual import MIN_SIZE, Ssimulacra2Reference  # heavy: cv2 and scipy (perceptual), not loaded by archiver --help

            img = scored_pixels(self.image)
            if box is not None:
                img = img.crop(box)
            self._scorers[box] = Ssimulacra2Reference(img) if min(img.size) >= MIN_SIZE else None
        return self._scorers[box]

    def hashes(self) -> tuple[str, str]:
        """The original's (pHash, dHash), as discover records them; computed once per source."""
        if "hashes" not in self._scorers:
            self._scorers["hashes"] = likeness.hashes(self.image.rgb)
        return self._scorers["hashes"]


#: the perceptual score every lossy result is judged by (SSIMULACRA2: 100 identical, 90 visually
#: lossless, 70 high quality, 50 medium, 30 low); the floor key a rule's ``target`` becomes
SCORE_KEY = "min_ssimulacra2"


@dataclass
class Target:
    """What the policy asks of a lossy encode: a quality floor (the rule's perceptual ``target``
    is its ``min_ssimulacra2``, for the whole image and every protected region; PSNR and MS-SSIM
    floors still apply when a policy sets them), a rate for the diffusion codec when no score is
    asked for, optionally a byte budget (then: the best quality within it), and ``max_bytes``: a
    candidate larger than this loses anyway (a smaller one already met the target), so a codec
    may stop searching as soon as it knows it cannot get under it."""

    floor: dict[str, float] = field(default_factory=dict)
    bpp: Optional[float] = None
    budget_bytes: Optional[int] = None
    max_bytes: Optional[int] = None
    #: why ``max_bytes`` is what it is, for the codec's refusal ("a candidate already at the target")
    max_why: str = "a candidate already at the target"
    #: the quality each codec searched earlier for this same target found (name -> setting): where
    #: a later codec's search may start (a start only: it never changes what the search finds)
    hints: dict[str, int] = field(default_factory=dict)

    @property
    def score(self) -> Optional[float]:
        return self.floor.get(SCORE_KEY)

    @classmethod
    def from_params(cls, params: dict, pixels: int) -> "Target":
        budget = params.get("budget")
        nbytes = None
        if isinstance(budget, dict):
            if budget.get("bytes") is not None:
                nbytes = int(budget["bytes"])
            elif budget.get("bpp") is not None:
                nbytes = int(float(budget["bpp"]) * pixels / 8)
        floor = dict(params.get("floor") or {})
        if params.get("target") is not None:
            floor[SCORE_KEY] = float(params["target"])
        return cls(floor=floor, bpp=params.get("bpp"), budget_bytes=nbytes)


@dataclass
class Encoded:
    """Artifact bytes plus the facts the catalog records about them."""

    data: bytes
    codec: str
    codec_version: int
    ext: str
    bpp: float
    backbone: Optional[str] = None
    backbone_digest: Optional[str] = None
    #: codec-specific settings chosen for this image (quality, t, effort...), for the catalog
    params: dict[str, Any] = field(default_factory=dict)
    #: quality measured while choosing the settings (the read-back check measures again)
    quality: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.data)

    def facts(self) -> dict:
        """The catalog's columns for this artifact."""
        return {"codec": self.codec, "codec_version": self.codec_version, "codec_params": dict(self.params),
                "bpp": self.bpp, "backbone": self.backbone, "backbone_digest": self.backbone_digest}


@dataclass
class Verdict:
    """``verify``'s answer: does this artifact stand in for the original?"""

    ok: bool
    why: str = ""
    exact: Optional[str] = None  # bytes | pixels | approx: what this file really achieves
    psnr: Optional[float] = None
    ms_ssim: Optional[float] = None
    region_psnr: Optional[float] = None
    #: SSIMULACRA2 of the whole image, and the lowest of its protected regions' crops
    score: Optional[float] = None
    region_score: Optional[float] = None
    reconstruction_sha256: Optional[str] = None
    #: the structure check, global for every lossy codec: how many bits the reconstruction's
    #: pHash and dHash are from the original's (``likeness``; over its near-duplicate thresholds it
    #: is no longer the same picture, whatever the floor)
    phash_distance: Optional[int] = None
    dhash_distance: Optional[int] = None
    #: what the check learned about the artifact read back, recorded with the codec's params (a
    #: lossy codec's device-independent ``fingerprint`` of its reconstruction)
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Recorded:
    """What the catalog recorded about an artifact when it was verified (for restore and scrub)."""

    sha256: Optional[str] = None  # the original file's
    reconstruction_sha256: Optional[str] = None
    format: Optional[str] = None  # the original's PIL format: restores are written in it
    path: str = ""
    #: the exactness the catalog promises for this file (bytes | pixels | approx)
    exact: Optional[str] = None
    #: the codec's params as recorded (``codec_params``: e.g. the reconstruction's fingerprint)
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row) -> "Recorded":
        return cls(sha256=row.sha256, reconstruction_sha256=row.reconstruction_sha256, format=row.format,
                   path=row.path or "", exact=getattr(row, "restore_exact", None),
                   params=dict(getattr(row, "codec_params", None) or {}))


@dataclass
class Restored:
    """What an artifact gives back: the original file's bytes (exact codecs), or the decoded
    image that matches the recorded reconstruction (approximate ones; the restore workflow
    writes it in the original's format, marked as a reconstruction)."""

    exact: str  # bytes | pixels | approx
    data: Optional[bytes] = None
    image: Optional[Image.Image] = None
    #: a remark that is no failure (verify reports it as a warning)
    note: str = ""


@dataclass(frozen=True)
class CodecSettings:
    """Per-installation codec settings, built by callers from their configuration."""

    backbone: str = "tiny"
    model_path: Optional[str] = None
    device: str = "auto"
    decode_steps: Optional[int] = None
    #: a diffusers model's adapter folder (config ``adapter``), attached to the backbone
    adapter: Optional[str] = None

    @classmethod
    def from_config(cls, cfg) -> "CodecSettings":
        return cls(backbone=cfg.backbone, model_path=cfg.diffusers_model, device=cfg.device,
                   decode_steps=cfg.decode_steps, adapter=getattr(cfg, "adapter", None))


class Codec:
    """The base of every codec. Subclasses register with ``@register_codec("name")`` and set
    ``version`` (bumped whenever the artifact format changes: decoders keep reading every earlier
    version), ``ext`` (the artifact's file suffix) and ``exactness``."""

    name: ClassVar[str] = ""
    #: invents detail (a generative model): allowed only where a rule allows it, never on
    #: confirmed faces or text
    generative: ClassVar[bool] = False
    version: ClassVar[int] = 1
    ext: ClassVar[str] = ""
    #: every suffix its artifacts may have (``ext`` unless a codec writes several)
    exts: ClassVar[tuple[str, ...]] = ()
    exactness: ClassVar[Exactness] = Exactness.APPROX
    #: a line for ``archiver`` listings and the dry run
    summary: ClassVar[str] = ""
    #: the relative CPU of its search: among the candidates of a ``best`` action, cheaper searches
    #: run first, so that the costlier ones get their size to beat and their start (``Target.hints``)
    search_cost: ClassVar[int] = 1

    def __init__(self, settings: CodecSettings | None = None):
        self.settings = settings or CodecSettings()

    @property
    def lossy(self) -> bool:
        return self.exactness is Exactness.APPROX

    def warm(self) -> None:
        """Load now what the first decode would otherwise wait for (libraries, model weights);
        nothing for codecs that need nothing loaded. Safe to call more than once."""

    @classmethod
    def claims(cls, data: bytes) -> bool:
        """Whether ``data`` is this codec's artifact by its own signature (no catalog needed);
        codecs whose files carry no mark of their own claim nothing."""
        return False

    @classmethod
    def unavailable(cls) -> Optional[str]:
        """Why this codec cannot run on this installation (a library or plugin missing), or None.
        The chain then moves on to the next codec; ``archiver doctor`` shows it."""
        return None

    # -- the interface -------------------------------------------------------------------------
    def refusal(self, source: Source) -> Optional[str]:
        """Why this codec must not take ``source`` at all, before any encoding (None: it may).
        An approximation is fine for a lossy codec; dropping frames, bit depth or a colour model
        is not: such an image is kept untouched rather than approximated (issue 11 #1, #2, #5)."""
        if self.lossy:
            problems = source.image.unfaithful()
            if problems:
                return "cannot represent this image faithfully: " + "; ".join(problems)
        return None

    def encode(self, source: Source, target: Target) -> Encoded:
        """The artifact for ``source``; raises ``CodecRefused`` when this codec cannot serve it."""
        raise NotImplementedError

    def decode(self, data: bytes) -> Image.Image:
        """The image an artifact holds, its metadata (exif, icc_profile, xmp) in ``.info``."""
        raise NotImplementedError

    def verify(self, data: bytes, source: Source, target: Target) -> Verdict:
        """Does ``data`` (as read back from disk) stand in for ``source``? Approximate codecs:
        the quality guard against ``target.floor``; exact codecs: identity."""
        try:
            recon = self.decode(data)
        except Exception as e:  # whatever the reason, an unverifiable file is not a replacement
            return Verdict(False, f"compressed file does not decode ({type(e).__name__}: {e})")
        v = measure(source, recon)
        why = guard(v, target.floor)
        v.ok, v.why, v.exact = why is None, why or "", Exactness.APPROX.value
        v.reconstruction_sha256 = image_digest(recon)
        v.params = {"fingerprint": fingerprint(recon),
                    "structure": {"phash_distance": v.phash_distance, "dhash_distance": v.dhash_distance}}
        return v

    def restore(self, data: bytes, recorded: Recorded) -> Restored:
        """What an artifact gives back, checked against what was recorded; raises
        ``ArchiverError`` when the artifact no longer gives that (scrub uses this too). Another
        device (CUDA vs CPU, thread count) may move a decode's pixels by a level: the exact digest
        differs, the recorded block-mean ``fingerprint`` still matches (docs/codec.md)."""
        img = self.decode(data)
        if not recorded.reconstruction_sha256 or image_digest(img) == recorded.reconstruction_sha256:
            return Restored(Exactness.APPROX.value, image=img)
        fp = recorded.params.get("fingerprint")
        if fp and same_fingerprint(fingerprint(img), fp):
            return Restored(Exactness.APPROX.value, image=img,
                            note="decoded pixels differ slightly from encode time (another device?), within tolerance")
        raise ArchiverError(f"{recorded.path}: the decoded reconstruction differs from the one verified at "
                            "encode time (other weights, or damage)")

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "ext": self.ext, "exactness": self.exactness.value,
                "summary": self.summary}


# -- shared by the lossy codecs -------------------------------------------------------------------
FLOOR_CHECKS = (("min_ssimulacra2", "score", "SSIMULACRA2", ""),
                ("min_ssimulacra2", "region_score", "SSIMULACRA2 in a protected region", ""),
                ("min_psnr", "psnr", "PSNR", "dB"), ("min_ms_ssim", "ms_ssim", "MS-SSIM", ""),
                ("min_region_psnr", "region_psnr", "protected-region PSNR", "dB"))


def metric_name() -> str:
    """The perceptual metric and its version, recorded with every score."""
    from ..perceptual import METRIC  # heavy: cv2 and scipy (perceptual), not loaded by archiver --help

    return f"{METRIC['name']} {METRIC['version']}"


def scored_pixels(img: LoadedImage) -> Image.Image:
    """What the perceptual score compares: the coded pixels (RGB, gray, with alpha when there is)."""
    if img.alpha is not None:
        return Image.merge("RGBA", (*img.rgb.convert("RGB").split(), img.alpha))
    return img.rgb


def _scored(recon: Image.Image, source: Source) -> Image.Image:
    if source.image.alpha is not None and "A" in recon.getbands():
        return recon.convert("RGBA")
    return recon.convert("RGB")


def measure(source: Source, recon: Image.Image, *, score: bool = True, ms_ssim: bool = True) -> Verdict:
    """PSNR and (with ``ms_ssim``) MS-SSIM over the whole image, the lowest PSNR inside a protected
    region, and with ``score`` the perceptual score (SSIMULACRA2) of the whole image and the
    lowest of the protected regions' crops."""
    from ..metrics import ms_ssim as _ms_ssim, psnr  # heavy: numpy (metrics), not loaded by archiver --help

    rgb = recon.convert("RGB")
    orig = source.image.rgb
    if rgb.size != orig.size:
        return Verdict(False, "reconstruction has the wrong size", psnr=0.0, ms_ssim=0.0, region_psnr=0.0,
                       score=-999.0, region_score=-999.0)
    digest = image_digest(recon)

    def once(what: str, compute):
        """Each measure of the same pixels against this source is computed once (the metrics are
        deterministic functions of the two images)."""
        key = (digest, what)
        if key not in source._measured:
            source._measured[key] = compute()
        return source._measured[key]

    v = Verdict(False, psnr=once("psnr", lambda: _finite(psnr(orig, rgb))),
                ms_ssim=once("ms_ssim", lambda: _ms_ssim(orig, rgb)) if ms_ssim else None)
    ph, dh = source.hashes()
    rph, rdh = once("hashes", lambda: likeness.hashes(rgb))
    v.phash_distance, v.dhash_distance = likeness.distance(ph, rph), likeness.distance(dh, rdh)
    if score:
        v.score, v.region_score = once("score", lambda: _scores(source, recon))
    if source.image.alpha is not None:  # transparency counts in the whole-image PSNR
        if "A" not in recon.getbands():
            return Verdict(False, "reconstruction lost the transparency", psnr=0.0, ms_ssim=v.ms_ssim)
        import numpy as np  # heavy: numpy, which codecs.base does not load at import

        v.psnr = min(v.psnr, _finite(psnr(np.asarray(source.image.alpha), np.asarray(recon.getchannel("A")))))
    vals = []
    for box in source.regions or ():
        left, top, right, bottom = (int(x) for x in box)
        left, top = max(0, left), max(0, top)
        right, bottom = min(rgb.width, right), min(rgb.height, bottom)
        if right > left and bottom > top:
            vals.append(_finite(psnr(orig, rgb, box=(left, top, right, bottom))))
    if vals:
        v.region_psnr = min(vals)
    return v


#: a protected region is scored on a crop at least this many pixels a side (centred on it, inside
#: the image): SSIMULACRA2 uses all its 6 scales only from 113 px a side, and below that it reads
#: far lower for the same distortion (AVIF q95 on one photo: 86.8 on a 114 px crop, 32.3 on 112 px)
REGION_MIN_SIDE = 113


def region_crop(box, size: tuple[int, int]) -> Optional[tuple[int, int, int, int]]:
    """The crop a protected region is scored on: the box clipped to the image and grown, centred,
    to ``REGION_MIN_SIDE`` where the image allows; None for a box outside the image."""
    w, h = size
    left, top, right, bottom = (int(x) for x in box)
    left, top, right, bottom = max(0, left), max(0, top), min(w, right), min(h, bottom)
    if right <= left or bottom <= top:
        return None

    def grow(lo: int, hi: int, n: int) -> tuple[int, int]:
        side = min(n, REGION_MIN_SIDE)
        if hi - lo >= side:
            return lo, hi
        lo = max(0, min((lo + hi - side) // 2, n - side))  # centred, slid back inside the image
        return lo, lo + side

    left, right = grow(left, right, w)
    top, bottom = grow(top, bottom, h)
    return left, top, right, bottom


def _scores(source: Source, recon: Image.Image) -> tuple[Optional[float], Optional[float]]:
    """The perceptual score of the whole image and the lowest of its protected regions' crops."""
    whole = source.scorer()
    scored = _scored(recon, source)
    whole_score = round(whole.score(scored), 3) if whole is not None else None
    crops = [s for s in (_score_region(source, scored, b) for b in source.regions or ()) if s is not None]
    return whole_score, round(min(crops), 3) if crops else None


def _score_region(source: Source, scored: Image.Image, box) -> Optional[float]:
    """The score of one protected region (on ``region_crop``), or None when it cannot be scored."""
    crop = region_crop(box, scored.size)
    if crop is None:
        return None
    ref = source.scorer(crop)
    return None if ref is None else ref.score(scored.crop(crop))


def _finite(x: float) -> float:
    """Identical pixels give an infinite PSNR; JSON and databases want a number."""
    return 999.0 if math.isinf(x) else float(x)


def guard(v: Verdict, floor: dict) -> Optional[str]:
    """The quality guard, one for every lossy codec: None when ``v`` meets the floor, else why not."""
    if v.why:
        return v.why
    for fk, qk, label, unit in FLOOR_CHECKS:
        lim, val = floor.get(fk), getattr(v, qk)
        if lim is not None and val is not None and val < lim:
            return f"quality guard: {label} {val:.3f}{unit} below the floor {lim}{unit}"
    return structure_problem(v, floor)


#: the structure check's floor keys: how many bits a reconstruction's pHash / dHash may differ
#: from the original's (absent: the near-duplicate thresholds, ``likeness.PHASH_MAX``/``DHASH_MAX``)
MAX_PHASH_KEY, MAX_DHASH_KEY = "max_phash_distance", "max_dhash_distance"


def structure_problem(v: Verdict, floor: dict | None = None) -> Optional[str]:
    """The global structure check, a floor every lossy result meets whatever the rule says: a
    reconstruction whose perceptual hashes are further from the original's than near duplicates'
    are changed the picture, whatever its scores say (e.g. a generative decode that invents
    another scene). ``floor`` may set its limits (``MAX_PHASH_KEY``, ``MAX_DHASH_KEY``)."""
    if v.phash_distance is None or v.dhash_distance is None:
        return None
    floor = floor or {}
    pm, dm = int(floor.get(MAX_PHASH_KEY, likeness.PHASH_MAX)), int(floor.get(MAX_DHASH_KEY, likeness.DHASH_MAX))
    if v.phash_distance > pm or v.dhash_distance > dm:
        return (f"structure check: the reconstruction's perceptual hash is {v.phash_distance} bits (pHash) / "
                f"{v.dhash_distance} bits (dHash) from the original's, over the {pm}/{dm} of a near duplicate: "
                "not the same picture")
    return None


def image_digest(img: Image.Image) -> str:
    """SHA-256 of a decoded image (mode, size, pixels): the reconstruction's identity."""
    h = hashlib.sha256(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


#: block-mean fingerprint of a lossy reconstruction: an 8x8 grid of cells, per RGB channel
FINGERPRINT_GRID = 8
#: a decode on another device moves pixels by a level or two; damage or other weights move cell
#: means by far more
FINGERPRINT_TOLERANCE = 2.0


def fingerprint(img: Image.Image) -> list[float]:
    """Device-independent summary of a reconstruction: the mean of each cell of an 8x8 grid, per
    RGB channel (192 numbers, one decimal)."""
    import numpy as np  # heavy: numpy, which codecs.base does not load at import

    a = np.asarray(img.convert("RGB"), dtype=np.float64)
    h, w = a.shape[:2]
    ys = np.linspace(0, h, FINGERPRINT_GRID + 1).astype(int)
    xs = np.linspace(0, w, FINGERPRINT_GRID + 1).astype(int)
    out = []
    for i in range(FINGERPRINT_GRID):
        for j in range(FINGERPRINT_GRID):
            cell = a[ys[i]:max(ys[i + 1], ys[i] + 1), xs[j]:max(xs[j + 1], xs[j] + 1)]
            out.extend(round(float(v), 1) for v in cell.reshape(-1, 3).mean(axis=0))
    return out


def same_fingerprint(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and max((abs(x - y) for x, y in zip(a, b)), default=0.0) <= FINGERPRINT_TOLERANCE

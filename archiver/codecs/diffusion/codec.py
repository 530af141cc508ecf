"""The latent-diffusion codec (``archiver.codecs.diffusion``, Relic et al. ECCV 2024) as a ``Codec``.

With a perceptual target (the rule's ``target``: a SSIMULACRA2 floor) it searches its quality
knob like every other lossy codec: the smallest file whose decode, scored against the original
(and in every protected region), reaches the target; it gives up early when even its best
quality misses the target, or when it cannot get under ``Target.max_bytes`` (a smaller file of
another codec already reaches it). Without one it encodes at the policy's bpp (capped by a byte
budget). Protected regions get finer steps. The backbone comes from the caller's settings and
loads on first use; decoding finds the weights the file names (earlier releases included).
"""

from __future__ import annotations

from PIL import Image

from ...errors import ArchiverError
from ..base import Codec, CodecBeaten, CodecRefused, Encoded, Exactness, Source, Target
from ..conventional import first_guess, judge, last_fitting, probes, smallest_passing
from ..registry import register_codec

#: the rate used when a policy gives none (the shipped default's)
DEFAULT_BPP = 0.15
#: SSIMULACRA2 points below the target at a quality whose file is already too large, from which
#: the search stops there without finding the largest file that fits (which scores lower still)
HOPELESS_MARGIN = 10.0
#: SSIMULACRA2 points the image's unquantized decode (``QualityProbe.ceiling``) may lie below the
#: target before the search stops without coding: no quality scored more than 0.07 above it on
#: validation photos (bench/diffusion_ceiling.py), so 1.0 leaves a wide margin
CEILING_MARGIN = 1.0


@register_codec("diffusion")
class DiffusionCodec(Codec):
    version = 1  # .dlc container version 1
    generative = True
    ext = ".dlc"
    exactness = Exactness.APPROX
    summary = "generative: latent diffusion at a target bpp (.dlc)"

    @classmethod
    def claims(cls, data: bytes) -> bool:
        """A .dlc container (``container.MAGIC``'s first bytes)."""
        return data.startswith(b"\x89DLC")

    def __init__(self, settings=None, backbone=None):
        super().__init__(settings)
        self._backbone = backbone

    @property
    def backbone(self):
        if self._backbone is None:
            from .adapter import get_adapted_backbone  # heavy: torch (codecs.diffusion), not loaded by archiver --help

            s = self.settings
            self._backbone = get_adapted_backbone(s.backbone, model_path=s.model_path, device=s.device, adapter=s.adapter)
        return self._backbone

    def warm(self) -> None:
        """Import torch and the pipeline, load the backbone's weights and its entropy model, and
        decode one tiny latent, so that the first real decode finds everything loaded."""
        from .pipeline import warm_up  # heavy: torch (codecs.diffusion), not loaded by archiver --help

        warm_up(self.backbone)

    def encode(self, source: Source, target: Target) -> Encoded:
        if target.score is not None and target.budget_bytes is None:
            return self._encode_to_score(source, target)
        from .pipeline import encode_image  # heavy: torch (codecs.diffusion), not loaded by archiver --help

        bpp = float(target.bpp or DEFAULT_BPP)
        if target.budget_bytes is not None:
            bpp = min(bpp, target.budget_bytes * 8 / source.pixels)
        try:
            r = encode_image(source.image, self.backbone, bpp=bpp, steps=self.settings.decode_steps,
                             roi=[tuple(b) for b in source.regions] or None)
        except ArchiverError as e:  # e.g. no weights for the configured backbone
            raise CodecRefused(f"unavailable ({e})") from None
        if target.budget_bytes is not None and r.size_bytes > target.budget_bytes:
            raise CodecRefused(f"output over the budget ({r.size_bytes} > {target.budget_bytes} bytes)")
        return Encoded(r.data, self.name, self.version, self.ext, float(r.bpp), self.backbone.id,
                       self.backbone.weights_digest,
                       params={"quality": round(r.quality, 3), "t": r.t, "steps": r.steps, "target_bpp": bpp,
                               "entropy_model": r.entropy_model,
                               **({"rate_note": r.rate_note} if r.rate_note else {})})

    def _encode_to_score(self, source: Source, target: Target) -> Encoded:
        """The smallest .dlc whose decode meets the floor (the target score first), by bisection on
        the quality knob over whole numbers 0..100: each probe coded, decoded and measured. First
        the image's ceiling (its latent decoded unquantized, one decoder pass): when even that
        misses the target, no quality can reach it, and nothing is coded."""
        from .pipeline import QualityProbe  # heavy: torch (codecs.diffusion), not loaded by archiver --help
        from .ratecontrol import QUALITY_MAX, QUALITY_MIN  # heavy: torch (codecs.diffusion), not loaded by archiver --help
        try:
            probe = QualityProbe(source.image, self.backbone, steps=self.settings.decode_steps,
                                 roi=[tuple(b) for b in source.regions] or None)
        except ArchiverError as e:  # e.g. no weights for the configured backbone
            raise CodecRefused(f"unavailable ({e})") from None
        best = judge(source, probe.ceiling(), target)
        if best.score is not None and best.score < target.score - CEILING_MARGIN:
            # what every quality decodes to lies below this (the latent plus quantization noise,
            # denoised): no file of this codec reaches the target, however large
            raise CodecRefused(f"misses the target at any quality: this image's latent, decoded without "
                               f"quantization, already scores SSIMULACRA2 {best.score:.1f} (target {target.score:g})")
        files: dict[int, tuple[bytes, dict]] = {}
        tried: dict[int, tuple[bytes, object]] = {}

        def file_at(q: int) -> bytes:
            if q not in files:
                files[q] = probe.file_at(q)
                tried.setdefault(q, (files[q][0], None))
            return files[q][0]

        def ok_at(q: int) -> bool:
            data = file_at(q)
            v = tried[q][1]
            if v is None:
                v = judge(source, probe.decode(data).image, target)  # no second entropy decode of its own bytes
                tried[q] = (data, v)
            return v.ok

        lo, hi = int(QUALITY_MIN), int(QUALITY_MAX)
        if target.max_bytes is not None:  # sizes only (no decode): the best quality that could still win
            guess = first_guess(target.score, lo, hi)
            if len(file_at(guess)) > target.max_bytes and not ok_at(guess):
                # every file that fits has a lower quality than ``guess``; far below the target
                # here, it is further below it there (the search's monotone score), so the
                # size fit's entropy coding (2-4 more codings of the latent) is not needed
                v = tried[guess][1]
                if v.score is not None and v.score < target.score - HOPELESS_MARGIN:
                    raise CodecBeaten(f"misses the target by far at quality {guess} ({v.why}), already larger "
                                      f"({len(file_at(guess))} bytes) than {target.max_why} ({target.max_bytes} bytes)")
            cap = last_fitting(lambda q: len(file_at(q)), target.max_bytes, lo, hi, guess=guess)
            if cap is None:
                raise CodecBeaten(f"even quality {lo} ({len(file_at(lo))} bytes) is larger than {target.max_why} "
                                   f"({target.max_bytes} bytes)")
            hi = cap
        if not ok_at(hi):
            v = tried[hi][1]
            if hi < QUALITY_MAX:
                raise CodecBeaten(f"misses the target at quality {hi}, the most that fits under {target.max_why} "
                                  f"({len(file_at(hi))} bytes; {v.why})")
            raise CodecRefused(f"misses the target even at quality {hi} ({len(file_at(hi))} bytes; {v.why})")
        q = smallest_passing(ok_at, lo, hi, guess=first_guess(target.score, lo, hi),
                             score_at=lambda x: (ok_at(x), tried[x][1].score)[1], target=target.score)
        q = min((k for k, (_, v) in tried.items() if v is not None and v.ok), key=lambda k: (len(tried[k][0]), k))
        data, settings = files[q]
        v = tried[q][1]
        return Encoded(data, self.name, self.version, self.ext, len(data) * 8 / source.pixels, self.backbone.id,
                       self.backbone.weights_digest, params={**settings, "probes": probes(tried)},
                       quality=v.to_dict())

    def decode(self, data: bytes) -> Image.Image:
        from .pipeline import decode_bytes  # heavy: torch (codecs.diffusion), not loaded by archiver --help

        d = decode_bytes(data, self.backbone)  # steps come from the header
        img = d.image
        img.info.update(d.metadata.pil_save_kwargs())
        return img

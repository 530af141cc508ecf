"""The diffusion codec behind the Codec interface (PoolBackbone: pixels can be checked)."""

import io

import numpy as np
import pytest
from PIL import Image

from archiver.codecs.diffusion import container
from archiver.testing.codec import PoolBackbone
from archiver.codecs import CodecRefused, CodecSettings, Recorded, Source, Target
from archiver.codecs.diffusion import DiffusionCodec
from archiver.imageio import load_image


def _src(w=96, h=64, regions=()):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.clip(np.stack([xx * 2.5, yy * 3.5, 128 + 40 * np.sin(xx / 4)], -1) + rng.normal(0, 8, (h, w, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, "PNG")
    return Source(load_image(buf.getvalue()), buf.getvalue(), list(regions))


@pytest.fixture
def codec():
    return DiffusionCodec(CodecSettings(decode_steps=2), backbone=PoolBackbone())


def test_encode_records_the_facts_and_verify_applies_the_floor(codec):
    src = _src()
    anything = {"max_phash_distance": 64, "max_dhash_distance": 64}  # an untrained backbone: no structure check
    enc = codec.encode(src, Target(floor={"min_psnr": 10.0, **anything}, bpp=0.3))
    assert enc.codec == "diffusion" and enc.ext == ".dlc" and enc.backbone == "pool"
    h = container.read_header(enc.data)
    assert enc.backbone_digest == "00" * 32 and h.t > 0 and h.steps == 2 == enc.params["steps"]
    assert enc.bpp == pytest.approx(enc.size * 8 / (96 * 64)) and enc.params["target_bpp"] == 0.3
    assert codec.verify(enc.data, src, Target(floor={"min_psnr": 10.0, **anything})).ok
    strict = codec.verify(enc.data, src, Target(floor={"min_psnr": 60.0}))
    assert not strict.ok and "PSNR" in strict.why and strict.exact == "approx"


def test_a_budget_caps_the_rate(codec):
    src = _src(160, 128)
    free = codec.encode(src, Target(bpp=1.0))
    capped = codec.encode(src, Target(bpp=1.0, budget_bytes=free.size // 3))
    assert capped.size <= free.size // 3
    with pytest.raises(CodecRefused, match="budget"):
        codec.encode(src, Target(bpp=1.0, budget_bytes=10))


def test_protected_regions_get_finer_steps(codec):
    plain = codec.encode(_src(), Target(bpp=0.3))
    roi = codec.encode(_src(regions=[(0, 0, 32, 32)]), Target(bpp=0.3))
    assert container.read_header(roi.data).roi and not container.read_header(plain.data).roi


def test_restore_checks_the_recorded_reconstruction(codec):
    src = _src()
    enc = codec.encode(src, Target(bpp=0.5))
    v = codec.verify(enc.data, src, Target())
    back = codec.restore(enc.data, Recorded(reconstruction_sha256=v.reconstruction_sha256, format="PNG", path="a.png"))
    assert back.exact == "approx" and back.image.size == (96, 64) and back.data is None
    with pytest.raises(Exception, match="differs"):
        codec.restore(enc.data, Recorded(reconstruction_sha256="0" * 64, format="PNG", path="a.png"))


def test_no_backbone_is_a_refusal_not_a_crash():
    codec = DiffusionCodec(CodecSettings(backbone="diffusers", model_path=None))
    with pytest.raises(CodecRefused, match="unavailable"):
        codec.encode(_src(), Target(bpp=0.2))


def test_a_hopeless_search_under_a_size_cap_stops_after_one_coding(codec, monkeypatch):
    """Under ``max_bytes`` (a smaller candidate already at the target), a file at the search's first
    quality that is larger than the cap and scores far below the target ends the search there: every
    file that fits has a lower quality. It codes the latent once, where the size fit would code it
    several times; the outcome (beaten) is the same. Not far below: the full size fit runs."""
    from archiver.codecs import CodecBeaten
    from archiver.codecs.diffusion import codec as codec_module
    from archiver.codecs.diffusion import pipeline

    monkeypatch.setattr(codec_module, "CEILING_MARGIN", 1000.0)  # this image's ceiling is below 95: not the case here
    codings = []
    real = pipeline.QualityProbe.file_at
    monkeypatch.setattr(pipeline.QualityProbe, "file_at", lambda self, q: (codings.append(q), real(self, q))[1])
    src = _src(160, 128)
    target = Target(floor={"min_ssimulacra2": 95.0}, max_bytes=60, max_why="a smaller candidate")
    with pytest.raises(CodecBeaten, match="by far at quality") as e:
        codec.encode(src, target)
    assert len(codings) == 1 and "a smaller candidate (60 bytes)" in str(e.value)
    codings.clear()
    monkeypatch.setattr(codec_module, "HOPELESS_MARGIN", 1000.0)
    with pytest.raises(CodecBeaten) as e:
        codec.encode(_src(160, 128), target)
    assert len(codings) > 2 and "by far" not in str(e.value)


def test_a_target_above_the_images_ceiling_is_refused_before_any_coding(codec, monkeypatch):
    """The image's latent decoded without quantization (``QualityProbe.ceiling``) is the most any
    quality gives back; when even it misses the target by more than ``CEILING_MARGIN``, the codec
    refuses without coding the latent once. Within reach, the search runs as before."""
    from archiver.codecs.diffusion import pipeline
    from archiver.perceptual import ssimulacra2

    codings = []
    real = pipeline.QualityProbe.file_at
    monkeypatch.setattr(pipeline.QualityProbe, "file_at", lambda self, q: (codings.append(q), real(self, q))[1])
    src = _src(160, 128)
    probe = pipeline.QualityProbe(src.image, codec.backbone, steps=2)
    ceiling = ssimulacra2(src.image.rgb, probe.ceiling())
    scores = [ssimulacra2(src.image.rgb, probe.decode(probe.file_at(q)[0]).image) for q in (40, 70, 100)]
    assert max(scores) <= ceiling + 0.5 and scores[-1] > scores[0]  # the premise, on this backbone
    codings.clear()
    with pytest.raises(CodecRefused, match="at any quality.*scores SSIMULACRA2") as e:
        codec.encode(src, Target(floor={"min_ssimulacra2": ceiling + 5}))
    assert codings == [] and f"{ceiling:.1f}" in str(e.value)
    with pytest.raises(CodecRefused) as e:  # within the margin: the search runs, and finds nothing
        codec.encode(src, Target(floor={"min_ssimulacra2": ceiling + 0.5}))
    assert codings and "at any quality" not in str(e.value)
    codings.clear()
    enc = codec.encode(src, Target(floor={"min_ssimulacra2": ceiling - 10, "max_phash_distance": 64,
                                          "max_dhash_distance": 64}))
    assert codings and enc.quality["score"] >= ceiling - 10


def test_the_shipped_models_ceiling_bounds_every_quality():
    """The premise of the ceiling check on the embedded model: no quality's decode of a photo
    scores above its unquantized decode (bench/diffusion_ceiling.py measures it on validation
    photos: at most 0.07 above)."""
    from archiver.codecs import get_codec
    from archiver.codecs.diffusion import codec as codec_module
    from archiver.codecs.diffusion.pipeline import QualityProbe
    from archiver.perceptual import ssimulacra2
    from archiver.testing.catalog import photo_bytes

    img = load_image(photo_bytes(21, size=(224, 176)))
    probe = QualityProbe(img, get_codec("diffusion").backbone)
    ceiling = ssimulacra2(img.rgb, probe.ceiling())
    scores = {q: ssimulacra2(img.rgb, probe.decode(probe.file_at(q)[0]).image) for q in (40, 70, 100)}
    assert max(scores.values()) <= ceiling + codec_module.CEILING_MARGIN / 2, (ceiling, scores)
    assert scores[40] < scores[100]

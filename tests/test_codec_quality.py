"""The shipped tiny backbone on Kodak (evaluation only): real rates, real quality. Slow; skips
without ../shared/data or without shipped weights."""

from pathlib import Path

import pytest

from archiver.errors import UsageError

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"

pytestmark = [pytest.mark.slow, pytest.mark.data]


@pytest.fixture(scope="module")
def tiny():
    if not KODAK.is_dir():
        pytest.skip(f"{KODAK} is absent (the shared evaluation data is not mounted)")
    from archiver.codecs.diffusion.backbones import get_backbone

    try:
        return get_backbone("tiny", device="cpu")
    except UsageError as e:
        pytest.skip(f"no shipped tiny weights: {e}")


@pytest.mark.parametrize("name", ["kodim13.png", "kodim08.png"])  # texture-heavy: stone, water, foliage
@pytest.mark.parametrize("target", [0.1, 0.3])
def test_tiny_backbone_hits_the_rate_and_a_sane_quality(tiny, name, target):
    from archiver.codecs.diffusion import pipeline
    from archiver.imageio import load_image
    from archiver.metrics import ms_ssim, psnr

    img = load_image(KODAK / name)
    r = pipeline.encode_image(img, tiny, bpp=target)
    assert r.rate_note is None and abs(r.bpp - target) / target <= 0.10
    assert r.bpp == len(r.data) * 8 / (img.width * img.height)
    with_diffusion = pipeline.decode_bytes(r.data, tiny).image
    plain = pipeline.decode_bytes(r.data, tiny, steps=0).image
    assert psnr(img.rgb, with_diffusion) > 18 and ms_ssim(img.rgb, with_diffusion) > 0.6
    # the denoiser must not wreck what the autoencoder alone gives
    assert ms_ssim(img.rgb, with_diffusion) > ms_ssim(img.rgb, plain) - 0.05

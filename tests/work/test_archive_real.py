"""End to end with the real pieces: the latent-diffusion codec (untrained tiny backbone, so it
runs anywhere in seconds) and the real policy engine, including the shipped default policy."""

from pathlib import Path

import pytest
from PIL import Image

from archiver.work import archive_file
from archiver.catalog import queries as q
from archiver.work.restore import restore
from archiver.testing.catalog import disk_problems, make_context, random_tiny_codec, write_jpeg
from archiver.work.verify import verify
from archiver.codecs.lossless import format as lossless


@pytest.fixture(scope="module")
def codec():
    return random_tiny_codec(0)


@pytest.fixture
def ctx(tmp_path, codec):
    c = make_context(tmp_path / "state", codec=codec)
    yield c
    c.catalog.close()


def test_diffusion_end_to_end(tmp_path, ctx):
    src = write_jpeg(tmp_path / "c" / "tex" / "a.jpg", size=(96, 64))
    o = archive_file(src, ctx)
    assert (o.state, o.action, o.original_status) == ("committed", "diffusion", "removed")
    with ctx.catalog.session() as s:
        r = q.latest_version(s, str(src))
    from archiver.codecs.diffusion.container import read_header

    data = Path(r.compressed_path).read_bytes()
    h = read_header(data)
    assert (h.width, h.height) == (96, 64) and h.backbone_id == r.backbone == "tiny"
    assert r.backbone_digest == ctx.codecs.get("diffusion").backbone.weights_digest
    assert r.bpp == pytest.approx(len(data) * 8 / (96 * 64), rel=0.01)  # the real file size
    assert r.psnr is not None and r.ms_ssim is not None
    # a second process-independent decode gives the same reconstruction (verify re-decodes)
    rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs)
    assert rep.mismatches == [] and rep.ok == 1
    out = tmp_path / "out"
    (res,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs, to=out)
    assert res.source == "reconstruction"
    img = Image.open(out / "a.jpg")
    assert img.size == (96, 64) and img.format == "JPEG"
    assert img.getexif().get(0x010F) == "ArchiverTestCam"  # the original's EXIF came back
    assert disk_problems(ctx, tmp_path / "c") == []


def test_real_quality_guard_falls_back(tmp_path, ctx):
    src = write_jpeg(tmp_path / "c" / "strict" / "a.jpg", size=(160, 120))
    orig = src.read_bytes()
    o = archive_file(src, ctx)
    assert o.action == "lossless" and "quality guard" in (o.fallback or "")
    assert lossless.restore(Path(o.compressed_path).read_bytes()) == orig
    assert disk_problems(ctx, tmp_path / "c") == []


def test_shipped_default_policy(tmp_path, codec):
    from archiver.policy.engine import load_policy

    ctx = make_context(tmp_path / "state", codec=codec)
    ctx.policy = load_policy()  # policies/default.yaml
    ev = write_jpeg(tmp_path / "c" / "evidence" / "case1.jpg", seed=1)
    small = write_jpeg(tmp_path / "c" / "photos" / "thumb.jpg", seed=2)
    before = ev.read_bytes()
    o_ev, o_small = archive_file(ev, ctx), archive_file(small, ctx)
    assert (o_ev.action, o_ev.rule, o_ev.disposition) == ("keep", "evidence", "keep") and ev.read_bytes() == before
    assert o_small.rule == "tiny-images" and o_small.action == "lossless" and o_small.disposition == "vault"
    assert verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs).mismatches == []
    ctx.catalog.close()

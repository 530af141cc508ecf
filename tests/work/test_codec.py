"""What the codecs may represent: inputs that would lose frames, bit depth or a colour model are
kept untouched with the reason (issue 11 #1, #2, #5); lossy reconstructions are recognised
across devices by a tolerant fingerprint (#10)."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archiver.catalog import queries as q
from archiver.catalog.models import COMMITTED
from archiver.testing.catalog import smooth_image
from archiver.codecs.lossless import format as lossless
from archiver.work import archive_file, restore, verify
from archiver.codecs import base


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _frames(fmt, n=3, size=(64, 48)):
    frames = [Image.fromarray(smooth_image(s, size)) for s in range(n)]
    b = io.BytesIO()
    frames[0].save(b, fmt, save_all=True, append_images=frames[1:], **({"lossless": True} if fmt == "WEBP" else {}))
    return b.getvalue()


def _cv2_png(a):
    import cv2

    ok, buf = cv2.imencode(".png", a)
    return buf.tobytes()


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp"), ("TIFF", "tif")])
@pytest.mark.parametrize("where", ["tex", "plain"])
def test_multi_frame_images_are_kept_whole(tmp_path, ctx, fmt, ext, where):
    """#2: APNG, animated WebP/GIF, multi-page TIFF routed to diffusion kept only frame one."""
    data = _frames(fmt)
    src = _write(tmp_path / "c" / where / f"anim.{ext}", data)
    o = archive_file(src, ctx)
    assert o.state == COMMITTED and o.action == "keep" and src.read_bytes() == data
    assert any("frames" in r for r in o.reasons)
    assert sorted(p.name for p in src.parent.iterdir()) == [src.name]


@pytest.mark.parametrize("channels", [2, 3, 4])
@pytest.mark.parametrize("where", ["tex", "plain"])
def test_sixteen_bit_colour_is_never_reduced_to_eight(tmp_path, ctx, channels, where):
    """#1: 16-bit RGB/RGBA/gray+alpha PNGs came back 8-bit with restore_exact=pixels."""
    rng = np.random.default_rng(channels)
    a = (np.cumsum(rng.random((48, 64, channels)), axis=1) * 900).astype(np.uint16)
    if channels == 2:  # OpenCV writes no gray+alpha: Pillow reads it as LA 8-bit, so build it by hand
        import struct
        import zlib

        raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(48))
        chunk = lambda k, d: struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))  # noqa: E731
        data = (lossless.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 48, 16, 4, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    else:
        data = _cv2_png(a)
    src = _write(tmp_path / "c" / where / "deep.png", data)
    o = archive_file(src, ctx)
    assert o.action == "keep" and src.read_bytes() == data, o
    assert any("16-bit" in r for r in o.reasons)


@pytest.mark.parametrize("mode", ["CMYK", "F", "I"])
def test_cmyk_and_float_tiffs_are_not_diffused(tmp_path, ctx, mode):
    """#5: diffusion restores of CMYK and float TIFFs wrote files no reader opens."""
    im = Image.fromarray(smooth_image(1, (64, 48)))
    im = im.convert("CMYK") if mode == "CMYK" else im.convert("L").convert(mode)
    b = io.BytesIO()
    im.save(b, "TIFF")
    src = _write(tmp_path / "c" / "tex" / f"x.tif", b.getvalue())
    o = archive_file(src, ctx)
    assert o.action != "diffusion" and any("faithfully" in r for r in o.reasons), o
    if o.action == "lossless":  # 32-bit integer within 16 bits has an exact form
        out = tmp_path / "out"
        (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, to=out)
        assert r.status == "restored" and lossless.same_pixels((out / "x.tif").read_bytes(), b.getvalue())
    else:
        assert src.read_bytes() == b.getvalue()


@pytest.mark.parametrize("what", ["frames", "16-bit", "CMYK"])
def test_no_lossy_codec_of_the_registry_takes_an_image_it_would_cut_down(what):
    """#1, #2, #5 for every lossy codec (diffusion, AVIF, lossy JPEG XL), not only diffusion:
    the refusal sits in the codec base and the choice asks it before any encoding."""
    from archiver.codecs import Source, get_codec, is_lossy, names
    from archiver.codecs.choice import Choice
    from archiver.imageio import load_image

    if what == "frames":
        data = _frames("PNG")
    elif what == "16-bit":
        data = _cv2_png((np.cumsum(np.ones((48, 64, 3)), axis=1) * 900).astype(np.uint16))
    else:
        b = io.BytesIO()
        Image.fromarray(smooth_image(1, (64, 48))).convert("CMYK").save(b, "TIFF")
        data = b.getvalue()
    source = Source(load_image(data), data)
    lossy = [n for n in names() if is_lossy(n)]
    assert {"diffusion", "avif", "jxl"} <= set(lossy)
    for name in lossy:
        assert "faithfully" in (get_codec(name).refusal(source) or ""), name
    choice = Choice("best", {"among": lossy})
    assert list(choice.candidates(source)) == []
    assert all("faithfully" in a.why for a in choice.attempts) and len(choice.attempts) == len(lossy)


def test_a_reconstruction_written_in_a_format_that_cannot_hold_it_falls_back_to_a_readable_file(tmp_path):
    from archiver.catalog.models import FileVersion
    from archiver.work.restore import _reconstruction_bytes

    img = Image.fromarray(smooth_image(2, (40, 30))).convert("RGBA")
    data = _reconstruction_bytes(FileVersion(path="/x.bmp", format="XBM"), img, None)
    assert Image.open(io.BytesIO(data)).size == (40, 30)


def test_fingerprint_tolerates_a_device_but_not_damage():
    """#10: CPU and CUDA decodes differ by ±1 in ~20,000 pixels; verify must not call that damage."""
    a = smooth_image(3, (768, 512)).astype(np.int16)
    rng = np.random.default_rng(0)
    jitter = a.copy()
    idx = rng.choice(a.size, 20000, replace=False)
    jitter.flat[idx] += rng.choice([-1, 1], 20000)
    fp = base.fingerprint(Image.fromarray(a.astype(np.uint8)))
    assert base.same_fingerprint(base.fingerprint(Image.fromarray(np.clip(jitter, 0, 255).astype(np.uint8))), fp)
    damaged = a.copy()
    damaged[100:180, 200:300] = 0
    assert not base.same_fingerprint(base.fingerprint(Image.fromarray(damaged.astype(np.uint8))), fp)


def test_verify_and_restore_accept_another_devices_decode(tmp_path, ctx):
    """A catalog written on one machine and verified on another: the exact digest differs, the
    fingerprint matches -> a warning, not a mismatch; a different image -> a mismatch."""
    from archiver.testing.catalog import write_jpeg

    src = write_jpeg(tmp_path / "c" / "tex" / "a.jpg", size=(160, 120))
    archive_file(src, ctx)
    codec = ctx.codecs.get("diffusion")
    real = codec.decode

    def other_device(data):
        a = np.asarray(real(data)).astype(np.int16)
        a[::7, ::5] += 1
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))

    codec.decode = other_device
    rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs)
    assert rep.mismatches == [] and any("another device" in w["problem"] for w in rep.warnings)
    assert restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs, to=tmp_path / "o")[0].status == "restored"
    codec.decode = lambda data: Image.fromarray(255 - np.asarray(real(data)))
    assert verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs).mismatches
    with ctx.catalog.session() as s:
        assert "fingerprint" in q.latest_version(s, str(src)).codec_params

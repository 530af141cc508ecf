"""`archiver encode` / `archiver decode` as a user runs them: outputs, --json, exit codes."""

import hashlib
import json
import shutil
import struct
import tempfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from archiver.app.main import main
from archiver.testing.codec import build_tiny_sd, tiny_sd_dir
from archiver.errors import ContainerError, InputError, UsageError, WeightsMismatchError


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def files():
    d = tempfile.mkdtemp(prefix="archiver-cli-")
    from pathlib import Path

    d = Path(d)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (29, 43, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010F] = "CliCam"
    img.save(d / "in.jpg", quality=90, exif=exif.tobytes())
    r = run("encode", d / "in.jpg", d / "in.dlc", "--model", tiny_sd_dir(), "--quality", 60, "--json")
    assert r.exit_code == 0, r.output
    yield d, json.loads(r.output)
    shutil.rmtree(d, ignore_errors=True)


def test_encode_reports_real_bpp_in_json(files):
    d, info = files
    size = (d / "in.dlc").stat().st_size
    assert info["size_bytes"] == size
    assert info["bpp"] == pytest.approx(size * 8 / (43 * 29))
    for key in ("t", "steps", "quality", "width", "height", "backbone", "weights_sha256", "seconds"):
        assert key in info


def test_human_output_by_default(files, tmp_path):
    d, _ = files
    r = run("encode", d / "in.jpg", tmp_path / "x.dlc", "--model", tiny_sd_dir(), "--bpp", 2.0)
    assert r.exit_code == 0, r.output
    assert "bpp" in r.output and "t=" in r.output and not r.output.lstrip().startswith("{")


def test_decode_restores_size_and_metadata(files, tmp_path):
    d, _ = files
    out = tmp_path / "out.png"
    r = run("decode", d / "in.dlc", out, "--model", tiny_sd_dir(), "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["metadata"]["exif"] is True
    img = Image.open(out)
    assert img.size == (43, 29) and img.format == "PNG"
    assert img.getexif()[0x010F] == "CliCam"
    r = run("decode", d / "in.dlc", tmp_path / "out.jpg", "--model", tiny_sd_dir(), "--steps", 0)
    assert r.exit_code == 0 and Image.open(tmp_path / "out.jpg").format == "JPEG"


def _resign(data: bytes) -> bytes:
    body = data[:-32]
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("damage", ["truncate", "flip", "version", "empty", "not-dlc"])
def test_damaged_files_exit_with_container_error(files, tmp_path, damage):
    d, _ = files
    data = (d / "in.dlc").read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data = data[:40] + bytes([data[40] ^ 0xFF]) + data[41:]
    elif damage == "version":
        data = _resign(data[:8] + b"\x07" + data[9:])
    elif damage == "empty":
        data = b""
    else:
        data = (d / "in.jpg").read_bytes()
    bad = tmp_path / "bad.dlc"
    bad.write_bytes(data)
    r = run("decode", bad, tmp_path / "o.png", "--model", tiny_sd_dir())
    assert r.exit_code == ContainerError.exit_code, r.output
    assert "Traceback" not in r.output and not (tmp_path / "o.png").exists()
    if damage == "version":
        assert "version 7" in r.output


def test_other_weights_exit_with_weights_mismatch(files, tmp_path):
    d, _ = files
    other = build_tiny_sd(tmp_path / "other", seed=7)
    r = run("decode", d / "in.dlc", tmp_path / "o.png", "--model", other)
    assert r.exit_code == WeightsMismatchError.exit_code, r.output
    assert "weights" in r.output and not (tmp_path / "o.png").exists()


def test_non_image_and_missing_input_exit_with_input_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, not an image")
    r = run("encode", tmp_path / "notes.txt", tmp_path / "o.dlc", "--model", tiny_sd_dir())
    assert r.exit_code == InputError.exit_code and "not an image" in r.output
    r = run("encode", tmp_path / "missing.png", tmp_path / "o.dlc", "--model", tiny_sd_dir())
    assert r.exit_code == InputError.exit_code
    assert not (tmp_path / "o.dlc").exists()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    import zlib

    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_decompression_bomb_is_refused(tmp_path):
    import zlib

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)  # claims 900 Mpx
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + _png_chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(png)
    r = run("encode", tmp_path / "bomb.png", tmp_path / "o.dlc", "--model", tiny_sd_dir(), "--json")
    assert r.exit_code == InputError.exit_code and "bomb" in r.output


def test_usage_errors(files, tmp_path):
    d, _ = files
    r = run("encode", d / "in.jpg", tmp_path / "o.dlc", "--model", tiny_sd_dir(), "--bpp", 1, "--quality", 5)
    assert r.exit_code == UsageError.exit_code
    r = run("decode", d / "in.dlc", tmp_path / "o.xyz", "--model", tiny_sd_dir())
    assert r.exit_code == UsageError.exit_code and "suffix" in r.output
    r = run("decode", d / "in.dlc", tmp_path / "missing-dir" / "o.png", "--model", tiny_sd_dir())
    assert r.exit_code == UsageError.exit_code
    r = run("decode", d / "in.dlc", tmp_path / "o.png")  # a diffusers file and no model given
    assert r.exit_code == UsageError.exit_code and "--model" in r.output


@pytest.mark.slow  # a fresh interpreter importing torch + diffusers takes tens of seconds on a busy box
def test_another_process_decodes_identical_pixels(files, tmp_path):
    """Same file -> same pixels, checked across processes (fresh interpreter, fresh model load)."""
    import subprocess
    import sys

    d, _ = files
    r = run("decode", d / "in.dlc", tmp_path / "here.png", "--model", tiny_sd_dir())
    assert r.exit_code == 0, r.output
    p = subprocess.run([sys.executable, "-m", "archiver", "decode", str(d / "in.dlc"), str(tmp_path / "there.png"),
                        "--model", str(tiny_sd_dir())], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "here.png")), np.asarray(Image.open(tmp_path / "there.png")))


def test_roi_option(files, tmp_path):
    d, _ = files
    r = run("encode", d / "in.jpg", tmp_path / "r.dlc", "--model", tiny_sd_dir(), "--roi", "0,0,16,16", "--json")
    assert r.exit_code == 0, r.output
    from archiver.codecs.diffusion.container import read_header

    assert read_header((tmp_path / "r.dlc").read_bytes()).roi == [(0, 0, 2, 2)]
    r = run("encode", d / "in.jpg", tmp_path / "r.dlc", "--model", tiny_sd_dir(), "--roi", "5,5,1,1")
    assert r.exit_code == UsageError.exit_code


def test_decode_refuses_to_overwrite_without_force(tmp_path):
    """Like restore: an existing file is somebody's data."""
    from PIL import Image

    src = tmp_path / "in.png"
    Image.new("RGB", (64, 48), (90, 140, 60)).save(src)
    r = run("encode", src, tmp_path / "in.dlc", "--quality", "40")
    assert r.exit_code == 0, r.output
    dst = tmp_path / "out.png"
    dst.write_bytes(b"precious")
    r = run("decode", tmp_path / "in.dlc", dst)
    assert r.exit_code == 9 and "exists; use --force" in r.output and dst.read_bytes() == b"precious"
    r = run("decode", tmp_path / "in.dlc", dst, "--force")
    assert r.exit_code == 0 and dst.read_bytes() != b"precious"


@pytest.mark.parametrize("kind", ["jpeg", "png", "axl"])
def test_decode_reads_every_lossless_output_kind(files, tmp_path, kind):
    """Issue 11 #9: `archiver decode` rejected .jxl and .axl with "bad magic", although outputs
    are documented to decode without the catalog; a damaged one is refused, never wrong."""
    import io

    from archiver.errors import ArchiverError
    from archiver.codecs.lossless import format as lossless

    d, _ = files
    if kind == "jpeg":
        src = (d / "in.jpg").read_bytes()
        blob, out = lossless.compress(src)[0], tmp_path / "o.jpg"
    else:
        b = io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(b, "PNG")
        src, out = b.getvalue(), tmp_path / "o.png"
        if kind == "png":
            blob = lossless.compress(src)[0]
        else:  # a file of the earlier private format
            im = Image.open(io.BytesIO(src))
            payload = lossless._encoder("RGB", container=False)(im.tobytes(), 20, 16, jpeg_encode=False)
            h = json.dumps({"format": "PNG", "mode": "RGB", "size": [20, 16], "meta": {}}).encode()
            blob = lossless.AXL_MAGIC + struct.pack(">BI", 1, len(h)) + h + payload
    f = tmp_path / f"x.{kind}.jxl"
    f.write_bytes(blob)
    r = run("decode", f, out, "--json")
    assert r.exit_code == 0, r.output
    assert (out.read_bytes() == src) if kind == "jpeg" else lossless.same_pixels(out.read_bytes(), src)
    r = run("decode", f, tmp_path / "as.webp")  # another format: the pixels
    assert r.exit_code == 0 and Image.open(tmp_path / "as.webp").size == Image.open(io.BytesIO(src)).size
    if kind != "axl":  # damage in the pixel data: refused (any damage: refused or harmless, test_lossless)
        i = len(blob) // 3
        f.write_bytes(blob[:i] + bytes([blob[i] ^ 0xFF]) + blob[i + 1:])
        r = run("decode", f, tmp_path / "bad.png")
        assert "Traceback" not in r.output
        if r.exit_code == 0:
            back = (tmp_path / "bad.png").read_bytes()
            assert back == src or lossless.same_pixels(back, src)
        else:
            assert r.exit_code == ArchiverError.exit_code and not (tmp_path / "bad.png").exists()

"""AVIF and lossy JPEG XL through the whole unit of work: archive -> verify -> restore, as
fallbacks of the diffusion codec, as actions of their own, and chosen by ``best``; plus old
catalogs whose rows still name codecs the pre-registry way."""

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from archiver.catalog import queries as q
from archiver.catalog.models import COMMITTED
from archiver.testing.catalog import make_context
from archiver.policy.engine import parse_policy_text
from archiver.work import archive_file
from archiver.work.restore import restore
from archiver.work.verify import verify

POLICY = """
version: 1
name: codecs
defaults:
  bpp: 0.3
  floor: {min_psnr: 33.0, min_ms_ssim: 0.9, min_region_psnr: 30.0}
  original: replace
rules:
  - name: to-avif
    when: {path: ["**/avif/**"]}
    action: diffusion
    allow_generative: true
    fallback: [avif, lossless]
  - name: to-jxl
    when: {path: ["**/jxl/**"]}
    action: diffusion
    allow_generative: true
    fallback: [jxl, lossless]
  - name: jxl-only
    when: {path: ["**/plainjxl/**"]}
    action: jxl
    original: vault
  - name: best
    when: {path: ["**/best/**"]}
    action: best
    among: [diffusion, avif, jxl]
    allow_generative: true
  - name: budget
    when: {path: ["**/budget/**"]}
    action: best
    among: [avif, jxl]
    budget: 1.0 bpp
    floor: {min_psnr: 20.0}
default: lossless
"""


def photo(path: Path, seed=0, fmt="PNG", size=(128, 112)) -> Path:
    """Texture and edges with EXIF: big as PNG, so every lossy codec saves a lot."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([120 + 50 * np.sin(xx / (2.5 + c) + yy / 7) * np.cos(yy / (3 + c))
                     + 30 * np.sign(np.sin(xx / 11) * np.sin(yy / 9)) for c in range(3)], -1)
    a = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "ArchiverTestCam"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, fmt, exif=exif.tobytes(), **({"quality": 97} if fmt == "JPEG" else {}))
    return path


@pytest.fixture
def ctx(ctx):
    """The shared context (tests/work/conftest.py) with this module's policy."""
    ctx.policy = parse_policy_text(POLICY, "codecs.yaml")
    return ctx


def _row(ctx, path):
    with ctx.catalog.session() as s:
        return q.latest_version(s, str(path))


def _round_trip(ctx, tmp_path, src, codec, ext):
    """archive -> verify -> restore for one file that must end up with ``codec``."""
    data = src.read_bytes()
    original = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=float)
    o = archive_file(src, ctx)
    assert o.state == COMMITTED and o.action == codec, o.reasons
    assert not src.exists() or o.disposition == "keep"
    r = _row(ctx, src)
    assert (r.codec, r.codec_version, r.restore_exact) == (codec, 1, "approx")
    assert r.compressed_path.endswith(ext) and r.compressed_size < len(data) / 2
    assert r.psnr >= 33.0 and r.ms_ssim >= 0.9 and r.codec_params["quality"] > 0
    cp = Path(r.compressed_path)
    assert Image.open(cp).format == {"avif": "AVIF", "jxl": "JXL"}[codec]
    # scrub: everything the catalog promises is there
    assert verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs).mismatches == []
    # restore: the verified reconstruction, in the original's format, with its EXIF
    out = tmp_path / "restored"
    (res,) = restore(ctx.catalog, [str(src)], vault=None, codecs=ctx.codecs, to=out)
    assert (res.status, res.source, res.exact) == ("restored", "reconstruction", "approx"), res.message
    back = Image.open(res.dest)
    assert back.format == Image.open(io.BytesIO(data)).format
    assert back.getexif().get(0x010F) == "ArchiverTestCam"
    mse = np.mean((np.asarray(back.convert("RGB"), dtype=float) - original) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) >= 32.0  # the floor, give or take the restore's own format
    # a damaged artifact is found by the scrub and refused by restore
    blob = bytearray(cp.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    cp.write_bytes(bytes(blob))
    assert any("damaged" in m["problem"] for m in verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs).mismatches)
    (res,) = restore(ctx.catalog, [str(src)], vault=None, codecs=ctx.codecs, to=tmp_path / "again")
    assert res.status == "error" and "damaged" in res.message
    return r


def test_diffusion_below_the_floor_falls_back_to_avif(tmp_path, ctx):
    src = photo(tmp_path / "c" / "avif" / "a.png")
    r = _round_trip(ctx, tmp_path, src, "avif", ".avif")
    assert r.reasons[-1].startswith("avif after diffusion: quality guard")


def test_diffusion_below_the_floor_falls_back_to_lossy_jxl(tmp_path, ctx):
    src = photo(tmp_path / "c" / "jxl" / "a.jpg", fmt="JPEG", seed=1)
    r = _round_trip(ctx, tmp_path, src, "jxl", ".jxl")
    assert r.reasons[-1].startswith("jxl after diffusion: quality guard")


def test_lossy_jxl_as_the_action_vaults_the_original(tmp_path, ctx):
    src = photo(tmp_path / "c" / "plainjxl" / "a.png", seed=2)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    o = archive_file(src, ctx)
    assert o.action == "jxl" and o.disposition == "vault" and not src.exists()
    (res,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs)
    assert (res.source, res.exact) == ("vault", "bytes") and hashlib.sha256(src.read_bytes()).hexdigest() == digest


def test_a_lossy_fallback_that_misses_the_floor_goes_on_to_lossless(tmp_path, ctx):
    ctx.policy = parse_policy_text(POLICY.replace("min_psnr: 33.0", "min_psnr: 70.0"), "codecs.yaml")
    src = photo(tmp_path / "c" / "avif" / "a.png", seed=3)
    o = archive_file(src, ctx)
    assert o.action == "lossless" and [a["codec"] for a in o.attempts] == ["diffusion", "avif", "lossless"]
    assert "out of reach" in o.attempts[1]["why"]
    (res,) = restore(ctx.catalog, [str(src)], vault=None, codecs=ctx.codecs, to=tmp_path / "out")
    assert res.exact in ("bytes", "pixels")


def test_best_keeps_the_smallest_file_that_meets_the_floor(tmp_path, ctx):
    src = photo(tmp_path / "c" / "best" / "a.png", seed=4)
    o = archive_file(src, ctx)
    assert o.state == COMMITTED and o.action in ("avif", "jxl")
    r = _row(ctx, src)
    assert "the smallest file meeting the floor" in r.reasons[-1]
    sizes = {a["codec"]: a["size"] for a in o.attempts if a["ok"]}
    assert r.compressed_size == min(sizes.values()) or o.action == min(sizes, key=sizes.get)
    assert any(a["codec"] == "diffusion" and not a["ok"] for a in o.attempts)
    assert verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs).mismatches == []


def test_best_within_a_budget(tmp_path, ctx):
    src = photo(tmp_path / "c" / "budget" / "a.png", seed=5)
    o = archive_file(src, ctx)
    r = _row(ctx, src)
    assert o.action in ("avif", "jxl") and r.compressed_size <= 128 * 112 / 8
    assert "the best quality within the budget" in r.reasons[-1]


def test_the_dry_run_predicts_the_codec_and_size_the_real_run_gets(tmp_path, ctx):
    src = photo(tmp_path / "c" / "avif" / "a.png", seed=6)
    dry = make_context(tmp_path / "dry", dry_run=True)
    dry.policy = ctx.policy
    predicted = archive_file(src, dry)
    assert predicted.state == "dry-run" and src.exists() and not list(src.parent.glob("*.avif"))
    real = archive_file(src, ctx)
    assert (predicted.action, predicted.size_after) == (real.action, _row(ctx, src).compressed_size) == ("avif", predicted.size_after)
    assert predicted.reasons[-1] == _row(ctx, src).reasons[-1]
    dry.catalog.close()


def test_rows_written_before_the_registry_still_restore(tmp_path, ctx):
    """A catalog from before codec names were registry names ('jxl-jpeg', 'dlc') is migrated on
    open, and its files come back through codec_for(row)."""
    from alembic import command

    from archiver.catalog.db import _alembic_config, make_engine, open_catalog
    from archiver.codecs.lossless import format as lossless

    jpg = photo(tmp_path / "old" / "a.jpg", fmt="JPEG", seed=7)
    blob, ext = lossless.compress(jpg.read_bytes())
    cp = jpg.with_name(jpg.name + ext)
    cp.write_bytes(blob)
    digest = hashlib.sha256(jpg.read_bytes()).hexdigest()
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    eng = make_engine(url)
    with eng.begin() as conn:
        command.upgrade(_alembic_config(conn), "0002")
        conn.execute(text(
            "INSERT INTO file_versions (path, state, action, codec, compressed_path, compressed_sha256, sha256, "
            "reconstruction_sha256, format, original_status, created_at, updated_at, committed_at) VALUES "
            f"('{jpg}', 'committed', 'lossless', 'jxl-jpeg', '{cp}', '{hashlib.sha256(blob).hexdigest()}', "
            f"'{digest}', '{digest}', 'JPEG', 'removed', '2026-01-01', '2026-01-01', '2026-01-01')"))
    eng.dispose()
    jpg.unlink()
    with open_catalog(url) as cat:
        with cat.session() as s:
            r = q.latest_version(s, str(jpg))
            assert (r.codec, r.codec_version) == ("lossless", 1)
        assert verify(cat, codecs=ctx.codecs).mismatches == []
        (res,) = restore(cat, [str(jpg)], codecs=ctx.codecs)
    assert res.exact == "bytes" and hashlib.sha256(jpg.read_bytes()).hexdigest() == digest

"""archive_file: per-action behaviour, idempotence, versions, fallbacks, bad input, changed
sources, legal hold, dry run. Real policy engine (path rules), fake diffusion codec (fast)."""

import hashlib
import os
from pathlib import Path

import pytest

from archiver.work import archive_file
from archiver.catalog import queries as q
from archiver.catalog.models import COMMITTED, FileVersion, SKIPPED
from archiver.work.restore import restore
from archiver.testing.catalog import make_context, write_jpeg
from archiver.codecs.lossless import format as lossless


def sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def rows(ctx, path=None):
    with ctx.catalog.session() as s:
        if path:
            return q.versions(s, str(path))
        return list(s.query(FileVersion).order_by(FileVersion.id))


def test_lossless_replace_roundtrip(tmp_path, ctx):
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    orig, digest = src.read_bytes(), sha(src)
    o = archive_file(src, ctx)
    assert (o.state, o.action, o.disposition, o.original_status) == (COMMITTED, "lossless", "replace", "removed")
    assert not src.exists()
    cp = Path(o.compressed_path)
    assert cp.name == "a.jpg.jxl" and lossless.restore(cp.read_bytes()) == orig
    (r,) = rows(ctx, src)
    assert r.sha256 == digest and r.restore_exact == "bytes" and r.compressed_sha256 == sha(cp)
    assert r.phash and r.dhash and r.size == len(orig)
    with ctx.catalog.session() as s:
        kinds = [e.kind for e in q.events_for(s, s.get(FileVersion, r.id))]
    assert kinds == ["discovered", "classified", "write_intent", "encoded", "verified", "committed", "original_removed"]
    res = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs)
    assert res[0].status == "restored" and res[0].source == "lossless" and src.read_bytes() == orig


def test_vault_disposition(tmp_path, ctx):
    src = write_jpeg(tmp_path / "c" / "vault" / "a.jpg", seed=2)
    orig = src.read_bytes()
    o = archive_file(src, ctx)
    assert o.disposition == "vault" and not src.exists()
    (r,) = rows(ctx, src)
    assert Path(r.vault_path).read_bytes() == orig
    assert r.vault_expires_at is not None
    res = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs)
    assert res[0].source == "vault" and src.read_bytes() == orig


def test_keep_action_touches_nothing(tmp_path, ctx):
    src = write_jpeg(tmp_path / "c" / "keep" / "a.jpg")
    before = (src.read_bytes(), os.stat(src).st_mtime_ns)
    o = archive_file(src, ctx)
    assert (o.action, o.disposition, o.original_status) == ("keep", "keep", "kept")
    assert (src.read_bytes(), os.stat(src).st_mtime_ns) == before
    assert sorted(p.name for p in src.parent.iterdir()) == ["a.jpg"]


def test_rerun_is_idempotent(tmp_path, ctx):
    a = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    k = write_jpeg(tmp_path / "c" / "keep" / "k.jpg")
    archive_file(a, ctx), archive_file(k, ctx)
    again = [archive_file(a, ctx), archive_file(k, ctx), archive_file(Path(str(a) + ".jxl"), ctx)]
    assert [o.state for o in again] == ["unchanged", "unchanged", SKIPPED]
    assert len(rows(ctx)) == 2


def test_new_version_after_replace_keeps_old_compressed_file(tmp_path, ctx):
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg", seed=1)
    v1 = src.read_bytes()
    o1 = archive_file(src, ctx)
    write_jpeg(src, seed=7)  # a new file at the same path
    v2 = src.read_bytes()
    o2 = archive_file(src, ctx)
    assert o2.state == COMMITTED and o2.file_id != o1.file_id
    assert o2.compressed_path != o1.compressed_path  # the old version's file is not overwritten
    assert lossless.restore(Path(o1.compressed_path).read_bytes()) == v1
    assert lossless.restore(Path(o2.compressed_path).read_bytes()) == v2
    assert len(rows(ctx, src)) == 2


def test_diffusion_replace_and_quality_recorded(tmp_path, ctx):
    src = write_jpeg(tmp_path / "c" / "tex" / "a.jpg", size=(160, 120))
    o = archive_file(src, ctx)
    assert (o.state, o.action) == (COMMITTED, "diffusion") and not src.exists()
    (r,) = rows(ctx, src)
    assert r.compressed_path.endswith(".jpg.dlc") and r.psnr > 10 and r.ms_ssim is not None
    assert r.reconstruction_sha256 and r.restore_exact == "approx" and r.bpp > 0
    out = tmp_path / "out"
    res = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs, to=out)
    assert res[0].source == "reconstruction" and (out / "a.jpg").is_file()


def test_quality_floor_falls_back_to_lossless(tmp_path, ctx):
    src = write_jpeg(tmp_path / "c" / "strict" / "a.jpg", size=(160, 120))
    orig = src.read_bytes()
    o = archive_file(src, ctx)
    assert o.action == "lossless" and o.fallback and "quality guard" in o.fallback
    (r,) = rows(ctx, src)
    assert any("quality guard" in x for x in r.reasons) and any(x.startswith("lossless after diffusion: quality guard") for x in r.reasons)
    assert lossless.restore(Path(r.compressed_path).read_bytes()) == orig
    assert not any(p.suffix == ".dlc" for p in src.parent.iterdir())  # the refused attempt is gone
    with ctx.catalog.session() as s:
        assert "fallback" in [e.kind for e in q.events_for(s, s.get(FileVersion, r.id))]


def test_not_smaller_becomes_keep(tmp_path, ctx):
    import numpy as np
    from PIL import Image

    src = tmp_path / "c" / "plain" / "noise.png"
    src.parent.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(src)
    o = archive_file(src, ctx)
    assert o.action == "keep" and src.exists() and any("not smaller" in r for r in o.reasons)


@pytest.mark.parametrize("content", [b"", b"hello, not an image", "truncated", "corrupt"])
def test_bad_input_is_skipped_never_replaced(tmp_path, ctx, content):
    src = tmp_path / "c" / "plain" / "bad.jpg"
    write_jpeg(src, size=(160, 120))
    good = src.read_bytes()
    if content == "truncated":
        content = good[: len(good) // 3]
    elif content == "corrupt":
        content = good[:200] + bytes(1000) + good[1200:]
    src.write_bytes(content)
    o = archive_file(src, ctx)
    if o.state == COMMITTED:  # a decoder may tolerate damage in the middle: then it must be exact
        r = rows(ctx, src)[0]
        assert r.action in ("lossless", "keep") and r.restore_exact in ("bytes", None)
        if r.compressed_path:
            assert lossless.restore(Path(r.compressed_path).read_bytes()) == content
        return
    assert o.state == SKIPPED and o.error
    assert src.read_bytes() == content
    assert archive_file(src, ctx).state == SKIPPED and len(rows(ctx, src)) == 1  # stable on rerun


def test_source_changed_during_encoding(tmp_path, ctx):
    src = write_jpeg(tmp_path / "c" / "tex" / "a.jpg", size=(160, 120))
    real = ctx.codecs.get("diffusion").encode

    def encode_and_meddle(source, target):
        out = real(source, target)
        with open(src, "ab") as f:
            f.write(b"appended while encoding")
        return out

    ctx.codecs.get("diffusion").encode = encode_and_meddle
    o = archive_file(src, ctx)
    assert o.state == SKIPPED and "changed" in o.error
    assert src.read_bytes().endswith(b"appended while encoding")
    assert sorted(p.name for p in src.parent.iterdir()) == ["a.jpg"]  # no stray .dlc
    ctx.codecs.get("diffusion").encode = real
    o2 = archive_file(src, ctx)  # the next run archives the new content
    assert o2.state == COMMITTED


def test_legal_hold_keeps_original(tmp_path, ctx):
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    with ctx.catalog.session() as s:
        q.add_tag(s, str(src), "legal-hold")
    o = archive_file(src, ctx)
    assert o.disposition == "keep" and src.exists()


def test_dry_run_writes_nothing(tmp_path):
    c = make_context(tmp_path / "state", dry_run=True)
    src = write_jpeg(tmp_path / "c" / "tex" / "a.jpg", size=(160, 120))
    before = sorted(p.name for p in src.parent.iterdir()), src.read_bytes()
    o = archive_file(src, c)
    assert o.state == "dry-run" and o.action == "diffusion" and o.size_after < o.size_before
    assert (sorted(p.name for p in src.parent.iterdir()), src.read_bytes()) == before
    with c.catalog.session() as s:
        assert s.query(FileVersion).count() == 0
    c.catalog.close()


def test_symlink_is_not_followed(tmp_path, ctx):
    target = write_jpeg(tmp_path / "elsewhere" / "t.jpg")
    link = tmp_path / "c" / "plain" / "l.jpg"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    o = archive_file(link, ctx)
    assert o.state == SKIPPED and target.exists() and link.is_symlink()


def test_diffusion_codec_unavailable_falls_back_to_lossless(tmp_path, ctx):
    from archiver.errors import UsageError

    def no_weights(*a, **k):
        raise UsageError("the embedded tiny backbone is not available in this build")

    ctx.codecs.get("diffusion").encode = no_weights
    src = write_jpeg(tmp_path / "c" / "tex" / "a.jpg")
    orig = src.read_bytes()
    o = archive_file(src, ctx)
    assert o.state == COMMITTED and o.action == "lossless" and "unavailable" in o.fallback
    assert lossless.restore(Path(o.compressed_path).read_bytes()) == orig


def test_decompression_bomb_is_skipped(tmp_path, ctx):
    src = write_jpeg(tmp_path / "c" / "plain" / "big.jpg")
    orig = src.read_bytes()
    ctx.max_pixels = 1000  # the image has 19200 pixels: over the limit counts as a bomb
    o = archive_file(src, ctx)
    assert o.state == SKIPPED and "bomb" in o.error and src.read_bytes() == orig


@pytest.mark.parametrize("where", ["encode", "decode"])
def test_codec_crash_falls_back_to_lossless(tmp_path, ctx, where):
    def boom(*a, **k):
        raise RuntimeError("simulated bug in the codec")

    setattr(ctx.codecs.get("diffusion"), where, boom)
    src = write_jpeg(tmp_path / "c" / "tex" / "a.jpg")
    orig = src.read_bytes()
    o = archive_file(src, ctx)
    assert o.state == COMMITTED and o.action == "lossless" and "simulated bug" in o.fallback
    assert lossless.restore(Path(o.compressed_path).read_bytes()) == orig
    assert sorted(p.name for p in src.parent.iterdir()) == ["a.jpg.jxl"]

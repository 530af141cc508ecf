"""A lost compressed file whose original the vault still holds: verify says so, forget refuses,
restore gets it from the vault (also after a forget), and vault expiry keeps and reports it."""

import datetime as dt
from pathlib import Path

from archiver.catalog import queries as q
from archiver.catalog.models import FileVersion
from archiver.testing.catalog import make_context, write_jpeg
from archiver.work import archive_file
from archiver.work.forget import forget
from archiver.work.restore import restore
from archiver.work.verify import expire_vault, verify

T0 = dt.datetime(2026, 1, 1)
LATER = dt.datetime(2027, 1, 1)  # past the test policy's 3 days of retention


def _lost(tmp_path):
    """One vaulted file archived, its original replaced, then its compressed file moved away."""
    ctx = make_context(tmp_path / "state", now=lambda: T0)
    src = write_jpeg(tmp_path / "c" / "vault" / "a.jpg", seed=3)
    orig = src.read_bytes()
    o = archive_file(src, ctx)
    assert not src.exists() and Path(o.compressed_path).is_file()
    Path(o.compressed_path).rename(tmp_path / "elsewhere.jxl")
    return ctx, src, orig, o


def _row(ctx, src) -> FileVersion:
    with ctx.catalog.session() as s:
        return q.latest_version(s, str(src))


def test_verify_says_the_original_is_still_in_the_vault_and_how_to_restore_it(tmp_path):
    ctx, src, _, _ = _lost(tmp_path)
    (m,) = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs, now=T0).mismatches
    assert "missing" in m["problem"]
    assert m["rescue"]["where"] == "vault" and m["rescue"]["command"] == f"archiver restore {src}"
    assert m["rescue"]["until"].startswith("2026-01-04") and "still in the vault" in m["rescue"]["line"]
    ctx.catalog.close()


def test_forget_refuses_while_the_vault_holds_the_original_then_allows_it_once_restored(tmp_path):
    ctx, src, orig, _ = _lost(tmp_path)
    (r,) = forget(ctx.catalog, [str(src)], vault=ctx.vault, reason="disk failed")
    assert r.status == "refused" and r.command == f"archiver restore {src}" and "--ignore-vault" in r.message
    assert _row(ctx, src).state == "committed"
    (res,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs)
    assert res.status == "restored" and res.source == "vault" and src.read_bytes() == orig
    assert "restored from the vault: compressed file missing" in res.message and "only copy" in res.message
    (r,) = forget(ctx.catalog, [str(src)], vault=ctx.vault, reason="disk failed")  # the original is back on disk
    assert r.status == "forgotten"
    ctx.catalog.close()


def test_forget_with_ignore_vault_releases_the_vault_copy_to_expire(tmp_path):
    ctx, src, orig, o = _lost(tmp_path)
    (r,) = forget(ctx.catalog, [str(src)], vault=ctx.vault, ignore_vault=True)
    assert r.status == "forgotten" and "deleted when its retention ends (2026-01-04)" in r.message
    (res,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs)  # before expiry: still there
    assert res.source == "vault" and "forgotten" in res.message and src.read_bytes() == orig
    src.unlink()
    exp = expire_vault(ctx.catalog, ctx.vault, now=LATER)
    assert exp.gone == [_row(ctx, src).sha256] and exp.held == []  # released on purpose: it goes, and the row says so
    row = _row(ctx, src)
    assert row.state == "forgotten" and row.vault_path is None
    ctx.catalog.close()


def test_vault_expiry_keeps_and_reports_the_original_of_a_lost_file(tmp_path):
    ctx, src, orig, o = _lost(tmp_path)
    exp = expire_vault(ctx.catalog, ctx.vault, now=LATER)
    (h,) = exp.held
    assert exp.gone == [] and h["path"] == str(src) and h["expired_on"] == "2026-01-04" and "only copy" in h["why"]
    (m,) = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs, now=LATER).mismatches
    assert "retention ended on 2026-01-04" in m["rescue"]["line"]
    ctx.catalog.close()


def test_a_forgotten_version_keeps_its_vault_copy_and_restore_still_finds_it(tmp_path):
    """A version forgotten without ``--ignore-vault`` (e.g. by an earlier archiver) whose original is
    nowhere else: expiry keeps the vault copy (and says so), restore gets it back by path or id."""
    ctx, src, orig, o = _lost(tmp_path)
    with ctx.catalog.session() as s:
        q.transition(s, q.latest_version(s, str(src)), "forgotten", kind="forgotten")
    exp = expire_vault(ctx.catalog, ctx.vault, now=LATER)
    assert exp.gone == [] and [h["id"] for h in exp.held] == [o.file_id] and "forgotten" in exp.held[0]["why"]
    assert ctx.vault.check(_row(ctx, src).sha256)
    (res,) = restore(ctx.catalog, [str(o.file_id)], vault=ctx.vault, codecs=ctx.codecs)
    assert res.status == "restored" and res.source == "vault" and src.read_bytes() == orig
    assert _row(ctx, src).state == "forgotten"  # it stays forgotten; the file back is a new version to archive
    again = archive_file(src, ctx)
    assert again.file_id != o.file_id and _row(ctx, src).state == "committed"
    ctx.catalog.close()


def test_a_forgotten_versions_kept_vault_copy_can_be_let_go_with_ignore_vault(tmp_path):
    ctx, src, _, o = _lost(tmp_path)
    with ctx.catalog.session() as s:
        q.transition(s, q.latest_version(s, str(src)), "forgotten", kind="forgotten")
    assert "forget" in expire_vault(ctx.catalog, ctx.vault, now=LATER).held[0]["why"]  # says how to let it go
    (r,) = forget(ctx.catalog, [str(o.file_id)], vault=ctx.vault, ignore_vault=True)
    assert r.status == "released" and "2026-01-04" in r.message
    exp = expire_vault(ctx.catalog, ctx.vault, now=LATER)
    assert exp.held == [] and len(exp.gone) == 1 and _row(ctx, src).vault_path is None
    ctx.catalog.close()


def test_a_version_forgotten_with_force_while_intact_does_not_hold_its_vault_copy(tmp_path):
    ctx = make_context(tmp_path / "state", now=lambda: T0)
    src = write_jpeg(tmp_path / "c" / "vault" / "a.jpg", seed=3)
    archive_file(src, ctx)
    (r,) = forget(ctx.catalog, [str(src)], vault=ctx.vault, force=True)
    assert r.status == "forgotten"
    exp = expire_vault(ctx.catalog, ctx.vault, now=LATER)  # its compressed file still holds: not the last copy
    assert exp.held == [] and len(exp.gone) == 1
    ctx.catalog.close()


def test_restore_leaves_out_a_forgotten_version_whose_vault_copy_is_gone(tmp_path):
    ctx, src, _, o = _lost(tmp_path)
    write_jpeg(tmp_path / "c" / "vault" / "b.jpg", seed=4)
    archive_file(tmp_path / "c" / "vault" / "b.jpg", ctx)
    with ctx.catalog.session() as s:
        q.transition(s, q.latest_version(s, str(src)), "forgotten", kind="forgotten")
    p = ctx.vault.object_path(_row(ctx, src).sha256)
    p.chmod(0o644)
    p.write_bytes(b"gone bad")
    res = restore(ctx.catalog, [str(tmp_path / "c" / "vault")], vault=ctx.vault, codecs=ctx.codecs, to=tmp_path / "out")
    assert [(Path(r.path).name, r.status) for r in res] == [("b.jpg", "restored")]
    ctx.catalog.close()

"""The operator's view after a real migration: disk accounting, reasons, ls/show/status, forget,
counts on a rerun, skipped files listed, progress lines without a terminal, free-space refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.testing.catalog import make_policy, write_jpeg

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """A small collection migrated with the path-driven test policy: lossless+vault, lossless+
    replace, a forced fallback (strict/), a kept file and a truncated JPEG."""
    t = tmp_path_factory.mktemp("ops")
    photos = t / "photos"
    for i in range(3):
        write_jpeg(photos / "vault" / f"v{i}.jpg", seed=i)
    write_jpeg(photos / "plain" / "p.jpg", seed=5)
    write_jpeg(photos / "strict" / "s.jpg", seed=6)
    write_jpeg(photos / "keep" / "k.jpg", seed=7)
    good = (photos / "plain" / "p.jpg").read_bytes()
    (photos / "plain" / "broken.jpg").write_bytes(good[: len(good) // 2])
    cfg = t / "cfg.yaml"
    make_policy(t / "p.yaml")
    cfg.write_text(f"catalog_url: sqlite:///{t / 'cat.sqlite'}\nvault_dir: {t / 'vault'}\npolicy: {t / 'p.yaml'}\n")
    env = dict(os.environ, ARCHIVER_HOME=str(t / "home"), PYTHONPATH=str(ROOT))

    def run(*a, check=True):
        r = subprocess.run([sys.executable, "-m", "archiver", *map(str, a), "--config", str(cfg)],
                           capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
        if check:
            assert "Traceback" not in r.stderr, r.stderr
        return r

    first = run("migrate", photos, "--workers", "1", "--executor", "thread")
    return {"t": t, "photos": photos, "run": run, "first": first, "cfg": cfg}


def test_migrate_reports_reasons_skipped_files_and_progress_lines(migrated):
    r = migrated["first"]
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fell back (1): diffusion: quality guard" in r.stdout and "strict/s.jpg" in r.stdout  # which codec, and why
    assert "1 skipped" in r.stdout and "broken.jpg" in r.stdout
    assert "archiving: " in r.stderr and "/min" in r.stderr  # progress lines although stderr is a pipe


def test_rerun_counts_every_file_handled_before(migrated):
    r = migrated["run"]("migrate", migrated["photos"], "--json", "--executor", "thread")
    rep = json.loads(r.stdout)
    assert rep["files"] == 0 and rep["already_archived"] == 7  # replaced originals included


def test_stats_splits_disk_use_and_counts_fallbacks_per_reason(migrated):
    d = json.loads(migrated["run"]("stats", "--json").stdout)
    now = d["now"]
    assert d["bytes_before"] > 0 and now["vault"] > 0 and now["catalog"] > 0 and now["outputs"] > 0
    assert d["bytes_now"] == now["outputs"] + now["vault"] + now["catalog"]
    (fb,) = d["by_fallback_reason"]
    assert fb["files"] == 1 and fb["rules"] == ["strict"] and "quality guard" in fb["reason"]
    human = migrated["run"]("stats").stdout
    assert "before: " in human and "on disk" in human and "vault" in human and "catalog" in human and "fell back (1 file(s)" in human


def test_ls_filters_and_show(migrated):
    run, photos = migrated["run"], migrated["photos"]
    d = json.loads(run("ls", "--status", "skipped", "--json").stdout)
    assert [e["path"] for e in d["entries"]] == [str(photos / "plain" / "broken.jpg")] and d["entries"][0]["error"]
    d = json.loads(run("ls", str(photos / "vault" / "*"), "--json").stdout)
    assert len(d["entries"]) == 3 and {e["rule"] for e in d["entries"]} == {"vaulted"}
    assert len(json.loads(run("ls", "--rule", "keepers", "--json").stdout)["entries"]) == 1
    assert json.loads(run("ls", str(photos / "*"), "--json").stdout)["entries"] == []  # '*' stays in photos/
    r = run("show", photos / "strict" / "s.jpg")
    assert r.returncode == 0 and "fell back: diffusion: quality guard" in r.stdout and "committed" in r.stdout
    v = json.loads(run("show", photos / "strict" / "s.jpg", "--json").stdout)["versions"][-1]
    assert v["fallback"] and any(e["kind"] == "fallback" for e in v["events"])
    r = run("show", "/nowhere/x.jpg", check=False)
    assert r.returncode == 11


def test_status_without_a_daemon(migrated):
    d = json.loads(migrated["run"]("status", "--json").stdout)
    assert d["daemon"]["running"] is False and d["rates"]["last_day"]["files"] >= 5
    assert any("broken.jpg" in e["path"] for e in d["last_errors"])


def test_forget_a_lost_output_makes_verify_pass_again(migrated):
    run, photos = migrated["run"], migrated["photos"]
    lost = photos / "plain" / "p.jpg"
    d = json.loads(run("show", lost, "--json").stdout)["versions"][-1]
    Path(d["compressed_path"]).unlink()  # the output is lost; the original was replaced
    assert run("verify", "--no-decode").returncode == 8
    r = run("forget", photos / "vault" / "v0.jpg", check=False)
    assert r.returncode == 9 and "intact" in r.stdout  # a healthy entry is not forgotten by accident
    r = run("forget", lost, "--reason", "disk failure", "--json")
    (res,) = json.loads(r.stdout)["results"]
    assert res["status"] == "forgotten" and any("missing" in p for p in res["problems"])
    assert run("verify", "--no-decode").returncode == 0
    v = json.loads(run("show", lost, "--json").stdout)["versions"][-1]  # kept for audit
    assert v["state"] == "forgotten" and v["sha256"] and any(e["kind"] == "forgotten_because" and
                                                             e["detail"]["reason"] == "disk failure" for e in v["events"])
    assert str(lost) not in run("ls").stdout
    assert run("restore", lost, check=False).returncode == 11


def test_migrate_refuses_to_start_without_free_space(migrated, tmp_path):
    cfg = migrated["cfg"]
    text = cfg.read_text()
    cfg.write_text(text + f"min_free_bytes: {1 << 62}\n")
    try:
        write_jpeg(migrated["photos"] / "plain" / "new.jpg", seed=9)
        r = migrated["run"]("migrate", migrated["photos"], "--executor", "thread", check=False)
        assert r.returncode == 13 and "not enough free disk space" in r.stderr and "Traceback" not in r.stderr
        assert (migrated["photos"] / "plain" / "new.jpg").exists()
    finally:
        cfg.write_text(text)


def test_the_daemon_expires_the_vault_and_pauses_on_low_space(tmp_path):
    """Housekeeping, without the daemon's loop: vaulted originals past retention go, and a nearly
    full disk stops the claiming of new work until space is back."""
    import datetime as dt

    from archiver.catalog.models import FileVersion
    from archiver.testing.catalog import make_context
    from archiver.config import Config
    from archiver.service.daemon import Daemon
    from archiver.work import archive_file

    ctx = make_context(tmp_path / "state")
    src = write_jpeg(tmp_path / "c" / "vault" / "a.jpg")
    archive_file(src, ctx)
    with ctx.catalog.session() as s:
        vp = s.query(FileVersion).one().vault_path
    assert Path(vp).is_file()
    cfg = Config(catalog_url=ctx.catalog.url, vault_dir=str(tmp_path / "state" / "vault"))
    d = Daemon(config=cfg)
    d.catalog = ctx.catalog
    d._expire_vault()
    assert Path(vp).is_file()  # within its retention period (3 days): kept
    d._expire_vault(now=dt.datetime.now() + dt.timedelta(days=4))
    assert not Path(vp).exists()
    with ctx.catalog.session() as s:
        assert s.query(FileVersion).one().vault_path is None
    d.cfg.min_free_bytes = 1 << 62
    d._check_space()
    assert d.space_problems and "free of" in d.space_problems[0]
    d.cfg.min_free_bytes = 0
    d._check_space()
    assert d.space_problems == []
    ctx.catalog.close()

"""The documented lost-file workflow (docs/operations.md), through the CLI as a user runs it: an
archived file's compressed copy disappears while the vault still holds its original."""

from __future__ import annotations

import json
import os
from pathlib import Path

from archiver.testing.catalog import make_policy, write_jpeg
from test_service_helpers import archiver_in_subprocess

ROOT = Path(__file__).resolve().parent.parent


def test_a_lost_compressed_file_is_restored_from_the_vault_before_it_can_be_forgotten(tmp_path):
    photos = tmp_path / "photos"
    src = write_jpeg(photos / "vault" / "v0.jpg", seed=1)  # the test policy: lossless, original vaulted 3 days
    write_jpeg(photos / "vault" / "v1.jpg", seed=2)
    orig = src.read_bytes()
    cfg = tmp_path / "cfg.yaml"
    make_policy(tmp_path / "p.yaml")
    cfg.write_text(f"catalog_url: sqlite:///{tmp_path / 'cat.sqlite'}\nvault_dir: {tmp_path / 'vault'}\n"
                   f"policy: {tmp_path / 'p.yaml'}\n")
    env = dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))

    run = archiver_in_subprocess(cfg, env)

    assert run("migrate", photos, "--workers", "1", "--executor", "thread").returncode == 0
    art = Path(str(src) + ".jxl")
    assert not src.exists() and art.is_file()
    art.rename(tmp_path / "moved-away.jxl")  # the user moves one archived file away

    r = run("verify")  # it says where the original still is, and the command that gets it back
    assert r.returncode == 8 and "compressed file missing" in r.stdout
    assert "the original is still in the vault" in r.stdout and f"`archiver restore {src}`" in r.stdout
    (m,) = json.loads(run("verify", "--json").stdout)["mismatches"]
    assert m["rescue"]["where"] == "vault" and m["rescue"]["command"] == f"archiver restore {src}"

    r = run("forget", src, "--reason", "disk failed")  # the trap: refused, one line, with the way out
    assert r.returncode == 9 and len(r.stdout.strip().splitlines()) == 1
    assert f"restore it with `archiver restore {src}`" in r.stdout and "--ignore-vault" in r.stdout

    r = run("restore", src)
    assert r.returncode == 0 and "[vault, bytes]" in r.stdout and "restored from the vault" in r.stdout
    assert src.read_bytes() == orig

    r = run("verify")  # the file is back; the lost compressed copy is still a finding, with the next step
    assert r.returncode == 8 and "the original is intact at its path" in r.stdout
    r = run("forget", src, "--reason", "disk failed")
    assert r.returncode == 0 and r.stdout.startswith("forgotten")
    assert run("verify").returncode == 0

    r = run("migrate", photos, "--workers", "1", "--executor", "thread", "--json")  # archived again
    assert r.returncode == 0 and json.loads(r.stdout)["files"] == 1 and art.is_file()
    assert run("verify").returncode == 0
    src.unlink(missing_ok=True)
    r = run("restore", src)
    assert r.returncode == 0 and src.read_bytes() == orig

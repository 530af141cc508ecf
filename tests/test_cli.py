"""The command line as an operator meets it: the same options everywhere, config lookup, exit
codes that scripts can tell apart and that the README documents."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from PIL import Image

from archiver import errors
from archiver.app.main import main
from archiver.config import load_config, search_paths

ROOT = Path(__file__).resolve().parent.parent


def leaf_commands():
    ctx = click.Context(main)
    for name in main.list_commands(ctx):  # the entry points' commands too (archiver train)
        cmd = main.get_command(ctx, name)
        if cmd is None:
            continue
        stack = [(name, cmd)]
        while stack:
            n, c = stack.pop()
            if isinstance(c, click.Group):
                stack.extend((f"{n} {k}", v) for k, v in c.commands.items())
            else:
                yield n, c


def run(*args, env=None, cwd=None):
    e = dict(os.environ, PYTHONPATH=str(ROOT))
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "archiver", *args], capture_output=True, text=True, env=e,
                          cwd=cwd, timeout=300)


def test_every_command_has_config_verbose_and_json():
    names = list(leaf_commands())
    assert len(names) >= 14
    for name, cmd in names:
        opts = {o for p in cmd.params for o in getattr(p, "opts", ())}
        assert {"--config", "-v", "--verbose"} <= opts, name
        if name not in ("train",):  # train writes files and logs; its summary is the exported weights
            assert "--json" in opts, name


def test_exit_codes_are_distinct_and_documented():
    """Unrelated errors never share a code; a subclass may keep its parent's (a finer kind of the
    same failure, e.g. NoCatalogError is a CatalogError: exit 7)."""
    codes = {}
    for cls in vars(errors).values():
        if isinstance(cls, type) and issubclass(cls, errors.ArchiverError) and cls is not errors.ArchiverError:
            if cls.exit_code in codes:
                assert issubclass(cls, codes[cls.exit_code]), (cls, codes.get(cls.exit_code))
                continue
            codes[cls.exit_code] = cls
    assert errors.NotInCatalogError.exit_code != errors.LockedError.exit_code
    readme = (ROOT / "README.md").read_text()
    ops = (ROOT / "docs" / "operations.md").read_text()
    for code in codes:
        row = re.compile(rf"^\|\s*{code}\s*\|", re.MULTILINE)
        assert row.search(readme), f"exit code {code} missing from README's table"
        assert row.search(ops), f"exit code {code} missing from docs/operations.md"


def test_xdg_config_home_and_dirs_are_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ARCHIVER_CONFIG", raising=False)
    home, dirs = tmp_path / "xdg-home", tmp_path / "xdg-dirs"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(dirs))
    assert search_paths()[1:3] == [home / "archiver" / "config.yaml", dirs / "archiver" / "config.yaml"]
    (dirs / "archiver").mkdir(parents=True)
    (dirs / "archiver" / "config.yaml").write_text("workers: 3\n")
    cfg = load_config()
    assert cfg.workers == 3 and cfg.source == dirs / "archiver" / "config.yaml"
    (home / "archiver").mkdir(parents=True)
    (home / "archiver" / "config.yaml").write_text("workers: 5\n")
    assert load_config().workers == 5  # the user's file wins over the system-wide one


def test_a_named_config_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHIVER_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(errors.UsageError, match="ARCHIVER_CONFIG"):
        load_config()
    r = run("decode", "x.dlc", "y.png", "--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and r.stderr.strip().endswith("config file not found")
    assert "Traceback" not in r.stderr


def test_config_option_reaches_commands_that_did_not_have_it(tmp_path):
    """`classify --config` takes the config's policy; `-v` turns on debug logging."""
    img = tmp_path / "evidence-free.png"
    Image.new("RGB", (64, 64), (120, 130, 140)).save(img)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("policy: evidence\n")
    r = run("classify", str(img), "--json", "--config", str(cfg), "-v")
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads(r.stdout)["policy"] == "evidence"
    r = run("classify", str(img), "--json")
    assert json.loads(r.stdout)["policy"] == "default"

"""Configuration is validated against a schema: every problem is one line naming its key, exit 2,
never a traceback, never a silent default (issue 11 #11-13)."""

import os
import subprocess
import sys

import pytest

from archiver.config import load_config
from archiver.errors import UsageError


def _cfg(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,expect", [
    ("roots: /srv/photos\n", "roots: must be a list"),  # #11: read character by character, watched /
    ("poll_roots: /mnt/nas\n", "poll_roots: must be a list"),
    ("workers: two\n", "workers: must be a number from 1 to 256 or 'auto'"),  # #12
    ("workers: 2.5\n", "workers: must be a number from 1 to 256 or 'auto' (got 2.5)"),
    ("workers: true\n", "workers: must be a number from 1 to 256 or 'auto' (got True)"),
    ("metrics_port: 99999\n", "metrics_port: must be between 0 and 65535"),  # #12
    ("workers: 0\n", "workers: must be between 1 and 256"),
    ("settle_seconds: -3\n", "settle_seconds: must be at least 0"),
    ("decode_steps: 4.5\n", "decode_steps: input should be a valid integer"),
    ("roots: [photos]\n", "roots[0]: must be an absolute path"),
    ("roots: [/no/such/dir/anywhere]\n", "roots[0]: no such directory, nor its parent"),
    ("vault_dir: relative/vault\n", "vault_dir: must be an absolute path"),
    ("device: gpu\n", "device: must be one of"),
    ("backbone: [tiny]\n", "backbone: input should be a valid string"),
])
def test_bad_settings_are_one_clear_line_with_the_key(tmp_path, text, expect):
    with pytest.raises(UsageError) as e:
        load_config(_cfg(tmp_path, text))
    assert expect in str(e.value) and str(e.value).count("\n") == 0


def test_several_problems_are_several_lines(tmp_path):
    with pytest.raises(UsageError) as e:
        load_config(_cfg(tmp_path, "workers: 0\nmetrics_port: -1\nroots: /x\n"))
    lines = str(e.value).splitlines()
    assert len(lines) == 3 and all(str(tmp_path / "cfg.yaml") in line for line in lines)


def test_a_root_that_is_a_file_is_refused_and_a_missing_one_is_not(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match=r"roots\[0\]: not a directory"):
        load_config(_cfg(tmp_path, f"roots: [{tmp_path / 'f'}]\n"))
    assert load_config(_cfg(tmp_path, f"roots: [{tmp_path / 'unmounted'}]\n")).roots  # paused by the daemon


def test_a_good_config_loads(tmp_path):
    cfg = load_config(_cfg(tmp_path, f"roots: [{tmp_path}]\nworkers: 2\nsettle_seconds: 3\nmetrics_port: 9100\n"))
    assert cfg.roots == [str(tmp_path)] and cfg.workers == 2 and cfg.settle_seconds == 3


def test_workers_auto_is_one_per_core_within_memory(tmp_path, monkeypatch):
    """``workers: auto`` (the default) becomes a number when loaded: the usable cores, but no more
    workers than 3/4 of the memory holds at ``WORKER_BYTES`` each, and at least one."""
    from archiver import config as c

    assert c.auto_workers(cores=8, memory=64 << 30) == 8
    assert c.auto_workers(cores=8, memory=3 * c.WORKER_BYTES + 1) == 3
    assert c.auto_workers(cores=8, memory=c.WORKER_BYTES // 2) == 1
    assert c.auto_workers(cores=1, memory=64 << 30) == 1
    monkeypatch.setattr(c, "usable_cores", lambda: 6)
    monkeypatch.setattr(c, "memory_for_workers", lambda: 64 << 30)
    assert load_config(_cfg(tmp_path, "workers: auto\n")).workers == 6
    assert load_config(_cfg(tmp_path, "policy: default\n")).workers == 6  # the default is auto
    assert load_config(_cfg(tmp_path, "workers: 3\n")).workers == 3
    assert load_config(_cfg(tmp_path, "workers: 3\n"), workers="auto").workers == 6  # --workers auto
    monkeypatch.setattr(c, "memory_for_workers", lambda: 2 * c.WORKER_BYTES)
    assert load_config(_cfg(tmp_path, "workers: auto\n")).workers == 2


def test_the_memory_for_workers_is_three_quarters_of_the_machine_or_its_cgroup(monkeypatch, tmp_path):
    """Total memory (not free: a daemon's reload must not shrink its pool because its own workers
    hold memory), or a container's lower cgroup limit, of which 3/4 goes to workers."""
    from pathlib import Path

    from archiver import config as c

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16777216 kB\nMemFree:         1024 kB\nMemAvailable:    2048 kB\n")
    cgroup = tmp_path / "memory.max"
    real_open, real_read = open, Path.read_text
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: real_open(meminfo if f == "/proc/meminfo" else f, *a, **k))

    def read_text(self, *a, **k):
        if str(self) == "/sys/fs/cgroup/memory.max":
            if not cgroup.exists():
                raise FileNotFoundError(self)
            return real_read(cgroup)
        if str(self).startswith("/sys/fs/cgroup/"):
            raise FileNotFoundError(self)
        return real_read(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", read_text)
    assert c.memory_for_workers() == (16 << 30) * 3 // 4  # MemTotal, not MemAvailable
    cgroup.write_text("max\n")
    assert c.memory_for_workers() == (16 << 30) * 3 // 4
    cgroup.write_text(f"{4 << 30}\n")
    assert c.memory_for_workers() == (4 << 30) * 3 // 4
    assert c.auto_workers(cores=8) == 2  # 3 GiB at 1.5 GiB each


def test_missing_archiver_config_is_an_error_not_the_defaults(tmp_path, monkeypatch):
    """#13: ARCHIVER_CONFIG naming a missing file silently fell back to the defaults."""
    monkeypatch.setenv("ARCHIVER_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(UsageError, match=r"nope.yaml: config file not found \(named by \$ARCHIVER_CONFIG\)"):
        load_config()


@pytest.mark.parametrize("text,code", [("roots: /srv/photos\n", 2), ("workers: two\n", 2), ("metrics_port: 99999\n", 2)])
def test_cli_gives_exit_2_and_no_traceback(tmp_path, text, code):
    cfg = _cfg(tmp_path, text)
    for args in (["daemon", "--config", str(cfg)], ["migrate", str(tmp_path), "--dry-run", "--config", str(cfg)]):
        r = subprocess.run([sys.executable, "-m", "archiver", *args], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home")))
        assert r.returncode == code and "Traceback" not in r.stderr and "error:" in r.stderr, (args, r.stderr)


@pytest.mark.parametrize("value,ok", [("0", False), ("257", False), ("two", False), ("auto", True), ("1", True)])
def test_migrate_workers_option_takes_a_number_or_auto(tmp_path, value, ok):
    """``--workers`` is a number from 1 to 256 or ``auto``; anything else is one line and exit 2."""
    r = subprocess.run([sys.executable, "-m", "archiver", "migrate", str(tmp_path), "--dry-run", "--json", "--workers", value],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home")))
    assert "Traceback" not in r.stderr
    if ok:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == 2 and "Invalid value for '--workers'" in r.stderr and value in r.stderr

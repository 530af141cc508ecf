"""The shipped systemd unit, and what it promises: files keep their owners under a service user,
and the open-writer check sees other users' writers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "systemd" / "archiver.service"
SETPRIV = shutil.which("setpriv")
as_root_with_setpriv = pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None,
                                          reason="needs root and setpriv to act as a service user")


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_the_docs_show_the_shipped_unit():
    assert UNIT.read_text() in (ROOT / "docs" / "operations.md").read_text()


def test_hardening_and_least_privilege():
    d = directives()
    for key in ("ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
                "NoNewPrivileges", "PrivateTmp", "PrivateDevices", "RestrictNamespaces"):
        assert d[key] == ["yes"], key
    assert d["ProtectSystem"] == ["strict"]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert set(d["CapabilityBoundingSet"][0].split()) == {"CAP_CHOWN", "CAP_FOWNER", "CAP_SYS_PTRACE"}
    assert d["AmbientCapabilities"] == d["CapabilityBoundingSet"]
    assert "@system-service" in d["SystemCallFilter"] and any("@debug" in f for f in d["SystemCallFilter"])
    assert d["MemoryMax"] and d["User"] == ["archiver"]
    assert d["Environment"] and "ARCHIVER_HOME=/var/lib/archiver" in d["Environment"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    """`systemd-analyze verify` on the unit, with ExecStart pointing at an archiver that exists here.
    It exits 0 even on unknown keys, so any output at all is a failure."""
    exe = shutil.which("archiver") or sys.executable
    text = UNIT.read_text().replace("/opt/archiver/venv/bin/archiver", exe)
    f = tmp_path / "archiver.service"
    f.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(f)], capture_output=True, text=True, timeout=120)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if str(f) in ln or "Unknown" in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def as_service_user(code: str, caps: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run Python as uid/gid 65534 with the given ambient capabilities (plus reading our install)."""
    caps = ",".join(["+dac_read_search"] + [f"+{c}" for c in caps.split(",") if c])
    return subprocess.run([SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups", f"--inh-caps={caps}",
                           f"--ambient-caps={caps}", sys.executable, "-c", code],
                          capture_output=True, text=True, cwd=cwd, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


@as_root_with_setpriv
def test_written_files_keep_the_original_owner_under_a_service_user(tmp_path):
    tmp_path.chmod(0o777)
    code = ("from archiver.storage import atomic; import os, sys; "
            "atomic.write_bytes(sys.argv[1] if len(sys.argv) > 1 else 'f', b'x', mode=0o640, owner=(1234, 4321)); "
            "st = os.stat('f'); print(st.st_uid, st.st_gid, oct(st.st_mode & 0o7777))")
    r = as_service_user(code, "chown,fowner", tmp_path)
    assert r.stdout.split() == ["1234", "4321", "0o640"], r.stderr
    os.unlink(tmp_path / "f")
    r = as_service_user(code, "", tmp_path)  # without the unit's capabilities: ours, and said once
    assert r.stdout.split() == ["65534", "65534", "0o640"], r.stderr
    assert "cannot give written files their original owner" in r.stderr


@as_root_with_setpriv
def test_open_writer_check_sees_other_users_with_cap_sys_ptrace(tmp_path):
    target = tmp_path / "being-written.jpg"
    writer = subprocess.Popen([sys.executable, "-c", f"f = open({str(target)!r}, 'wb'); import time; time.sleep(60)"])
    try:
        import time

        for _ in range(100):
            if target.exists():
                break
            time.sleep(0.1)
        code = ("from archiver.service.settle import open_for_writing, writer_visibility; "
                f"print(sorted(open_for_writing([{str(target)!r}])), '|', writer_visibility())")
        r = as_service_user(code, "sys_ptrace", tmp_path)
        seen, hidden_with = r.stdout.split("|")
        assert seen.strip() == f"[{str(target)!r}]", r.stderr
        r = as_service_user(code, "", tmp_path)  # blind to root's writer, and says so
        seen, hidden_without = r.stdout.split("|")
        assert seen.strip() == "[]" and "cannot see the open files of" in r.stderr
        # with the capability only processes in other user namespaces (sandboxes) may stay hidden
        assert int(hidden_with) < int(hidden_without)
    finally:
        writer.kill()
        writer.wait()

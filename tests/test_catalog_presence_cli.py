"""Only ``archive``, ``migrate`` and ``daemon`` create a catalog, and only where none ever
existed (F2), through real ``python -m archiver`` processes.

A catalog that existed (its marker ``catalog.sqlite.created`` says so) and is now missing, empty
or zeroed is exit 7 for every command, with one line saying to restore it from the backup, and
nothing is created over it. Before, ``ls``, ``status``, ``show``, ``tag``, ``forget``, ``serve``
and ``migrate`` made a new empty catalog, after which ``verify`` reported "clean, 0 checked".

(Only the archiver's commands and test helpers that every version has are used here, so the
same tests run against the code before the fix, and fail there.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from archiver.testing.catalog import make_policy, write_jpeg

ROOT = Path(__file__).resolve().parent.parent
CATALOG = "catalog.sqlite"
MARKER = CATALOG + ".created"


def _catalog_files(home: Path) -> dict[str, bytes]:
    """The catalog, its WAL files and its marker, as they are on disk."""
    names = (CATALOG, CATALOG + "-wal", CATALOG + "-shm", MARKER)
    return {n: (home / n).read_bytes() for n in names if (home / n).exists()}


def _env(tmp_path: Path, home: Path) -> dict:
    env = dict(os.environ, ARCHIVER_HOME=str(home), HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               XDG_CONFIG_DIRS=str(tmp_path / "xdg-dirs"), PYTHONPATH=str(ROOT))
    env.pop("ARCHIVER_CONFIG", None)  # only ARCHIVER_HOME says where the catalog is
    return env


def _run(args, env, cwd, timeout=120):
    try:
        return subprocess.run([sys.executable, "-m", "archiver", *map(str, args)], capture_output=True, text=True,
                              env=env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:  # serve / daemon running on a new catalog: the bug
        return subprocess.CompletedProcess(e.cmd, -1, e.stdout or "", f"still running after {timeout} s")


@pytest.fixture(scope="module")
def used_home(tmp_path_factory):
    """A home where one file was archived (``archive`` made the catalog), and the archived file."""
    t = tmp_path_factory.mktemp("used")
    make_policy(t / "p.yaml")
    src = write_jpeg(t / "photos" / "plain" / "a.jpg")
    r = _run(["archive", t / "photos", "--policy", t / "p.yaml"], _env(t, t / "home"), t, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (t / "home" / CATALOG).is_file()
    return t / "home", src


#: commands that only read or change what is there: never create a catalog
READERS = {
    "ls": ["ls"], "ls --json": ["ls", "--json"], "status": ["status"], "show": ["show", "{archived}"],
    "tag": ["tag", "{archived}", "--add", "legal-hold"], "forget": ["forget", "{archived}", "--force"],
    "serve": ["serve", "--port", "0"], "verify": ["verify"],
}
#: commands that create a catalog on a fresh home, never over one that existed
CREATORS = {
    "archive": ["archive", "{photos}"], "archive --dry-run": ["archive", "--dry-run", "{photos}"],
    "migrate": ["migrate", "{photos}", "--executor", "thread"],
    "migrate --dry-run": ["migrate", "{photos}", "--dry-run", "--executor", "thread"],
    "daemon": ["daemon", "--executor", "thread"],
}


def _lost_home(used: Path, t: Path, harm: str, marker: bool) -> Path:
    """A copy of ``used`` whose catalog is then lost as ``harm`` says (``fresh``: no home at all)."""
    home = t / "home"
    if harm == "fresh":
        return home
    shutil.copytree(used, home)
    for n in (CATALOG, CATALOG + "-wal", CATALOG + "-shm"):
        (home / n).unlink(missing_ok=True)
    if not marker:
        (home / MARKER).unlink(missing_ok=True)
    if harm == "0-byte":
        (home / CATALOG).write_bytes(b"")
    elif harm == "zeroed":
        (home / CATALOG).write_bytes(bytes(8192))
    return home


def _refusal_problem(name, r, home, before, harm) -> str | None:
    """What is wrong with how ``name`` handled the lost catalog (None: exit 7, one line that names
    the catalog and says what to do, the catalog's files as they were)."""
    line = [ln for ln in r.stderr.splitlines() if ln.strip()]
    if r.returncode != 7:
        return f"{name}: exit {r.returncode}: {r.stderr.strip()[-300:]}"
    if len(line) != 1 or "Traceback" in r.stderr:
        return f"{name}: not one line: {r.stderr[-500:]}"
    if str(home / CATALOG) not in line[0]:
        return f"{name}: does not name the catalog: {line[0]}"
    if harm != "fresh" and "restore it from your backup" not in line[0]:
        return f"{name}: does not say to restore the backup: {line[0]}"
    if MARKER in before and not ("was created on" in line[0] and "will not start a new one" in line[0]):
        return f"{name}: does not say the catalog existed: {line[0]}"
    if name.endswith("--json") and json.loads(r.stdout).get("exit_code") != 7:
        return f"{name}: no error in the JSON: {r.stdout}"
    after = _catalog_files(home)
    if after != before:
        return f"{name}: the catalog's files changed: {sorted(before)} -> {sorted(after)}"
    return None


@pytest.mark.parametrize("harm", ["missing", "0-byte", "zeroed", "fresh"])
def test_no_command_makes_a_new_catalog_over_a_lost_one(tmp_path, used_home, harm):
    """Each command in its own copy of the home; all of them exit 7 with one line and leave the
    catalog's files as they were. A 0-byte catalog is refused also without a marker (every other
    command); on a fresh home the readers refuse and create nothing at all, not even the home."""
    used, archived = used_home
    commands = READERS if harm == "fresh" else {**READERS, **CREATORS}
    cases = []
    for i, (name, args) in enumerate(sorted(commands.items())):
        t = tmp_path / f"c{i}"
        home = _lost_home(used, t, harm, marker=not (harm == "0-byte" and i % 2))
        photos = t / "photos"
        write_jpeg(photos / "b.jpg")
        args = [a.format(photos=photos, archived=archived) for a in args]
        cases.append((name, args, t, home, _catalog_files(home) if home.exists() else {}))

    with ThreadPoolExecutor(3) as ex:
        results = list(ex.map(lambda c: _run(c[1], _env(c[2], c[3]), c[2]), cases))
    problems = []
    for (name, _, t, home, before), r in zip(cases, results):
        problems.append(_refusal_problem(name, r, home, before, harm))
        if harm == "fresh" and home.exists():
            problems.append(f"{name}: created {home}")
        if sorted(p.name for p in (t / "photos").iterdir()) != ["b.jpg"]:
            problems.append(f"{name}: archived something")
    assert [p for p in problems if p] == []
    if harm != "fresh":
        assert sum(MARKER in c[4] for c in cases) >= len(cases) // 2  # the archive above recorded its catalog


def test_archive_and_migrate_create_the_catalog_on_a_fresh_home_and_verify_works(tmp_path):
    make_policy(tmp_path / "p.yaml")
    for cmd in ("archive", "migrate"):
        t = tmp_path / cmd
        home = t / "home"
        src = write_jpeg(t / "photos" / "plain" / "a.jpg")
        env = _env(t, home)
        extra = ["--executor", "thread"] if cmd == "migrate" else []
        r = _run([cmd, t / "photos", "--policy", tmp_path / "p.yaml", *extra], env, t, timeout=300)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        assert not src.exists() and Path(str(src) + ".jxl").is_file()  # archived, original replaced
        rec = json.loads((home / MARKER).read_text())
        assert rec["how"] == "created" and rec["catalog"] == str(home / CATALOG), rec
        r = _run(["verify", "--json"], env, t)
        assert r.returncode == 0 and json.loads(r.stdout)["checked"] == 1, (cmd, r.stdout, r.stderr)
        r = _run(["ls", "--json"], env, t)
        assert r.returncode == 0 and [e["path"] for e in json.loads(r.stdout)["entries"]] == [str(src)]
        # and now the catalog is lost: verify says so instead of "clean, 0 checked"
        for n in ("", "-wal", "-shm"):
            (home / (CATALOG + n)).unlink(missing_ok=True)
        r = _run(["verify"], env, t)
        assert r.returncode == 7 and "restore it from your backup" in r.stderr, (cmd, r.stdout, r.stderr)
        assert not (home / CATALOG).exists()


def test_a_catalog_from_an_older_version_gets_its_marker_when_a_command_opens_it(tmp_path, used_home):
    used, archived = used_home
    home = tmp_path / "home"
    shutil.copytree(used, home)
    (home / MARKER).unlink()  # as an archiver before markers left it
    r = _run(["ls", "--json"], _env(tmp_path, home), tmp_path)
    assert r.returncode == 0 and [e["path"] for e in json.loads(r.stdout)["entries"]] == [str(archived)]
    assert json.loads((home / MARKER).read_text())["how"] == "found"

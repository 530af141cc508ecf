"""Issue 28's "exact copies cost nothing", end to end through the commands: on a generated
collection where about 20% of the files are exact copies in other folders, the dry run and
``stats`` count no artifact bytes for the copies, and every copy restores byte-exact to its own path."""

from __future__ import annotations

import json
import os
import shutil

from click.testing import CliRunner

from archiver.app.main import main
from archiver.testing.catalog import write_jpeg
from test_service_helpers import catalog_rows, setup_env


def _cli(e, *args):
    return CliRunner().invoke(main, list(args), env={"ARCHIVER_HOME": str(e["home"]), "ARCHIVER_CONFIG": str(e["config"])})


def _collection(root, n=10, copies=(0, 3, 7)):
    """``n`` distinct pictures in pics/, and copies of some of them in other folders (each with
    its own mode and mtime)."""
    files = {}
    for i in range(n):
        p = write_jpeg(root / "pics" / f"p{i}.jpg", seed=i)  # JPEG: the lossless codec gives back its very bytes
        files[str(p)] = p.read_bytes()
    for j, i in enumerate(copies):
        p = root / f"backup{j}" / "old" / f"copy-of-p{i}.jpg"
        p.parent.mkdir(parents=True)
        shutil.copyfile(root / "pics" / f"p{i}.jpg", p)
        os.chmod(p, 0o600 + j)
        os.utime(p, ns=(1_500_000_000_000_000_000 + j,) * 2)
        files[str(p)] = p.read_bytes()
    return files


def test_exact_copies_cost_no_artifact_bytes_and_each_restores_to_its_own_path(tmp_path):
    e = setup_env(tmp_path)
    files = _collection(e["root"])
    by_content: dict[bytes, list[str]] = {}
    for p, data in files.items():
        by_content.setdefault(data, []).append(p)
    stats_of = {p: (os.stat(p).st_mode & 0o7777, os.stat(p).st_mtime_ns) for p in files}
    plan = json.loads(_cli(e, "migrate", str(e["root"]), "--dry-run", "--json", "--executor", "thread").output)
    by = {f["path"]: f for f in plan["predictions"]}
    copies = [p for p in files if by[p]["shares"]]  # which of a group is "the copy" follows the walk
    assert len(copies) == 3 and len(copies) / len(files) >= 0.2
    for group in by_content.values():
        first = [p for p in group if not by[p]["shares"]]
        assert len(first) == 1 and by[first[0]]["bytes_after"] > 0
        assert all(by[p]["bytes_after"] == 0 and by[p]["shares"] == first[0] for p in group if p != first[0])
    assert plan["bytes_after_predicted"] == sum(f["bytes_after"] for p, f in by.items() if p not in copies) > 0

    r = _cli(e, "migrate", str(e["root"]), "--json", "--executor", "thread", "--workers", "1")
    assert r.exit_code == 0, r.output
    rows = {x["path"]: x for x in catalog_rows(e["home"])}
    for p in copies:  # the real run shares what the dry run said it would
        assert rows[p]["compressed_size"] == 0 and rows[rows[p]["artifact_of"] and by[p]["shares"]]["artifact_of"] is None
        assert rows[p]["compressed_path"] == rows[by[p]["shares"]]["compressed_path"]
    artifacts = {x["compressed_path"] for x in rows.values()}
    assert len(artifacts) == len(files) - len(copies)
    st = json.loads(_cli(e, "stats", "--json").output)
    own = sum(x["compressed_size"] for x in rows.values())
    assert st["total"]["bytes_after"] == own == plan["bytes_after_predicted"]
    assert st["shared"] == {"files": len(copies), "stored_files": len(copies)}
    assert "exact copies: 3 file(s)" in _cli(e, "stats").output

    res = _cli(e, "restore", str(e["root"] / "**"), "--json")
    assert res.exit_code == 0, res.output
    for p, data in files.items():
        with open(p, "rb") as f:
            assert f.read() == data, p
        assert (os.stat(p).st_mode & 0o7777, os.stat(p).st_mtime_ns) == stats_of[p], p

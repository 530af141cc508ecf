"""The shipped default policy on a mixed collection: dry run, then the real migration, compared.

    python bench/default_policy.py OUT [SOURCE...]     (default sources: ../shared/data/kodak and
                                                       ../shared/data/classify)

Copies the sources into OUT/coll (the real run replaces originals there, never in the sources),
runs ``archiver migrate --dry-run --json`` and then ``archiver migrate --json`` with a fresh
ARCHIVER_HOME under OUT, and writes OUT/summary.json: total savings predicted and real, the
share of files per codec, and how many files got exactly the predicted codec and size (from the
catalog). Resumable: a finished step (its JSON present) is not run again. Long: run it niced.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCES = [ROOT / ".." / "shared" / "data" / "kodak", ROOT / ".." / "shared" / "data" / "classify"]


def migrate(out: Path, *args: str) -> dict:
    env = dict(os.environ, ARCHIVER_HOME=str(out / "home"), ARCHIVER_CONFIG=str(out / "config.yaml"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "archiver", "migrate", str(out / "coll"), "--json", *args],
                       env=env, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise SystemExit(f"migrate {' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def writable(root: Path) -> None:
    """The shared data is read-only and copytree keeps modes: the real run must be able to
    replace the copies (as any user, not only root)."""
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def main(out: Path, sources: list[Path]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "coll").is_dir():
        for src in sources:
            shutil.copytree(src, out / "coll" / src.resolve().name)
        writable(out / "coll")
    (out / "config.yaml").write_text(os.environ.get("ARCHIVER_BENCH_CONFIG", "workers: 2\n"))
    steps = {}
    for name, args in (("dry", ("--dry-run",)), ("real", ())):
        f = out / f"{name}.json"
        if not f.is_file():
            f.write_text(json.dumps(migrate(out, *args), indent=1))
        steps[name] = json.loads(f.read_text())
    dry, real = steps["dry"], steps["real"]
    con = sqlite3.connect(out / "home" / "catalog.sqlite")
    rows = {p: (a, size if a == "keep" else cs) for p, a, cs, size in
            con.execute("SELECT path, action, compressed_size, size FROM file_versions WHERE state = 'committed'")}
    same = sum(1 for f in dry["predictions"] if rows.get(f["path"]) == (f["codec"], f["bytes_after"]))
    shares = Counter(a for a, _ in rows.values())
    real_saved = real["saved"] / real["bytes_before"]
    summary = {
        "files": real["files"], "bytes_before": real["bytes_before"],
        "predicted_saved": dry["savings_ratio"], "real_saved": real_saved,
        "prediction_error": abs(dry["savings_ratio"] - real_saved) / real_saved if real_saved else None,
        "files_as_predicted": same, "files_predicted": len(dry["predictions"]),
        "share_per_codec": {k: round(v / len(rows), 4) for k, v in shares.most_common()},
        "dry_seconds": dry["seconds"], "real_seconds": real["seconds"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print(json.dumps(main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]] or DEFAULT_SOURCES), indent=1))

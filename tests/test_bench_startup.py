"""bench/startup.py runs the commands it names and reports their CPU and wall seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_startup_bench_measures_fresh_processes():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "startup.py"), "--repeat", "2", "--json", "help", "status"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert [x["case"] for x in report["results"]] == ["help", "status"]
    for x in report["results"]:
        assert len(x["cpu_runs"]) == 2 and 0 < x["cpu_s"] < 60 and x["wall_s"] > 0
    assert report["cpus"] >= 1 and len(report["loadavg_before"]) == 3


def test_an_unknown_case_is_one_clear_line():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "startup.py"), "no-such-case"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown case(s) no-such-case" in r.stderr and "Traceback" not in r.stderr

"""``ARCHIVER_FAULT_HOLD``: the first unit to reach the step parks (pid in the marker) until
released; any other unit, in this or another process, goes straight on."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from archiver.work import faults

CODE = "import sys; from archiver.work import faults; faults.fault(sys.argv[1]); print('past')"


def _unit(step: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CODE, step], env=env, stdout=subprocess.PIPE, text=True)


def test_hold_parks_the_first_unit_only_until_released(tmp_path):
    marker = tmp_path / "held"
    env = dict(os.environ, **{faults.HOLD_ENV: f"written:{marker}"})
    other_step = _unit("encoded", env)  # another step: not held
    assert other_step.communicate(timeout=60)[0].strip() == "past"
    first = _unit("written", env)
    try:
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.02)
        assert marker.read_text() == str(first.pid)
        second = _unit("written", env)  # the marker is taken: this one goes on
        assert second.communicate(timeout=60)[0].strip() == "past"
        time.sleep(0.3)
        assert first.poll() is None, "the held unit went on before its release"
        (tmp_path / "held.release").touch()
        assert first.communicate(timeout=60)[0].strip() == "past"
    finally:
        first.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held", "held.release"]  # no temp files left


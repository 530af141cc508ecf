"""Start-up cost and stray files: what a command imports and where it writes.

Timing itself is measured in docs/operations.md (``hyperfine``); these tests pin the causes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def py(code: str, env=None) -> str:
    e = dict(os.environ, PYTHONPATH=str(ROOT))
    e.update(env or {})
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_codec_does_not_import_torch_geometric():
    out = py("import sys, archiver.codec.entropy as e, compressai; "
             "print('torch_geometric' in sys.modules, compressai.get_entropy_coder(), e.EntropyBottleneck.__module__)")
    assert out == "False ans compressai.entropy_models.entropy_models"


def test_operator_commands_do_not_import_torch():
    """`archiver --help`, and building the catalog commands, stay light (no torch, no detectors)."""
    out = py("import sys, click; from archiver.cli import main, COMMANDS; ctx = click.Context(main); "
             "[main.get_command(ctx, n) for n in ('stats', 'restore', 'verify', 'tag', 'policy')]; "
             "print(sorted(m for m in ('torch', 'cv2', 'onnxruntime', 'diffusers') if m in sys.modules))")
    assert out == "[]"


def test_nothing_written_outside_the_documented_directories(tmp_path):
    """A decode, a classification with every detector (onnxruntime, LiteRT, OpenCV) and a catalog
    command, with HOME pointing at an empty directory: only the state directory gets files."""
    home, state, work = tmp_path / "home", tmp_path / "state", tmp_path / "work"
    for d in (home, work):
        d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(work / "a.png")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(home), ARCHIVER_HOME=str(state))
    for k in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "ARCHIVER_CONFIG", "ORT_DISABLE_TELEMETRY"):
        env.pop(k, None)

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "archiver", *args], capture_output=True, text=True, env=env,
                           cwd=work, timeout=600)
        assert r.returncode == 0, r.stderr
        return r

    run("encode", "a.png", "a.dlc", "--quality", "40")
    run("decode", "a.dlc", "b.png")
    r = run("classify", "a.png", "--all", "--json")
    assert "Created TensorFlow Lite" not in r.stderr  # native libraries' notices stay off our stderr
    run("stats")
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
    assert sorted(p.name for p in work.iterdir()) == ["a.dlc", "a.png", "b.png"]

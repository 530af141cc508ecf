"""What the install needs (README "Set up", docs/operations.md "Installing"): the face models
from mediapipe's wheel without mediapipe's dependencies, one OpenCV build, and a diffusion codec that runs without torchvision,
torch-geometric and pandas (PyPI's torchvision does not import beside the CPU torch)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def runtime_dependencies() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower(): d for d in deps}


def py(code: str, hidden=("mediapipe", "torchvision", "torch_geometric", "pandas", "jax")) -> str:
    """Run ``code`` in a fresh interpreter to which the ``hidden`` packages look not installed:
    neither importable nor found by ``importlib.metadata`` (libraries such as transformers import
    torchvision whenever its distribution is there). ``LOOKED`` lists the names looked up."""
    prelude = (
        "import sys, importlib.machinery as _m\n"
        f"HIDDEN, LOOKED = {set(hidden)!r}, []\n"
        "def _norm(n): return (n or '').lower().replace('-', '_')\n"
        "class Hide:\n"
        "    def __init__(self, inner): self.inner = inner\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in HIDDEN:\n"
        "            LOOKED.append(name)\n"
        "            return None\n"
        "        return self.inner.find_spec(name, path, target)\n"
        "    def find_distributions(self, *a, **k):\n"
        "        return (d for d in self.inner.find_distributions(*a, **k) if _norm(d.metadata['Name']) not in HIDDEN)\n"
        "    def invalidate_caches(self): self.inner.invalidate_caches()\n"
        "sys.meta_path[:] = [Hide(f) if f is _m.PathFinder else f for f in sys.meta_path]\n"
        "for _n in [n for n in sys.modules if n.split('.')[0] in HIDDEN]: del sys.modules[_n]\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_faces_classifier_runs_without_mediapipes_dependencies_and_never_imports_it():
    """Both BlazeFace models load from mediapipe's wheel and score a picture with jax, jaxlib and
    matplotlib (mediapipe's dependencies, which --no-deps leaves out) not installed, and mediapipe
    itself is located, never imported."""
    out = py(
        "import numpy as np\n"
        "from archiver.policy.classifiers.faces import BlazeFace\n"
        "rgb = np.full((240, 320, 3), 128, np.uint8)\n"
        "print([type(BlazeFace(k)(rgb, 0.3)).__name__ for k in ('short', 'full')], 'mediapipe' in sys.modules)",
        hidden=("jax", "jaxlib", "matplotlib", "sounddevice", "torchvision"),
    )
    assert out == "['list', 'list'] False"


def test_missing_mediapipe_names_the_install_command():
    from archiver.policy.classifiers.faces import MODEL_PACKAGE

    out = py(
        "from archiver.policy.classifiers.faces import BlazeFace\n"
        "try:\n"
        "    BlazeFace('short')\n"
        "except RuntimeError as e:\n"
        "    print(e)\n",
        hidden=("mediapipe",),
    )
    assert out.endswith(f"pip install --no-deps {MODEL_PACKAGE} (README, Set up)")


def test_diffusion_codec_round_trips_without_torchvision_geometric_or_pandas():
    """compressai (whose releases with wheels all require torchvision, torch-geometric and pandas)
    and diffusers/transformers work without any of them: a real encode and decode, rANS coded."""
    out = py(
        "import io\n"
        "from archiver.imageio import load_image\n"
        "from archiver.testing.catalog import photo_bytes, random_tiny_codec\n"
        "from archiver.codecs.diffusion.pipeline import QualityProbe\n"
        "import compressai\n"
        "codec = random_tiny_codec(0)\n"
        "img = load_image(photo_bytes(5, size=(64, 48)))\n"
        "data, _ = QualityProbe(img, codec.backbone, steps=2).file_at(60)\n"
        "print(compressai.get_entropy_coder(), codec.decode(data).size,\n"
        "      sorted(m for m in ('torchvision', 'torch_geometric', 'pandas') if m in sys.modules))"
    )
    assert out == "ans (64, 48) []"


def test_missing_compressai_names_the_install_command():
    from archiver.codecs.diffusion.compressai_light import REQUIRED

    out = py(
        "from archiver.codecs.diffusion import compressai_light\n"
        "try:\n"
        "    compressai_light.load()\n"
        "except ImportError as e:\n"
        "    print(e)\n",
        hidden=("compressai",),
    )
    assert out == f"compressai is not installed: pip install --no-deps {REQUIRED} (README, Set up)"


def test_readme_and_ci_install_what_the_codec_expects():
    """The README's set-up command and .ci/run install the CPU torch with the project in one pip
    command, and compressai's pinned release (whose layout compressai_light trims) without deps."""
    from archiver.codecs.diffusion.compressai_light import REQUIRED
    from archiver.policy.classifiers.faces import MODEL_PACKAGE

    readme = (ROOT / "README.md").read_text()
    setup, tests = [line for line in readme.splitlines() if line.startswith("pip install ")]  # exactly two
    ci = (ROOT / ".ci" / "run").read_text()
    for text in (setup, ci):
        assert "pip install -q torch==2.13.0 -e . " in text.replace("pip install torch", "pip install -q torch")
    # the test command works on its own in a new venv: the same torch in the same pip command
    assert tests.startswith('pip install torch==2.13.0 -e ".[test,ray]" ') and tests.endswith("python -m pytest")
    for text in (setup, tests, ci):
        assert f"--no-deps {REQUIRED} {MODEL_PACKAGE}" in text


def test_no_dependency_that_archiver_does_not_use():
    deps = runtime_dependencies()
    for name in ("mediapipe", "torchvision", "jax", "jaxlib", "torch-geometric", "pandas", "compressai"):
        assert name not in deps, f"{name} is a runtime dependency again"


def test_one_opencv_build_the_one_the_ocr_package_requires():
    """opencv-python, -headless and -contrib all install the same ``cv2`` package over each other:
    archiver names the build that rapidocr-onnxruntime requires, so only that one is installed."""
    builds = {n for n in runtime_dependencies() if n.startswith("opencv")}
    try:
        reqs = importlib.metadata.requires("rapidocr-onnxruntime") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("rapidocr-onnxruntime is not installed")
    ocr = {re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs if "extra ==" not in r}
    assert len(builds) == 1 and builds <= ocr, (builds, ocr)

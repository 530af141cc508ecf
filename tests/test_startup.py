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
    out = py("import sys, archiver.codecs.diffusion.entropy as e, compressai; "
             "print('torch_geometric' in sys.modules, compressai.get_entropy_coder(), e.EntropyBottleneck.__module__)")
    assert out == "False ans compressai.entropy_models.entropy_models"


def test_operator_commands_do_not_import_torch():
    """`archiver --help`, and building the catalog commands, stay light (no torch, no detectors)."""
    out = py("import sys, click; from archiver.app.main import main, COMMANDS; ctx = click.Context(main); "
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
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(photos / "c.png")
    run("archive", "--policy", "evidence", str(photos))  # creates the catalog in the state directory
    run("tag", "a.png", "--add", "keep-me")  # a catalog command (it never creates one)
    run("stats")  # (stats itself refuses a missing catalog: a mistyped ARCHIVER_HOME is exit 7, issue 11 #8)
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
    assert sorted(p.name for p in work.iterdir()) == ["a.dlc", "a.png", "b.png"]


# -- what each command imports (issue 13, "Fast start-up"; figures in docs/operations.md) --------

#: packages (and parts of them) a command pays for at start-up only if it really uses them
HEAVY = ("torch", "torch._dynamo", "torch._inductor", "diffusers", "transformers", "torchvision", "huggingface_hub",
         "compressai", "scipy", "scipy.stats", "scipy.special", "sympy", "triton", "torch_geometric", "sqlalchemy", "cv2", "onnxruntime",
         "mediapipe", "alembic", "pydantic")

#: runs the CLI in this process, then reports which of HEAVY were imported (last stdout line)
PROBE = """
import json, sys
from archiver.app.main import main
code = 0
try:
    main(sys.argv[1:], prog_name="archiver")
except SystemExit as e:
    code = e.code
heavy = %r
print("PROBE " + json.dumps({"exit": code, "loaded": [m for m in heavy if m in sys.modules],
                              "modules": sorted(m for m in sys.modules if m.startswith("diffusers."))}))
""" % (HEAVY,)


def probe(*args, cwd=None, env=None) -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT))
    e.pop("ARCHIVER_CONFIG", None)
    e.update(env or {})
    r = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, env=e,
                       cwd=cwd, timeout=600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("PROBE ")]
    assert lines, r.stderr
    import json

    out = json.loads(lines[-1][6:])
    assert out["exit"] in (0, None), (args, r.stdout, r.stderr)
    return out


def archive_with_evidence_policy(photos, home) -> dict:
    """``archiver archive --policy evidence PHOTOS`` in a fresh process with ``ARCHIVER_HOME=home``;
    the environment (``ARCHIVER_HOME``) for the probes that follow."""
    env = {"ARCHIVER_HOME": str(home)}
    env_run = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    env_run.pop("ARCHIVER_CONFIG", None)
    r = subprocess.run([sys.executable, "-m", "archiver", "archive", "--policy", "evidence", str(photos)],
                       capture_output=True, text=True, env=env_run, timeout=600)
    assert r.returncode == 0, r.stderr
    return env


def test_help_status_and_a_lossless_restore_import_no_codec_libraries(tmp_path):
    """`archiver --help`, `status` and restoring lossless files (decoded from their .axl / .jxl,
    the vault emptied) never import torch, diffusers or anything else the diffusion codec needs."""
    photos, home = tmp_path / "photos", tmp_path / "home"
    photos.mkdir()
    yy, xx = np.mgrid[0:64, 0:96]
    smooth = np.stack([xx * 2, yy * 3, (xx + yy) % 256], axis=-1).astype(np.uint8)  # lossless shrinks it
    Image.fromarray(smooth).save(photos / "a.png", compress_level=0)
    Image.fromarray(smooth).save(photos / "b.jpg", quality=90)
    env = archive_with_evidence_policy(photos, home)
    assert sorted(p.name for p in photos.iterdir()) == ["a.png.jxl", "b.jpg.jxl"]  # standard JPEG XL (issue 11)
    for p in (home / "vault").rglob("*"):  # restore must decode the compressed files themselves
        if p.is_file():
            p.unlink()

    codec_libs = {"torch", "diffusers", "transformers", "torchvision", "huggingface_hub", "compressai", "scipy"}
    for args in (["--help"], ["status"], ["restore", photos / "a.png", photos / "b.jpg"]):
        out = probe(*args, env=env)
        assert codec_libs.isdisjoint(out["loaded"]), (args, out["loaded"])
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "a.png.jxl", "b.jpg", "b.jpg.jxl"]
    assert "torch" not in probe("--help")["loaded"] and "sqlalchemy" not in probe("--help")["loaded"]


def test_help_show_ls_and_status_load_no_model_runtime(tmp_path):
    """Issue 27: the commands people run to look (``--help``, ``show``, ``ls``, ``status``), on a
    catalog that holds a file, import neither torch nor a detector runtime (mediapipe,
    onnxruntime): each answers from the catalog alone."""
    photos, home = tmp_path / "photos", tmp_path / "home"
    photos.mkdir()
    rng = np.random.default_rng(27)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photos / "a.png")
    env = archive_with_evidence_policy(photos, home)
    runtimes = {"torch", "mediapipe", "onnxruntime"}
    for args in (["--help"], ["show", photos / "a.png"], ["ls"], ["status"], ["show", photos / "a.png", "--json"]):
        out = probe(*args, env=env)
        assert runtimes.isdisjoint(out["loaded"]), (args, out["loaded"])
        # a catalog at the newest schema is opened without alembic; no config file: no pydantic
        assert "alembic" not in out["loaded"] and "pydantic" not in out["loaded"], (args, out["loaded"])


def test_a_tiny_dlc_decode_imports_only_what_it_uses(tmp_path):
    """`archiver decode` of a release-2 .dlc in a fresh process: the same pixels as the day the
    fixture was written, with diffusers' UNet module but not the rest of diffusers (every other
    autoencoder, UNet and transformer model), torch._dynamo/_inductor (sympy, triton),
    transformers, torchvision, scipy.stats or scipy.special (the entropy model's one quantile is a
    known constant: ``entropy.KNOWN_NDTRI``)."""
    src = ROOT / "tests" / "data" / "dlc" / "r2-294c50bd-q40.dlc"
    out = probe("decode", src, tmp_path / "out.png")
    want = np.asarray(Image.open(src.with_suffix(".decoded.png")))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), want)
    assert "torch" in out["loaded"] and "diffusers.models.unets.unet_2d" in out["modules"]
    unwanted = {"torch._dynamo", "torch._inductor", "transformers", "torchvision", "scipy.stats", "scipy.special", "sympy", "triton",
                "torch_geometric", "sqlalchemy", "cv2", "onnxruntime"}
    assert unwanted.isdisjoint(out["loaded"]), out["loaded"]
    for m in ("diffusers.models.autoencoders.autoencoder_kl", "diffusers.models.unets.unet_2d_condition",
              "diffusers.models.transformers.transformer_sd3", "diffusers.hooks", "diffusers.pipelines"):
        assert m not in out["modules"], m


def test_the_light_diffusers_import_leaves_all_of_diffusers_usable():
    """After the codec's light import, every other diffusers class still imports (the deferred
    packages run their real __init__ on demand), as the same class objects, and nothing stays
    hidden: torch._dynamo imports and diffusers still sees transformers as installed."""
    out = py("import sys\n"
             "from archiver.codecs.diffusion import diffusers_light\n"
             "diffusers_light.load()\n"
             "import diffusers.models.unets.unet_2d as u2, diffusers.models.unets as unets\n"
             "from diffusers import AutoencoderKL, UNet2DModel, UNet2DConditionModel, DDIMScheduler\n"
             "from diffusers.models.autoencoders import AutoencoderTiny\n"
             "from diffusers.utils import is_transformers_available\n"
             "import torch._dynamo, transformers\n"
             "print(UNet2DModel is u2.UNet2DModel, unets.UNet2DConditionModel is UNet2DConditionModel,\n"
             "      AutoencoderTiny.__name__, is_transformers_available(), sys.modules['torch._dynamo'] is not None)")
    assert out == "True True AutoencoderTiny True True"


def test_the_light_import_does_not_map_every_installed_distribution():
    """Issue 27: diffusers' map of installed distributions (read for three optional packages
    archiver never has) is built only if read; when read it is the real one, and the stdlib
    function is back in place afterwards."""
    out = py("import importlib.metadata as m\n"
             "real = m.packages_distributions\n"
             "from archiver.codecs.diffusion import diffusers_light\n"
             "diffusers_light.load()\n"
             "import diffusers.utils.import_utils as iu\n"
             "lazy = iu._package_map\n"
             "print(lazy._map is None, m.packages_distributions is real, dict(lazy) == real(), 'torch' in lazy)")
    assert out == "True True True True"


def test_an_unexpected_diffusers_layout_falls_back_to_the_plain_import():
    out = py("import sys\n"
             "from archiver.codecs.diffusion import diffusers_light\n"
             "diffusers_light._LAZY_PACKAGES = ('diffusers.models.no_such_package',)\n"
             "diffusers_light.load()\n"
             "from diffusers.models.unets.unet_2d import UNet2DModel\n"
             "print('diffusers.models.autoencoders.autoencoder_kl' in sys.modules,\n"
             "      sys.modules.get('torch._dynamo', 0) is not None, sys.modules.get('transformers', 0) is not None)")
    assert out == "True True True"


def test_norm_ppf_is_scipy_stats_norm_ppf():
    """The CDF tables are built with scipy.special.ndtri instead of scipy.stats.norm.ppf: the same
    doubles (tail masses compressai and the codec use, and a sweep)."""
    import scipy.stats

    from archiver.codecs.diffusion.entropy import norm_ppf

    qs = [1e-9 / 2, 1e-9, 1e-6, 0.5, 1 - 1e-9] + list(np.random.default_rng(0).uniform(0, 1, 200))
    for q in qs:
        assert norm_ppf(q) == scipy.stats.norm.ppf(q)

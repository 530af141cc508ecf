"""Issue 27: ``migrate``'s batched path (``--batch N``, the default on a CUDA device) forced on
the CPU. The files run in threads of one process and the diffusion codec's encoder and decoder
are batched across them: every file gets the rule, codec and the very bytes of the normal path,
the report counts the batches (more than one file in some), and an error inside the batched
device work reaches only its files, as a codec error, without hanging the run."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
from click.testing import CliRunner

from archiver.app.main import main
from test_codec_batch import _img
from test_service_helpers import catalog_rows, setup_env

#: a rule that codes at a bit rate (the encoder's analysis, then the check's full decode) and one
#: that searches the smallest file reaching a score (a decode per probe); the embedded tiny model
#: on these small synthetic pictures keeps no structure, so the structure check is lifted
POLICY = """\
version: 1
name: batched-test
defaults:
  original: replace
rules:
  - name: rated
    when:
      path: ["**/rate/**"]
    action: diffusion
    allow_generative: true
    bpp: 0.4
    floor: {min_psnr: 0, min_ms_ssim: 0, max_phash_distance: 64, max_dhash_distance: 64}
  - name: searched
    when:
      path: ["**/search/**"]
    action: diffusion
    allow_generative: true
    target: 10
    floor: {max_phash_distance: 64, max_dhash_distance: 64}
    fallback: [lossless]
default:
  action: lossless
"""

#: two sizes in each rule (the batcher groups by shape), two files of each size
SIZES = [(96, 64), (96, 64), (64, 48), (64, 48)]


def _collection(tmp_path, name):
    (tmp_path / name).mkdir()
    e = setup_env(tmp_path / name, backbone="tiny", device="cpu", workers=4)
    e["policy"] = tmp_path / name / "policy.yaml"
    e["policy"].write_text(POLICY)
    for sub in ("rate", "search"):
        (e["root"] / sub).mkdir(parents=True)
        for i, (w, h) in enumerate(SIZES):
            _img(w, h, i + (10 if sub == "search" else 0)).rgb.save(e["root"] / sub / f"{i}.png")
    return e


#: on a CPU the device calls of the files in hand seldom meet within the default 10 ms; with a long
#: wait a batch runs when every file in hand waits on it, which makes the batches the test sees
#: certain (a GPU's busy device thread gathers the calls that arrive while it runs a batch)
LONG_WAIT = {"ARCHIVER_BATCH_WAIT_MS": "5000"}


def _migrate(e, *args):
    r = CliRunner().invoke(main, ["migrate", str(e["root"]), "--json", "--policy", str(e["policy"]), *args],
                           env={"ARCHIVER_HOME": str(e["home"]), "ARCHIVER_CONFIG": str(e["config"]), **LONG_WAIT})
    return r.exit_code, (json.loads(r.output) if r.output.startswith("{") else r.output)


def _stored(e) -> dict:
    """Per file (relative to the root): rule, codec and the SHA-256 of the stored file."""
    out = {}
    for row in catalog_rows(e["home"]):
        rel = row["path"][len(str(e["root"])) + 1:]
        out[rel] = (row["rule"], row["action"], row["state"], row["compressed_sha256"])
    return out


def test_the_batched_path_stores_what_the_normal_path_stores_and_counts_its_batches(tmp_path):
    normal, batched = _collection(tmp_path, "normal"), _collection(tmp_path, "batched")
    code, plain = _migrate(normal, "--executor", "thread", "--workers", "1")
    assert code == 0, plain
    code, rep = _migrate(batched, "--batch", "4", "--workers", "4")
    assert code == 0, rep
    want, got = _stored(normal), _stored(batched)
    assert len(want) == 2 * len(SIZES) and got == want
    assert {v[:3] for k, v in want.items() if k.startswith("rate/")} == {("rated", "diffusion", "committed")}
    # the search: the larger pictures reach the score, the 64x48 ones miss it at any quality (kept)
    assert {k: v[1] for k, v in want.items() if k.startswith("search/")} == {
        "search/0.png": "diffusion", "search/1.png": "diffusion", "search/2.png": "keep", "search/3.png": "keep"}
    # the report: nothing batched on the normal path; on the batched one, batches of several files
    assert plain["batching"] is None
    b = rep["batching"]
    assert b["device"] == "cpu" and b["files_at_once"] == 4 and b["max_batch"] == 4 and b["wait_ms"] == 5000
    assert b["gpu_utilisation"] is None  # no GPU here
    kinds = b["by_kind"]
    # one analysis per file; one ceiling per file searched for a score; the decodes of the check
    # (every file) and of the search's probes
    assert set(kinds) == {"analyse", "ceiling", "decode"}
    assert kinds["analyse"]["items"] == 2 * len(SIZES) and kinds["decode"]["items"] > 2 * len(SIZES)
    assert kinds["ceiling"]["items"] == len(SIZES)
    assert b["batches"] == sum(k["batches"] for k in kinds.values()) > 0
    assert b["largest"] >= 2 and b["batches"] < b["items"] and 1 < b["mean_batch"] <= 4


def test_the_dry_run_on_the_batched_path_predicts_the_normal_dry_run(tmp_path):
    normal, batched = _collection(tmp_path, "normal"), _collection(tmp_path, "batched")
    code, plain = _migrate(normal, "--dry-run", "--executor", "thread", "--workers", "1")
    assert code == 0, plain
    code, rep = _migrate(batched, "--dry-run", "--batch", "4", "--workers", "4")
    assert code == 0, rep

    def predicted(r, e):
        return {p["path"][len(str(e["root"])) + 1:]: (p["rule"], p["codec"], p["bytes_after"]) for p in r["predictions"]}

    assert predicted(rep, batched) == predicted(plain, normal) and len(rep["predictions"]) == 2 * len(SIZES)
    assert rep["batching"]["batches"] > 0 and rep["batching"]["largest"] >= 2
    assert not (batched["home"] / "catalog.sqlite").exists()  # a dry run creates no catalog, batched or not


def test_human_report_names_the_batches_and_says_there_is_no_gpu(tmp_path):
    e = _collection(tmp_path, "human")
    shutil.rmtree(e["root"] / "search")
    r = CliRunner().invoke(main, ["migrate", str(e["root"]), "--policy", str(e["policy"]), "--batch", "3",
                                  "--workers", "2", "--dry-run"],
                           env={"ARCHIVER_HOME": str(e["home"]), "ARCHIVER_CONFIG": str(e["config"]), **LONG_WAIT})
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if "batched device work" in x)
    assert "on cpu (2 files at once, batches of up to 3)" in line and "GPU utilisation: no GPU" in line
    assert "analyse" in line and "decode" in line


def test_an_error_in_a_batch_fails_only_its_files_and_does_not_hang(tmp_path, monkeypatch):
    """The decoder fails for one image size: those files' diffusion outputs do not decode, which
    the check reports like any codec error (the file falls back), the others are archived with
    the diffusion codec, and the run ends."""
    from archiver.codecs.diffusion import pipeline

    real = pipeline._run_batch

    def broken_for_small(backbone, preps):
        if preps[0].header.width == 64:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(backbone, preps)

    monkeypatch.setattr(pipeline, "_run_batch", broken_for_small)
    e = _collection(tmp_path, "failing")
    shutil.rmtree(e["root"] / "search")
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(out=_migrate(e, "--batch", "4", "--workers", "4")), daemon=True)
    t.start()
    t.join(timeout=300)
    assert not t.is_alive(), "the batched run hung"
    code, rep = result["out"]
    assert code == 0, rep
    by_name = {o["path"].rsplit("/", 1)[1]: o for o in rep["outcomes"]}
    assert {n for n, o in by_name.items() if o["action"] == "diffusion"} == {"0.png", "1.png"}  # the 96x64 ones
    for n in ("2.png", "3.png"):
        assert by_name[n]["action"] != "diffusion" and by_name[n]["status"] == "committed"
        assert "does not decode (RuntimeError: CUDA error: an illegal memory access" in by_name[n]["fallback"]
    assert rep["batching"]["by_kind"]["decode"]["items"] >= 4


def test_batch_is_refused_with_ray_and_checked(tmp_path):
    e = _collection(tmp_path, "bad")
    code, out = _migrate(e, "--batch", "4", "--executor", "ray", "--dry-run")
    assert code == 2 and "cannot be combined with --executor ray" in out and "Traceback" not in out
    code, out = _migrate(e, "--batch", "-1")
    assert code == 2 and "Traceback" not in out
    code, out = _migrate(e, "--device", "cuda", "--dry-run")  # no CUDA on this machine (skipped where there is)
    if "torch sees no CUDA device" not in str(out):
        from archiver.codecs.diffusion.devices import cuda_device_name

        assert cuda_device_name() is not None, out
    else:
        assert code == 2 and "use --device cpu or auto" in out and "Traceback" not in out
    code, out = _migrate(e, "--device", "tpu")
    assert code == 2 and "device" in out and "Traceback" not in out
    r = CliRunner().invoke(main, ["migrate", str(e["root"]), "--batch", "2"],
                           env={"ARCHIVER_HOME": str(e["home"]), "ARCHIVER_CONFIG": str(e["config"]),
                                "ARCHIVER_BATCH_WAIT_MS": "soon"})
    assert r.exit_code == 2 and "ARCHIVER_BATCH_WAIT_MS must be a number" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("device, batch, expected", [("cpu", None, 0), ("cuda", None, 16), ("cuda:1", None, 16),
                                                    ("cuda", 0, 0), ("cpu", 5, 5)])
def test_the_batched_path_is_on_with_cuda_and_off_on_the_cpu_unless_asked(device, batch, expected):
    from archiver.config import Config
    from archiver.service.batched import batch_size

    assert batch_size(Config(device=device), batch, "process") == expected
    assert batch_size(Config(device=device), None, "ray") == 0


def test_the_gpu_migrate_bench_runs_on_a_cpu_and_compares_the_paths(tmp_path):
    """bench/gpu_migrate.py (the command for a GPU machine, docs/operations.md) end to end on the
    CPU: distinct copies (a fourth image from three), both paths timed, the same decisions."""
    import subprocess
    import sys
    from pathlib import Path

    src = tmp_path / "src"
    src.mkdir()
    for i, (w, h) in enumerate([(96, 64), (96, 64), (64, 48)]):
        _img(w, h, i).rgb.save(src / f"{i}.png")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace('path: ["**/rate/**"]', 'path: ["**"]'))
    out = tmp_path / "out.json"
    bench = Path(__file__).resolve().parent.parent / "bench" / "gpu_migrate.py"
    r = subprocess.run([sys.executable, str(bench), str(src), "--count", "4", "--device", "cpu", "--batch", "2",
                        "--workers", "2", "--policy", str(policy), "--dry-run", "--compare", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["images"] == 4 and rep["same_decisions"] and rep["differing_files"] == []
    assert rep["batched"]["files"] == rep["normal"]["files"] == 4
    assert rep["batched"]["codecs"] == rep["normal"]["codecs"] and set(rep["batched"]["codecs"]) == {"diffusion"}
    b = rep["batched"]["batching"]
    assert b["by_kind"]["analyse"]["items"] == 4 and b["gpu_utilisation"] is None and rep["normal"]["batching"] is None
    assert rep["batched"]["images_per_s"] > 0 and rep["speedup_wall"] > 0


def test_abandoning_a_batched_run_returns_at_once_and_releases_the_waiting_files(tmp_path, monkeypatch):
    """A second Ctrl-C while files wait on the device: the run returns (interrupted), its
    batcher is closed, and the calls still waiting end with ``BatcherClosed``; nothing hangs."""
    from archiver.codecs.diffusion import batching, pipeline
    from archiver.config import load_config
    from archiver.service import migrate as m

    e = _collection(tmp_path, "abandoned")
    shutil.rmtree(e["root"] / "search")
    monkeypatch.setenv("ARCHIVER_HOME", str(e["home"]))
    monkeypatch.setenv("ARCHIVER_BATCH_WAIT_MS", "0")
    cfg = load_config(str(e["config"]), policy=str(e["policy"]))
    stop = m.Stopper()
    in_device, release = threading.Event(), threading.Event()
    real = pipeline._encode_padded
    closed: list[BaseException] = []

    def slow(backbone, xs):  # the device is busy until the test lets it go
        in_device.set()
        release.wait(60)
        return real(backbone, xs)

    real_run = batching.Batcher.run

    def run(self, *args):
        try:
            return real_run(self, *args)
        except batching.BatcherClosed as err:
            closed.append(err)
            raise

    monkeypatch.setattr(pipeline, "_encode_padded", slow)
    monkeypatch.setattr(batching.Batcher, "run", run)
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(rep=m.run([str(e["root"])], cfg, workers=4, batch=1,
                                                                stopper=stop)), daemon=True)
    t.start()
    assert in_device.wait(120), "no file reached the device"
    stop()
    stop()  # the second signal: abandon the files in hand
    t.join(timeout=60)
    assert not t.is_alive(), "the abandoned batched run hung"
    assert result["rep"]["interrupted"] and batching.active_batcher() is None
    release.set()
    deadline = time.monotonic() + 60
    while not closed and time.monotonic() < deadline:  # the files that were waiting are told
        time.sleep(0.1)
    assert closed and all("stopped" in str(err) for err in closed)
    # the abandoned files' threads finish on their own (threads cannot be killed): let them end here
    while any(th.name.startswith("archiver-batched") for th in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.1)

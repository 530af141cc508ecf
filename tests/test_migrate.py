"""``archiver migrate``: a dry run that changes nothing, a real run with a report, interruption
(SIGINT, kill -9) and resume with every file archived exactly once, and the pure task function."""

from __future__ import annotations

import dataclasses
import json
import pickle
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from archiver.catalog.db import open_catalog
from archiver.app.main import main
from test_service_helpers import (FAST_POLICY, catalog_rows, check_exactly_once, committed_paths, png_bytes, setup_env,
                                  wait_until)

POLICY_WITH_DIFFUSION = FAST_POLICY.replace("rules:\n", """rules:
  - name: photos
    when:
      path: ["**/photos/**"]
    action: diffusion
    allow_generative: true
    bpp: 0.1
    floor: {min_psnr: 20, min_ms_ssim: 0.8}
""")


def _collection(root, n=6):
    originals = {}
    for i in range(n):
        p = root / "pics" / f"p{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(png_bytes(i, 48))
        originals[str(p)] = p.read_bytes()
    (root / "keep").mkdir()
    (root / "keep" / "k.png").write_bytes(png_bytes(100, 48))
    originals[str(root / "keep" / "k.png")] = (root / "keep" / "k.png").read_bytes()
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return originals


def _snapshot(root):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def _cli(e, *args):
    r = CliRunner().invoke(main, ["migrate", *args], env={"ARCHIVER_HOME": str(e["home"]),
                                                          "ARCHIVER_CONFIG": str(e["config"])})
    return r


def test_dry_run_changes_nothing_and_predicts_what_the_real_run_does(tmp_path):
    e = setup_env(tmp_path)
    policy = tmp_path / "diffusion.yaml"
    policy.write_text(POLICY_WITH_DIFFUSION)
    _collection(e["root"])
    (e["root"] / "photos").mkdir()
    (e["root"] / "photos" / "big.png").write_bytes(png_bytes(5, 128))
    before = _snapshot(e["root"])
    r = _cli(e, str(e["root"]), "--dry-run", "--json", "--executor", "thread", "--policy", str(policy))
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert _snapshot(e["root"]) == before
    assert not (e["home"] / "catalog.sqlite").exists()
    rules = {x["rule"]: x for x in rep["rules"]}
    assert rules["keepers"]["action"] == "keep" and rules["keepers"]["savings_predicted"] == 0
    assert rules["default"]["files"] == 6 and 0 < rules["default"]["bytes_after_predicted"] < rules["default"]["bytes_before"]
    assert [u["path"] for u in rep["unreadable"]] == [str(e["root"] / "broken.png")]
    assert rep["savings_predicted"] == rep["bytes_before"] - rep["bytes_after_predicted"] > 0
    assert "same steps as the real run" in rep["method"]
    by_path = {f["path"]: f for f in rep["predictions"]}
    big = by_path[str(e["root"] / "photos" / "big.png")]
    assert big["rule"] == "photos" and big["codec"] and big["why"] and big["attempts"][0]["codec"] == "diffusion"
    assert sum(v["files"] for v in rep["codecs"].values()) == rep["files"] == 8
    # the real run does what was predicted, file by file and byte for byte
    real = json.loads(_cli(e, str(e["root"]), "--json", "--executor", "thread", "--policy", str(policy)).output)
    rows = {r["path"]: r for r in catalog_rows(e["home"])}
    for path, f in by_path.items():
        row = rows[path]
        assert row["action"] == f["codec"], (path, row["action"], f)
        if f["codec"] != "keep":
            assert row["compressed_size"] == f["bytes_after"], path
    broken = len(before[str(e["root"] / "broken.png")][2])  # skipped: counted by the run, not predicted
    assert real["bytes_before"] - broken == rep["bytes_before"]
    assert real["bytes_after"] - broken == rep["bytes_after_predicted"]
    human = _cli(e, str(e["root"] / "keep"), "--dry-run", "--executor", "thread")
    assert human.exit_code == 0 and "nothing was changed" in human.output


def test_run_reports_and_a_rerun_has_nothing_left(tmp_path):
    e = setup_env(tmp_path)
    originals = _collection(e["root"])
    r = _cli(e, str(e["root"]), "--json", "--executor", "thread", "--workers", "2")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["files"] == 8 and not rep["interrupted"]
    assert rep["by_outcome"] == {"committed": 7, "skipped": 1}
    assert rep["failures"] == []
    rules = {x["rule"]: x for x in rep["rules"]}
    assert rules["default"]["files"] == 6 and rules["default"]["saved"] > 0
    assert rules["keepers"]["saved"] == 0
    assert rep["saved"] == rep["bytes_before"] - rep["bytes_after"] == sum(x["saved"] for x in rep["rules"])
    check_exactly_once(e["home"], originals, require_all=True)
    again = json.loads(_cli(e, str(e["root"]), "--json", "--executor", "thread").output)
    # every file the first run handled, also the ones replaced by their compressed output (issue 13)
    assert again["files"] == 0 and again["already_archived"] == 8


def test_failures_are_reported_and_a_rerun_retries_them(tmp_path):
    from test_service_helpers import write_config

    policy = tmp_path / "vaulting.yaml"
    policy.write_text(FAST_POLICY.replace("original: replace", "original: vault"))
    (tmp_path / "a-file").write_text("")
    e = setup_env(tmp_path, policy=str(policy), vault_dir=str(tmp_path / "a-file" / "vault"))  # cannot exist
    p = e["root"] / "a.png"
    p.write_bytes(png_bytes(1, 64))
    r = _cli(e, str(e["root"]), "--json", "--executor", "thread")
    assert r.exit_code == 1, r.output
    rep = json.loads(r.output)
    assert rep["by_outcome"] == {"failed": 1}
    assert rep["failures"][0]["path"] == str(p) and rep["failures"][0]["error"]
    assert p.read_bytes() == png_bytes(1, 64)  # a failure never touches the original
    # the operator fixes the cause and reruns the same command
    write_config(e["config"], **dict(e["settings"], vault_dir=str(tmp_path / "vault")))
    r = _cli(e, str(e["root"]), "--json", "--executor", "thread")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["by_outcome"] == {"committed": 1}
    check_exactly_once(e["home"], {str(p): png_bytes(1, 64)}, require_all=True)


def test_ray_executor_without_ray_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: ``import ray`` raises ImportError
    e = setup_env(tmp_path)
    r = _cli(e, str(e["root"]), "--dry-run", "--executor", "ray")
    assert r.exit_code == 2 and "needs Ray" in r.output


def test_run_task_is_a_pure_serialisable_function_of_path_and_config(tmp_path, monkeypatch):
    from archiver.config import load_config
    from archiver.service.messages import TaskSettings
    from archiver.service.workers import run_task

    e = setup_env(tmp_path)
    monkeypatch.setenv("ARCHIVER_HOME", str(e["home"]))
    p = e["root"] / "one.png"
    p.write_bytes(png_bytes(3, 32))
    cfg = TaskSettings.of(load_config(e["config"]))
    plain = dataclasses.asdict(cfg)
    assert pickle.loads(pickle.dumps(cfg)) == cfg and json.loads(json.dumps(plain)) == plain
    out = run_task(str(p), cfg, str(e["root"]))
    assert out.status == "failed" and "no catalog at" in out.error  # a task never creates the catalog
    open_catalog(cfg.config.catalog_url, create=True).close()  # the driver (migrate, the daemon) does
    out = run_task(str(p), cfg, str(e["root"]))
    plain = dataclasses.asdict(out)
    assert pickle.loads(pickle.dumps(out)) == out and json.loads(json.dumps(plain)) == plain
    assert out.status == "committed" and out.facts["action"] == "lossless" and not out.retry
    again = run_task(str(p), cfg, str(e["root"]))  # idempotent: a rerun (e.g. a retried Ray task) does nothing
    assert again.status == "unchanged"


def _migrate_proc(e, log, *extra):
    return subprocess.Popen([sys.executable, "-m", "archiver", "migrate", str(e["root"]), "--json", "--workers", "1",
                             *extra], env=e["env"], stdout=subprocess.PIPE, stderr=log, text=True)


@pytest.mark.parametrize("path", [(), ("--workers", "2", "--batch", "2")], ids=["processes", "batched-threads"])
def test_interrupt_kill_and_resume_archive_everything_exactly_once(tmp_path, path):
    """Ctrl-C, then kill -9, then a rerun: every original archived exactly once, none lost; also on
    the batched path, where the files run in threads of the one process that is killed."""
    e = setup_env(tmp_path)
    originals = {}
    for i in range(10):
        p = e["root"] / f"f{i:02d}.png"
        p.write_bytes(png_bytes(i, 128))
        originals[str(p)] = p.read_bytes()
    with open(tmp_path / "m1.log", "w") as log:
        p1 = _migrate_proc(e, log, *path)
        wait_until(lambda: len(committed_paths(e["home"])) >= 1, 120, what="first file")
        p1.send_signal(signal.SIGINT)  # Ctrl-C: finish the file in hand, report, exit 130
        out, _ = p1.communicate(timeout=120)
    assert p1.returncode == 130, (tmp_path / "m1.log").read_text()
    rep1 = json.loads(out)
    assert rep1["interrupted"] and rep1["queue_left"]["pending"] > 0 and rep1["queue_left"]["claimed"] == 0
    first = check_exactly_once(e["home"], originals)
    assert first["untouched"] > 0
    with open(tmp_path / "m2.log", "w") as log:
        p2 = _migrate_proc(e, log, *path)
        n = len(committed_paths(e["home"]))
        wait_until(lambda: len(committed_paths(e["home"])) > n, 120, what="progress after resume")
        p2.kill()  # kill -9: the worker dies with it, its claim is requeued by the next run
        p2.wait(30)
    with open(tmp_path / "m3.log", "w") as log:
        p3 = _migrate_proc(e, log, *path)
        out, _ = p3.communicate(timeout=300)
    assert p3.returncode == 0, (tmp_path / "m3.log").read_text()
    rep3 = json.loads(out)
    assert not rep3["interrupted"] and rep3["queue_left"]["pending"] == 0
    assert (rep3["batching"] is not None) == bool(path)  # the run took the path under test
    # each file counted once: handled by the earlier runs (also when replaced) or by this one
    assert rep3["already_archived"] > 0 and rep3["already_archived"] + rep3["files"] == len(originals)
    check_exactly_once(e["home"], originals, require_all=True)


def _random_tiny_weights(d):
    """An untrained tiny backbone in the shipped file layout (no trained weights needed)."""
    import torch
    from safetensors.torch import save_file

    from archiver.codecs.diffusion.backbones import tiny

    torch.manual_seed(0)
    vae, unet = tiny.build_vae(), tiny.build_unet()
    state = {f"vae.{k}": v.contiguous() for k, v in vae.state_dict().items()}
    state.update({f"unet.{k}": v.contiguous() for k, v in unet.state_dict().items()})
    d.mkdir()
    (d / tiny.CONFIG_FILE).write_text(json.dumps({"vae": tiny.VAE_CONFIG, "unet": tiny.UNET_CONFIG,
                                                  "scheduler": tiny.SCHEDULER_CONFIG}))
    save_file(state, str(d / tiny.WEIGHTS_FILE))
    return d


def test_diffusion_action_through_migrate_with_a_tiny_random_backbone(tmp_path):
    """The diffusion path end to end (encode, write, decode-verify, commit) — the quality floor is
    set to zero because an untrained model reconstructs nothing useful."""
    weights = _random_tiny_weights(tmp_path / "weights")
    policy = tmp_path / "diffusion.yaml"
    policy.write_text(POLICY_WITH_DIFFUSION.replace("{min_psnr: 20, min_ms_ssim: 0.8}", "{min_psnr: 0, min_ms_ssim: 0, "
                                                    "max_phash_distance: 64, max_dhash_distance: 64}"))
    e = setup_env(tmp_path, policy=str(policy), backbone="tiny", diffusers_model=str(weights), device="cpu")
    p = e["root"] / "photos" / "a.png"
    p.parent.mkdir()
    p.write_bytes(png_bytes(1, 64))
    dry = json.loads(_cli(e, str(e["root"]), "--dry-run", "--json", "--executor", "thread").output)
    assert dry["rules"][0]["rule"] == "photos" and dry["rules"][0]["action"] == "diffusion"
    r = _cli(e, str(e["root"]), "--json", "--executor", "thread")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["by_outcome"] == {"committed": 1} and rep["rules"][0]["action"] == "diffusion"
    assert rep["saved"] > 0
    row = [x for x in catalog_rows(e["home"]) if x["path"] == str(p)][-1]
    assert row["action"] == "diffusion" and row["compressed_path"].endswith(".dlc") and not p.exists()
    import hashlib

    assert hashlib.sha256(open(row["compressed_path"], "rb").read()).hexdigest() == row["compressed_sha256"]


def test_a_vault_inside_the_root_is_never_archived_itself(tmp_path):
    policy = tmp_path / "vaulting.yaml"
    policy.write_text(FAST_POLICY.replace("original: replace", "original: vault"))
    e = setup_env(tmp_path, policy=str(policy))
    from test_service_helpers import write_config

    write_config(e["config"], **dict(e["settings"], policy=str(policy), vault_dir=str(e["root"] / "vault")))
    for i in range(2):
        (e["root"] / f"v{i}.png").write_bytes(png_bytes(i, 32))
    first = json.loads(_cli(e, str(e["root"]), "--json", "--executor", "thread").output)
    assert first["by_outcome"] == {"committed": 2}
    assert any((e["root"] / "vault").rglob("*"))
    again = json.loads(_cli(e, str(e["root"]), "--json", "--executor", "thread").output)
    assert again["files"] == 0


def test_ray_executor_maps_tasks_to_remote_functions(tmp_path, monkeypatch):
    """The Ray adapter with a stand-in ``ray`` module (no cluster here): every task becomes
    ``ray.remote(...)(fn).remote(*args).future()``, the encode alone asks for GPUs."""
    import types
    from concurrent.futures import Future

    calls = []

    class _Ref:
        def __init__(self, fn, args):
            self.fn, self.args = fn, args

        def future(self):
            f = Future()
            f.set_result(self.fn(*self.args))
            return f

    def remote(**opts):
        def wrap(fn):
            calls.append((fn.__name__, opts))
            return types.SimpleNamespace(remote=lambda *a: _Ref(fn, a))
        return wrap

    fake = types.SimpleNamespace(is_initialized=lambda: True, init=lambda **kw: None, remote=remote)
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setenv("ARCHIVER_RAY_GPUS", "1")
    e = setup_env(tmp_path)
    _collection(e["root"], n=2)
    r = _cli(e, str(e["root"]), "--dry-run", "--json", "--executor", "ray")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["files"] == 3
    assert ("predict_task", {"num_cpus": 1, "num_gpus": 1.0, "max_retries": 2}) in calls  # it encodes too
    # the real run needs a catalog every node can reach
    r = _cli(e, str(e["root"]), "--executor", "ray")
    assert r.exit_code == 2 and "PostgreSQL" in r.output
    from archiver.config import load_config
    from archiver.service.messages import TaskSettings
    from archiver.service.workers import RayExecutor, run_task

    monkeypatch.setenv("ARCHIVER_HOME", str(e["home"]))
    open_catalog(TaskSettings.of(load_config(e["config"])).config.catalog_url, create=True).close()  # as the driver does
    out = RayExecutor(1).submit(run_task, str(e["root"] / "pics" / "p0.png"),
                                TaskSettings.of(load_config(e["config"])), str(e["root"])).result()
    assert out.status == "committed"
    assert ("run_task", {"num_cpus": 1, "num_gpus": 1.0, "max_retries": 2}) in calls

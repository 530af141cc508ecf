"""Runs the training stages in order and assembles the model after each one."""

from __future__ import annotations

import contextlib
from pathlib import Path

from .common import Logger, set_threads

DEFAULTS = {
    "ae": dict(steps=100_000, batch=8, crop=128, lr=1e-3),
    "denoiser": dict(steps=100_000, batch=32, crop=128, lr=5e-4),
    "entropy": dict(steps=100_000, batch=16, crop=128, lr=1e-3),
    "codec": dict(steps=100_000, batch=8, crop=128, lr=2e-4),
    # release 3: compressai's recipe (batch 16 of 256-px crops, Adam 3e-4 on a cosine)
    "rd": dict(steps=25_000, batch=16, crop=256, lr=3e-4),
    "realism": dict(steps=100_000, batch=8, crop=256, lr=1e-4),
    "fidelity": dict(steps=100_000, batch=8, crop=256, lr=5e-5),
    "rd-tune": dict(steps=25_000, batch=8, crop=256, lr=5e-5),
}

#: release 3's denoiser works on 192-channel latents at stride 16: 256-px crops are 16x16 cells
R3_DEFAULTS = {"denoiser": dict(steps=100_000, batch=64, crop=256, lr=3e-4)}

#: on a GPU, steps take milliseconds: evaluate, log and checkpoint less often (by steps and time)
GPU_CADENCE = {
    # each rd evaluation codes 72 crops with the CPU's rANS coder (seconds): not too often
    "rd": dict(eval_every=2000, log_every=100, ckpt_every=10**9, ckpt_seconds=60),
    "denoiser": dict(eval_every=1000, log_every=100, ckpt_every=10**9, ckpt_seconds=60),
    "realism": dict(eval_every=400, log_every=50, ckpt_every=10**9, ckpt_seconds=60),
    "fidelity": dict(eval_every=400, log_every=50, ckpt_every=10**9, ckpt_seconds=60),
    "rd-tune": dict(eval_every=2000, log_every=100, ckpt_every=10**9, ckpt_seconds=60),
}

#: the stages of each recipe, in order ("all" is the current one, release 3)
RECIPES = {
    "all": ("rd", "denoiser", "realism"),
    # a shipped release 3 (--init) tuned for MS-SSIM as well as MSE: encoder, entropy model and
    # decoder first, then the decoder and denoiser on the decode path
    "tune": ("rd-tune", "fidelity"),
    "release2": ("ae", "denoiser", "entropy", "codec"),
}

#: how a total ``--minutes`` budget is shared when one command runs several stages
PLAN = {"rd": 0.62, "denoiser": 0.12, "realism": 0.26, "fidelity": 0.25, "rd-tune": 0.75, "ae": 0.26, "entropy": 0.17, "codec": 0.33}

#: stages that run on a GPU when one is asked for (the others are CPU-only and say so)
DEVICE_STAGES = ("rd", "denoiser", "realism", "fidelity", "rd-tune")


def _release3(out: Path, stages) -> bool:
    """Whether this run trains release 3: it has the rd stage, or the folder's autoencoder is rd."""
    if "rd" in stages or "rd-tune" in stages:
        return True
    ae = Path(out) / "ae_best.safetensors"
    if not ae.exists():
        return False
    from .common import read_safetensors

    return read_safetensors(ae)[1].get("vae_config", {}).get("kind") == "rd"


def stage_minutes(stages, minutes):
    """Per-stage wall-clock budgets: all of ``minutes`` for one stage; shared by ``PLAN`` for several."""
    if minutes is None or len(stages) == 1:
        return {st: minutes for st in stages}
    total = sum(PLAN[st] for st in stages)
    return {st: minutes * PLAN[st] / total for st in stages}


@contextlib.contextmanager
def sigterm_saves():
    """``kill`` (SIGTERM) stops a background run like Ctrl-C: the stage saves its checkpoint first.
    The previous handler comes back afterwards (a process that trained, e.g. a test run, must
    not keep turning SIGTERM into KeyboardInterrupt)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(data_dir, out, *, stages, steps=None, minutes=None, batch=None, crop=None, lr=None, resume=False,
        seed=0, threads=2, max_files=None, quiet=False, device="auto", amp=True, init=None, **stage_kw) -> dict:
    """Run ``stages`` in order. ``stage_kw`` (eval_every, ckpt_every, ...) go to every stage;
    ``device`` (and ``amp``: bfloat16 autocast on CUDA) to the stages that can use a GPU;
    ``init``: an assembled model whose stage files seed ``out`` (``export.unpack``)."""
    if init is not None:
        from .export import unpack

        written = unpack(Path(init), Path(out))
        Logger(Path(out), quiet=quiet).log(event="init", model=str(init), written=written)
    with sigterm_saves():
        return _run(data_dir, out, stages=stages, steps=steps, minutes=minutes, batch=batch, crop=crop, lr=lr,
                    resume=resume, seed=seed, threads=threads, max_files=max_files, quiet=quiet, device=device,
                    amp=amp, **stage_kw)


def _run(data_dir, out, *, stages, steps, minutes, batch, crop, lr, resume, seed, threads, max_files, quiet, device,
         amp, **stage_kw) -> dict:
    from .device import pick

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(threads)
    log = Logger(out, quiet=quiet)
    dev = str(pick(device))
    budgets = stage_minutes(stages, minutes)
    r3 = _release3(out, stages)
    results = []
    for st in stages:
        d = (R3_DEFAULTS if r3 else {}).get(st, DEFAULTS[st])
        kw = dict(steps=steps or d["steps"], minutes=budgets[st], batch=batch or d["batch"], crop=crop or d["crop"],
                  lr=lr or d["lr"], seed=seed, resume=resume, log=log, max_files=max_files)
        if st in DEVICE_STAGES:
            kw["device"], kw["amp"] = dev, amp
            if dev.startswith("cuda"):
                kw.update(GPU_CADENCE[st])
        elif dev != "cpu":
            log.log(stage=st, event=f"runs on the CPU (only {', '.join(DEVICE_STAGES)} use --device)")
        kw.update(stage_kw)
        if st == "rd":
            from .rd import train_rd
            results.append(train_rd(Path(data_dir), out, **kw))
        elif st == "rd-tune":
            from .fidelity import ALPHA, LOG2_S_RANGE
            from .rd import TUNE_TRAINS_DECODER, train_rd
            tune_kw = {"alpha": ALPHA, "log2_s_range": LOG2_S_RANGE, "train_decoder": TUNE_TRAINS_DECODER, **kw}
            results.append(train_rd(Path(data_dir), out, tune=True, **tune_kw))
        elif st == "realism":
            from .realism import train_realism
            results.append(train_realism(Path(data_dir), out, **kw))
        elif st == "fidelity":
            from .fidelity import train_fidelity
            results.append(train_fidelity(Path(data_dir), out, **kw))
        elif st == "ae":
            from .ae import train_ae
            results.append(train_ae(Path(data_dir), out, **kw))
        elif st == "denoiser":
            from .denoiser import train_denoiser
            results.append(train_denoiser(Path(data_dir), out, **kw))
        elif st == "entropy":
            from .entropy import train_entropy
            results.append(train_entropy(Path(data_dir), out, **kw))
        else:
            from .codec_tune import train_codec
            results.append(train_codec(Path(data_dir), out, **kw))
        from .export import assemble
        exported = assemble(out)
    return {"stages": results, "exported": str(exported) if exported else None}

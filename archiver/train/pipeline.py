"""Runs the training stages in order and assembles the model after each one."""

from __future__ import annotations

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
}

#: the stages of each recipe, in order ("all" is the current one, release 3)
RECIPES = {
    "all": ("rd", "denoiser", "realism"),
    "release2": ("ae", "denoiser", "entropy", "codec"),
}

#: how a total ``--minutes`` budget is shared when one command runs several stages
PLAN = {"rd": 0.62, "denoiser": 0.12, "realism": 0.26, "ae": 0.26, "entropy": 0.17, "codec": 0.33}

#: stages that run on a GPU when one is asked for (the others are CPU-only and say so)
DEVICE_STAGES = ("rd", "denoiser", "realism")


def stage_minutes(stages, minutes):
    """Per-stage wall-clock budgets: all of ``minutes`` for one stage; shared by ``PLAN`` for several."""
    if minutes is None or len(stages) == 1:
        return {st: minutes for st in stages}
    total = sum(PLAN[st] for st in stages)
    return {st: minutes * PLAN[st] / total for st in stages}


def _sigterm_saves() -> None:
    """``kill`` (SIGTERM) stops a background run like Ctrl-C: the stage saves its checkpoint first."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        def stop(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)


def run(data_dir, out, *, stages, steps=None, minutes=None, batch=None, crop=None, lr=None, resume=False,
        seed=0, threads=2, max_files=None, quiet=False, device="auto", **stage_kw) -> dict:
    """Run ``stages`` in order. ``stage_kw`` (eval_every, ckpt_every, ...) go to every stage;
    ``device`` to the stages that can use a GPU."""
    from .device import pick

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(threads)
    _sigterm_saves()
    log = Logger(out, quiet=quiet)
    dev = str(pick(device))
    budgets = stage_minutes(stages, minutes)
    results = []
    for st in stages:
        d = DEFAULTS[st]
        kw = dict(steps=steps or d["steps"], minutes=budgets[st], batch=batch or d["batch"], crop=crop or d["crop"],
                  lr=lr or d["lr"], seed=seed, resume=resume, log=log, max_files=max_files, **stage_kw)
        if st in DEVICE_STAGES:
            kw["device"] = dev
        elif dev != "cpu":
            log.log(stage=st, event=f"runs on the CPU (only {', '.join(DEVICE_STAGES)} use --device)")
        if st == "rd":
            from .rd import train_rd
            results.append(train_rd(Path(data_dir), out, **kw))
        elif st == "realism":
            from .realism import train_realism
            results.append(train_realism(Path(data_dir), out, **kw))
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

"""Runs the training stages in order and assembles the model after each one."""

from __future__ import annotations

from pathlib import Path

from .common import Logger, set_threads

DEFAULTS = {
    "ae": dict(steps=100_000, batch=8, crop=128, lr=1e-3),
    "denoiser": dict(steps=100_000, batch=32, crop=128, lr=5e-4),
    "entropy": dict(steps=100_000, batch=16, crop=128, lr=1e-3),
    "codec": dict(steps=100_000, batch=8, crop=128, lr=2e-4),
}


def _sigterm_saves() -> None:
    """``kill`` (SIGTERM) stops a background run like Ctrl-C: the stage saves its checkpoint first."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        def stop(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)


def run(data_dir, out, *, stages, steps=None, minutes=None, batch=None, crop=None, lr=None, resume=False,
        seed=0, threads=2, max_files=None, quiet=False) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(threads)
    _sigterm_saves()
    log = Logger(out, quiet=quiet)
    results = []
    for st in stages:
        d = DEFAULTS[st]
        kw = dict(steps=steps or d["steps"], minutes=minutes, batch=batch or d["batch"], crop=crop or d["crop"],
                  lr=lr or d["lr"], seed=seed, resume=resume, log=log, max_files=max_files)
        if st == "ae":
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

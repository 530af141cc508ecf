"""The loop every training stage shares, so that resuming, seeding, the learning-rate schedule,
logging, best-so-far export and checkpoints behave the same in all of them.

A stage supplies the forward pass (``loss(gen) -> (loss, parts)``: draw the batch from ``gen``,
return a scalar tensor), what to do after each optimizer step (EMA, auxiliary losses), an
evaluation with one score, and the export of its best weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .common import Logger, cosine_lr, load_checkpoint, save_checkpoint, step_seed


@dataclass
class StageLoop:
    stage: str
    checkpoint: Path
    best_file: Path  # exported by ``export``; written at the end if it does not exist yet
    log: Logger
    seed: int
    lr: float
    optimizer: torch.optim.Optimizer  # the one whose learning rate follows the cosine
    params: list  # clipped to norm 1 before each step
    state: dict  # name -> module or optimizer, saved in and restored from the checkpoint
    loss: Callable[[np.random.Generator], tuple[torch.Tensor, dict]]
    evaluate: Callable[[], dict]
    export: Callable[[dict, int], None]  # (evaluation, step)
    score: str  # the evaluation key that decides "best"
    higher_is_better: bool = False
    after_step: Optional[Callable[[int], dict]] = None  # (step just taken) -> extra log fields
    ae_sha256: Optional[str] = None  # set: a checkpoint made for another autoencoder is not resumed
    eval_every: int = 100
    ckpt_every: int = 50
    #: also checkpoint when this many seconds passed since the last one (fast GPU steps)
    ckpt_seconds: Optional[float] = None
    #: log (and read the loss back from the device, a GPU sync) every this many steps
    log_every: int = 10
    #: extra numbers logged with every evaluation (e.g. training pixels seen so far)
    progress: Optional[Callable[[int], dict]] = None
    step: int = field(default=0, init=False)
    elapsed: float = field(default=0.0, init=False)
    best: float = field(default=0.0, init=False)
    _last_eval: tuple = field(default=(-1, None), init=False)

    def _better(self, value: float) -> bool:
        return value > self.best if self.higher_is_better else value < self.best

    def _save(self) -> None:
        save_checkpoint(self.checkpoint, **{k: v.state_dict() for k, v in self.state.items()}, step=self.step,
                        elapsed=self.elapsed, best=self.best, seed=self.seed, ae_sha256=self.ae_sha256)

    def _resume(self, resume: bool) -> None:
        ck = load_checkpoint(self.checkpoint) if resume else None
        if ck is not None and (self.ae_sha256 is None or ck.get("ae_sha256") == self.ae_sha256):
            for name, obj in self.state.items():
                obj.load_state_dict(ck[name])
            self.step, self.elapsed, self.best = int(ck["step"]), float(ck["elapsed"]), float(ck["best"])
            self.log.log(stage=self.stage, event="resumed", step=self.step)
        elif ck is not None:
            self.log.log(stage=self.stage, event="checkpoint is for another autoencoder: starting afresh")
        elif self.checkpoint.exists():
            self.log.log(stage=self.stage, event="fresh start (checkpoint present, --resume not given)")

    def _eval(self) -> dict:
        ev = self.evaluate()
        self._last_eval = (self.step, ev)
        self.log.log(stage=self.stage, step=self.step, event="eval", **ev,
                     **(self.progress(self.step) if self.progress else {}))
        if self._better(ev[self.score]):
            self.best = ev[self.score]
            self.export(ev, self.step)
        return ev

    def run(self, *, steps: int, minutes: Optional[float], resume: bool,
            start: Optional[Callable[[], float]] = None) -> dict:
        """Train until ``steps`` or ``minutes``; ``start`` scores (and exports) the starting point
        of a fresh run, so something good exists from step 0."""
        self.best = -math.inf if self.higher_is_better else math.inf
        self._resume(resume)
        if self.step == 0 and start is not None:
            self.best = start()
        t0, last = time.time() - self.elapsed, None
        budget = minutes * 60 if minutes else None
        last_save, loss = time.time(), None
        try:
            while self.step < steps and (budget is None or self.elapsed < budget):
                progress = max(self.step / steps, self.elapsed / budget if budget else 0.0)
                for g in self.optimizer.param_groups:
                    g["lr"] = cosine_lr(self.lr, progress)
                gen = np.random.default_rng(step_seed(self.seed, self.step))
                torch.manual_seed(step_seed(self.seed, self.step, 1))
                loss, parts = self.loss(gen)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.optimizer.step()
                extra = self.after_step(self.step) if self.after_step else {}
                self.step += 1
                self.elapsed = time.time() - t0
                now = time.time()
                save = self.step % self.ckpt_every == 0 or bool(self.ckpt_seconds and now - last_save >= self.ckpt_seconds)
                evaluate = self.step % self.eval_every == 0 or self.step == steps
                logged = self.step % self.log_every == 0 or self.step == 1
                if logged or save or evaluate or self.step == steps:
                    # reading the loss back waits for the device: only when it is needed
                    last = loss.item()
                    if not math.isfinite(last):  # before anything is saved from these weights
                        raise FloatingPointError(f"{self.stage} loss is not finite at step {self.step}")
                if logged:  # stages may hand back 0-d tensors: read only when logged
                    parts = {k: float(v) for k, v in {**parts, **extra}.items()}
                    self.log.log(stage=self.stage, step=self.step, loss=last, lr=self.optimizer.param_groups[0]["lr"],
                                 sec=round(self.elapsed, 1), **parts)
                if evaluate:
                    self._eval()
                if save:
                    self._save()
                    last_save = now
            if loss is not None and self.step > 0:  # the last steps may not have been read back
                last = loss.item()
                if not math.isfinite(last):
                    raise FloatingPointError(f"{self.stage} loss is not finite at step {self.step}")
        except KeyboardInterrupt:  # a stopped run keeps its progress (unless it has gone bad)
            if loss is None or math.isfinite(loss.item()):
                self._save()
            raise
        # the weights are the ones just evaluated when the run ended on an evaluation step
        step, ev = self._last_eval
        if step != self.step:
            ev = self.evaluate()
        better = self._better(ev[self.score])
        if better:
            self.best = ev[self.score]
        if better or not self.best_file.exists():
            self.export(ev, self.step)
        self._save()
        res = {"stage": self.stage, "step": self.step, "loss": last, self.score: ev[self.score],
               f"best_{self.score}": self.best, "seconds": round(self.elapsed, 1)}
        self.log.log(event="done", **res)
        return res

"""Detector models cached per thread and rebuilt in forked workers."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable


class PerThreadModels:
    """One instance of each model per thread (OpenCV cascades and onnxruntime sessions are not
    shared safely). A forked worker builds its own: inherited onnxruntime/OpenCV thread pools are
    dead in the child, so the parent's objects are parked, never destroyed (their destructors
    would wait for those threads forever)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._inherited: list = []
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._inherited.append(self._local)
        self._local = threading.local()

    def get(self, name: str, build: Callable[[], Any]) -> Any:
        model = getattr(self._local, name, None)
        if model is None:
            model = build()
            setattr(self._local, name, model)
        return model

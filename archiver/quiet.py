"""Keep third-party native libraries from printing on our stderr (one home for that trick)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading

_lock = threading.Lock()


@contextlib.contextmanager
def quiet_stderr():
    """Point file descriptor 2 at /dev/null meanwhile: C++ libraries (TFLite, absl) write to it
    directly, below Python's ``sys.stderr``. Serialised, so that two threads never swap it at once."""
    with _lock:
        sys.stderr.flush()
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)

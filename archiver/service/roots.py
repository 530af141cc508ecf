"""Root guard: a missing or unmounted root pauses that root; it never looks like deleted files.

An unmounted mount point usually still exists as an empty directory on the parent filesystem,
so existence alone is not enough. The first time a root is seen non-empty its device id (``st_dev``)
is recorded in the state directory; later a different device means "not the filesystem we were
archiving" and the root is paused until the same device is back. An operator who really moved
a root to another filesystem re-binds it (``archiver daemon --rebind-roots``). A root may also
contain a marker file ``.archiver-root``; if it did once, its absence pauses the root too.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from ..storage import atomic

log = logging.getLogger("archiver.service.roots")

MARKER = ".archiver-root"


def is_empty(root: str) -> bool:
    try:
        with os.scandir(root) as it:
            return next(it, None) is None
    except OSError:
        return True


class RootGuard:
    def __init__(self, state_file: str | os.PathLike, *, rebind: bool = False, identity=None):
        """``identity(root) -> reason | None``: an extra check once the device checks pass (with
        a shared catalog: is this the root the other nodes see? see ``places``)."""
        self.state_file = Path(state_file)
        self.identity = identity
        self._lock = threading.Lock()
        self._known: dict[str, dict] = {}
        self._paused: dict[str, str] = {}  # root -> reason
        if self.state_file.exists() and not rebind:
            try:
                self._known = json.loads(self.state_file.read_text())
            except (OSError, ValueError):
                log.warning("root state unreadable; re-recording roots", extra={"file": str(self.state_file)})

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(self.state_file, json.dumps(self._known, indent=1, sort_keys=True).encode())

    def check(self, root: str) -> bool:
        """True when ``root`` is present and is the filesystem recorded for it."""
        root = str(root)
        reason = None
        try:
            st = os.stat(root)
        except OSError as e:
            reason = f"root missing ({e.strerror})"
        else:
            has_marker = os.path.exists(os.path.join(root, MARKER))
            with self._lock:
                rec = self._known.get(root)
                if rec is None:
                    # an empty root may be a mount point whose filesystem is not mounted yet:
                    # record its device only once it holds something
                    if not is_empty(root):
                        self._known[root] = {"st_dev": st.st_dev, "marker": has_marker}
                        self._save()
                elif rec.get("st_dev") != st.st_dev:
                    reason = (f"root is on another device than recorded ({st.st_dev} != {rec.get('st_dev')}): "
                              "unmounted? (if it really moved, start once with --rebind-roots)")
                elif rec.get("marker") and not has_marker:
                    reason = f"root marker {MARKER} is missing: unmounted?"
                elif has_marker and not rec.get("marker"):
                    rec["marker"] = True
                    self._save()
            if reason is None and self.identity is not None:
                try:
                    reason = self.identity(root)
                except Exception as e:  # the catalog unreachable: do not guess, wait
                    reason = f"cannot check the root against the shared catalog ({type(e).__name__}: {e})"
        with self._lock:
            was = self._paused.get(root)
            if reason:
                self._paused[root] = reason
                if was is None:
                    log.error("root paused", extra={"root": root, "reason": reason})
                return False
            if was is not None:
                del self._paused[root]
                log.warning("root available again, resuming", extra={"root": root})
            return True

    def check_all(self, roots) -> dict[str, bool]:
        return {r: self.check(r) for r in roots}

    def paused(self) -> dict[str, str]:
        with self._lock:
            return dict(self._paused)

    def is_paused(self, root: str) -> bool:
        with self._lock:
            return str(root) in self._paused

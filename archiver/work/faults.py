"""Fault injection for the crash tests.

``ARCHIVER_FAULT=<step>`` kills the process with SIGKILL when the unit of work reaches that step
boundary. ``ARCHIVER_FAULT_HOLD=<step>:<marker>`` instead parks the first unit (across processes
and hosts sharing ``marker``) that reaches the step: it writes its pid to ``marker`` and waits
there until ``<marker>.release`` exists (at most :data:`HOLD_MAX_SECONDS`), so a test can find a
worker that is certainly mid-task, at a known step, whatever the machine's speed, and kill it
from outside. Steps call ``faults.fault(name)`` through the module, so in-process tests can patch
``fault`` with an exception instead."""

from __future__ import annotations

import os
import signal
import time

FAULT_ENV = "ARCHIVER_FAULT"
HOLD_ENV = "ARCHIVER_FAULT_HOLD"
#: a held unit goes on by itself after this long (a test that died must not wedge a worker)
HOLD_MAX_SECONDS = 600.0
#: step boundaries where ``ARCHIVER_FAULT`` can kill the process (in the order they happen)
FAULT_STEPS = ("discovered", "classified", "write_intent", "during_write", "written", "encoded",
               "verified", "vaulted", "committed", "taken", "removed")


def fault(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
    hold = os.environ.get(HOLD_ENV)
    if hold:
        where, _, marker = hold.partition(":")
        if where == step and marker:
            _hold(marker)


def _hold(marker: str) -> None:
    """Only the first unit to claim ``marker`` holds; it names itself by pid in the marker."""
    tmp = f"{marker}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    try:
        os.link(tmp, marker)  # atomic: the marker appears with the pid already in it
    except FileExistsError:
        return
    finally:
        os.unlink(tmp)
    deadline = time.monotonic() + HOLD_MAX_SECONDS
    while not os.path.exists(marker + ".release") and time.monotonic() < deadline:
        time.sleep(0.05)

"""Fault injection for the crash tests: ``ARCHIVER_FAULT=<step>`` kills the process with SIGKILL
when the unit of work reaches that step boundary. Steps call ``faults.fault(name)`` through the
module, so in-process tests can patch ``fault`` with an exception instead."""

from __future__ import annotations

import os
import signal

FAULT_ENV = "ARCHIVER_FAULT"
#: step boundaries where ``ARCHIVER_FAULT`` can kill the process (in the order they happen)
FAULT_STEPS = ("discovered", "classified", "write_intent", "during_write", "written", "encoded",
               "verified", "vaulted", "committed", "removed")


def fault(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)

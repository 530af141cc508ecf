"""systemd ``Type=notify`` support: READY=1, STOPPING=1, STATUS=..., WATCHDOG=1.

Ten lines of datagram socket rather than a dependency; a no-op when not run by systemd.
"""

from __future__ import annotations

import os
import socket


def sd_notify(state: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.setblocking(False)  # a receiver that stopped reading must never stall the daemon
            s.connect(addr)
            s.send(state.encode())
        return True
    except OSError:  # includes BlockingIOError (receiver's queue full): the message is dropped
        return False


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec (seconds) if the watchdog is enabled for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None

"""Child processes that never outlive their parent.

A pool worker keeps computing after its parent is killed (SIGKILL leaves no chance to stop it):
:func:`die_with_parent` in the worker's initializer makes the kernel send it a signal when the
parent dies (``prctl(PR_SET_PDEATHSIG)`` on Linux); elsewhere a daemon thread polls the parent's
PID and exits the worker when it changes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM, poll_s: float = 0.5) -> None:
    """Make this process exit when the process ``parent_pid`` (its parent) dies.

    Args:
        parent_pid: the parent's PID as the parent saw it (``os.getpid()`` there); if the parent
            is already gone when this runs, the process exits at once.
        sig: the signal the kernel sends on Linux (default SIGTERM: Python's default action ends
            the process).
        poll_s: polling period of the fallback thread.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    if armed:
        return

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()

"""Child processes that never outlive their parent, and background work that gives way.

A pool worker keeps computing after its parent is killed (SIGKILL leaves no chance to stop it):
:func:`die_with_parent` in the worker's initializer makes the kernel send it a signal when the
parent dies (``prctl(PR_SET_PDEATHSIG)`` on Linux); elsewhere a daemon thread polls the parent's
PID and exits the worker when it changes.

Training beside the robot's node (``training/adapt.py``) calls :func:`give_way_to_foreground`:
a higher niceness and, on Linux, the ``SCHED_IDLE`` policy, under which a waking node thread
takes the core at once instead of waiting out the trainer's time slice.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

__all__ = ["die_with_parent", "give_way_to_foreground"]

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


def _own_threads() -> list[int]:
    """Thread ids of this process (Linux), else ``[0]`` (the calling thread)."""
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def give_way_to_foreground(nice: int, idle: bool) -> str:
    """Lower this process's CPU priority for every thread it has now (threads started later
    inherit it): niceness up by ``nice`` (0 leaves it) and, with ``idle`` on Linux, the
    ``SCHED_IDLE`` scheduling policy (the process runs on the CPU time no other task wants).
    Returns the policy in force, ``"idle"`` or ``"normal"`` (``idle`` where the platform has
    no such policy falls back to the niceness alone)."""
    threads = _own_threads()
    if nice:
        for tid in threads:  # Linux keeps a niceness per thread; os.nice() changes the caller's only
            try:
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
            except OSError:  # the thread ended meanwhile
                pass
    if not (idle and hasattr(os, "SCHED_IDLE")):
        return "normal"
    applied = False
    for tid in threads:
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            applied = True
        except OSError:
            pass
    return "idle" if applied else "normal"

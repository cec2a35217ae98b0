"""Runtime health figures: input/output rates, per-stage latency, drop counters, recent errors.

Everything here is ROS-free; :meth:`vln_core.runtime.NavigationRuntime.diagnostics` turns these
figures into ``diagnostic_msgs/DiagnosticStatus``-like dicts
``{"name", "level", "message", "values": {str: str}}`` that the node copies into a
``DiagnosticArray``. Levels are the strings ``"OK"``, ``"WARN"``, ``"ERROR"``, ``"STALE"``
(``DiagnosticStatus`` bytes 0, 1, 2, 3: see :data:`LEVEL_BYTES`).

All classes are thread-safe: callbacks record on one thread, ``step()`` on another and the
diagnostics timer reads on a third.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

__all__ = [
    "OK",
    "WARN",
    "ERROR",
    "STALE",
    "LEVEL_BYTES",
    "status",
    "worst_level",
    "RateMeter",
    "LatencyTracker",
    "EventLog",
    "Counters",
    "LogThrottle",
]

OK, WARN, ERROR, STALE = "OK", "WARN", "ERROR", "STALE"
#: ``diagnostic_msgs/DiagnosticStatus.level`` byte of each level string.
LEVEL_BYTES = {OK: 0, WARN: 1, ERROR: 2, STALE: 3}
_SEVERITY = {OK: 0, STALE: 1, WARN: 2, ERROR: 3}


def status(name: str, level: str, message: str, values: Optional[dict] = None) -> dict:
    """One DiagnosticStatus-like dict; values are converted to strings."""
    if level not in LEVEL_BYTES:
        raise ValueError(f"diagnostic level must be one of {list(LEVEL_BYTES)}, got {level!r}")
    return {"name": name, "level": level, "message": message, "values": {str(k): str(v) for k, v in (values or {}).items()}}


def worst_level(levels: list[str]) -> str:
    """The most severe of ``levels`` (ERROR > WARN > STALE > OK); OK for an empty list."""
    return max(levels, key=lambda lv: _SEVERITY[lv], default=OK)


class RateMeter:
    """Event rate over a sliding window of the monotonic clock.

    ``rate_hz`` is ``(n - 1) / (t_last - t_first)`` over the events of the last ``window_s``
    seconds (0 with fewer than two), so it does not depend on when it is read.
    """

    def __init__(self, window_s: float = 5.0, max_events: int = 1024, clock: Callable[[], float] = time.monotonic):
        self.window_s = float(window_s)
        self.clock = clock
        self._times: deque[float] = deque(maxlen=max_events)
        self._count = 0
        self._lock = threading.Lock()

    def tick(self, now: Optional[float] = None) -> None:
        with self._lock:
            self._times.append(self.clock() if now is None else now)
            self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def rate_hz(self, now: Optional[float] = None) -> float:
        now = self.clock() if now is None else now
        with self._lock:
            recent = [t for t in self._times if now - t <= self.window_s]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def age_s(self, now: Optional[float] = None) -> Optional[float]:
        """Seconds since the last event, or None if there was none."""
        now = self.clock() if now is None else now
        with self._lock:
            return now - self._times[-1] if self._times else None

    def reset(self) -> None:
        with self._lock:
            self._times.clear()


class LatencyTracker:
    """Median and 95th percentile of each stage's duration over the last ``window`` samples."""

    def __init__(self, window: int = 100) -> None:
        self.window = int(window)
        self._samples: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def add(self, durations_ms: dict[str, float]) -> None:
        with self._lock:
            for stage, ms in durations_ms.items():
                self._samples.setdefault(stage, deque(maxlen=self.window)).append(float(ms))

    def summary(self) -> dict[str, tuple[float, float, int]]:
        """``{stage: (median_ms, p95_ms, samples)}``."""
        with self._lock:
            copies = {k: np.asarray(v, dtype=np.float64) for k, v in self._samples.items() if v}
        return {k: (float(np.median(v)), float(np.percentile(v, 95)), int(v.size)) for k, v in copies.items()}


@dataclass
class _Event:
    level: str
    count: int
    last_message: str
    last_wall_time: float
    last_monotonic: float


class EventLog:
    """Errors and warnings by kind: count, last message and when it happened."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._events: dict[str, _Event] = {}
        self._lock = threading.Lock()

    def record(self, kind: str, message: str, level: str = ERROR) -> None:
        if level not in (WARN, ERROR):
            raise ValueError(f"event level must be WARN or ERROR, got {level!r}")
        with self._lock:
            ev = self._events.get(kind)
            if ev is None:
                self._events[kind] = _Event(level, 1, message, time.time(), self.clock())
            else:
                ev.level, ev.count, ev.last_message = level, ev.count + 1, message
                ev.last_wall_time, ev.last_monotonic = time.time(), self.clock()

    def count(self, kind: str) -> int:
        with self._lock:
            ev = self._events.get(kind)
            return ev.count if ev else 0

    def last_message(self, kind: str) -> Optional[str]:
        with self._lock:
            ev = self._events.get(kind)
            return ev.last_message if ev else None

    def kinds(self) -> list[str]:
        with self._lock:
            return sorted(self._events)

    def recent(self, within_s: float) -> list[tuple[str, str, int, str, float]]:
        """``(kind, level, count, last_message, age_s)`` of events seen in the last ``within_s`` s."""
        now = self.clock()
        with self._lock:
            return [
                (k, e.level, e.count, e.last_message, now - e.last_monotonic)
                for k, e in sorted(self._events.items())
                if now - e.last_monotonic <= within_s
            ]

    def values(self) -> dict[str, str]:
        """``{kind: "N x, last at <UTC time>: <message>"}`` for a DiagnosticStatus."""
        with self._lock:
            items = sorted(self._events.items())
        return {
            k: f"{e.count} x {e.level}, last at {time.strftime('%H:%M:%S', time.gmtime(e.last_wall_time))}"
               f".{int(e.last_wall_time * 1000) % 1000:03d} UTC: {e.last_message}"
            for k, e in items
        }


class Counters:
    """Named integer counters (dropped frames by reason, invalid depth pixels, ...)."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + int(n)

    def get(self, name: str) -> int:
        with self._lock:
            return self._values.get(name, 0)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class LogThrottle:
    """At most one log line per event kind every ``period_s`` seconds, each kind on its own
    clock (a flood of one kind never hides another), counting the lines it held back."""

    def __init__(self, period_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = float(period_s)
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, kind: str) -> Optional[int]:
        """None: suppress this line; else log it, noting the returned number of lines of this
        kind suppressed since the last one logged."""
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.period_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return None
            self._last[kind] = now
            return self._held.pop(kind, 0)

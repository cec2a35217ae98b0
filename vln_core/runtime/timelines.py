"""Stamp order and stamp jumps of the runtime's input streams (image, depth, odometry, camera pose).

Each stream's stamps must increase. A jump of more than ``node.stamp_jump_reset_s`` counts only
once confirmed (:data:`JUMP_CONFIRM_MESSAGES` consecutive messages on the new timeline, another
stream already there, or a real pause of the stream); until then the stream's messages are held,
and dropped as outliers (``dropped_stamp_outlier``) if the stream goes on where it was. A
confirmed jump forward resets that stream's buffered data, a confirmed jump back (bag loop,
clock reset) resets everything; the held messages of the new timeline are then replayed.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

from vln_core.errors import InputError
from vln_core.runtime.buffer import StreamClock
from vln_core.runtime.diagnostics import Counters
from vln_core.runtime.inputs import format_stamp

__all__ = ["StreamTimelines", "JUMP_CONFIRM_MESSAGES"]

#: A stamp jump (``node.stamp_jump_reset_s``) resets buffers only once confirmed: by this many
#: consecutive messages of the stream on the new timeline, by another stream already there, or
#: (forward) by a real pause of the stream; until then its messages are held, and dropped as
#: outliers (kind ``<stream>_stamp_outlier``) when the stream goes on where it was.
JUMP_CONFIRM_MESSAGES = 3


class StreamTimelines:
    """The stamp clocks of the input streams and the messages held behind unconfirmed jumps.

    Args:
        streams: stream names.
        jump_reset_s: ``node.stamp_jump_reset_s``.
        clock: monotonic seconds (the runtime's, fake in tests).
        counters: the runtime's drop counters.
        warn: ``warn(kind, message)``; error: ``error(kind, message) -> InputError`` (recorded).
        reset_stream: ``reset_stream(stream)`` clears one stream's buffered data (jump forward).
        reset_all: clears every buffer, pose and keyframe and calls :meth:`reset_clocks` (jump back).
    """

    def __init__(self, streams: Iterable[str], jump_reset_s: float, clock: Callable[[], float], counters: Counters,
                 warn: Callable[[str, str], None], error: Callable[[str, str], InputError],
                 reset_stream: Callable[[str], None], reset_all: Callable[[], None]) -> None:
        self.jump_reset_s = float(jump_reset_s)
        self.jump_ns = int(round(jump_reset_s * 1e9))
        self.clock = clock
        self._counters = counters
        self._warn, self._error = warn, error
        self._reset_stream, self._reset_all = reset_stream, reset_all
        self._clocks = {name: StreamClock(self.jump_ns) for name in streams}
        # messages behind a stamp jump not confirmed yet: (stamp, re-add callable) per stream
        self._held: dict[str, list[tuple[int, Optional[Callable[[], None]]]]] = {name: [] for name in self._clocks}
        self._last_accept_time: dict[str, float] = {}

    def last_ns(self, stream: str) -> Optional[int]:
        """The last accepted stamp of ``stream`` (None before the first, or after a reset)."""
        return self._clocks[stream].last_ns

    def reset_clocks(self) -> None:
        """Forget every stream's last stamp (after a reset of all inputs)."""
        for clock in self._clocks.values():
            clock.reset()

    def _jump_confirmed_locked(self, stream: str, stamp_ns: int, verdict: str) -> bool:
        """Is a jump of ``stream`` to ``stamp_ns`` real (see :data:`JUMP_CONFIRM_MESSAGES`)?"""
        held = self._held[stream]
        if held and 0 < stamp_ns - held[-1][0] <= self.jump_ns and len(held) + 1 >= JUMP_CONFIRM_MESSAGES:
            return True
        for other, clock in self._clocks.items():
            if other == stream:
                continue
            if clock.last_ns is not None and abs(stamp_ns - clock.last_ns) <= self.jump_ns:
                return True
            if any(abs(stamp_ns - s) <= self.jump_ns for s, _ in self._held[other]):
                return True
        if verdict == "jump_forward":  # the stream really paused (no message for a while)
            last = self._last_accept_time.get(stream)
            return last is not None and self.clock() - last >= 0.5 * self.jump_reset_s
        return False

    def _drop_held_locked(self, stream: str) -> None:
        if self._held[stream]:
            self._counters.add("dropped_stamp_outlier", len(self._held[stream]))
            self._held[stream] = []

    def accept(self, stream: str, stamp_ns: int, replay: Optional[Callable[[], None]] = None) -> bool:
        """Classify ``stamp_ns`` on ``stream``, apply resets, accept it; InputError if out of order.

        Returns False when the message is held behind an unconfirmed stamp jump (the caller
        stores nothing; ``replay`` re-adds it if the jump is confirmed). Must be called with the
        runtime's lock held (the resets and replays change its buffers).
        """
        clock = self._clocks[stream]
        verdict = clock.check(stamp_ns)
        if verdict == "not_newer":
            raise self._error(
                f"{stream}_out_of_order",
                f"{stream} stamp {format_stamp(stamp_ns)} is not after the previous {format_stamp(clock.last_ns)}; message dropped",
            )
        held = self._held[stream]
        if verdict in ("jump_back", "jump_forward") and not self._jump_confirmed_locked(stream, stamp_ns, verdict):
            if held and not 0 < stamp_ns - held[-1][0] <= self.jump_ns:
                self._drop_held_locked(stream)  # another outlier, not the same new timeline
            if not held:
                self._warn(
                    f"{stream}_stamp_outlier",
                    f"{stream} stamp {format_stamp(stamp_ns)} is {(stamp_ns - clock.last_ns) * 1e-9:+.3f} s from the previous "
                    f"{format_stamp(clock.last_ns)}: held as an outlier (dropped unless {JUMP_CONFIRM_MESSAGES} messages or "
                    f"another stream confirm the jump); buffers and keyframes kept",
                )
            held.append((stamp_ns, replay))
            return False
        if verdict in ("first", "ok"):
            self._drop_held_locked(stream)  # the stream went on where it was: those were outliers
            clock.accept(stamp_ns)
            self._last_accept_time[stream] = self.clock()
            return True
        if verdict == "jump_back":
            self._warn(
                "time_jump_back",
                f"{stream} stamp jumped back {(clock.last_ns - stamp_ns) * 1e-9:.3f} s (bag loop or clock reset): "
                f"all buffers, poses and keyframes reset",
            )
            self._reset_all()
        elif verdict == "jump_forward":
            gap = (stamp_ns - clock.last_ns) * 1e-9
            self._warn(f"{stream}_gap", f"{stream} stream paused for {gap:.3f} s (> {self.jump_reset_s} s): its buffered data reset")
            self._reset_stream(stream)
        # the jump is real: re-add this stream's held messages (the new timeline's first ones),
        # accept this one, then the other streams' held messages that are on the new timeline
        own, self._held[stream] = self._held[stream], []
        others = []
        for other in self._clocks:
            if other == stream:
                continue
            near = [(s, r) for s, r in self._held[other] if abs(s - stamp_ns) <= self.jump_ns]
            if len(near) < len(self._held[other]):
                self._counters.add("dropped_stamp_outlier", len(self._held[other]) - len(near))
            others += near
            self._held[other] = []
        clock.reset()
        for _, again in own:
            self._replay_held(again)
        clock.accept(stamp_ns)
        self._last_accept_time[stream] = self.clock()
        for _, again in sorted(others, key=lambda e: e[0]):
            self._replay_held(again)
        return True

    def _replay_held(self, again: Optional[Callable[[], None]]) -> None:
        if again is None:
            return
        try:
            again()
        except InputError:
            pass  # recorded by the method itself

"""Bounded frame ring and stamp pairing for the navigation runtime (no ROS, no inference).

Camera images, depth images and poses arrive on separate streams with their own stamps. The
runtime keeps:

* a :class:`FrameRing` of the last ``N_m`` images (a ``deque(maxlen=N_m)``); a depth image is
  attached to the buffered image with the nearest stamp within the pairing tolerance,
* :class:`StampedHistory` queues of recent poses (odometry or camera poses from tf) and of depth
  images that arrived before their image,
* :func:`pose_at`, the pose at an image stamp: linear interpolation of the translation and
  spherical interpolation of the rotation between the two surrounding poses, or the nearest pose
  when the stamp is not bracketed; either way the nearest pose must lie within the tolerance.

Stamps are integer nanoseconds (ROS ``builtin_interfaces/Time`` as ``sec * 10**9 + nanosec``).
Poses are ``(4, 4)`` float64 numpy matrices (see ``docs/conventions.md``).
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, Optional, TypeVar

import numpy as np

from vln_core.backends.base import CameraFrame  # the frame type the backends take
from vln_core.geometry.transforms import matrix_to_quat, quat_to_matrix

__all__ = [
    "CameraFrame",
    "BufferedImage",
    "FrameRing",
    "StampedHistory",
    "StreamClock",
    "interpolate_pose",
    "pose_at",
]

V = TypeVar("V")


@dataclass(eq=False)
class BufferedImage:
    """An image waiting in the ring, with the depth paired to it so far.

    ``received_s`` is the monotonic clock reading when the image arrived (for input-to-output
    latency); ``depth_m``/``depth_stamp_ns`` are filled by the pairing.
    """

    seq: int
    stamp_ns: int
    frame_id: str
    rgb: np.ndarray
    received_s: float
    depth_m: Optional[np.ndarray] = None
    depth_stamp_ns: Optional[int] = None

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.rgb.shape[0]), int(self.rgb.shape[1]))


class FrameRing:
    """The last ``capacity`` images in arrival order (oldest evicted first).

    Not thread-safe by itself: the runtime guards it with its lock.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"FrameRing capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._items: deque[BufferedImage] = deque(maxlen=self.capacity)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[BufferedImage]:
        return iter(self._items)

    def push(self, item: BufferedImage) -> Optional[BufferedImage]:
        """Append ``item``; return the image pushed out of a full ring (None if none)."""
        evicted = self._items[0] if len(self._items) == self.capacity else None
        self._items.append(item)
        return evicted

    def newest_first(self, after_seq: int = -1) -> list[BufferedImage]:
        """Buffered images with ``seq > after_seq``, newest first."""
        return [item for item in reversed(self._items) if item.seq > after_seq]

    def attach_depth(self, stamp_ns: int, depth_m: np.ndarray, tolerance_ns: int) -> Optional[BufferedImage]:
        """Pair a depth image with the image of nearest stamp within ``tolerance_ns``.

        A depth image replaces an earlier pairing of that image only if it is closer in time.

        Returns:
            The image it was attached to, or None when no buffered image is close enough.
        """
        best: Optional[BufferedImage] = None
        best_gap = tolerance_ns + 1
        for item in self._items:
            gap = abs(item.stamp_ns - stamp_ns)
            if gap < best_gap:
                best, best_gap = item, gap
        if best is None:
            return None
        if best.depth_stamp_ns is not None and abs(best.depth_stamp_ns - best.stamp_ns) <= best_gap:
            return None
        best.depth_m = depth_m
        best.depth_stamp_ns = stamp_ns
        return best

    def clear(self) -> list[BufferedImage]:
        """Empty the ring; return what it held."""
        items = list(self._items)
        self._items.clear()
        return items


class StampedHistory(Generic[V]):
    """Values with strictly increasing stamps, bounded by count and by age.

    ``max_age_ns`` is measured back from the newest stamp. Not thread-safe by itself.
    """

    def __init__(self, max_len: int, max_age_ns: Optional[int] = None) -> None:
        if max_len < 1:
            raise ValueError(f"StampedHistory max_len must be >= 1, got {max_len}")
        self.max_len = int(max_len)
        self.max_age_ns = max_age_ns
        self._stamps: list[int] = []
        self._values: list[V] = []

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def newest_stamp(self) -> Optional[int]:
        return self._stamps[-1] if self._stamps else None

    def append(self, stamp_ns: int, value: V) -> None:
        """Add a sample; ``stamp_ns`` must be newer than the newest (the caller checks order)."""
        if self._stamps and stamp_ns <= self._stamps[-1]:
            raise ValueError(f"stamp {stamp_ns} is not newer than {self._stamps[-1]}")
        self._stamps.append(int(stamp_ns))
        self._values.append(value)
        drop = max(0, len(self._stamps) - self.max_len)
        if self.max_age_ns is not None:
            oldest_kept = stamp_ns - self.max_age_ns
            drop = max(drop, bisect.bisect_left(self._stamps, oldest_kept))
            drop = min(drop, len(self._stamps) - 1)
        if drop:
            del self._stamps[:drop]
            del self._values[:drop]

    def snapshot(self) -> tuple[list[int], list[V]]:
        """Shallow copies of the stamps and values (safe to read while the history keeps growing)."""
        return list(self._stamps), list(self._values)

    def pop_nearest(self, stamp_ns: int, tolerance_ns: int) -> Optional[tuple[int, V]]:
        """Remove and return the sample nearest ``stamp_ns`` if within ``tolerance_ns``."""
        i = nearest_index(self._stamps, stamp_ns)
        if i is None or abs(self._stamps[i] - stamp_ns) > tolerance_ns:
            return None
        return self._stamps.pop(i), self._values.pop(i)

    def clear(self) -> None:
        self._stamps.clear()
        self._values.clear()


def nearest_index(stamps: list[int], stamp_ns: int) -> Optional[int]:
    """Index of the stamp nearest ``stamp_ns`` in a sorted list (None if empty)."""
    if not stamps:
        return None
    j = bisect.bisect_left(stamps, stamp_ns)
    if j == 0:
        return 0
    if j == len(stamps):
        return len(stamps) - 1
    return j if stamps[j] - stamp_ns < stamp_ns - stamps[j - 1] else j - 1


@dataclass
class StreamClock:
    """The last accepted stamp of one input stream, classifying each new stamp.

    ``check`` returns one of ``"first"``, ``"ok"``, ``"not_newer"`` (duplicate or slightly out of
    order: drop it), ``"jump_back"`` (more than ``jump_ns`` backwards: clock reset or bag loop)
    or ``"jump_forward"`` (a gap of more than ``jump_ns``).
    """

    jump_ns: int
    last_ns: Optional[int] = None
    accepted: int = field(default=0)

    def check(self, stamp_ns: int) -> str:
        if self.last_ns is None:
            return "first"
        delta = stamp_ns - self.last_ns
        if delta > self.jump_ns:
            return "jump_forward"
        if delta < -self.jump_ns:
            return "jump_back"
        if delta <= 0:
            return "not_newer"
        return "ok"

    def accept(self, stamp_ns: int) -> None:
        self.last_ns = int(stamp_ns)
        self.accepted += 1

    def reset(self) -> None:
        self.last_ns = None


def _quat(R: np.ndarray) -> np.ndarray:
    return matrix_to_quat(np.asarray(R, dtype=np.float64)).numpy()


def interpolate_pose(T0: Any, T1: Any, alpha: float) -> np.ndarray:
    """Pose a fraction ``alpha`` of the way from ``T0`` to ``T1``.

    Translation is interpolated linearly, rotation by spherical linear interpolation along the
    shorter arc (so ``alpha`` 0 gives ``T0``, 1 gives ``T1``).

    Args:
        T0, T1: ``(4, 4)`` rigid poses ``T_<to><from>`` of the same two frames.
        alpha: fraction in [0, 1] (values outside extrapolate the translation and rotation).

    Returns:
        ``(4, 4)`` float64 pose.
    """
    T0 = np.asarray(T0, dtype=np.float64)
    T1 = np.asarray(T1, dtype=np.float64)
    q0, q1 = _quat(T0[:3, :3]), _quat(T1[:3, :3])
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    dot = min(1.0, dot)
    if dot > 0.9995:  # nearly equal rotations: normalised lerp is exact enough and stable
        q = q0 + alpha * (q1 - q0)
    else:
        theta = np.arccos(dot)
        q = (np.sin((1.0 - alpha) * theta) * q0 + np.sin(alpha * theta) * q1) / np.sin(theta)
    q = q / np.linalg.norm(q)
    out = np.eye(4)
    out[:3, :3] = quat_to_matrix(q).numpy()
    out[:3, 3] = (1.0 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]
    return out


def pose_at(
    stamps: list[int], poses: list[np.ndarray], stamp_ns: int, tolerance_ns: int
) -> tuple[Optional[np.ndarray], Optional[int], str]:
    """The pose at ``stamp_ns`` from a sorted pose history.

    If a sample lies within ``tolerance_ns`` of ``stamp_ns``: when ``stamp_ns`` lies between two
    samples, interpolate them (:func:`interpolate_pose`); otherwise (before the first or after the
    last sample) use the nearest one unchanged, no extrapolation.

    Args:
        stamps: sorted sample stamps (ns).
        poses: ``(4, 4)`` poses, one per stamp.
        stamp_ns: the query stamp.
        tolerance_ns: the nearest sample must be at most this far from ``stamp_ns``.

    Returns:
        ``(pose, nearest_index, reason)``: the ``(4, 4)`` float64 pose and the index of the
        nearest sample, or ``(None, None, reason)`` with a sentence saying why there is none.
    """
    i = nearest_index(stamps, stamp_ns)
    if i is None:
        return None, None, "no pose received yet"
    gap = abs(stamps[i] - stamp_ns)
    if gap > tolerance_ns:
        side = "after" if stamps[i] > stamp_ns else "before"
        return None, None, (
            f"nearest pose is {gap * 1e-9:.3f} s {side} the image stamp "
            f"(tolerance {tolerance_ns * 1e-9:.3f} s)"
        )
    j = bisect.bisect_left(stamps, stamp_ns)
    if j < len(stamps) and stamps[j] == stamp_ns:
        return np.asarray(poses[j], dtype=np.float64), j, "exact"
    if 0 < j < len(stamps):
        s0, s1 = stamps[j - 1], stamps[j]
        alpha = (stamp_ns - s0) / (s1 - s0)
        return interpolate_pose(poses[j - 1], poses[j], alpha), i, "interpolated"
    return np.asarray(poses[i], dtype=np.float64), i, "nearest"

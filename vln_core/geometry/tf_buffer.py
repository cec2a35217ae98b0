"""A small transform buffer (the part of tf2 the node needs), in numpy, no ROS.

ROS 2 from PyPI has no ``tf2_ros``; with ``tf2_msgs`` built from its message definition
(``ros2_ws/src/tf2_msgs``) the node subscribes to ``/tf`` and ``/tf_static`` itself and keeps
the transforms here. Semantics follow tf2:

* every frame has one parent; a transform ``parent -> child`` is the pose of ``child`` in
  ``parent`` (``T_parent_child``, maps child coordinates to parent coordinates), as in
  ``geometry_msgs/TransformStamped`` (``header.frame_id`` = parent, ``child_frame_id`` = child);
* static transforms (``/tf_static``) hold at every time; dynamic ones (``/tf``) are kept for
  ``cache_s`` seconds (at most ``max_per_frame`` per frame) and interpolated at the query stamp
  (translation linearly, rotation by slerp), never extrapolated;
* :meth:`TransformBuffer.lookup` chains the transforms from the source frame up to the common
  ancestor and down to the target frame, each evaluated at the query stamp; stamp 0 means "the
  latest time at which the whole chain is known" (tf2's ``Time(0)``);
* failures raise :class:`TransformError` subclasses with a sentence naming the frames and
  stamps: :class:`FrameNotFoundError`, :class:`ConnectivityError` ("frame X is not connected to
  Y"), :class:`ExtrapolationError` (``future`` tells whether the stamp is after the newest
  transform, i.e. waiting may help).

Quaternions are ``(x, y, z, w)``. Stamps are integer nanoseconds. Thread-safe.
"""
from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from vln_core.errors import InputError
from vln_core.geometry.transforms import ROTATION_TOLERANCE, nearest_rotation, rotation_error

__all__ = [
    "TransformBuffer",
    "TransformError",
    "FrameNotFoundError",
    "ConnectivityError",
    "ExtrapolationError",
    "quat_slerp",
    "quat_to_rotation",
    "rotation_to_quat",
    "transform_to_matrix",
]

#: Dynamic transforms older than this (seconds before the newest of their frame) are forgotten
#: (tf2's default cache time).
DEFAULT_CACHE_S = 10.0
#: At most this many dynamic transforms are kept per frame (a 1 kHz publisher fills 2 s).
DEFAULT_MAX_PER_FRAME = 2000
#: tf2 rejects a quaternion whose squared norm is further than this from 1.
QUAT_NORM_TOLERANCE = 1e-2
#: Longest parent chain followed before a loop is assumed.
MAX_CHAIN = 100


class TransformError(LookupError):
    """A transform could not be looked up (the message names frames and stamps)."""


class FrameNotFoundError(TransformError):
    """A frame no transform mentions."""


class ConnectivityError(TransformError):
    """Both frames exist but lie in different trees."""


class ExtrapolationError(TransformError):
    """The stamp lies outside the buffered transforms of a frame in the chain.

    Attributes:
        future: True when the stamp is after the newest transform (a later message may cover it),
            False when it is before the oldest kept one.
    """

    def __init__(self, message: str, future: bool) -> None:
        super().__init__(message)
        self.future = bool(future)


# ------------------------------------------------------------------------------ quaternions


def quat_to_rotation(q: Sequence[float]) -> np.ndarray:
    """Unit quaternion ``(x, y, z, w)`` -> ``(3, 3)`` rotation matrix."""
    x, y, z, w = (float(v) for v in q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ], dtype=np.float64)


def rotation_to_quat(R: Any) -> np.ndarray:
    """``(3, 3)`` rotation matrix -> unit quaternion ``(x, y, z, w)`` with ``w >= 0``."""
    R = np.asarray(R, dtype=np.float64)
    tr = R[0, 0] + R[1, 1] + R[2, 2]
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s]
    q = np.asarray(q, dtype=np.float64)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def quat_slerp(q0: Sequence[float], q1: Sequence[float], alpha: float) -> np.ndarray:
    """Spherical linear interpolation from ``q0`` (alpha 0) to ``q1`` (alpha 1), shortest arc."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # q and -q are the same rotation: take the short way
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: lerp + normalise is exact to double precision here
        q = q0 + alpha * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(1.0, dot))
    s = math.sin(theta)
    q = (math.sin((1.0 - alpha) * theta) / s) * q0 + (math.sin(alpha * theta) / s) * q1
    return q / np.linalg.norm(q)


def transform_to_matrix(translation: Sequence[float], rotation: Sequence[float]) -> np.ndarray:
    """``(x, y, z)`` + unit quaternion ``(x, y, z, w)`` -> ``(4, 4)`` homogeneous transform."""
    T = np.eye(4, dtype=np.float64)
    T[:3, :3] = quat_to_rotation(rotation)
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def _fmt(stamp_ns: int) -> str:
    return f"{stamp_ns * 1e-9:.3f} s"


def _strip(frame: Any) -> str:
    frame = str(frame)
    return frame[1:] if frame.startswith("/") else frame  # tf2 ignores one leading slash


# ------------------------------------------------------------------------------ the buffer


@dataclass
class _FrameHistory:
    """The transforms from ``parent`` to one child frame."""

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    rotations: list[np.ndarray] = field(default_factory=list)

    def insert(self, stamp_ns: int, t: np.ndarray, q: np.ndarray, cache_ns: int, max_len: int) -> None:
        if self.static:
            self.stamps, self.translations, self.rotations = [stamp_ns], [t], [q]
            return
        if self.stamps and stamp_ns < self.stamps[-1] - cache_ns:
            # far older than everything kept: the clock jumped back (a bag loop, a restarted
            # simulator); the old history describes another timeline
            self.stamps, self.translations, self.rotations = [], [], []
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            self.translations[i], self.rotations[i] = t, q  # same stamp: the newer message wins
        else:
            self.stamps.insert(i, stamp_ns)
            self.translations.insert(i, t)
            self.rotations.insert(i, q)
        newest = self.stamps[-1]
        cut = bisect.bisect_left(self.stamps, newest - cache_ns)
        cut = max(cut, len(self.stamps) - max_len)
        if cut > 0:
            del self.stamps[:cut], self.translations[:cut], self.rotations[:cut]


class TransformBuffer:
    """Static and dynamic transforms between named frames; see the module docstring.

    Args:
        cache_s: how long dynamic transforms are kept (seconds before the newest of each frame).
        max_per_frame: at most this many dynamic transforms per frame.
    """

    def __init__(self, cache_s: float = DEFAULT_CACHE_S, max_per_frame: int = DEFAULT_MAX_PER_FRAME) -> None:
        if cache_s <= 0 or max_per_frame < 2:
            raise ValueError(f"cache_s must be > 0 and max_per_frame >= 2, got {cache_s}, {max_per_frame}")
        self.cache_ns = int(round(cache_s * 1e9))
        self.max_per_frame = int(max_per_frame)
        self._frames: dict[str, _FrameHistory] = {}
        self._lock = threading.Lock()

    # -------------------------------------------------------------- input
    def set_transform(self, parent: str, child: str, stamp_ns: int, translation: Sequence[float],
                      rotation: Sequence[float], static: bool = False) -> None:
        """Add ``T_parent_child`` at ``stamp_ns`` (static: valid at every time).

        Raises:
            InputError: empty or equal frame ids, a negative stamp, non-finite values, or a
                quaternion whose squared norm is not within 1e-2 of 1 (tf2's check); the buffer
                is unchanged then. A valid quaternion is renormalised.
        """
        parent, child = _strip(parent), _strip(child)
        if not parent or not child:
            raise InputError(f"transform {parent!r} -> {child!r}: frame ids must not be empty")
        if parent == child:
            raise InputError(f"transform from frame {parent!r} to itself")
        stamp_ns = int(stamp_ns)
        if stamp_ns < 0:
            raise InputError(f"transform {parent} -> {child}: negative stamp {stamp_ns}")
        t = np.asarray(translation, dtype=np.float64).reshape(-1)
        q = np.asarray(rotation, dtype=np.float64).reshape(-1)
        if t.shape != (3,) or q.shape != (4,):
            raise InputError(f"transform {parent} -> {child}: translation must have 3 and rotation 4 values")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
            raise InputError(f"transform {parent} -> {child}: non-finite values {t.tolist()} {q.tolist()}")
        norm2 = float(np.dot(q, q))
        if abs(norm2 - 1.0) > QUAT_NORM_TOLERANCE:
            raise InputError(f"transform {parent} -> {child}: quaternion {q.tolist()} is not normalised "
                             f"(squared norm {norm2:.4f})")
        q = q / math.sqrt(norm2)
        with self._lock:
            history = self._frames.get(child)
            if history is None or history.parent != parent or history.static != bool(static):
                # a new frame, a new parent (re-parenting) or static <-> dynamic: start over
                history = _FrameHistory(parent=parent, static=bool(static))
                self._frames[child] = history
            history.insert(stamp_ns, t, q, self.cache_ns, self.max_per_frame)

    def set_transforms(self, transforms: Iterable[tuple], static: bool = False) -> tuple[int, list[str]]:
        """Add many ``(parent, child, stamp_ns, translation, rotation)``; bad ones are skipped.

        Returns:
            ``(accepted, problems)``: how many were added and one sentence per skipped one.
        """
        accepted, problems = 0, []
        for parent, child, stamp_ns, translation, rotation in transforms:
            try:
                self.set_transform(parent, child, stamp_ns, translation, rotation, static=static)
                accepted += 1
            except InputError as exc:
                problems.append(str(exc))
        return accepted, problems

    def set_transform_matrix(self, parent: str, child: str, stamp_ns: int, T: Any, static: bool = False) -> None:
        """:meth:`set_transform` from a ``(4, 4)`` rigid transform ``T_parent_child``."""
        T = np.asarray(T, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise InputError(f"transform {parent} -> {child}: expected a finite (4, 4) matrix")
        R = T[:3, :3]
        error = rotation_error(R)
        if error > ROTATION_TOLERANCE:
            raise InputError(f"transform {parent} -> {child}: the rotation block is not a rotation "
                             f"(error {error:.2e}, tolerance {ROTATION_TOLERANCE:g})")
        self.set_transform(parent, child, stamp_ns, T[:3, 3], rotation_to_quat(nearest_rotation(R)), static=static)

    def clear(self, dynamic_only: bool = True) -> None:
        """Forget the dynamic transforms (all transforms with ``dynamic_only=False``)."""
        with self._lock:
            if dynamic_only:
                self._frames = {c: h for c, h in self._frames.items() if h.static}
            else:
                self._frames = {}

    # -------------------------------------------------------------- queries
    @property
    def frames(self) -> list[str]:
        """Every frame any transform mentions, sorted."""
        with self._lock:
            names = set(self._frames)
            names.update(h.parent for h in self._frames.values())
        return sorted(names)

    def parent_of(self, frame: str) -> Optional[str]:
        with self._lock:
            history = self._frames.get(_strip(frame))
            return None if history is None else history.parent

    def _chain_to_root(self, frame: str) -> list[str]:
        """``[frame, parent, grandparent, ..., root]`` (lock held)."""
        chain = [frame]
        while chain[-1] in self._frames:
            parent = self._frames[chain[-1]].parent
            if parent in chain or len(chain) > MAX_CHAIN:
                raise TransformError(f"the parent chain of frame {frame!r} loops: {' -> '.join(chain + [parent])}")
            chain.append(parent)
        return chain

    def _known(self, frame: str) -> bool:
        return frame in self._frames or any(h.parent == frame for h in self._frames.values())

    def _path(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """Frames from ``source`` up to the common ancestor (excluded) and from ``target`` up to
        it (excluded): the child frames whose transforms the lookup composes (lock held)."""
        for frame in (source, target):
            if not self._known(frame):
                known = sorted(set(self._frames) | {h.parent for h in self._frames.values()})
                raise FrameNotFoundError(
                    f"frame {frame!r} does not exist: no transform mentions it (known frames: "
                    f"{', '.join(known) if known else 'none, no transform received yet'})")
        up_source = self._chain_to_root(source)
        up_target = self._chain_to_root(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            raise ConnectivityError(
                f"frame {source!r} is not connected to {target!r}: {source!r} belongs to the tree rooted "
                f"at {up_source[-1]!r} and {target!r} to the tree rooted at {up_target[-1]!r} "
                f"(a transform between the two trees is missing)")
        return up_source[:up_source.index(common)], up_target[:up_target.index(common)]

    def _edge(self, child: str, stamp_ns: int, tolerance_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """``(t, q)`` of ``T_parent_child`` at ``stamp_ns`` (lock held)."""
        h = self._frames[child]
        if h.static:
            return h.translations[0], h.rotations[0]
        stamps = h.stamps
        if stamp_ns > stamps[-1]:
            if stamp_ns - stamps[-1] <= tolerance_ns:
                return h.translations[-1], h.rotations[-1]
            raise ExtrapolationError(
                f"extrapolation: stamp {_fmt(stamp_ns)} is after the newest transform {h.parent} -> {child} "
                f"at {_fmt(stamps[-1])} ({(stamp_ns - stamps[-1]) * 1e-9:.3f} s later)", future=True)
        if stamp_ns < stamps[0]:
            if stamps[0] - stamp_ns <= tolerance_ns:
                return h.translations[0], h.rotations[0]
            raise ExtrapolationError(
                f"extrapolation: stamp {_fmt(stamp_ns)} is before the oldest kept transform {h.parent} -> "
                f"{child} at {_fmt(stamps[0])} ({(stamps[0] - stamp_ns) * 1e-9:.3f} s earlier)", future=False)
        j = bisect.bisect_left(stamps, stamp_ns)
        if stamps[j] == stamp_ns:
            return h.translations[j], h.rotations[j]
        s0, s1 = stamps[j - 1], stamps[j]
        alpha = (stamp_ns - s0) / (s1 - s0)
        t = (1.0 - alpha) * h.translations[j - 1] + alpha * h.translations[j]
        return t, quat_slerp(h.rotations[j - 1], h.rotations[j], alpha)

    def _matrix_up(self, frames: list[str], stamp_ns: int, tolerance_ns: int) -> np.ndarray:
        """Pose of ``frames[0]`` in the parent of ``frames[-1]`` (identity for no frames)."""
        T = np.eye(4)
        for child in frames:  # child, its parent, ...: T_ancestor_child = T_parent_child first
            t, q = self._edge(child, stamp_ns, tolerance_ns)
            T = transform_to_matrix(t, q) @ T
        return T

    def latest_common_stamp(self, target: str, source: str) -> int:
        """Newest stamp at which the whole chain is known (0 when it is all static)."""
        with self._lock:
            return self._latest_locked(*self._path(_strip(target), _strip(source)))

    def _latest_locked(self, up_source: list[str], up_target: list[str]) -> int:
        newest = [self._frames[c].stamps[-1] for c in up_source + up_target if not self._frames[c].static]
        return min(newest) if newest else 0

    def lookup(self, target: str, source: str, stamp_ns: int, tolerance_ns: int = 0) -> tuple[np.ndarray, int]:
        """The pose of ``source`` in ``target`` at ``stamp_ns``.

        Args:
            target: the frame to express the pose in (e.g. ``odom``).
            source: the frame whose pose is wanted (e.g. the camera's optical frame).
            stamp_ns: nanoseconds; 0 = the latest time the whole chain is known.
            tolerance_ns: a stamp at most this far outside a frame's buffered transforms uses the
                nearest one unchanged instead of raising ExtrapolationError.

        Returns:
            ``(T_target_source (4, 4) float64, stamp_ns used)``.

        Raises:
            FrameNotFoundError, ConnectivityError, ExtrapolationError (see the module docstring).
        """
        target, source = _strip(target), _strip(source)
        stamp_ns = int(stamp_ns)
        with self._lock:
            if target == source and self._known(target):
                return np.eye(4), stamp_ns
            up_source, up_target = self._path(target, source)
            if stamp_ns == 0:
                stamp_ns = self._latest_locked(up_source, up_target)
            T_common_source = self._matrix_up(up_source, stamp_ns, tolerance_ns)
            T_common_target = self._matrix_up(up_target, stamp_ns, tolerance_ns)
        T_common_target_inv = np.eye(4)
        R = T_common_target[:3, :3]
        T_common_target_inv[:3, :3] = R.T
        T_common_target_inv[:3, 3] = -R.T @ T_common_target[:3, 3]
        return T_common_target_inv @ T_common_source, stamp_ns

    def can_transform(self, target: str, source: str, stamp_ns: int, tolerance_ns: int = 0) -> bool:
        try:
            self.lookup(target, source, stamp_ns, tolerance_ns)
            return True
        except TransformError:
            return False

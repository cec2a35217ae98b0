"""Import a ROS 2 bag (sqlite3 or MCAP) as one episode, in pure Python via ``rosbags``.

What is read:

- colour: ``sensor_msgs/Image`` (``rgb8, bgr8, rgba8, bgra8, mono8``) or ``sensor_msgs/CompressedImage``
  (jpeg / png); decoding is :mod:`vln_core.ros_codec`'s.
- depth (optional): ``sensor_msgs/Image`` ``16UC1`` (mm) / ``32FC1`` (m), or a ``compressedDepth``
  ``CompressedImage``. Depth must be registered to colour (same size, e.g. RealSense
  ``aligned_depth_to_color``); a different size is an error, not a guess.
- intrinsics: ``sensor_msgs/CameraInfo`` ``k`` (the first message; the topic defaults to the
  ``camera_info`` topic in the nearest namespace of the colour topic).
- camera pose, one of
    * odometry: ``nav_msgs/Odometry`` gives ``T_odom_base(t)``; the camera pose is
      ``T_wc = T_odom_base(t) @ T_base_cam`` with the fixed mount ``T_base_cam`` (camera optical
      frame in ``base_link``) given, or found on ``/tf_static`` from ``base_frame`` to the camera frame;
    * tf: the chain ``world_frame -> ... -> camera_frame`` on ``/tf`` + ``/tf_static``, through a
      small transform buffer (:class:`TransformBuffer`) that interpolates every dynamic edge
      at the image stamp (linear translation, slerp rotation).

Pairing (all by header stamps, not by bag receive time): each colour frame takes the depth image
with the nearest stamp, which must lie within ``max_pair_dt``; its pose is interpolated at the
colour stamp between the two bracketing samples (no more than ``max_pose_gap`` apart), or held
from the nearest sample when that lies within ``max_pair_dt`` outside the recorded range. Frames
without depth or pose in tolerance, duplicate stamps and undecodable images are skipped and
counted; the counts are logged, returned in :class:`ImportStats` and stored in the episode's
``extra["import"]``.

A data file damaged in the middle: messages that do not deserialize are skipped, and where the
reader stops on damaged data, reading goes on after it. What ``metadata.yaml`` lists and was not
read (rosbags' MCAP reader also ends a damaged chunk early without an error) is counted per topic
and reported in one warning line (:meth:`BagReadStats.loss_warning`, ``ImportStats.read_warning``);
what was read is imported.

The camera frame must be an **optical** frame (OpenCV axes: x right, y down, z forward), which is
what ``header.frame_id`` of ROS camera images is by convention (``*_optical_frame``).
"""
from __future__ import annotations

import logging
import os
import sqlite3
import struct
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from vln_core.data.episode import EpisodeWriter
from vln_core.data.posed_images import check_pose
from vln_core.errors import InputError
from vln_core.geometry.transforms import matrix_to_quat
from vln_core.ros_codec import (
    camera_info_to_K,
    compressed_msg_to_array,
    image_msg_to_depth_m,
    image_msg_to_rgb,
    pose_fields_to_matrix,
    stamp_to_ns,
)

__all__ = [
    "ImportStats", "PoseTrack", "TransformBuffer", "import_rosbag", "slerp",
    "BagReadStats", "bag_errors", "check_bag_metadata", "iter_bag_messages",
]

log = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
TF_TYPE = "tf2_msgs/msg/TFMessage"
_NS = 1_000_000_000


# ============================================================================== damaged bags
def check_bag_metadata(bag_path: str | os.PathLike) -> None:
    """Raise :class:`InputError` (one line, with the fix) unless ``bag_path/metadata.yaml`` is a
    readable rosbag2 description: not empty, UTF-8, YAML, with ``rosbag2_bagfile_information``."""
    import yaml

    meta = Path(bag_path) / "metadata.yaml"
    fix = f"`ros2 bag reindex {bag_path}` writes it again from the data files"
    try:
        data = meta.read_bytes()
    except OSError as exc:
        raise InputError(f"bag {bag_path}: cannot read metadata.yaml ({exc.strerror or exc})") from None
    if not data.strip():
        raise InputError(f"bag {bag_path}: metadata.yaml is empty; {fix}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"bag {bag_path}: metadata.yaml is not text (binary data at byte {exc.start}); {fix}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InputError(f"bag {bag_path}: metadata.yaml is not valid YAML{line} ({problem}); cut short? {fix}") from None
    info = doc.get("rosbag2_bagfile_information") if isinstance(doc, dict) else None
    if not isinstance(info, dict) or "version" not in info or "storage_identifier" not in info:
        raise InputError(f"bag {bag_path}: metadata.yaml is not a rosbag2 description (no complete "
                         f"rosbag2_bagfile_information; cut short?); {fix}")


def _is_storage_error(exc: BaseException) -> bool:
    """Errors that mean "the bag's files are damaged", as opposed to a bug or a full disk."""
    module = type(exc).__module__ or ""
    return (module.startswith(("rosbags", "zstandard", "lz4", "yaml", "ruamel"))
            or isinstance(exc, (sqlite3.Error, struct.error, EOFError, UnicodeDecodeError)))


@contextmanager
def bag_errors(bag_path: str | os.PathLike) -> Iterator[None]:
    """Turn errors of a damaged bag raised inside the block into one-line :class:`InputError`
    that names the file and how to recover it (``mcap recover``, ``ros2 bag reindex``)."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - filtered by _is_storage_error below
        if not _is_storage_error(exc):
            raise
        bag_path = Path(bag_path)
        detail = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
        mcaps = sorted(bag_path.glob("*.mcap")) if bag_path.is_dir() else []
        db3s = sorted(bag_path.glob("*.db3")) if bag_path.is_dir() else []
        if mcaps:
            files = ", ".join(m.name for m in mcaps)
            hint = (f"the MCAP file ({files}) is damaged or cut short, as an interrupted `ros2 bag record` "
                    f"leaves it; recover it with `mcap recover {mcaps[0]} -o fixed.mcap` (mcap CLI), put "
                    f"fixed.mcap alone in a folder and run `ros2 bag reindex <folder>`")
        elif db3s:
            files = ", ".join(d.name for d in db3s)
            hint = (f"the sqlite3 file ({files}) is damaged or cut short; salvage it with "
                    f"`sqlite3 {db3s[0]} .recover | sqlite3 fixed.db3` and `ros2 bag reindex` its folder")
        else:
            hint = "the bag is damaged or incomplete; `ros2 bag reindex` its folder"
        raise InputError(f"cannot read bag {bag_path}: {detail}; {hint}") from None


@dataclass
class BagReadStats:
    """What reading a bag returned, against what its ``metadata.yaml`` lists.

    ``messages`` / ``undecodable`` / ``read_errors`` add up over every read; ``listed`` (messages per
    topic in ``metadata.yaml``), ``read`` (returned by the reader) and ``good`` (returned and
    deserialized) are those of the last complete read of the bag (one replay pass)."""

    messages: int = 0
    undecodable: int = 0
    first_undecodable: str = ""
    read_errors: int = 0  # places where the reader stopped on damaged data (reading went on after them)
    first_read_error: str = ""
    listed: dict[str, int] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    good: dict[str, int] = field(default_factory=dict)
    salvage_hint: str = ""  # how more of a damaged data file may be salvaged (set by the readers)

    def note(self, topic: str, msgtype: str, exc: BaseException) -> None:
        self.undecodable += 1
        if not self.first_undecodable:
            self.first_undecodable = f"{topic} ({msgtype}): {' '.join(str(exc).split()) or type(exc).__name__}"

    def note_read_error(self, exc: BaseException) -> None:
        self.read_errors += 1
        if not self.first_read_error:
            self.first_read_error = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__

    def lost(self) -> dict[str, tuple[int, int]]:
        """``topic -> (lost, listed)``: messages ``metadata.yaml`` lists that were not read and
        deserialized (topics without loss left out; a metadata.yaml without counts lists 0)."""
        return {t: (n - self.good.get(t, 0), n) for t, n in sorted(self.listed.items()) if n > self.good.get(t, 0)}

    def loss_warning(self) -> str:
        """One line naming what was lost, or "" when every listed message was read."""
        lost = self.lost()
        if not lost:
            return ""
        n_lost = sum(v[0] for v in lost.values())
        missing = sum(max(n - self.read.get(t, 0), 0) for t, n in self.listed.items())
        undecodable = sum(max(self.read.get(t, 0) - self.good.get(t, 0), 0) for t in self.listed)
        topics = ", ".join(f"{t}: {a} of {b}" for t, (a, b) in lost.items())
        causes = []
        if missing:
            causes.append(f"{missing} not returned by the reader (damaged data file"
                          f"{': ' + self.first_read_error if self.first_read_error else ''})")
        if undecodable:
            causes.append(f"{undecodable} did not deserialize")
        hint = f" ({self.salvage_hint})" if self.salvage_hint and missing else ""
        return (f"{n_lost} of {sum(self.listed.values())} messages listed in metadata.yaml could not be read "
                f"({topics}): {', '.join(causes)}; what was read is kept{hint}")


def _salvage_hint(bag_path: Path) -> str:
    """How to try to salvage more of a bag's damaged data file than the reader returns."""
    mcaps = sorted(bag_path.glob("*.mcap"))
    if mcaps:
        return f"`mcap recover {mcaps[0]} -o fixed.mcap` may salvage more"
    db3s = sorted(bag_path.glob("*.db3"))
    if db3s:
        return f"`sqlite3 {db3s[0]} .recover | sqlite3 fixed.db3` may salvage more"
    return ""


def _reader_messages_past_damage(reader: Any, connections: list, stats: BagReadStats,
                                 ) -> Iterator[tuple[Any, int, bytes]]:
    """``reader.messages(connections)``, going on after damaged data: where the reader raises
    (a damaged MCAP chunk or sqlite3 page), the error is counted in ``stats`` and reading starts
    again at the earliest later receive time the reader gets past (what lies between is lost and
    shows in :meth:`BagReadStats.loss_warning`). Damage the reader skips without an error (a
    damaged MCAP chunk often ends early) is found only by comparing with ``metadata.yaml``."""
    start: Optional[int] = None
    while True:
        last: Optional[int] = None
        messages = reader.messages(connections=connections, start=start)
        try:
            while True:
                try:
                    item = next(messages)
                except StopIteration:
                    return
                except Exception as exc:  # noqa: BLE001 - anything the reader raises reading damaged data
                    stats.note_read_error(exc)
                    break
                last = item[1]
                yield item
        finally:
            messages.close()
        after = last + 1 if last is not None else (start if start is not None else int(reader.start_time))
        start = _first_readable_start(reader, connections, after, int(reader.end_time))
        if start is None:
            return


def _first_readable_start(reader: Any, connections: list, after: int, end: int) -> Optional[int]:
    """The earliest receive time ``>= after`` from which the reader returns its first message
    without an error (None if none before ``end``): an exponential then a binary search."""

    def readable(start: int) -> bool:
        messages = reader.messages(connections=connections, start=start)
        try:
            next(messages, None)
            return True
        except Exception:  # noqa: BLE001 - the damaged part is still in the way
            return False
        finally:
            messages.close()

    lo, step = after, 1_000_000  # lo: not readable (the reader just failed there)
    hi = min(lo + step, end)
    while not readable(hi):
        if hi >= end:
            return None
        lo, step = hi, step * 2
        hi = min(lo + step, end)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if readable(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _read_bag(reader: Any, connections: list, stats: BagReadStats) -> Iterator[tuple[Any, int, bytes, Any]]:
    """``(connection, receive time ns, raw CDR, message)`` of every message of ``connections`` that
    the reader returns and that deserializes, in order; the rest is counted in ``stats`` (see
    :class:`BagReadStats`, whose per-topic figures this sets when the read is complete)."""
    listed: dict[str, int] = defaultdict(int)
    read: dict[str, int] = defaultdict(int)
    good: dict[str, int] = defaultdict(int)
    for conn in connections:
        listed[conn.topic] += int(getattr(conn, "msgcount", 0) or 0)
    for conn, timestamp, raw in _reader_messages_past_damage(reader, connections, stats):
        stats.messages += 1
        read[conn.topic] += 1
        try:
            msg = reader.deserialize(raw, conn.msgtype)
        except Exception as exc:  # noqa: BLE001 - a corrupt message: skip it, count it
            stats.note(conn.topic, conn.msgtype, exc)
            continue
        good[conn.topic] += 1
        yield conn, int(timestamp), raw, msg
    stats.listed, stats.read, stats.good = dict(listed), dict(read), dict(good)


def iter_bag_messages(bag_path: str | os.PathLike, topics: Optional[set[str]] = None,
                      stats: Optional[BagReadStats] = None) -> Iterator[tuple[str, str, int, bytes]]:
    """``(topic, msgtype, receive time ns, raw CDR)`` of every message of a rosbag2 folder, in
    order, for the replay. A message that does not deserialize is skipped and counted in
    ``stats``, so is data the reader cannot get through (reading goes on after it); after a
    complete read ``stats.loss_warning()`` names what ``metadata.yaml`` lists and was not read.
    A bag that cannot be opened raises :class:`InputError` (see :func:`bag_errors`)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    bag_path = Path(bag_path)
    if bag_path.is_file():
        bag_path = bag_path.parent
    if not (bag_path / "metadata.yaml").is_file():
        raise InputError(f"{bag_path} is not a rosbag2 folder (no metadata.yaml); for a bare .mcap/.db3 "
                         "file run `ros2 bag reindex <folder>` first")
    check_bag_metadata(bag_path)
    stats = stats if stats is not None else BagReadStats()
    stats.salvage_hint = _salvage_hint(bag_path)
    with bag_errors(bag_path):
        reader_cm = AnyReader([bag_path], default_typestore=get_typestore(Stores.LATEST))
        with reader_cm as reader:
            connections = [c for c in reader.connections if topics is None or c.topic in topics]
            for conn, timestamp, raw, _ in _read_bag(reader, connections, stats):
                yield conn.topic, conn.msgtype, timestamp, bytes(raw)


# ============================================================================== interpolation


def slerp(q0: np.ndarray, q1: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions (x, y, z, w), shortest path.

    Args:
        q0, q1: ``(M, 4)`` unit quaternions.
        alpha: ``(M,)`` fractions in [0, 1] (0 -> q0, 1 -> q1).

    Returns:
        ``(M, 4)`` unit quaternions.
    """
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64).copy()
    alpha = np.asarray(alpha, dtype=np.float64)[:, None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.abs(dot).clip(max=1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    close = sin_theta < 1e-9
    safe_sin = np.where(close, 1.0, sin_theta)
    w0 = np.where(close, 1.0 - alpha, np.sin((1.0 - alpha) * theta) / safe_sin)
    w1 = np.where(close, alpha, np.sin(alpha * theta) / safe_sin)
    out = w0 * q0 + w1 * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """``(M, 4)`` unit quaternions (x, y, z, w) -> ``(M, 3, 3)`` float64 rotations."""
    x, y, z, w = q.T
    return np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    ).reshape(-1, 3, 3)


def _matrix_to_quat(T: np.ndarray) -> np.ndarray:
    """``(4, 4)`` rigid transform -> ``(4,)`` float64 unit quaternion (x, y, z, w)."""
    return matrix_to_quat(np.asarray(T[:3, :3], dtype=np.float64)).numpy()


class PoseTrack:
    """Time series of one rigid transform (e.g. odom -> base_link) with interpolation.

    Samples are stored sorted by time; duplicate stamps keep the last sample.
    """

    def __init__(self) -> None:
        self._samples: dict[int, tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]] = {}
        self._sorted: Optional[tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]] = None

    def add(self, t_ns: int, T: np.ndarray, extra: Optional[np.ndarray] = None) -> None:
        """Add a sample: ``T`` ``(4, 4)`` rigid at time ``t_ns``; ``extra`` an optional vector
        (e.g. ``[vx, wz]``) interpolated linearly alongside."""
        T = np.asarray(T, dtype=np.float64)
        self._samples[int(t_ns)] = (T[:3, 3].copy(), _matrix_to_quat(T), None if extra is None else np.asarray(extra, float))
        self._sorted = None

    def __len__(self) -> int:
        return len(self._samples)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
        if self._sorted is None:
            times = np.array(sorted(self._samples), dtype=np.int64)
            trans = np.stack([self._samples[t][0] for t in times])
            quats = np.stack([self._samples[t][1] for t in times])
            extras = [self._samples[t][2] for t in times]
            extra = None if any(e is None for e in extras) else np.stack(extras)
            self._sorted = (times, trans, quats, extra)
        return self._sorted

    def interpolate(
        self, t_ns: int, max_gap_ns: int, max_hold_ns: int
    ) -> tuple[Optional[np.ndarray], Optional[np.ndarray], str]:
        """The transform at ``t_ns``.

        Args:
            t_ns: query time, nanoseconds.
            max_gap_ns: the two samples bracketing ``t_ns`` may be at most this far apart.
            max_hold_ns: outside the recorded range, hold the nearest sample if within this.

        Returns:
            ``(T (4, 4) or None, extra or None, reason)``; ``reason`` says why T is None.
        """
        if not self._samples:
            return None, None, "no samples"
        times, trans, quats, extra = self._arrays()
        i = int(np.searchsorted(times, t_ns, side="left"))
        if i < len(times) and times[i] == t_ns:
            lo = hi = i
        elif i == 0 or i == len(times):
            nearest = 0 if i == 0 else len(times) - 1
            if abs(int(times[nearest]) - t_ns) > max_hold_ns:
                side = "before the first" if i == 0 else "after the last"
                return None, None, f"{side} sample by {abs(int(times[nearest]) - t_ns) / _NS:.3f} s"
            lo = hi = nearest
        else:
            lo, hi = i - 1, i
            if int(times[hi] - times[lo]) > max_gap_ns:
                return None, None, f"in a {int(times[hi] - times[lo]) / _NS:.3f} s gap between samples"
        if lo == hi:
            t, q = trans[lo], quats[lo]
            e = None if extra is None else extra[lo]
        else:
            alpha = (t_ns - int(times[lo])) / int(times[hi] - times[lo])
            t = (1.0 - alpha) * trans[lo] + alpha * trans[hi]
            q = slerp(quats[lo][None], quats[hi][None], np.array([alpha]))[0]
            e = None if extra is None else (1.0 - alpha) * extra[lo] + alpha * extra[hi]
        T = np.eye(4)
        T[:3, :3] = _quat_to_matrix(q[None])[0]
        T[:3, 3] = t
        return T, e, ""


def _strip(frame: str) -> str:
    return frame.lstrip("/")


class TransformBuffer:
    """A tf tree from ``/tf`` and ``/tf_static`` messages with time interpolation.

    Each child frame has one parent. Static edges hold for all time; dynamic edges are
    :class:`PoseTrack` s interpolated at the query time.
    """

    def __init__(self, max_gap_ns: int, max_hold_ns: int) -> None:
        self.max_gap_ns = int(max_gap_ns)
        self.max_hold_ns = int(max_hold_ns)
        self.parent: dict[str, str] = {}
        self.static: dict[str, np.ndarray] = {}
        self.dynamic: dict[str, PoseTrack] = {}

    def add(self, parent: str, child: str, t_ns: int, T_parent_child: np.ndarray, static: bool) -> None:
        """Add one ``TransformStamped`` (``T_parent_child`` maps child coordinates to parent)."""
        parent, child = _strip(parent), _strip(child)
        if parent == child:
            raise InputError(f"tf: transform from {parent!r} to itself")
        known = self.parent.get(child)
        if known is not None and known != parent:
            raise InputError(f"tf: frame {child!r} has two parents, {known!r} and {parent!r}")
        if (child in self.static and not static) or (child in self.dynamic and static):
            raise InputError(f"tf: edge {parent!r} -> {child!r} is published both on /tf and /tf_static")
        self.parent[child] = parent
        if static:
            self.static[child] = np.asarray(T_parent_child, dtype=np.float64)
        else:
            self.dynamic.setdefault(child, PoseTrack()).add(t_ns, T_parent_child)

    def add_tf_message(self, msg: Any, static: bool) -> None:
        """Add every transform of a ``tf2_msgs/TFMessage``-like message."""
        for tr in msg.transforms:
            T = pose_fields_to_matrix(tr.transform.translation, tr.transform.rotation)
            self.add(tr.header.frame_id, tr.child_frame_id, stamp_to_ns(tr.header.stamp), T, static)

    def _ancestry(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self.parent:
            chain.append(self.parent[chain[-1]])
            if len(chain) > 1000:
                raise InputError(f"tf: cycle in the tree above {frame!r}")
        return chain

    def _edge(self, child: str, t_ns: Optional[int]) -> tuple[Optional[np.ndarray], str]:
        if child in self.static:
            return self.static[child], ""
        if t_ns is None:
            return None, f"edge {self.parent[child]!r} -> {child!r} is not static"
        T, _, reason = self.dynamic[child].interpolate(t_ns, self.max_gap_ns, self.max_hold_ns)
        return T, (f"{self.parent[child]!r} -> {child!r} {reason}" if T is None else "")

    def lookup(self, target: str, source: str, t_ns: Optional[int]) -> tuple[Optional[np.ndarray], str]:
        """``T_target_source`` (maps ``source`` coordinates to ``target``) at ``t_ns``.

        Args:
            target, source: frame ids.
            t_ns: time in nanoseconds, or None to allow static edges only.

        Returns:
            ``((4, 4) float64 or None, reason)``; ``reason`` says why the lookup failed.
        """
        target, source = _strip(target), _strip(source)
        up_source = self._ancestry(source)
        up_target = self._ancestry(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            return None, f"frames {target!r} and {source!r} are not connected in tf"

        def to_common(chain: list[str]) -> tuple[Optional[np.ndarray], str]:
            T = np.eye(4)
            for child in chain[: chain.index(common)]:
                edge, reason = self._edge(child, t_ns)
                if edge is None:
                    return None, reason
                T = edge @ T
            return T, ""

        T_common_source, reason = to_common(up_source)
        if T_common_source is None:
            return None, reason
        T_common_target, reason = to_common(up_target)
        if T_common_target is None:
            return None, reason
        R = T_common_target[:3, :3]
        T_target_common = np.eye(4)
        T_target_common[:3, :3] = R.T
        T_target_common[:3, 3] = -R.T @ T_common_target[:3, 3]
        return T_target_common @ T_common_source, ""


# ============================================================================== import


@dataclass
class ImportStats:
    """What happened to the colour frames of a bag."""

    color_messages: int = 0
    depth_messages: int = 0
    kept: int = 0
    skipped_no_depth: int = 0
    skipped_no_pose: int = 0
    skipped_duplicate_stamp: int = 0
    skipped_decode_error: int = 0
    corrupt_messages: int = 0  # bag messages (any topic read) that do not deserialize: skipped
    first_corrupt_message: str = ""
    first_pose_failure: str = ""
    first_decode_failure: str = ""
    pose_source: str = ""
    notes: list[str] = field(default_factory=list)
    # messages metadata.yaml lists (topics read) and how many of them could not be read or deserialized
    listed_messages: int = 0
    unreadable_messages: int = 0
    unreadable_color: int = 0
    read_warning: str = ""  # BagReadStats.loss_warning(): "" when every listed message was read

    def summary(self) -> str:
        unreadable = (f" ({self.unreadable_color} more listed in metadata.yaml could not be read)"
                      if self.unreadable_color else "")
        text = (
            f"{self.kept} of {self.color_messages} colour frames kept{unreadable}; skipped: "
            f"{self.skipped_no_depth} without depth within tolerance, {self.skipped_no_pose} without pose"
            f"{' (' + self.first_pose_failure + ')' if self.first_pose_failure else ''}, "
            f"{self.skipped_duplicate_stamp} duplicate stamps, {self.skipped_decode_error} undecodable"
            f"{' (' + self.first_decode_failure + ')' if self.first_decode_failure else ''}"
        )
        if self.corrupt_messages:
            text += (f"; {self.corrupt_messages} corrupt bag messages skipped"
                     f"{' (first: ' + self.first_corrupt_message + ')' if self.first_corrupt_message else ''}")
        return text


def _decode_color(msgtype: str, msg: Any) -> np.ndarray:
    rgb = compressed_msg_to_array(msg) if msgtype == COMPRESSED_TYPE else image_msg_to_rgb(msg)
    if rgb.ndim != 3:
        raise InputError(f"colour topic carries a single-channel {msg.format if msgtype == COMPRESSED_TYPE else msg.encoding} image")
    return rgb


def _decode_depth(msgtype: str, msg: Any) -> np.ndarray:
    depth = compressed_msg_to_array(msg) if msgtype == COMPRESSED_TYPE else image_msg_to_depth_m(msg)
    if depth.ndim != 2 or depth.dtype != np.float32:
        raise InputError(f"depth topic carries a colour image (format {getattr(msg, 'format', '')!r}), not depth")
    return depth


def _camera_info_guesses(color_topic: str) -> list[str]:
    """``camera_info`` topics in the colour topic's namespaces, deepest first
    (``/cam/color/image_raw/compressed`` -> ``/cam/color/image_raw/camera_info``, ``/cam/color/camera_info``, ...)."""
    parts = [p for p in color_topic.split("/") if p]
    return ["/" + "/".join(parts[:k] + ["camera_info"]) for k in range(len(parts) - 1, -1, -1)]


def _parse_mount(T_base_cam: Any) -> Optional[np.ndarray]:
    if T_base_cam is None:
        return None
    arr = np.asarray(T_base_cam, dtype=np.float64)
    if arr.shape == (7,):
        return pose_fields_to_matrix(arr[:3], arr[3:])
    return check_pose(arr, "T_base_cam (camera mount)")


def import_rosbag(
    bag_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    color_topic: str,
    depth_topic: Optional[str] = None,
    camera_info_topic: Optional[str] = None,
    odom_topic: Optional[str] = None,
    T_base_cam: Any = None,
    use_tf: bool = False,
    world_frame: str = "odom",
    base_frame: str = "base_link",
    camera_frame: Optional[str] = None,
    max_pair_dt: float = 0.05,
    instruction: str = "",
    max_pose_gap: float = 0.5,
    tf_topic: str = "/tf",
    tf_static_topic: str = "/tf_static",
    color_format: str = "png",
    progress: Optional[Callable[[int, int], None]] = None,
) -> Path:
    """Import one ROS 2 bag (folder or ``.mcap`` / ``.db3`` inside it) as one episode.

    Args:
        bag_path: the rosbag2 folder (sqlite3 or MCAP storage).
        out_dir: the episode folder to create (must not exist).
        color_topic: ``sensor_msgs/Image`` or ``CompressedImage`` colour topic.
        depth_topic: registered depth (same size as colour), or None for an episode without depth.
        camera_info_topic: ``CameraInfo`` topic; None takes the first ``camera_info`` topic found
            in the colour topic's namespaces, deepest first (``/cam/color/camera_info`` for
            ``/cam/color/image_raw/compressed``).
        odom_topic: ``nav_msgs/Odometry`` topic: camera and base poses from odometry + mount
            (unless ``use_tf``: then poses come from tf); always the source of base velocities
            ``[vx, wz]`` when given.
        T_base_cam: ``(4, 4)`` or ``[x, y, z, qx, qy, qz, qw]`` camera optical frame in
            ``base_frame``; None looks it up on ``/tf_static``.
        use_tf: camera poses from the tf chain ``world_frame -> camera_frame`` instead of odometry.
        world_frame: the episode's world frame (tf mode; odometry mode uses the odometry's frame).
        base_frame: the robot body frame (REP 103).
        camera_frame: the camera optical frame; None takes the colour images' ``header.frame_id``.
        max_pair_dt: seconds; depth-to-colour stamp tolerance, and how far a pose may be held
            beyond the first/last pose sample.
        instruction: stored in ``episode.json``.
        max_pose_gap: seconds; two pose samples further apart than this are not interpolated
            between (a dropout), the frame is skipped.
        tf_topic, tf_static_topic: tf topic names.
        color_format: ``"png"`` (lossless) or ``"jpg"`` for the episode's colour files.
        progress: called as ``progress(done, total)`` over the colour messages of the second pass.

    Returns:
        The episode folder. ``episode.json`` has ``source="rosbag"``, timestamps = colour header
        stamps in seconds, ``base_poses`` / ``base_velocities`` / ``camera_mount`` when known and
        ``extra["import"]`` = the :class:`ImportStats` as a dict.

    Raises:
        InputError: missing topics or types, no intrinsics, no pose source, depth not registered
            to colour, or no frame survives pairing (the message carries the statistics).
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    bag_path = Path(bag_path)
    if not bag_path.exists():
        raise InputError(f"bag {bag_path} does not exist")
    if bag_path.is_file():  # a .mcap / .db3 file given: rosbag2 wants its folder (with metadata.yaml)
        bag_path = bag_path.parent
    if not (bag_path / "metadata.yaml").is_file():
        raise InputError(
            f"{bag_path} is not a rosbag2 folder (no metadata.yaml); for a bare .mcap/.db3 file run "
            "`ros2 bag reindex <folder>` first"
        )
    check_bag_metadata(bag_path)
    if max_pair_dt <= 0 or max_pose_gap <= 0:
        raise InputError(f"max_pair_dt and max_pose_gap must be > 0 s, got {max_pair_dt}, {max_pose_gap}")
    if not use_tf and odom_topic is None:
        raise InputError("no camera pose source: give odom_topic (with a camera mount) or use_tf=True")
    mount = _parse_mount(T_base_cam)
    max_pair_ns = int(round(max_pair_dt * _NS))
    max_gap_ns = int(round(max_pose_gap * _NS))
    stats = ImportStats(pose_source="tf" if use_tf else "odometry")

    try:
        with bag_errors(bag_path):
            reader_cm = AnyReader([bag_path], default_typestore=get_typestore(Stores.LATEST))
    except InputError:
        raise
    except Exception as exc:  # rosbags raises its own error types for unreadable bags
        raise InputError(f"cannot open bag {bag_path}: {exc}") from None
    # opening the bag and reading its messages: a damaged file is an InputError naming the fix
    with bag_errors(bag_path), reader_cm as reader:
        by_topic: dict[str, list] = defaultdict(list)
        for conn in reader.connections:
            by_topic[conn.topic].append(conn)

        def connections(topic: str, types: tuple[str, ...], what: str) -> list:
            conns = by_topic.get(topic)
            if not conns:
                raise InputError(
                    f"{what} topic {topic!r} is not in bag {bag_path}; topics: {sorted(by_topic)}"
                )
            bad = {c.msgtype for c in conns} - set(types)
            if bad:
                raise InputError(f"{what} topic {topic!r} has type {sorted(bad)}, expected one of {types}")
            return conns

        color_conns = connections(color_topic, (IMAGE_TYPE, COMPRESSED_TYPE), "colour")
        depth_conns = connections(depth_topic, (IMAGE_TYPE, COMPRESSED_TYPE), "depth") if depth_topic else []
        if camera_info_topic is None:
            guesses = _camera_info_guesses(color_topic)
            camera_info_topic = next((g for g in guesses if g in by_topic), None)
            if camera_info_topic is None:
                raise InputError(
                    f"no intrinsics: pass camera_info_topic (none of {guesses} is in the bag; "
                    f"topics: {sorted(by_topic)})"
                )
        info_conns = connections(camera_info_topic, (CAMERA_INFO_TYPE,), "camera info")
        odom_conns = connections(odom_topic, (ODOMETRY_TYPE,), "odometry") if odom_topic else []
        tf_conns = by_topic.get(tf_topic, []) if use_tf else []  # odometry mode needs /tf_static only
        tf_static_conns = by_topic.get(tf_static_topic, []) if (use_tf or mount is None) else []
        if use_tf and not tf_conns and not tf_static_conns:
            raise InputError(f"use_tf: neither {tf_topic!r} nor {tf_static_topic!r} is in bag {bag_path}")

        # ---------------------------------------------------------------- pass 1: stamps, poses, K
        K = info_size = None
        color_stamps: list[int] = []
        seen_color: set[int] = set()
        depth_stamps: list[int] = []
        color_frame_ids: set[str] = set()
        odom_track = PoseTrack()
        odom_frames: set[tuple[str, str]] = set()
        tf_buffer = TransformBuffer(max_gap_ns, max_pair_ns)
        color_ids = {id(c) for c in color_conns}
        depth_ids = {id(c) for c in depth_conns}
        info_ids = {id(c) for c in info_conns}
        odom_ids = {id(c) for c in odom_conns}
        tf_ids = {id(c) for c in tf_conns}
        wanted = color_conns + depth_conns + info_conns + odom_conns + tf_conns + tf_static_conns
        read_stats = BagReadStats(salvage_hint=_salvage_hint(bag_path))
        # messages that do not deserialize are skipped, data the reader cannot get through is
        # skipped after an error; both are counted against metadata.yaml's message counts
        for conn, _, _, msg in _read_bag(reader, wanted, read_stats):
            key = id(conn)
            if key in color_ids:
                stamp = stamp_to_ns(msg.header.stamp)
                stats.color_messages += 1
                color_frame_ids.add(_strip(msg.header.frame_id))
                if stamp in seen_color:
                    stats.skipped_duplicate_stamp += 1
                else:
                    seen_color.add(stamp)
                    color_stamps.append(stamp)
            elif key in depth_ids:
                stats.depth_messages += 1
                depth_stamps.append(stamp_to_ns(msg.header.stamp))
            elif key in info_ids:
                if K is None:
                    K, w, h = camera_info_to_K(msg.k, msg.width, msg.height)
                    info_size = (h, w)
            elif key in odom_ids:
                T = pose_fields_to_matrix(msg.pose.pose.position, msg.pose.pose.orientation)
                velocity = np.array([msg.twist.twist.linear.x, msg.twist.twist.angular.z], dtype=np.float64)
                odom_track.add(stamp_to_ns(msg.header.stamp), T, velocity)
                odom_frames.add((_strip(msg.header.frame_id), _strip(msg.child_frame_id)))
            else:
                tf_buffer.add_tf_message(msg, static=key not in tf_ids)

        stats.corrupt_messages = read_stats.undecodable
        stats.first_corrupt_message = read_stats.first_undecodable
        stats.listed_messages = sum(read_stats.listed.values())
        lost = read_stats.lost()
        stats.unreadable_messages = sum(v[0] for v in lost.values())
        stats.unreadable_color = lost.get(color_topic, (0, 0))[0]
        stats.read_warning = read_stats.loss_warning()
        if stats.read_warning:
            log.warning("rosbag import %s: warning: %s", bag_path, stats.read_warning)
        if not color_stamps:
            raise InputError(f"colour topic {color_topic!r} has no messages in bag {bag_path}")
        if K is None:
            raise InputError(f"camera info topic {camera_info_topic!r} has no messages in bag {bag_path}")
        if depth_topic and not depth_stamps:
            raise InputError(f"depth topic {depth_topic!r} has no messages in bag {bag_path}")
        if odom_topic and not len(odom_track):
            raise InputError(f"odometry topic {odom_topic!r} has no messages in bag {bag_path}")
        if camera_frame is None:
            if len(color_frame_ids) != 1:
                raise InputError(
                    f"colour images name several frames {sorted(color_frame_ids)}; pass camera_frame"
                )
            camera_frame = next(iter(color_frame_ids))
        if len(odom_frames) > 1:
            raise InputError(f"odometry topic {odom_topic!r} mixes frames {sorted(odom_frames)}")
        if odom_frames:
            odom_world, odom_child = next(iter(odom_frames))
            if odom_child and odom_child != _strip(base_frame):
                stats.notes.append(f"odometry child frame {odom_child!r} used as base frame (not {base_frame!r})")
                base_frame = odom_child
            if not use_tf and odom_world and odom_world != _strip(world_frame):
                stats.notes.append(f"world frame is the odometry frame {odom_world!r} (not {world_frame!r})")

        if mount is None:
            mount, reason = tf_buffer.lookup(base_frame, camera_frame, None)
            if mount is None and not use_tf:
                raise InputError(
                    f"odometry mode needs the camera mount {base_frame!r} -> {camera_frame!r}: pass T_base_cam "
                    f"(--mount x,y,z,qx,qy,qz,qw) or record {tf_static_topic} ({reason})"
                )

        # ---------------------------------------------------------------- pairing
        color_order = np.array(sorted(color_stamps), dtype=np.int64)
        depth_sorted = np.array(sorted(set(depth_stamps)), dtype=np.int64)
        plan: list[tuple[int, Optional[int], np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]] = []
        base_pose_missing = False
        for stamp in color_order:
            stamp = int(stamp)
            depth_stamp = None
            if depth_topic:
                j = int(np.searchsorted(depth_sorted, stamp))
                candidates = [depth_sorted[k] for k in (j - 1, j) if 0 <= k < len(depth_sorted)]
                nearest = min(candidates, key=lambda d: abs(int(d) - stamp))
                if abs(int(nearest) - stamp) > max_pair_ns:
                    stats.skipped_no_depth += 1
                    continue
                depth_stamp = int(nearest)
            T_odom_base = velocity = None
            if odom_topic:
                T_from_odom, velocity, reason = odom_track.interpolate(stamp, max_gap_ns, max_pair_ns)
                if not use_tf:
                    if T_from_odom is None:
                        stats.skipped_no_pose += 1
                        stats.first_pose_failure = stats.first_pose_failure or f"odometry {reason}"
                        continue
                    T_odom_base = T_from_odom
            if use_tf:
                # base poses from the same tree, so they share the world frame with the camera poses
                T_wc, reason = tf_buffer.lookup(world_frame, camera_frame, stamp)
                if T_wc is None:
                    stats.skipped_no_pose += 1
                    stats.first_pose_failure = stats.first_pose_failure or f"tf {reason}"
                    continue
                T_odom_base, _ = tf_buffer.lookup(world_frame, base_frame, stamp)
            else:
                T_wc = T_odom_base @ mount
            base_pose_missing |= T_odom_base is None
            plan.append((stamp, depth_stamp, T_wc, T_odom_base, velocity))

        if not plan:
            raise InputError(f"no frame of bag {bag_path} survived pairing: {stats.summary()}")
        if base_pose_missing:
            plan = [(s, d, T, None, v) for s, d, T, _, v in plan]
        if odom_topic and any(v is None for *_, v in plan):
            plan = [(s, d, T, b, None) for s, d, T, b, v in plan]

        # ---------------------------------------------------------------- pass 2: decode and write
        planned_color = {p[0]: i for i, p in enumerate(plan)}
        depth_users: dict[int, int] = defaultdict(int)
        for _, depth_stamp, *_ in plan:
            if depth_stamp is not None:
                depth_users[depth_stamp] += 1
        pending_color: dict[int, np.ndarray] = {}
        depth_cache: dict[int, np.ndarray] = {}
        failed_color: set[int] = set()
        failed_depth: set[int] = set()
        decoded_color: set[int] = set()
        next_index = 0
        writer: Optional[EpisodeWriter] = None
        out_dir = Path(out_dir)

        def skip_decode(reason: str) -> None:
            stats.skipped_decode_error += 1
            stats.first_decode_failure = stats.first_decode_failure or reason

        def release_depth(depth_stamp: Optional[int]) -> None:
            if depth_stamp is None:
                return
            depth_users[depth_stamp] -= 1
            if depth_users[depth_stamp] == 0:
                depth_cache.pop(depth_stamp, None)

        def flush() -> None:
            nonlocal next_index, writer
            while next_index < len(plan):
                stamp, depth_stamp, T_wc, T_odom_base, velocity = plan[next_index]
                if stamp in failed_color or (depth_stamp is not None and depth_stamp in failed_depth):
                    skip_decode(f"frame at {stamp / _NS:.6f} s")
                    pending_color.pop(stamp, None)
                    release_depth(depth_stamp)
                    next_index += 1
                    continue
                if stamp not in pending_color or (depth_stamp is not None and depth_stamp not in depth_cache):
                    return
                rgb = pending_color.pop(stamp)
                depth = depth_cache[depth_stamp] if depth_stamp is not None else None
                if writer is None:
                    size = rgb.shape[:2]
                    if info_size is not None and tuple(info_size) != tuple(size):
                        raise InputError(
                            f"camera info is for {info_size[1]}x{info_size[0]} images but {color_topic!r} "
                            f"carries {size[1]}x{size[0]}"
                        )
                    writer = EpisodeWriter(
                        out_dir, K, size, T_base_cam=mount, source="rosbag",
                        color_format=color_format, write_depth=depth_topic is not None,
                    )
                if depth is not None and depth.shape != rgb.shape[:2]:
                    raise InputError(
                        f"depth {depth.shape[1]}x{depth.shape[0]} is not registered to colour "
                        f"{rgb.shape[1]}x{rgb.shape[0]}; record the aligned depth topic (e.g. aligned_depth_to_color)"
                    )
                writer.add_frame(rgb, depth, T_wc, stamp / _NS, T_odom_base=T_odom_base, base_velocity=velocity)
                stats.kept += 1
                release_depth(depth_stamp)
                next_index += 1

        try:
            done = 0
            for conn, _, _, msg in _read_bag(reader, color_conns + depth_conns, BagReadStats()):  # counted in pass 1
                stamp = stamp_to_ns(msg.header.stamp)
                if id(conn) in color_ids:
                    done += 1
                    if progress is not None:
                        progress(done, stats.color_messages)
                    if stamp not in planned_color or stamp in decoded_color:
                        continue
                    decoded_color.add(stamp)
                    try:
                        pending_color[stamp] = _decode_color(conn.msgtype, msg)
                    except InputError as exc:
                        failed_color.add(stamp)
                        stats.first_decode_failure = stats.first_decode_failure or f"colour: {exc}"
                elif depth_users.get(stamp, 0) > 0 and stamp not in depth_cache and stamp not in failed_depth:
                    try:
                        depth_cache[stamp] = _decode_depth(conn.msgtype, msg)
                    except InputError as exc:
                        failed_depth.add(stamp)
                        stats.first_decode_failure = stats.first_decode_failure or f"depth: {exc}"
                flush()
            # a planned frame the second read did not return (the reader skips the same damaged
            # data both times, so none should be): skipped and counted, not the end of the episode
            for stamp, depth_stamp, *_ in plan[next_index:]:
                if stamp not in pending_color:
                    failed_color.add(stamp)
                if depth_stamp is not None and depth_stamp not in depth_cache:
                    failed_depth.add(depth_stamp)
            flush()
            if writer is None:
                raise InputError(f"no frame of bag {bag_path} could be decoded: {stats.summary()}")
            log.info("rosbag import %s -> %s: %s", bag_path, out_dir, stats.summary())
            return writer.finish(
                instruction=instruction,
                scene={"bag": str(bag_path), "color_topic": color_topic, "camera_frame": camera_frame},
                extra={"import": asdict(stats)},
            )
        except BaseException:
            if writer is not None:
                writer.abort()
            raise

"""The one episode format: a posed-image folder plus ``episode.json``.

The simulator, the node's recorder, the rosbag importer and training all write or read this
format; ``docs/episode_format.md`` is the reference (files, JSON fields, units, frames).

Writing is crash-safe: :class:`EpisodeWriter` puts every file into ``<out_dir>.partial/`` and
only :meth:`EpisodeWriter.finish` writes ``episode.json`` (last, via temp file + rename) and then
renames the folder to ``<out_dir>``. A folder therefore either is a complete episode or ends in
``.partial`` and has no place in :func:`list_episodes`.

Reading: :func:`read_episode` loads metadata and poses eagerly and images lazily
(:meth:`Episode.color`, :meth:`Episode.depth`, :meth:`Episode.load_all`). A plain posed-image
folder without ``episode.json`` (e.g. a ScanNet / 7-Scenes export) reads as an episode too:
source ``"posed_folder"``, timestamps ``index / 30 Hz``, empty instruction, no base data.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import cv2
import numpy as np

from vln_core.atomic import atomic_write_text, fsync_dir
from vln_core.data.posed_images import (
    PosedSequence,
    _match_depth_to_color,
    _read_depth_intrinsics,
    check_pose,
    frame_path,
    list_frame_ids,
    read_color,
    read_depth,
    read_intrinsics,
    read_pose,
)
from vln_core.errors import InputError
from vln_core.geometry.camera import PinholeCamera
from vln_core.geometry.reproject import depth_to_uint16_mm

__all__ = [
    "EPISODE_JSON",
    "FORMAT_VERSION",
    "INTENTS",
    "PARTIAL_SUFFIX",
    "PLAIN_FOLDER_RATE_HZ",
    "SOURCES",
    "Episode",
    "EpisodeWriter",
    "is_complete_episode",
    "list_episodes",
    "read_episode",
]

#: Version written into ``episode.json``; readers refuse files from a newer version.
FORMAT_VERSION = 1
EPISODE_JSON = "episode.json"
PARTIAL_SUFFIX = ".partial"
SOURCES = ("sim", "rosbag", "recording", "posed_folder")
INTENTS = ("left", "straight", "right")
#: Frame rate assumed for the timestamps of plain posed folders (they carry no time).
PLAIN_FOLDER_RATE_HZ = 30.0
COLOR_FORMATS = ("png", "jpg")


def _partial_dir(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + PARTIAL_SUFFIX)


def _frame_stem(index: int) -> str:
    return f"frame-{index:06d}"


def _matrix_text(M: np.ndarray) -> str:
    """One line per row, shortest exact float representation (``repr``) of every entry."""
    return "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in np.asarray(M, dtype=np.float64))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _check_json_value(value: Any, name: str) -> Any:
    """Round-trip ``value`` through JSON (numpy arrays/scalars become lists/numbers)."""
    try:
        return json.loads(json.dumps(value, default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InputError(f"episode {name} must be JSON serialisable with finite numbers: {exc}") from None


def _check_goal(goal: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    if goal is None:
        return None
    if not isinstance(goal, Mapping):
        raise InputError(f"goal must be a dict or None, got {type(goal).__name__}")
    goal = dict(_check_json_value(dict(goal), "goal"))
    if not isinstance(goal.get("object"), str) or not goal["object"]:
        raise InputError(f"goal needs a non-empty 'object' string (e.g. 'red chair'), got {goal.get('object')!r}")
    for key in ("category", "color"):
        if goal.get(key) is not None and not isinstance(goal[key], str):
            raise InputError(f"goal['{key}'] must be a string or None, got {goal[key]!r}")
        goal.setdefault(key, None)
    position = goal.get("position")
    if position is not None:
        pos = np.asarray(position, dtype=np.float64) if isinstance(position, (list, tuple)) else None
        if pos is None or pos.shape != (3,) or not np.isfinite(pos).all():
            raise InputError(f"goal['position'] must be [x, y, z] finite metres in odom, got {position!r}")
        goal["position"] = pos.tolist()
    goal.setdefault("position", None)
    return goal


def _check_intent(intent: Optional[str]) -> Optional[str]:
    if intent is not None and intent not in INTENTS:
        raise InputError(f"intent must be one of {INTENTS} or None, got {intent!r}")
    return intent


# ============================================================================== writer


class EpisodeWriter:
    """Write one episode, crash-safely (see the module doc and ``docs/episode_format.md``).

    Use as a context manager; leaving the block with an exception aborts the episode::

        with EpisodeWriter("data/sim/ep_0001", K, (H, W), T_base_cam=mount) as writer:
            for ...:
                writer.add_frame(rgb, depth_m, T_wc, t, T_odom_base=odom, base_velocity=(vx, wz))
            writer.finish(instruction="go to the red chair", goal={"object": "red chair"})

    Args:
        out_dir: the final episode folder; must not exist yet. A stale ``<out_dir>.partial``
            left by a crashed writer is removed.
        K: ``(3, 3)`` pinhole intrinsics of the colour images (zero skew).
        image_size: ``(H, W)`` of every frame.
        T_base_cam: ``(4, 4)`` camera mount, camera optical frame -> ``base_link``, or None.
        source: ``"sim"``, ``"rosbag"``, ``"recording"`` or ``"posed_folder"``.
        color_format: ``"png"`` (lossless) or ``"jpg"``.
        write_depth: every frame must then carry depth (stored as uint16 millimetres).
        keep_partial: keep ``<out_dir>.partial`` on abort (for debugging) instead of deleting it.
        png_compression: zlib level 0-9 for PNGs; the default 1 keeps a recorder thread cheap.
        jpeg_quality: 0-100 for ``color_format="jpg"``.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        K: Any,
        image_size: tuple[int, int],
        T_base_cam: Any = None,
        source: str = "sim",
        color_format: str = "png",
        write_depth: bool = True,
        keep_partial: bool = False,
        png_compression: int = 1,
        jpeg_quality: int = 95,
    ) -> None:
        self.out_dir = Path(out_dir)
        if self.out_dir.name.endswith(PARTIAL_SUFFIX):
            raise InputError(f"episode folder name must not end in {PARTIAL_SUFFIX!r}: {self.out_dir}")
        if source not in SOURCES:
            raise InputError(f"source must be one of {SOURCES}, got {source!r}")
        if color_format not in COLOR_FORMATS:
            raise InputError(f"color_format must be one of {COLOR_FORMATS}, got {color_format!r}")
        if not 0 <= int(png_compression) <= 9:
            raise InputError(f"png_compression must be in 0..9, got {png_compression}")
        if not 0 <= int(jpeg_quality) <= 100:
            raise InputError(f"jpeg_quality must be in 0..100, got {jpeg_quality}")
        try:
            height, width = (int(s) for s in image_size)
        except (TypeError, ValueError):
            raise InputError(f"image_size must be (H, W), got {image_size!r}") from None
        self.camera = PinholeCamera.from_K(np.asarray(K, dtype=np.float64), width=width, height=height)
        self.image_size = (height, width)
        self.T_base_cam = None if T_base_cam is None else check_pose(T_base_cam, "T_base_cam (camera mount)")
        self.source = source
        self.color_format = color_format
        self.write_depth = bool(write_depth)
        self.keep_partial = bool(keep_partial)
        if color_format == "png":
            self._color_params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
        else:
            self._color_params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
        self._depth_params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]

        if self.out_dir.exists():
            raise InputError(f"episode folder {self.out_dir} already exists; refusing to overwrite it")
        self.partial_dir = _partial_dir(self.out_dir)
        if self.partial_dir.exists():
            shutil.rmtree(self.partial_dir)  # left by a writer that crashed
        self.partial_dir.mkdir(parents=True)
        try:
            (self.partial_dir / "intrinsics.K.txt").write_text(_matrix_text(self.camera.K))
        except BaseException:  # e.g. a full disk: leave no empty .partial folder behind
            shutil.rmtree(self.partial_dir, ignore_errors=True)
            raise

        self._timestamps: list[float] = []
        self._base_poses: list[list[list[float]]] = []
        self._base_velocities: list[list[float]] = []
        self._has_base_pose: Optional[bool] = None
        self._has_base_velocity: Optional[bool] = None
        self._state = "open"  # open -> finished | aborted

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._state != "open":
            return
        if exc_type is None:
            warnings.warn(
                f"EpisodeWriter for {self.out_dir} left without finish(); the episode is discarded",
                RuntimeWarning,
                stacklevel=2,
            )
        self.abort()

    def __len__(self) -> int:
        return len(self._timestamps)

    def _require_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"EpisodeWriter for {self.out_dir} is already {self._state}")

    # ------------------------------------------------------------------ frames
    def add_frame(
        self,
        color: np.ndarray,
        depth_m: Optional[np.ndarray],
        T_wc: Any,
        timestamp_s: float,
        T_odom_base: Any = None,
        base_velocity: Any = None,
    ) -> int:
        """Append one frame. Everything is validated before anything is written, so a rejected
        frame (InputError) leaves the episode as it was and the caller may go on.

        Args:
            color: ``(H, W, 3)`` uint8 RGB.
            depth_m: ``(H, W)`` float metres (0/NaN/inf = invalid); required when
                ``write_depth`` else ignored. Stored rounded to millimetres; >= 65.535 m -> invalid.
            T_wc: ``(4, 4)`` camera-optical-to-odom pose.
            timestamp_s: seconds (sim time or ROS time), strictly increasing over the episode.
            T_odom_base: ``(4, 4)`` base_link-to-odom pose (REP 103), or None; given for every
                frame or for none (the first frame decides).
            base_velocity: ``(2,)`` ``[vx m/s, wz rad/s]`` of base_link, or None; every frame or none.

        Returns:
            The frame's index (= its id in file names: ``frame-000007.*`` for index 7).
        """
        self._require_open()
        index = len(self._timestamps)
        where = f"episode {self.out_dir.name} frame {index}"
        H, W = self.image_size
        color = np.asarray(color)
        if color.shape != (H, W, 3) or color.dtype != np.uint8:
            raise InputError(f"{where}: color must be ({H}, {W}, 3) uint8 RGB, got {color.shape} {color.dtype}")
        depth_mm = None
        if self.write_depth:
            if depth_m is None:
                raise InputError(f"{where}: depth is required (writer opened with write_depth=True)")
            depth_arr = np.asarray(depth_m)
            if depth_arr.shape != (H, W) or not np.issubdtype(depth_arr.dtype, np.floating):
                raise InputError(
                    f"{where}: depth must be ({H}, {W}) float metres, got {depth_arr.shape} {depth_arr.dtype}"
                )
            depth_mm = depth_to_uint16_mm(depth_arr)
        pose = check_pose(T_wc, f"{where}: T_wc")
        try:
            timestamp = float(timestamp_s)
        except (TypeError, ValueError):
            raise InputError(f"{where}: timestamp must be a number of seconds, got {timestamp_s!r}") from None
        if not math.isfinite(timestamp):
            raise InputError(f"{where}: timestamp must be finite, got {timestamp}")
        if self._timestamps and timestamp <= self._timestamps[-1]:
            raise InputError(
                f"{where}: timestamps must increase strictly, got {timestamp!r} after {self._timestamps[-1]!r}"
            )
        has_base_pose = T_odom_base is not None
        if self._has_base_pose is not None and has_base_pose != self._has_base_pose:
            raise InputError(f"{where}: T_odom_base must be given for every frame or for none")
        base_pose = check_pose(T_odom_base, f"{where}: T_odom_base") if has_base_pose else None
        has_velocity = base_velocity is not None
        if self._has_base_velocity is not None and has_velocity != self._has_base_velocity:
            raise InputError(f"{where}: base_velocity must be given for every frame or for none")
        velocity = None
        if has_velocity:
            velocity = np.asarray(base_velocity, dtype=np.float64).reshape(-1)
            if velocity.shape != (2,) or not np.isfinite(velocity).all():
                raise InputError(f"{where}: base_velocity must be finite [vx, wz], got {base_velocity!r}")

        stem = self.partial_dir / _frame_stem(index)
        bgr = cv2.cvtColor(color, cv2.COLOR_RGB2BGR)
        files = [Path(f"{stem}.color.{self.color_format}"), Path(f"{stem}.depth.png"), Path(f"{stem}.pose.txt")]
        try:
            if not cv2.imwrite(str(files[0]), bgr, self._color_params):
                raise OSError(f"could not write {files[0]} (disk full or not writable?)")
            if depth_mm is not None and not cv2.imwrite(str(files[1]), depth_mm, self._depth_params):
                raise OSError(f"could not write {files[1]} (disk full or not writable?)")
            with open(files[2], "w") as fh:
                fh.write(_matrix_text(pose))
        except BaseException:  # this frame's files written so far go: no half-written frame stays
            for f in files:
                f.unlink(missing_ok=True)
            raise

        self._timestamps.append(timestamp)
        self._has_base_pose = has_base_pose
        self._has_base_velocity = has_velocity
        if base_pose is not None:
            self._base_poses.append(base_pose.tolist())
        if velocity is not None:
            self._base_velocities.append(velocity.tolist())
        return index

    # ------------------------------------------------------------------ end
    def finish(
        self,
        instruction: str = "",
        goal: Optional[Mapping[str, Any]] = None,
        intent: Optional[str] = None,
        scene: Optional[Mapping[str, Any]] = None,
        extra: Optional[Mapping[str, Any]] = None,
    ) -> Path:
        """Write ``episode.json`` and publish the episode under ``out_dir``.

        Args:
            instruction: the natural-language instruction ("" if none).
            goal: ``{"object": str, "category": str|None, "color": str|None,
                "position": [x, y, z] odom metres|None}`` or None.
            intent: ``"left"``, ``"straight"``, ``"right"`` or None.
            scene: free JSON-able dict (e.g. ``{"seed": 3}``).
            extra: free JSON-able dict.

        Returns:
            The episode folder ``out_dir``.
        """
        self._require_open()
        if not self._timestamps:
            raise InputError(f"episode {self.out_dir} has no frames; add at least one before finish()")
        if not isinstance(instruction, str):
            raise InputError(f"instruction must be a string, got {type(instruction).__name__}")
        for name, value in (("scene", scene), ("extra", extra)):
            if value is not None and not isinstance(value, Mapping):
                raise InputError(f"{name} must be a dict or None, got {type(value).__name__}")
        metadata = {
            "format_version": FORMAT_VERSION,
            "source": self.source,
            "num_frames": len(self._timestamps),
            "color_format": self.color_format,
            "has_depth": self.write_depth,
            "frames": [{"id": i, "timestamp": t} for i, t in enumerate(self._timestamps)],
            "intrinsics": self.camera.to_dict(),
            "camera_mount": None if self.T_base_cam is None else self.T_base_cam.tolist(),
            "base_poses": self._base_poses if self._has_base_pose else None,
            "base_velocities": self._base_velocities if self._has_base_velocity else None,
            "instruction": instruction,
            "goal": _check_goal(goal),
            "intent": _check_intent(intent),
            "scene": _check_json_value(dict(scene or {}), "scene"),
            "extra": _check_json_value(dict(extra or {}), "extra"),
        }
        if self.out_dir.exists():
            raise InputError(f"episode folder {self.out_dir} appeared while writing; refusing to overwrite it")
        atomic_write_text(self.partial_dir / EPISODE_JSON, json.dumps(metadata, indent=1))
        os.rename(self.partial_dir, self.out_dir)
        fsync_dir(self.out_dir.parent)
        self._state = "finished"
        return self.out_dir

    def abort(self) -> None:
        """Discard the episode: remove ``<out_dir>.partial`` (kept if ``keep_partial``)."""
        if self._state != "open":
            return
        self._state = "aborted"
        if not self.keep_partial:
            shutil.rmtree(self.partial_dir, ignore_errors=True)


# ============================================================================== reader


@dataclass
class Episode:
    """One episode: metadata and poses in memory, images read on demand.

    Index ``i`` below is the position ``0 .. N-1`` in the episode, not the file number
    (``frame_ids[i]``).

    Attributes:
        path: the episode folder.
        frame_ids: ``N`` file numbers.
        timestamps: ``(N,)`` float64 seconds.
        poses: ``(N, 4, 4)`` float64 ``T_wc``, camera optical frame -> odom (world).
        K: ``(3, 3)`` float64 intrinsics of the colour images.
        image_size: ``(H, W)``.
        T_base_cam: ``(4, 4)`` camera optical frame -> base_link, or None.
        base_poses: ``(N, 4, 4)`` ``T_odom_base`` (REP 103), or None.
        base_velocities: ``(N, 2)`` ``[vx m/s, wz rad/s]``, or None.
        instruction, goal, intent, source, scene, extra: as in ``episode.json``.
        has_depth: whether depth images exist.
    """

    path: Path
    frame_ids: list[int]
    timestamps: np.ndarray
    poses: np.ndarray
    K: np.ndarray
    image_size: tuple[int, int]
    T_base_cam: Optional[np.ndarray] = None
    base_poses: Optional[np.ndarray] = None
    base_velocities: Optional[np.ndarray] = None
    instruction: str = ""
    goal: Optional[dict[str, Any]] = None
    intent: Optional[str] = None
    source: str = "posed_folder"
    scene: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    has_depth: bool = False
    _K_depth: Optional[np.ndarray] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.frame_ids)

    def _check_index(self, i: int) -> int:
        n = len(self.frame_ids)
        if not -n <= i < n:
            raise IndexError(f"frame index {i} out of range for episode {self.path} with {n} frames")
        return i % n

    def color(self, i: int) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB of frame ``i``."""
        i = self._check_index(i)
        image = read_color(frame_path(self.path, self.frame_ids[i], "color"))
        if image.shape[:2] != tuple(self.image_size):
            raise InputError(
                f"{self.path}: frame {self.frame_ids[i]} colour is {image.shape[1]}x{image.shape[0]}, "
                f"the episode says {self.image_size[1]}x{self.image_size[0]}"
            )
        return image

    def depth(self, i: int) -> Optional[np.ndarray]:
        """``(H, W)`` float32 metres (0 = invalid) of frame ``i`` on the colour grid, or None."""
        i = self._check_index(i)
        if not self.has_depth:
            return None
        path = frame_path(self.path, self.frame_ids[i], "depth")
        return _match_depth_to_color(read_depth(path), tuple(self.image_size), self.K, self._K_depth, str(path))

    def load_all(self, stride: int = 1) -> PosedSequence:
        """Every ``stride``-th frame in memory as a :class:`PosedSequence` (depths None if absent)."""
        if stride < 1:
            raise InputError(f"stride must be >= 1, got {stride}")
        indices = range(0, len(self), stride)
        colors = np.stack([self.color(i) for i in indices])
        depths = np.stack([self.depth(i) for i in indices]) if self.has_depth else None
        return PosedSequence(
            colors=colors,
            depths=depths,
            poses=self.poses[::stride].copy(),
            K=self.K.copy(),
            frame_ids=[self.frame_ids[i] for i in indices],
            folder=self.path,
        )


def _as_pose_array(value: Any, n: int, name: str, path: Path) -> Optional[np.ndarray]:
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{path}/{EPISODE_JSON}: {name} is not a list of 4x4 matrices") from None
    if arr.shape != (n, 4, 4):
        raise InputError(f"{path}/{EPISODE_JSON}: {name} must have shape ({n}, 4, 4), got {arr.shape}")
    for k in range(n):
        check_pose(arr[k], f"{path}/{EPISODE_JSON}: {name}[{k}]")
    return arr


def _read_json_episode(path: Path) -> Episode:
    json_path = path / EPISODE_JSON
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{json_path} cannot be read as JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise InputError(f"{json_path} must hold a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise InputError(f"{json_path}: missing integer format_version")
    if version > FORMAT_VERSION:
        raise InputError(f"{json_path}: format_version {version} is newer than this reader ({FORMAT_VERSION})")
    for key in ("frames", "intrinsics"):
        if key not in meta:
            raise InputError(f"{json_path}: missing required field {key!r}")
    frames = meta["frames"]
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{json_path}: 'frames' must be a non-empty list of {{id, timestamp}}")
    try:
        frame_ids = [int(f["id"]) for f in frames]
        timestamps = np.array([float(f["timestamp"]) for f in frames], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{json_path}: every frame needs an integer 'id' and a numeric 'timestamp'") from None
    n = len(frame_ids)
    camera = PinholeCamera.from_dict(meta["intrinsics"])
    source = meta.get("source", "posed_folder")
    if source not in SOURCES:
        raise InputError(f"{json_path}: source must be one of {SOURCES}, got {source!r}")
    mount = meta.get("camera_mount")
    T_base_cam = None if mount is None else check_pose(mount, f"{json_path}: camera_mount")
    velocities = meta.get("base_velocities")
    if velocities is not None:
        velocities = np.asarray(velocities, dtype=np.float64)
        if velocities.shape != (n, 2):
            raise InputError(f"{json_path}: base_velocities must have shape ({n}, 2), got {velocities.shape}")
    poses = np.stack([read_pose(frame_path(path, fid, "pose")) for fid in frame_ids])
    has_depth = bool(meta.get("has_depth", False))
    for fid in frame_ids:
        frame_path(path, fid, "color")  # raises naming the missing file
        if has_depth:
            frame_path(path, fid, "depth")
    return Episode(
        path=path,
        frame_ids=frame_ids,
        timestamps=timestamps,
        poses=poses,
        K=camera.K,
        image_size=camera.size,
        T_base_cam=T_base_cam,
        base_poses=_as_pose_array(meta.get("base_poses"), n, "base_poses", path),
        base_velocities=velocities,
        instruction=str(meta.get("instruction") or ""),
        goal=_check_goal(meta.get("goal")),
        intent=_check_intent(meta.get("intent")),
        source=source,
        scene=dict(meta.get("scene") or {}),
        extra=dict(meta.get("extra") or {}),
        has_depth=has_depth,
    )


def _read_plain_folder(path: Path, skip_invalid_poses: bool) -> Episode:
    all_ids = list_frame_ids(path)
    if not all_ids:
        raise InputError(f"{path}: neither {EPISODE_JSON} nor colour frames (frame-N.color.png/jpg) found")
    K, size = read_intrinsics(path)
    frame_ids, poses = [], []
    for fid in all_ids:
        try:
            poses.append(read_pose(frame_path(path, fid, "pose")))
            frame_ids.append(fid)
        except InputError:
            if not skip_invalid_poses:
                raise
    if not frame_ids:
        raise InputError(f"{path}: every frame has an invalid pose")
    depth_present = []
    for fid in frame_ids:
        try:
            frame_path(path, fid, "depth")
            depth_present.append(True)
        except InputError:
            depth_present.append(False)
    if any(depth_present) and not all(depth_present):
        missing = [fid for fid, has in zip(frame_ids, depth_present) if not has]
        raise InputError(f"{path}: depth images exist for some frames but not for frames {missing[:10]}")
    if size is None:
        size = read_color(frame_path(path, frame_ids[0], "color")).shape[:2]
    return Episode(
        path=path,
        frame_ids=frame_ids,
        timestamps=np.arange(len(frame_ids), dtype=np.float64) / PLAIN_FOLDER_RATE_HZ,
        poses=np.stack(poses),
        K=K,
        image_size=(int(size[0]), int(size[1])),
        source="posed_folder",
        has_depth=all(depth_present),
        _K_depth=_read_depth_intrinsics(path),
    )


def read_episode(path: str | os.PathLike, skip_invalid_poses: bool = False) -> Episode:
    """Open an episode folder, or a plain posed-image folder without ``episode.json``.

    Args:
        path: the folder.
        skip_invalid_poses: plain folders only: drop frames whose pose is non-finite or not rigid
            (ScanNet's ``-inf`` poses) instead of raising.

    Returns:
        :class:`Episode` with poses and metadata loaded; images are read on demand.

    Raises:
        InputError: an unfinished ``*.partial`` folder, a malformed ``episode.json``, missing
            frame files, invalid poses.
    """
    path = Path(path)
    if path.name.endswith(PARTIAL_SUFFIX):
        raise InputError(f"{path} is an unfinished episode (its writer never called finish())")
    if not path.is_dir():
        raise InputError(f"episode folder {path} does not exist or is not a directory")
    if (path / EPISODE_JSON).is_file():
        return _read_json_episode(path)
    return _read_plain_folder(path, skip_invalid_poses)


def odometry_for_mount(episode: Episode, T_base_cam: np.ndarray) -> tuple[np.ndarray, str]:
    """``(N, 4, 4)`` ``T_odom_base`` that make a robot with camera mount ``T_base_cam`` (camera
    optical frame -> base_link) see ``episode.poses``: the episode's own base poses when its mount
    is the same, else the camera poses times the inverse mount. Returns the poses and a sentence
    saying where they came from (the replay prints it; the streaming evaluation feeds them)."""
    if episode.base_poses is not None and episode.T_base_cam is not None and np.allclose(
        episode.T_base_cam, T_base_cam, atol=1e-6
    ):
        return np.asarray(episode.base_poses, dtype=np.float64), "episode base poses"
    poses = np.asarray(episode.poses, dtype=np.float64) @ np.linalg.inv(T_base_cam)
    why = "no base poses in the episode" if episode.base_poses is None else "episode mount differs from node.camera_mount"
    return poses, f"derived from camera poses and node.camera_mount ({why})"


def is_complete_episode(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a finished episode: a folder not named ``*.partial`` whose
    ``episode.json`` parses and has an integer ``format_version`` and a ``frames`` list."""
    path = Path(path)
    if path.name.endswith(PARTIAL_SUFFIX) or not (path / EPISODE_JSON).is_file():
        return False
    try:
        meta = json.loads((path / EPISODE_JSON).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("format_version"), int) and isinstance(
        meta.get("frames"), list
    )


def list_episodes(root: str | os.PathLike, include_posed_folders: bool = False) -> list[Path]:
    """Complete episodes under ``root`` (``root`` itself or any depth below), sorted by path.

    ``*.partial`` folders (unfinished or crashed writers) are neither returned nor searched.

    Args:
        root: a folder.
        include_posed_folders: also return plain posed-image folders (colour frames and
            intrinsics, no ``episode.json``).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"episode root {root} does not exist or is not a directory")
    found: list[Path] = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if is_complete_episode(here) or (
            include_posed_folders and not here.name.endswith(PARTIAL_SUFFIX) and _is_plain_posed_folder(here)
        ):
            found.append(here)
            dirnames.clear()
            continue
        dirnames[:] = [d for d in dirnames if not d.endswith(PARTIAL_SUFFIX)]
    return sorted(found)


def _is_plain_posed_folder(path: Path) -> bool:
    try:
        if not list_frame_ids(path):
            return False
        read_intrinsics(path)
    except InputError:
        return False
    return True

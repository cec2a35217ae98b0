"""The navigation node's logic without ROS: buffering, pairing, keyframe memory, inference, output.

The ROS 2 node is a thin layer over :class:`NavigationRuntime`: its subscription callbacks
convert messages to arrays and call ``set_camera_info`` / ``add_odometry`` /
``set_camera_pose`` / ``add_image`` / ``add_depth`` / ``set_instruction``; a timer (or thread)
calls :meth:`NavigationRuntime.step` at ``node.inference_rate_hz`` and publishes the
:class:`RuntimeOutput`; a diagnostics timer publishes :meth:`NavigationRuntime.diagnostics`.

Threading: the input methods may run on one thread while ``step`` runs on another. Shared
state sits behind one lock that is held only to validate-and-append or to copy references out;
depth conversion happens before it is taken and all inference after it is released.

Input handling (each raises :class:`~vln_core.errors.InputError` with a message naming the
problem, and records it in diagnostics, or is handled as stated):

* malformed data (wrong dtype/shape, empty image, non-finite pose, pose not a rotation, empty
  instruction, bad CameraInfo): InputError, the message is dropped;
* a stamp not newer than the previous one of its stream: InputError, dropped;
* a stamp more than ``node.stamp_jump_reset_s`` after the previous one: warning, the stream's
  buffered data are discarded (for images: the ring, the paired depth and the keyframe memory)
  and the message is accepted; more than that *before* the previous one (bag loop, clock
  reset): warning, everything is reset (all streams, poses, memory) and the message accepted.
  A jump counts only once confirmed (:data:`vln_core.runtime.timelines.JUMP_CONFIRM_MESSAGES` consecutive messages on the
  new timeline, another stream already there, or a real pause of the stream): until then the
  message is held, and a lone outlier stamp (an image stamped 0) is dropped and counted
  (``<stream>_stamp_outlier``, counter ``dropped_stamp_outlier``) without touching buffers or
  keyframes;
* an image size change: warning, ring and memory reset, the new size accepted;
* depth NaN / inf / negative pixels: set to 0 (no measurement) and counted; InputError only if
  no pixel is valid;
* no CameraInfo (or CameraInfo for another size): images are kept, but a backend that needs
  intrinsics cannot use them; ``step`` returns None and diagnostics say why.

The frame used by ``step`` is the newest buffered image that is complete for the backend
(depth paired, intrinsics known, pose resolvable); older unprocessed images are dropped and
counted, never queued.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from vln_core.backends.auto_backend import AutoBackend
from vln_core.backends.base import BackendResult, CameraFrame, HeatmapBackend, create_backend
from vln_core.config import VLNConfig
from vln_core.errors import InputError
from vln_core.geometry.camera import PinholeCamera
from vln_core.geometry.tf_buffer import ExtrapolationError, TransformBuffer, TransformError
from vln_core.geometry.transforms import camera_pose_from_base, pose_from_xyz_quat
from vln_core.nav.navigator import MemoryNavigator
from vln_core.runtime.buffer import BufferedImage, FrameRing, StampedHistory, pose_at
from vln_core.runtime.diagnostics import (
    ERROR,
    OK,
    STALE,
    WARN,
    Counters,
    EventLog,
    LatencyTracker,
    LogThrottle,
    RateMeter,
    status,
    worst_level,
)
from vln_core.runtime.inputs import checked_pose_matrix, checked_stamp, format_stamp
from vln_core.runtime.keyframe_memory import RuntimeKeyframes
from vln_core.runtime.model_swap import LEARNED_BACKENDS, ModelSwapper
from vln_core.runtime.output import RuntimeOutput, check_backend_result, compose_overlay
from vln_core.runtime.recorder import EpisodeRecorder
from vln_core.runtime.timelines import StreamTimelines

__all__ = ["NavigationRuntime", "RuntimeOutput", "POSE_HISTORY_S", "STALE_AFTER_S"]

#: Poses older than this (seconds before the newest pose) are forgotten.
POSE_HISTORY_S = 10.0
#: At most this many poses are kept per pose stream (odometry at 100 Hz fills 10 s).
POSE_HISTORY_MAX = 2048
#: An input stream with no message for this long is reported STALE.
STALE_AFTER_S = 2.0
#: Events newer than this make a diagnostics entry WARN / ERROR; older ones only show in values.
RECENT_EVENT_S = 10.0
STREAMS = ("image", "depth", "odometry", "camera_pose")
#: Each event kind is logged at most once per this many seconds (per kind, see LogThrottle).
LOG_THROTTLE_S = 2.0
#: Instructions longer than this (UTF-8 bytes) are refused and the previous one kept: navigation
#: instructions are a sentence or two; a megabyte is a bug upstream, not an instruction.
MAX_INSTRUCTION_BYTES = 10_000
#: Events recorded before the node attached its logger, logged as soon as it does.
_EARLY_EVENTS_MAX = 32


class NavigationRuntime:
    """Buffers the node's inputs, keeps the keyframe memory and runs a heatmap backend.

    Args:
        cfg: the project config (``video``, ``frame_sampling``, ``heatmap``, ``node`` sections).
        backend: the backend to run; None creates ``cfg.node.backend`` from the registry.
        clock: monotonic clock in seconds (tests may pass a fake one).
    """

    def __init__(self, cfg: VLNConfig, backend: Optional[HeatmapBackend] = None, clock=time.monotonic) -> None:
        self.cfg = cfg
        self.backend = backend if backend is not None else create_backend(cfg.node.backend, cfg)
        self.clock = clock
        # hot swap of the learned model (node.model_path replaced, or reload_model()): only for a
        # backend built here from the config (an injected one cannot be rebuilt)
        self._swapper: Optional[ModelSwapper] = None
        learned = (self.backend.learned_name if isinstance(self.backend, AutoBackend) else cfg.node.backend)
        if backend is None and learned in LEARNED_BACKENDS:
            self._swapper = ModelSwapper(cfg, learned, lambda c: create_backend(learned, c), on_refused=lambda why: (
                self._record_event("model_refused", f"new model refused, the loaded one keeps serving: {why}", ERROR)))
        node = cfg.node
        self.tolerance_ns = int(round(node.max_stamp_gap_s * 1e9))
        self.T_base_cam = pose_from_xyz_quat(torch.tensor(node.camera_mount, dtype=torch.float64)).numpy()

        self._lock = threading.RLock()  # shared state below (re-entrant: held messages are replayed under it)
        self._step_lock = threading.Lock()  # one step at a time
        self._ring = FrameRing(cfg.video.total_frames)
        self._depth_waiting: StampedHistory[np.ndarray] = StampedHistory(max_len=2 * cfg.video.total_frames + 4)
        self._odometry: StampedHistory[tuple[np.ndarray, Optional[np.ndarray]]] = StampedHistory(
            POSE_HISTORY_MAX, int(POSE_HISTORY_S * 1e9))
        self._camera_poses: StampedHistory[np.ndarray] = StampedHistory(POSE_HISTORY_MAX, int(POSE_HISTORY_S * 1e9))
        # node.pose_source "tf": /tf and /tf_static go into this buffer (add_transforms), or an
        # external lookup (tf2_ros) replaces it (set_transform_lookup); the camera pose is looked
        # up when a frame is paired, so an image can wait for the transform after its stamp
        self.tf = TransformBuffer(cache_s=POSE_HISTORY_S)
        self._tf_lookup = self.tf.lookup
        self._tf_external = False
        self._camera: Optional[PinholeCamera] = None
        self._image_size: Optional[tuple[int, int]] = None
        self._depth_size: Optional[tuple[int, int]] = None
        self._instruction = ""
        self._next_seq = 0
        self._last_processed_seq = -1
        self._memory_reset_pending = False
        #: node.waypoint_source=memory: the map of what was seen and the planner on it (vln_core/nav)
        self.navigator: Optional[MemoryNavigator] = (
            MemoryNavigator(robot_radius_m=cfg.node.robot_radius_m) if cfg.node.waypoint_source == "memory" else None)
        #: forward speed (m/s) commanded since the last update, when the caller knows it (bumps)
        self.commanded_speed = 0.0
        self._navigation_mode = ""
        self._navigator_reset_pending = False
        self._generation = 0

        # owned by the step thread
        self._keyframes = RuntimeKeyframes(cfg, self._warn)
        self._recorder: Optional[EpisodeRecorder] = None
        self._waiting_reason = "no image received yet"
        self._last_output_keyframes: list[int] = []
        self._first_image_s: Optional[float] = None  # node.backend auto: images wait for depth from here
        self._last_tf_s: Optional[float] = None  # arrival of the last dynamic /tf transform
        self._overlays = {"drawn": 0, "skipped": 0}  # step(overlay=False): nobody subscribed
        self.last_exception: Optional[BaseException] = None

        # diagnostics
        self._rates = {name: RateMeter(clock=clock) for name in STREAMS + ("camera_info", "output")}
        self._latency = LatencyTracker()
        self._events = EventLog(clock=clock)
        self._log_sink: Optional[Callable[[str, str, str], None]] = None
        self._early_events: list[tuple[str, str, str]] = []
        self._instruction_notes: dict[str, str] = {}  # diagnostics: tokens used, replaced characters
        self._log_throttle = LogThrottle(LOG_THROTTLE_S, clock=clock)
        self._counters = Counters()
        self._last_depth_invalid = (0, 0)
        self._timelines = StreamTimelines(STREAMS, node.stamp_jump_reset_s, clock, self._counters, self._warn,
                                          self._error, self._reset_stream_locked, self._reset_all_locked)
        if isinstance(self.backend, AutoBackend):
            # say at once (log, diagnostics WARN) when the learned path cannot work, not when
            # depth first stops: an RGB-D robot would otherwise learn it only in the field
            problem = self.backend.check_learned()
            if problem:
                self._warn("learned_backend_unavailable", problem)

    # ================================================================== inputs
    def set_log_sink(self, sink: Optional[Callable[[str, str, str], None]]) -> None:
        """Send every recorded event to ``sink(level, kind, message)`` (the node's logger), at
        most once per kind every :data:`LOG_THROTTLE_S` seconds, with the same kind and level
        as diagnostics; lines held back are counted in the next line of that kind. Events
        recorded before (e.g. at start-up: the learned model of ``auto`` is unavailable) are
        sent at once."""
        self._log_sink = sink
        early, self._early_events = self._early_events, []
        for level, kind, message in early:
            self._send_to_log(level, kind, message)

    def _record_event(self, kind: str, message: str, level: str) -> None:
        self._events.record(kind, message, level)
        if self._log_sink is None:
            if len(self._early_events) < _EARLY_EVENTS_MAX:
                self._early_events.append((level, kind, message))
            return
        self._send_to_log(level, kind, message)

    def _send_to_log(self, level: str, kind: str, message: str) -> None:
        sink = self._log_sink
        if sink is None:
            return
        held = self._log_throttle.allow(kind)
        if held is None:
            return
        try:
            sink(level, kind, message + (f" (+{held} more since the last {kind} line)" if held else ""))
        except Exception:  # noqa: BLE001 - logging must never break input handling
            pass

    def _error(self, kind: str, message: str) -> InputError:
        self._record_event(kind, message, ERROR)
        return InputError(message)

    def _warn(self, kind: str, message: str) -> None:
        self._record_event(kind, message, WARN)

    def report_error(self, kind: str, message: str, level: str = ERROR) -> None:
        """Record (and log, see :meth:`set_log_sink`) an error the node met itself, e.g. a
        message it could not convert. InputErrors raised by this runtime's own methods are
        recorded and logged already."""
        self._record_event(str(kind), str(message), level)

    def set_camera_info(self, K: Any, width: int, height: int) -> None:
        """Intrinsics of the colour images (from ``sensor_msgs/CameraInfo``).

        Args:
            K: ``(3, 3)`` pinhole matrix (zero skew) of the ``width`` x ``height`` image.
            width, height: image size the matrix belongs to.
        """
        try:
            K_arr = np.asarray(K, dtype=np.float64)
            if K_arr.size == 9:
                K_arr = K_arr.reshape(3, 3)
            camera = PinholeCamera.from_K(K_arr, width=width, height=height)
        except (InputError, TypeError, ValueError) as exc:
            raise self._error("camera_info_invalid", f"CameraInfo rejected: {exc}") from None
        with self._lock:
            changed = self._camera is not None and self._camera != camera
            self._camera = camera
        if changed:
            self._warn("camera_info_changed", f"CameraInfo changed to {camera}")
        self._rates["camera_info"].tick()

    def set_instruction(self, text: Any) -> None:
        """The navigation instruction given to the backend (and written into recordings)."""
        if not isinstance(text, str):
            raise self._error("instruction_invalid", f"instruction must be a string, got {type(text).__name__}")
        size = len(text.encode("utf-8", errors="replace"))
        if size > MAX_INSTRUCTION_BYTES:
            kept = self.instruction
            raise self._error("instruction_too_long", (
                f"instruction of {size} bytes refused (at most {MAX_INSTRUCTION_BYTES}): kept the previous one "
                f"({kept[:60]!r})" if kept else f"instruction of {size} bytes refused (at most {MAX_INSTRUCTION_BYTES})"))
        text = text.strip()
        if not text:
            raise self._error("instruction_invalid", "instruction is empty")
        notes: dict[str, str] = {}
        replaced = text.count("\ufffd")
        if replaced:  # rclpy decodes invalid UTF-8 to U+FFFD: the sender's text is damaged
            notes["instruction_replacement_characters"] = str(replaced)
            self._warn("instruction_replacement_characters",
                       f"instruction has {replaced} replacement character(s) (invalid UTF-8 from the sender?): {text[:120]!r}")
        counted = self._instruction_tokens(text)
        if counted is not None:
            used, total = counted
            notes["instruction_tokens"] = f"{used} of {total} used"
            if total > used:
                notes["instruction_truncated"] = "True"
                self._warn("instruction_truncated",
                           f"instruction has {total} tokens; the model uses the first {used} "
                           f"(model.max_instruction_length), the rest is ignored")
        with self._lock:
            if text != self._instruction:
                self._navigator_reset_pending = True  # a new goal: forget where the old one was seen
            self._instruction = text
            self._instruction_notes = notes

    def _instruction_tokens(self, text: str) -> Optional[tuple[int, int]]:
        """``(tokens the learned model uses, tokens in text)`` counted with the learned backend's
        own tokenizer (the default hashed-word one until it is loaded); None for the geometry
        backend, which ignores instructions."""
        if self.cfg.node.backend == "geometry":
            return None
        backend = self.backend
        if isinstance(backend, AutoBackend):
            backend = backend.loaded_learned
        tokenizer = getattr(getattr(backend, "engine", None), "tokenizer", None)
        if tokenizer is None:
            from vln_core.models.tokenizer import HashedWordTokenizer  # what the embedded model uses

            tokenizer = HashedWordTokenizer()
        limit = int(self.cfg.model.max_instruction_length)
        try:
            _, mask = tokenizer.encode([text], max_length=max(limit, 4 * MAX_INSTRUCTION_BYTES))
        except Exception:  # noqa: BLE001 - counting is a report, never a reason to refuse
            return None
        total = int(mask.sum())
        return min(total, limit), total

    @property
    def instruction(self) -> str:
        with self._lock:
            return self._instruction

    def _reset_stream_locked(self, stream: str) -> None:
        """A confirmed jump forward of ``stream``: its buffered data go."""
        if stream == "image":
            self._reset_frames_locked()
        elif stream == "depth":
            self._depth_waiting.clear()
        elif stream == "odometry":
            self._odometry.clear()
        else:
            self._camera_poses.clear()

    def _reset_frames_locked(self) -> None:
        """Drop buffered images, waiting depth and (at the next step) the keyframe memory."""
        dropped = len(self._ring.newest_first(self._last_processed_seq))
        if dropped:
            self._counters.add("dropped_reset", dropped)
        self._ring.clear()
        self._depth_waiting.clear()
        self._last_processed_seq = self._next_seq - 1
        self._memory_reset_pending = True
        self._generation += 1
        self._counters.add("resets")

    def _reset_all_locked(self) -> None:
        self._reset_frames_locked()
        self._odometry.clear()
        self._camera_poses.clear()
        self.tf.clear()  # dynamic transforms of the old timeline; static ones stay
        self._timelines.reset_clocks()

    def reset(self) -> None:
        """Forget all buffered inputs, poses and keyframes (CameraInfo and instruction are kept)."""
        with self._lock:
            self._reset_all_locked()

    def add_odometry(self, stamp_ns: int, T_odom_base: Any, velocity: Any = None) -> None:
        """One odometry sample (``nav_msgs/Odometry``).

        Args:
            stamp_ns: integer nanoseconds.
            T_odom_base: ``(4, 4)`` base_link-to-odom pose (REP 103).
            velocity: ``(vx m/s, wz rad/s)`` of the base, or None.
        """
        stamp_ns = checked_stamp(stamp_ns, "odometry")
        try:
            T = checked_pose_matrix(T_odom_base, "odometry pose T_odom_base")
            vel = None
            if velocity is not None:
                vel = np.asarray(velocity, dtype=np.float64).reshape(-1)
                if vel.shape != (2,) or not np.isfinite(vel).all():
                    raise InputError(f"odometry velocity must be finite (vx, wz), got {velocity!r}")
        except (InputError, TypeError, ValueError) as exc:
            raise self._error("odometry_invalid", str(exc)) from None
        with self._lock:
            if not self._timelines.accept("odometry", stamp_ns, lambda: self.add_odometry(stamp_ns, T, vel)):
                return
            self._odometry.append(stamp_ns, (T, vel))
        self._rates["odometry"].tick()

    def set_camera_pose(self, stamp_ns: int, T_wc: Any) -> None:
        """A camera pose from tf (used when ``node.pose_source == "tf"``).

        Args:
            stamp_ns: integer nanoseconds.
            T_wc: ``(4, 4)`` camera-optical-to-world (``node.world_frame``) pose.
        """
        stamp_ns = checked_stamp(stamp_ns, "camera pose")
        try:
            T = checked_pose_matrix(T_wc, "camera pose T_wc")
        except InputError as exc:
            raise self._error("camera_pose_invalid", str(exc)) from None
        if self.cfg.node.pose_source != "tf" and self._events.count("camera_pose_ignored") == 0:
            self._warn("camera_pose_ignored", "set_camera_pose called but node.pose_source is 'odometry': camera poses are stored but not used")
        with self._lock:
            if not self._timelines.accept("camera_pose", stamp_ns, lambda: self.set_camera_pose(stamp_ns, T)):
                return
            self._camera_poses.append(stamp_ns, T)
        self._rates["camera_pose"].tick()

    def add_transforms(self, transforms: Any, static: bool = False) -> int:
        """Transforms of one ``tf2_msgs/TFMessage`` (``/tf``, or ``/tf_static`` with ``static``).

        Args:
            transforms: ``(parent, child, stamp_ns, (x, y, z), (qx, qy, qz, qw))`` tuples, each
                the pose of ``child`` in ``parent`` (``TransformStamped``).
            static: True for ``/tf_static`` (valid at every time).

        Returns:
            how many were stored. Invalid ones are skipped and raise InputError after the valid
            ones are stored (kind ``tf_invalid``).
        """
        accepted, problems = self.tf.set_transforms(transforms, static=static)
        if accepted and not static:
            self._last_tf_s = self.clock()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise self._error("tf_invalid", problems[0] + more)
        return accepted

    def set_transform_lookup(self, lookup: Any) -> None:
        """Look camera poses up with ``lookup`` instead of :attr:`tf` (e.g. tf2_ros's buffer).

        ``lookup(target, source, stamp_ns, tolerance_ns) -> (T_target_source (4, 4), stamp_ns)``
        raises :class:`~vln_core.geometry.tf_buffer.TransformError` (ExtrapolationError with
        ``future=True`` when the stamp is after the newest transform), like
        :meth:`TransformBuffer.lookup`.
        """
        self._tf_lookup = lookup
        self._tf_external = True

    def _tf_camera_pose(self, frame_id: str, stamp_ns: int, waited_enough: bool) -> tuple[Optional[np.ndarray], str, bool]:
        """``(T_wc or None, why not, wait)`` from tf at the image stamp; ``wait``: the transform
        after the stamp has not arrived yet and the image has not waited ``max_stamp_gap_s``."""
        world = self.cfg.node.world_frame
        if not frame_id:
            return None, "tf camera pose: the image has no frame_id to look up in tf", False
        try:
            try:
                T_wc, _ = self._tf_lookup(world, frame_id, stamp_ns, 0)
            except ExtrapolationError as exc:
                if not exc.future:
                    raise
                if not waited_enough:
                    return None, f"waiting for tf after the image stamp (to interpolate, not hold a stale pose): {exc}", True
                T_wc, _ = self._tf_lookup(world, frame_id, stamp_ns, self.tolerance_ns)  # nearest within the tolerance
            T_wc = checked_pose_matrix(T_wc, f"tf pose of {frame_id} in {world}")
        except (TransformError, InputError) as exc:
            return None, f"tf camera pose {world} -> {frame_id}: {exc}", False
        self._rates["camera_pose"].tick()  # in tf mode: camera poses resolved from tf
        return T_wc, "", False

    def add_image(self, stamp_ns: int, frame_id: str, rgb: Any) -> None:
        """One colour image (``sensor_msgs/Image`` converted to RGB).

        Args:
            stamp_ns: integer nanoseconds.
            frame_id: the camera frame name.
            rgb: ``(H, W, 3)`` uint8 RGB; the runtime keeps a reference (do not modify it later).
        """
        stamp_ns = checked_stamp(stamp_ns, "image")
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            shape = getattr(rgb, "shape", None)
            dtype = getattr(rgb, "dtype", type(rgb).__name__)
            raise self._error("image_invalid", f"image must be a (H, W, 3) uint8 RGB array, got shape {shape} dtype {dtype}")
        if rgb.shape[0] < 2 or rgb.shape[1] < 2:
            raise self._error("image_invalid", f"image is empty or degenerate: shape {rgb.shape}")
        if not isinstance(frame_id, str):
            raise self._error("image_invalid", f"image frame_id must be a string, got {frame_id!r}")
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        now = self.clock()
        with self._lock:
            if not self._timelines.accept("image", stamp_ns, lambda: self.add_image(stamp_ns, frame_id, rgb)):
                return
            if self._image_size is not None and size != self._image_size:
                old = self._image_size
                self._reset_frames_locked()
                self._warn("image_size_changed", f"image size changed from {old[1]}x{old[0]} to {size[1]}x{size[0]}: frames and keyframes reset")
            self._image_size = size
            if self._first_image_s is None:
                self._first_image_s = now
            entry = BufferedImage(self._next_seq, stamp_ns, frame_id, rgb, now)
            self._next_seq += 1
            evicted = self._ring.push(entry)
            if evicted is not None and evicted.seq > self._last_processed_seq:
                self._counters.add("dropped_overflow")
            waiting = self._depth_waiting.pop_nearest(stamp_ns, self.tolerance_ns)
            if waiting is not None:
                depth_stamp, depth = waiting
                if depth.shape == size:
                    entry.depth_m, entry.depth_stamp_ns = depth, depth_stamp
        self._rates["image"].tick(now)

    def add_depth(self, stamp_ns: int, depth_m: Any) -> None:
        """One depth image registered to the colour camera (same grid as the colour images).

        Args:
            stamp_ns: integer nanoseconds.
            depth_m: ``(H, W)`` float metres, or uint16 millimetres (REP 118 ``16UC1``; 0 and
                65535 = no measurement). NaN, inf and negative values become 0 (no measurement)
                and are counted.
        """
        stamp_ns = checked_stamp(stamp_ns, "depth")
        depth = self._convert_depth(depth_m)
        size = (int(depth.shape[0]), int(depth.shape[1]))
        with self._lock:
            if self._image_size is not None and size != self._image_size:
                img = self._image_size
                raise self._error(
                    "depth_size_mismatch",
                    f"depth is {size[1]}x{size[0]} but the colour images are {img[1]}x{img[0]}; publish depth "
                    f"registered to the colour camera (e.g. aligned_depth_to_color); message dropped",
                )
            if not self._timelines.accept("depth", stamp_ns, lambda: self.add_depth(stamp_ns, depth)):
                return
            if self._depth_size is not None and size != self._depth_size:
                self._warn("depth_size_changed", f"depth size changed from {self._depth_size} to {size}")
            self._depth_size = size
            if self._ring.attach_depth(stamp_ns, depth, self.tolerance_ns) is None:
                self._depth_waiting.append(stamp_ns, depth)
        self._rates["depth"].tick()

    def _convert_depth(self, depth_m: Any) -> np.ndarray:
        """Validated ``(H, W)`` float32 metres with invalid pixels 0 (called outside the lock)."""
        if not isinstance(depth_m, np.ndarray):
            raise self._error("depth_invalid", f"depth must be a numpy array, got {type(depth_m).__name__}")
        arr = depth_m[..., 0] if depth_m.ndim == 3 and depth_m.shape[2] == 1 else depth_m
        if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 2:
            raise self._error("depth_invalid", f"depth must be a (H, W) image, got shape {depth_m.shape}")
        if arr.dtype == np.uint16:
            depth = arr.astype(np.float32) * np.float32(1e-3)
            depth[arr == 65535] = 0.0
            bad = 0
        elif arr.dtype.kind == "f":
            depth = arr.astype(np.float32, copy=True)
            with np.errstate(invalid="ignore"):
                bad_mask = ~np.isfinite(depth) | (depth < 0)
            bad = int(np.count_nonzero(bad_mask))
            if bad:
                depth[bad_mask] = 0.0
        else:
            raise self._error("depth_invalid", f"depth must be float metres or uint16 millimetres, got dtype {arr.dtype}")
        if not np.any(depth > 0):
            raise self._error("depth_invalid", f"depth image {arr.shape[1]}x{arr.shape[0]} has no valid pixel (all 0, NaN, inf or negative)")
        if bad:
            self._counters.add("depth_invalid_pixels", bad)
            self._counters.add("depth_images_with_invalid_pixels")
        self._last_depth_invalid = (bad, depth.size)
        return depth

    # ================================================================== step
    def step(self, overlay: Optional[bool] = None) -> Optional[RuntimeOutput]:
        """Process the newest complete frame not processed yet.

        Args:
            overlay: draw the overlay mosaic for this output; None = ``node.publish_overlay``.
                The node passes False while nobody subscribes to ``~/overlay`` (the mosaic costs
                more than the geometry backend itself), as image_transport publishers do.

        Returns:
            :class:`RuntimeOutput`, or None when no new frame is complete yet (the reason is in
            :meth:`diagnostics` and :attr:`waiting_reason`) or the backend failed (recorded as a
            ``step_failed`` error; the exception is kept in :attr:`last_exception`).
        """
        with self._step_lock:
            self._swap_model_if_ready()  # between two updates: no output is missed
            try:
                return self._step(self.cfg.node.publish_overlay if overlay is None else bool(overlay))
            except Exception as exc:  # the node must keep serving; the error is reported, not hidden
                self.last_exception = exc
                self._record_event("step_failed", f"{type(exc).__name__}: {exc}", ERROR)  # log too
                self._waiting_reason = f"last step failed: {type(exc).__name__}: {exc}"
                return None

    # ================================================================== model hot swap
    def poll_model(self) -> None:
        """Start loading the learned model in the background when its file was replaced (the node
        calls this once a second); the new model serves from the first update after it loaded."""
        if self._swapper is not None:
            self._swapper.poll()

    def reload_model(self) -> tuple[bool, str]:
        """Load ``node.model_path`` again now (the node's ``~/reload_model`` service)."""
        if self._swapper is None:
            return False, f"backend {self.cfg.node.backend!r} has no learned model to reload"
        return self._swapper.request_reload()

    @property
    def model_swapper(self) -> Optional[ModelSwapper]:
        return self._swapper

    def _swap_model_if_ready(self) -> None:
        """Put a model the swapper finished loading in service (called with ``_step_lock`` held)."""
        if self._swapper is None:
            return
        new = self._swapper.take_ready()
        if new is None:
            return
        if isinstance(self.backend, AutoBackend):
            self.backend.replace_learned(new)
        else:
            old, self.backend = self.backend, new
            old.close()
        # news, not a problem: the log (info) and the model diagnostics entry, not the errors entry
        self._send_to_log(OK, "model_swapped", f"now serving the model loaded from {self._swapper.path} "
                          f"(load #{self._swapper.status.loads})")

    @property
    def waiting_reason(self) -> str:
        """Why the last ``step`` returned None ("" after an output)."""
        return self._waiting_reason

    def _auto_choose(self) -> bool:
        """``node.backend: auto``: let the backend choose from what arrives (False: wait)."""
        backend = self.backend
        assert isinstance(backend, AutoBackend)
        now = self.clock()
        depth_age = self._rates["depth"].age_s(now)
        if self.cfg.node.pose_source == "odometry":
            pose_age = self._rates["odometry"].age_s(now)
        else:
            ages = [a for a in (self._rates["camera_pose"].age_s(now),
                                None if self._last_tf_s is None else now - self._last_tf_s) if a is not None]
            pose_age = min(ages) if ages else (0.0 if self._tf_external else None)
        first = self._first_image_s
        before = backend.choice
        switched, reason = backend.choose(depth_age, pose_age, None if first is None else now - first)
        if not backend.decided:
            self._waiting_reason = reason
            return False
        if switched:
            self._keyframes.clear()
            self._warn("backend_switched", f"auto: {before} -> {reason}; keyframe memory cleared")
        return True

    def _step(self, draw_overlay: bool) -> Optional[RuntimeOutput]:
        t0 = time.perf_counter()
        with self._lock:
            reset_memory, self._memory_reset_pending = self._memory_reset_pending, False
            reset_navigator, self._navigator_reset_pending = reset_memory or self._navigator_reset_pending, False
            candidates = [(e, e.depth_m, e.depth_stamp_ns) for e in self._ring.newest_first(self._last_processed_seq)]
            newest_depth_ns = self._timelines.last_ns("depth")
            camera = self._camera
            odometry = self._odometry.snapshot()
            camera_poses = self._camera_poses.snapshot()
            instruction = self._instruction
            generation = self._generation
            any_image = self._next_seq > 0
        if reset_memory:
            self._keyframes.clear()
        if not candidates:
            self._waiting_reason = "no new image since the last output" if any_image else "no image received yet"
            return None
        if isinstance(self.backend, AutoBackend) and not self._auto_choose():
            return None

        frame, entry, reasons = None, None, []
        for candidate, depth, depth_stamp in candidates:
            frame, why = self._assemble(candidate, depth, depth_stamp, newest_depth_ns, camera, odometry, camera_poses)
            if frame is not None:
                entry = candidate
                break
            reasons.append(f"image seq {candidate.seq} at {format_stamp(candidate.stamp_ns)}: {why}")
        if frame is None:
            self._waiting_reason = reasons[0] + (f" (and {len(reasons) - 1} older)" if len(reasons) > 1 else "")
            newest = candidates[0][0]
            if camera is not None and self.backend.needs_intrinsics and camera.size != newest.size:
                # diagnostics show it as ERROR; the log says it too (throttled per kind)
                self._record_event("camera_info_size_mismatch",
                                   f"CameraInfo is for {camera.width}x{camera.height} but images are "
                                   f"{newest.size[1]}x{newest.size[0]}: no output until they agree", ERROR)
            return None
        with self._lock:
            if self._generation != generation:  # a reset discarded these frames meanwhile
                self._waiting_reason = "inputs were reset while pairing"
                return None
            # images older than the chosen one that are still buffered are dropped now; those
            # pushed out of the ring meanwhile were counted as overflow when they left it
            superseded = sum(1 for e in self._ring if self._last_processed_seq < e.seq < frame.seq)
            if not any(e is entry for e in self._ring):  # evicted (and counted) while pairing, yet processed
                self._counters.add("dropped_overflow", -1)
            self._last_processed_seq = frame.seq
        if superseded:
            self._counters.add("dropped_superseded", superseded)
        t_pair = time.perf_counter()

        keyframes = self._keyframes.update(frame, self.backend.frame_geometry)
        t_memory = time.perf_counter()

        result = self.backend.infer(frame, keyframes, instruction)
        check_backend_result(self.backend, result, frame, len(keyframes))
        if self.navigator is not None:
            if reset_navigator:
                self.navigator.reset()
            result = self._navigate(frame, result)
        t_backend = time.perf_counter()

        overlay = compose_overlay(frame, keyframes, result) if draw_overlay else None
        self._overlays["drawn" if draw_overlay else "skipped"] += 1
        t_overlay = time.perf_counter()

        if self.cfg.node.record:
            self._record(frame)
        t_end = time.perf_counter()

        latency = {
            "pairing": (t_pair - t0) * 1e3,
            "memory": (t_memory - t_pair) * 1e3,
            "backend": (t_backend - t_memory) * 1e3,
            "overlay": (t_overlay - t_backend) * 1e3,
            "record": (t_end - t_overlay) * 1e3,
            "total": (t_end - t0) * 1e3,
        }
        input_to_output_ms = (self.clock() - entry.received_s) * 1e3
        latency_tracked = dict(latency, input_to_output=input_to_output_ms)
        self._latency.add(latency_tracked)
        self._rates["output"].tick()
        self._waiting_reason = ""
        self._last_output_keyframes = [kf.seq for kf in keyframes]
        return RuntimeOutput(
            stamp_ns=frame.stamp_ns,
            frame_id=frame.frame_id,
            seq=frame.seq,
            heatmaps=result.heatmaps,
            keyframe_stamps=[kf.stamp_ns for kf in keyframes],
            keyframe_indices=[kf.seq for kf in keyframes],
            waypoints=result.waypoints,
            goal_heatmap=result.goal_heatmap,
            overlay=overlay,
            latency_ms=latency,
            input_to_output_ms=input_to_output_ms,
            T_wc=frame.T_wc,
            T_odom_base=frame.T_odom_base,
            backend=self.backend.name,
            depth=result.depth,
            depth_K=result.depth_K,
            navigation_mode=self._navigation_mode,
        )

    def _navigate(self, frame: CameraFrame, result: BackendResult) -> BackendResult:
        """``node.waypoint_source=memory``: the view updates the navigator's map (measured depth,
        else the backend's) and its plan replaces the head's waypoints; without a pose or depth
        the head's waypoints stay and diagnostics say why."""
        depth, K = (frame.depth_m, frame.K) if frame.depth_m is not None and frame.K is not None else (
            result.depth, result.depth_K)
        if frame.T_odom_base is None or frame.T_wc is None or depth is None or K is None:
            self._navigation_mode = "head (memory needs odometry and depth)"
            return result
        goal = result.goal_heatmap if self.backend.goal_activation == "sigmoid" else None
        if goal is None:
            self._warn("memory_without_goal", "node.waypoint_source=memory: the goal heatmap is not a per-pixel "
                       "probability (model.arch_overrides.goal_head is not mask): the robot only explores")
        decision = self.navigator.step(frame.stamp_ns * 1e-9, frame.T_odom_base, depth, K, frame.T_wc, goal,
                                       self.commanded_speed, depth_measured=frame.depth_m is not None)
        self._navigation_mode = decision.mode
        return dataclasses.replace(result, waypoints=decision.waypoints)

    def _assemble(
        self,
        entry: BufferedImage,
        depth: Optional[np.ndarray],
        depth_stamp_ns: Optional[int],
        newest_depth_ns: Optional[int],
        camera: Optional[PinholeCamera],
        odometry: tuple[list[int], list[tuple[np.ndarray, Optional[np.ndarray]]]],
        camera_poses: tuple[list[int], list[np.ndarray]],
    ) -> tuple[Optional[CameraFrame], str]:
        """The frame with everything the backend needs, or ``(None, why not)``.

        Pairing is settled before a frame is used, because a keyframe keeps its depth and pose
        for as long as it stays in memory: the depth pairing is final once a depth image stamped
        at or after the image has arrived (depth arrives in stamp order, so no closer one can
        come), and the pose must be exact or interpolated between samples on both sides of the
        image stamp. Only after the image has waited ``node.max_stamp_gap_s`` (wall clock) for
        that do the nearest depth and pose within the tolerance count (depth or odometry that
        stopped).
        """
        backend = self.backend
        waited_enough = (self.clock() - entry.received_s) >= self.cfg.node.max_stamp_gap_s
        H, W = entry.size
        K = None
        if camera is None:
            why_no_K = "no CameraInfo received yet: images are buffered but cannot be used without intrinsics"
        elif camera.size != (H, W):
            why_no_K = f"CameraInfo is for {camera.width}x{camera.height} but the image is {W}x{H}"
        else:
            K, why_no_K = camera.K, ""
        if backend.needs_intrinsics and K is None:
            return None, why_no_K
        if backend.needs_depth and depth is None:
            return None, f"no depth image within {self.cfg.node.max_stamp_gap_s} s of the image stamp yet"
        depth_final = depth_stamp_ns == entry.stamp_ns or (newest_depth_ns is not None and newest_depth_ns >= entry.stamp_ns)
        if backend.needs_depth and not depth_final and not waited_enough:
            return None, "waiting for a depth image stamped at or after the image (the pairing may still improve)"

        T_wc = T_odom_base = velocity = None
        if self.cfg.node.pose_source == "odometry":
            stamps, values = odometry
            T_odom_base, nearest, why = pose_at(stamps, [v[0] for v in values], entry.stamp_ns, self.tolerance_ns)
            # a backend that can run without poses still waits (max_stamp_gap_s) for the bracketing
            # pose while odometry flows: the RGB + pose mode gets the interpolated pose, not a stale one
            if why == "nearest" and not waited_enough and (backend.needs_pose or stamps):
                return None, "waiting for odometry after the image stamp (to interpolate, not hold a stale pose)"
            if T_odom_base is not None:
                T_wc = camera_pose_from_base(T_odom_base, self.T_base_cam).numpy()
                velocity = values[nearest][1]
            else:
                why = f"odometry: {why}"
        elif camera_poses[0] or not (self._tf_external or self.tf.frames):
            stamps, values = camera_poses  # poses given with set_camera_pose (or none at all yet)
            T_wc, _, why = pose_at(stamps, values, entry.stamp_ns, self.tolerance_ns)
            if why == "nearest" and not waited_enough and (backend.needs_pose or stamps):
                return None, "waiting for a camera pose after the image stamp (to interpolate, not hold a stale pose)"
            if T_wc is None:
                why = f"tf camera pose: {why}"
        else:  # looked up in tf at the image stamp
            T_wc, why, wait = self._tf_camera_pose(entry.frame_id, entry.stamp_ns, waited_enough)
            if wait:  # transforms flow but not yet past the stamp: worth max_stamp_gap_s for any backend
                return None, why
        if backend.needs_pose and T_wc is None:
            return None, why
        frame = CameraFrame(
            stamp_ns=entry.stamp_ns, frame_id=entry.frame_id, rgb=entry.rgb, depth_m=depth, K=K,
            T_wc=T_wc, T_odom_base=T_odom_base, seq=entry.seq, base_velocity=velocity,
        )
        return frame, ""

    @property
    def keyframe_indices(self) -> list[int]:
        """Sequence numbers of the keyframes used by the last output."""
        return list(self._last_output_keyframes)

    @property
    def voxel_size(self) -> Optional[float]:
        """Voxel edge (metres) of the keyframe memory, None until fixed."""
        return self._keyframes.voxel_size

    # ------------------------------------------------------------------ outputs
    def _record(self, frame: CameraFrame) -> None:
        if self._recorder is None:
            node = self.cfg.node
            self._recorder = EpisodeRecorder(
                Path(node.record_dir), frame.K, frame.size, T_base_cam=self.T_base_cam,
                instruction_getter=lambda: self.instruction,
                frames_per_episode=node.record_frames_per_episode, queue_size=node.record_queue_size,
                # a full disk pauses recording: once in the log and the errors entry, not per frame
                on_error=lambda message: self._record_event("record_failed", message, ERROR),
            )
        self._recorder.submit(frame)

    @property
    def recorder(self) -> Optional[EpisodeRecorder]:
        return self._recorder

    def close(self) -> None:
        """Finish the recording (if any) and release the backend."""
        with self._step_lock:
            if self._recorder is not None:
                self._recorder.close()
                self._recorder = None
            self.backend.close()

    # ================================================================== introspection
    @property
    def buffered_frames(self) -> int:
        """Images in the ring (<= ``video.total_frames``)."""
        with self._lock:
            return len(self._ring)

    def counters(self) -> dict[str, int]:
        """Drop / reset / invalid-depth counters."""
        return self._counters.as_dict()

    def error_count(self, kind: str) -> int:
        """How often an error or warning of ``kind`` was recorded."""
        return self._events.count(kind)

    def last_error(self, kind: str) -> Optional[str]:
        return self._events.last_message(kind)

    def diagnostics(self) -> list[dict]:
        """DiagnosticStatus-like dicts ``{name, level, message, values}`` (see diagnostics.py)."""
        now = self.clock()
        node = self.cfg.node
        out = []
        with self._lock:
            camera = self._camera
            image_size = self._image_size
            buffered = len(self._ring)
            instruction = self._instruction

        # --- inputs
        required = {
            "image": True,
            "depth": self.backend.needs_depth,
            "odometry": self.backend.needs_pose and node.pose_source == "odometry",
            "camera_pose": self.backend.needs_pose and node.pose_source == "tf",
        }
        input_values, levels, problems = {}, [], []
        for stream in STREAMS:
            meter = self._rates[stream]
            age = meter.age_s(now)
            input_values[f"{stream}_rate_hz"] = f"{meter.rate_hz(now):.2f}"
            input_values[f"{stream}_count"] = meter.count
            input_values[f"{stream}_last_age_s"] = "never" if age is None else f"{age:.2f}"
            if required[stream] and (age is None or age > STALE_AFTER_S):
                levels.append(STALE)
                problems.append(f"no {stream} " + ("received yet" if age is None else f"for {age:.1f} s"))
        if camera is None:
            input_values["camera_info"] = "none received"
            if self.backend.needs_intrinsics:
                levels.append(ERROR)
                problems.append("no CameraInfo: frames are kept but the backend cannot use them")
        else:
            input_values["camera_info"] = f"{camera.width}x{camera.height} fx={camera.fx:.1f} fy={camera.fy:.1f} cx={camera.cx:.1f} cy={camera.cy:.1f}"
            if image_size is not None and camera.size != image_size and self.backend.needs_intrinsics:
                levels.append(ERROR)
                problems.append(f"CameraInfo is {camera.width}x{camera.height} but images are {image_size[1]}x{image_size[0]}")
        input_values["image_size"] = "unknown" if image_size is None else f"{image_size[1]}x{image_size[0]}"
        bad, total = self._last_depth_invalid
        input_values["depth_nan_inf_negative_pixels_last"] = f"{bad}/{total}"
        input_values["instruction"] = instruction[:120] if instruction else "(none)"
        with self._lock:
            notes = dict(self._instruction_notes)
        input_values.update(notes)
        if "instruction_replacement_characters" in notes:
            levels.append(WARN)
            problems.append(f"instruction has {notes['instruction_replacement_characters']} replacement character(s)")
        if "instruction_truncated" in notes:
            levels.append(WARN)
            problems.append(f"instruction truncated: {notes['instruction_tokens']}")
        if node.backend != "geometry" and self.backend.predicts_waypoints and not instruction:
            levels.append(WARN)
            problems.append("no instruction received")
        out.append(status("vln_heatmap: inputs", worst_level(levels), "; ".join(problems) or "all inputs flowing", input_values))

        # --- output and latency
        out_meter = self._rates["output"]
        age = out_meter.age_s(now)
        values = {
            "output_rate_hz": f"{out_meter.rate_hz(now):.2f}",
            "target_rate_hz": f"{node.inference_rate_hz:.2f}",
            "outputs": out_meter.count,
            "last_output_age_s": "never" if age is None else f"{age:.2f}",
            "waiting_for": self._waiting_reason or "-",
            # step(overlay=False) while ~/overlay has no subscriber: the mosaic is not drawn
            "overlays_drawn": self._overlays["drawn"],
            "overlays_skipped_no_subscriber": self._overlays["skipped"],
        }
        latency = self._latency.summary()
        for stage, (median, p95, n) in latency.items():
            values[f"latency_{stage}_ms"] = f"median {median:.1f} p95 {p95:.1f} (n={n})"
        rate = out_meter.rate_hz(now)
        # the output cannot be faster than the camera: judge the rate against what is possible
        achievable = min(node.inference_rate_hz, self._rates["image"].rate_hz(now) or node.inference_rate_hz)
        period_ms = 1e3 / node.inference_rate_hz
        if age is None:
            level, message = (STALE, f"no output yet: {self._waiting_reason}")
        elif age > max(STALE_AFTER_S, 3.0 / node.inference_rate_hz):
            level, message = (STALE, f"no output for {age:.1f} s: {self._waiting_reason or 'step() not called'}")
        elif out_meter.count >= 5 and rate < 0.5 * achievable:
            slow = "total" in latency and latency["total"][0] > period_ms
            cause = f"step() takes {latency['total'][0]:.0f} ms median, more than the {period_ms:.0f} ms period" if slow else "inputs incomplete"
            level, message = (WARN, f"publishing at {rate:.1f} Hz, below half of {achievable:.1f} Hz: {cause}")
        else:
            level, message = (OK, f"publishing at {rate:.1f} Hz")
        out.append(status("vln_heatmap: output", level, message, values))

        # --- drops and buffer
        counters = self._counters.as_dict()
        dropped = sum(v for k, v in counters.items() if k.startswith("dropped_"))
        values = {k: v for k, v in sorted(counters.items())}
        values["dropped_total"] = dropped
        values["buffered_frames"] = f"{buffered}/{self.cfg.video.total_frames}"
        out.append(status("vln_heatmap: frames", OK, f"{dropped} frames dropped (newest frame wins), {buffered} buffered", values))

        # --- keyframes and backend
        kf_values = {
            "method": self.cfg.frame_sampling.method,
            "keyframes": f"{len(self._last_output_keyframes)}/{self.cfg.video.keyframes}",
            "keyframe_seqs": ",".join(map(str, self._last_output_keyframes)) or "-",
            "voxel_size_m": "not fixed yet" if self._keyframes.voxel_size is None else f"{self._keyframes.voxel_size:.4f}",
        }
        kf_values.update({f"memory_{k}": v for k, v in self._keyframes.stats().items()})
        kf_values.update(self.backend.describe())
        kf_values["keyframe_geometry"] = self._keyframes.source or "-"
        kf_values["waypoint_source"] = (self.cfg.node.waypoint_source if self.navigator is None else
                                        f"memory ({self._navigation_mode or 'no view yet'})")
        waypoint_note = "" if self.backend.predicts_waypoints else "; predicts no waypoints (published as none)"
        selection = f": {self.backend.reason}" if isinstance(self.backend, AutoBackend) else ""
        backend_level, unavailable = OK, ""
        if isinstance(self.backend, AutoBackend) and self.backend.learned_error:
            backend_level, unavailable = WARN, f"; learned path unavailable: {self.backend.learned_error}"
        out.append(status("vln_heatmap: keyframes and backend", backend_level,
                          f"backend {self.backend.name}{selection}{waypoint_note}{unavailable}", kf_values))

        # --- the learned model (hot swap)
        if self._swapper is not None:
            st = self._swapper.status
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.loaded_at))
            values = {"path": st.path, "loaded_at_utc": since, "serving_for_s": f"{time.time() - st.loaded_at:.0f}",
                      "loads": st.loads, "loading": str(st.loading).lower(), "refused": st.refused or "-"}
            level = WARN if st.refused else OK
            message = (f"serving {st.path} since {since}" + (" (a new file is loading)" if st.loading else "")
                       + (f"; refused a new file: {st.refused}" if st.refused else ""))
            out.append(status("vln_heatmap: model", level, message, values))

        # --- errors
        recent = self._events.recent(RECENT_EVENT_S)
        level = worst_level([lv for _, lv, _, _, _ in recent])
        message = "; ".join(f"{k} x{n}: {msg}" for k, _, n, msg, _ in recent[:3]) or "no recent errors"
        out.append(status("vln_heatmap: errors", level, message, self._events.values()))

        # --- recorder
        if node.record:
            rec = self._recorder
            if rec is None:
                out.append(status("vln_heatmap: recorder", OK, "waiting for the first complete frame", {"record_dir": node.record_dir}))
            else:
                stats = rec.stats()
                lvl = WARN if stats["dropped_queue_full"] or stats["rejected"] else OK
                message = f"{stats['written']} frames written, {stats['episodes_finished']} episodes"
                if stats["paused"]:
                    lvl, message = ERROR, f"{stats['paused']} ({message})"
                if not rec.is_alive:
                    lvl = ERROR
                out.append(status("vln_heatmap: recorder", lvl, message, stats))
        return out

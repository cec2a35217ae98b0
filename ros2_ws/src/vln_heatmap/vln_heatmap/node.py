"""The vln_heatmap ROS 2 node: camera + depth + odometry + instruction in, keyframe heatmaps out.

Thin by design: callbacks convert messages (``vln_core.ros_codec`` via :mod:`msg_conversions`)
and hand numpy arrays to :class:`vln_core.runtime.NavigationRuntime`, which owns buffering,
keyframe selection, inference, diagnostics figures and error accounting.

Threads: a ``SingleThreadedExecutor`` runs the input callbacks (convert + buffer, about 1 ms
each) and the 1 Hz diagnostics timer; inference runs on a thread of its own at
``node.inference_rate_hz`` (:class:`InferenceLoop`), so an input callback never waits for
inference and inference never waits for the executor. Measured on a 2-core machine at 640x480
30 Hz: rclpy's ``MultiThreadedExecutor`` spent most of the process's time in its own thread-pool
bookkeeping (futures per callback) and left inference at about 1 Hz.

Subscribes (names from the ``node.topics`` parameters, remappable):
    colour ``sensor_msgs/Image`` (or ``CompressedImage`` when ``node.topics.compressed_image`` is
    set), depth ``sensor_msgs/Image`` (16UC1 mm / 32FC1 m), ``sensor_msgs/CameraInfo``,
    ``nav_msgs/Odometry`` (base_link in odom; the camera pose is odometry x ``node.camera_mount``),
    or with ``node.pose_source: tf`` ``/tf`` + ``/tf_static`` instead (tf2_ros's listener when
    tf2_ros is installed, else ``tf2_msgs/TFMessage`` into vln_core's TransformBuffer; the image's
    frame_id is looked up in ``node.world_frame`` at the image stamp), ``std_msgs/String`` instruction.

Publishes (stamped with the input colour image's stamp and frame_id):
    ``~/heatmaps`` (32FC1 Image, K heatmaps stacked vertically, see ``msg_conversions``),
    ``~/keyframe_indices`` (Int32MultiArray), ``~/keyframe_stamps`` (Int64MultiArray, ns),
    ``~/overlay`` (rgb8 mosaic for RViz; drawn only while it has a subscriber), ``~/waypoints``
    (nav_msgs/Path in ``node.world_frame``, or ``node.base_frame`` without a pose),
    ``~/waypoint_markers`` (MarkerArray) and ``~/goal_heatmap`` (32FC1 Image) when the backend
    predicts them, ``/diagnostics`` (DiagnosticArray, 1 Hz).

Service: ``~/reload_model`` (std_srvs/Trigger): load ``node.model_path`` again; the file is also
watched once a second and a replaced one is swapped in between two updates (``vln_core.runtime.model_swap``).

Every callback catches bad input (``InputError``) and any other exception, logs it rate-limited,
reports it to the runtime (it appears in ``/diagnostics`` by kind) and keeps serving.
"""
from __future__ import annotations

import array
import sys
import threading
import time
from typing import Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path
from std_srvs.srv import Trigger
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rcl_interfaces.msg import ParameterDescriptor
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Int32MultiArray, Int64MultiArray, String
from visualization_msgs.msg import MarkerArray

from vln_core.config import ConfigError, VLNConfig, flatten_config, load_config
from vln_core.errors import InputError
from vln_core.geometry.tf_buffer import ExtrapolationError, TransformError
from vln_core.ros_codec import pose_fields_to_matrix
from vln_core.ros_params import (
    check_params_file,
    explain_params_file_error,
    node_name_matches,
    params_file_node_names,
    params_files_from_args,
)
from vln_core.runtime import NavigationRuntime

from vln_heatmap import msg_conversions as conv
from vln_heatmap.transport import use_transport_profile

NODE_NAME = "vln_heatmap_node"
#: Parameters that belong to ROS itself, not to the vln_core config tree.
ROS_OWN_PARAMETERS = ("use_sim_time", "start_type_description_service", "qos_overrides")
LOG_THROTTLE_S = 2.0


def _plain(value: Any) -> Any:
    """ROS parameter value -> plain Python (array.array -> list)."""
    if isinstance(value, array.array):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def declare_config_parameters(node: Node) -> VLNConfig:
    """Declare one ROS parameter per leaf of the default :class:`VLNConfig` (dotted names, e.g.
    ``node.inference_rate_hz``), read them back and build the validated config.

    Parameters are dynamically typed so ``2`` for a float field is accepted; the config system
    does the type checking and names the dotted key in its error. Parameters given in the
    parameter file but unknown to the config (typos) end up in ``load_config`` and fail there.
    """
    for name, default in flatten_config(VLNConfig()).items():
        if node.has_parameter(name) or isinstance(default, dict):
            continue
        node.declare_parameter(name, _plain(default), ParameterDescriptor(dynamic_typing=True))
    overrides: dict[str, Any] = {}
    for name, param in node.get_parameters_by_prefix("").items():  # "" prefix: every parameter
        if name.split(".")[0] in ROS_OWN_PARAMETERS:
            continue
        if param.type_ == Parameter.Type.NOT_SET:
            overrides[name] = None
            continue
        overrides[name] = _plain(param.value)
    return load_config(None, overrides=overrides)


def sensor_qos(cfg: VLNConfig) -> QoSProfile:
    reliability = ReliabilityPolicy.RELIABLE if cfg.node.sensor_qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=cfg.node.sensor_qos_depth,
        reliability=reliability, durability=DurabilityPolicy.VOLATILE,
    )


def odometry_qos() -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=50,
        reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE,
    )


def tf_qos(static: bool) -> QoSProfile:
    """/tf: best effort 100 deep (late transforms are useless, like odometry; matches reliable
    publishers too); /tf_static: reliable transient local, as tf2's static broadcasters offer."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=100,
        reliability=ReliabilityPolicy.RELIABLE if static else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if static else DurabilityPolicy.VOLATILE,
    )


def output_qos(depth: int = 5) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
    )


class InferenceLoop:
    """Calls ``tick`` at ``rate_hz`` on a daemon thread until :meth:`stop`.

    When a tick overruns its period the next one starts at once and the schedule restarts from
    there (no burst of catch-up ticks): the runtime always takes the newest frame anyway.
    """

    def __init__(self, rate_hz: float, tick: Callable[[], None]) -> None:
        self.period_s = 1.0 / float(rate_hz)
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vln_inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            self._tick()
            next_t += self.period_s
            now = time.monotonic()
            if next_t < now:
                next_t = now
            self._stop.wait(next_t - now)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)


class VLNHeatmapNode(Node):
    """See the module docstring. ``cfg`` is built from the node's parameters."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            NODE_NAME, allow_undeclared_parameters=True,
            automatically_declare_parameters_from_overrides=True, **kwargs,
        )
        self.cfg = declare_config_parameters(self)
        self.runtime = NavigationRuntime(self.cfg)
        self.runtime.set_log_sink(self._log_event)  # every event once per kind and 2 s, as in diagnostics
        topics = self.cfg.node.topics
        self._last_camera_info: tuple | None = None

        # One mutually exclusive callback group per input topic: messages of a topic are handled in
        # order, and no topic waits behind another one's callbacks (sharing a group made odometry
        # lag a second behind the images on a busy CPU: the executor skips a ready subscription
        # whose group is busy until its next wait round). The runtime's input methods are
        # thread-safe; inference and diagnostics have groups of their own.
        self._diagnostics_group = MutuallyExclusiveCallbackGroup()

        def own_group() -> MutuallyExclusiveCallbackGroup:
            return MutuallyExclusiveCallbackGroup()

        qos = sensor_qos(self.cfg)
        pose_input = topics.odometry
        self._tf_camera_frame: str | None = None
        if self.cfg.node.pose_source == "tf":
            pose_input = self._start_tf(own_group)
        else:
            # best effort, 50 deep: measured with 640x480 colour + depth at 30 Hz on the same
            # DDS participant pair, RELIABLE odometry reached even a do-nothing subscriber 0.5-1.4 s
            # late (depth 50) or lost 3 in 4 messages (depth 5); best effort delivered all of them
            # on time. Every pose matters (poses are interpolated at image stamps), a late one is
            # useless: exactly what best effort is for (SensorDataQoS does the same).
            self.create_subscription(Odometry, topics.odometry, self._on_odometry, odometry_qos(),
                                     callback_group=own_group())
        self.create_subscription(CameraInfo, topics.camera_info, self._on_camera_info, output_qos(1), callback_group=own_group())
        self.create_subscription(String, topics.instruction, self._on_instruction, output_qos(10),
                                 callback_group=own_group())
        if topics.depth:  # "" = a colour-only camera: no depth subscription at all
            self.create_subscription(Image, topics.depth, self._on_depth, qos, callback_group=own_group())
        if topics.compressed_image:
            self.create_subscription(CompressedImage, topics.compressed_image, self._on_image, qos,
                                     callback_group=own_group())
            image_topic = topics.compressed_image
        else:
            self.create_subscription(Image, topics.image, self._on_image, qos, callback_group=own_group())
            image_topic = topics.image

        self._heatmap_pub = self.create_publisher(Image, "~/heatmaps", output_qos())
        self._keyframe_index_pub = self.create_publisher(Int32MultiArray, "~/keyframe_indices", output_qos())
        self._keyframe_stamp_pub = self.create_publisher(Int64MultiArray, "~/keyframe_stamps", output_qos())
        self._overlay_pub = self.create_publisher(Image, "~/overlay", output_qos(2))
        self._path_pub = self.create_publisher(Path, "~/waypoints", output_qos())
        self._marker_pub = self.create_publisher(MarkerArray, "~/waypoint_markers", output_qos())
        self._goal_pub = self.create_publisher(Image, "~/goal_heatmap", output_qos())
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", output_qos(10))

        self.create_timer(1.0, self._on_diagnostics_timer, callback_group=self._diagnostics_group)
        # hot swap: node.model_path is watched by the diagnostics timer; this service loads it now
        self.create_service(Trigger, "~/reload_model", self._on_reload_model, callback_group=self._diagnostics_group)
        self._inference = InferenceLoop(self.cfg.node.inference_rate_hz, self._on_inference_tick)
        self._inference.start()
        self.get_logger().info(
            f"ready: backend={self.cfg.node.backend}, colour={image_topic}, depth={topics.depth or '(none)'}, "
            f"camera_info={topics.camera_info}, pose={pose_input}, "
            f"inference at {self.cfg.node.inference_rate_hz:g} Hz, {self.cfg.video.keyframes} keyframes"
        )

    # QoS event handlers (rclpy adds "incompatible QoS/type" handlers to every publisher and
    # subscription by default) are waitables the executor polls on every spin: with 13 endpoints
    # that bookkeeping alone kept the single executor thread from draining 30 Hz odometry on a
    # 2-core machine. The node reports its own health through /diagnostics instead.
    def create_subscription(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("event_callbacks", SubscriptionEventCallbacks(use_default_callbacks=False))
        return super().create_subscription(*args, **kwargs)

    def create_publisher(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("event_callbacks", PublisherEventCallbacks(use_default_callbacks=False))
        return super().create_publisher(*args, **kwargs)

    # ------------------------------------------------------------------ error handling

    def _log_event(self, level: str, kind: str, message: str) -> None:
        """The runtime's events, already throttled per kind, as log lines of the same kind and
        level as their /diagnostics entry (one throttle per kind: a flood of bad images never
        hides a bad odometry message).

        One call site per severity: rclpy's logger binds a call site to the severity of its first
        call and raises (ValueError) for any other, which silently lost lines."""
        if level == "ERROR":
            self.get_logger().error(f"{kind}: {message}")
        elif level == "OK":  # news such as a model swapped in
            self.get_logger().info(f"{kind}: {message}")
        else:
            self.get_logger().warning(f"{kind}: {message}")

    def _log(self, kind: str, exc: BaseException) -> str:
        bad_input = isinstance(exc, InputError)
        message = str(exc) if bad_input else f"{type(exc).__name__}: {exc}"
        if bad_input:  # one call site per severity (see _log_event)
            self.get_logger().warning(f"{kind}: {message}", throttle_duration_sec=LOG_THROTTLE_S)
        else:
            self.get_logger().error(f"{kind}: {message}", throttle_duration_sec=LOG_THROTTLE_S)
        return message

    def _report(self, kind: str, exc: BaseException) -> None:
        """Runtime error accounting (/diagnostics) and its per-kind throttled log line; never raises."""
        message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        try:
            self.runtime.report_error(kind, message)
        except Exception as inner:  # the report itself must not take the node down
            self.get_logger().error(f"could not report {kind} error ({message}): {inner}",
                                    throttle_duration_sec=LOG_THROTTLE_S)

    def _handle(self, kind: str, convert: Callable[[], Any], consume: Callable[[Any], Any]) -> None:
        """``consume(convert())`` that never raises.

        A conversion failure (bad message) is reported to the runtime under ``kind``. The
        runtime's own methods record and log the InputErrors they raise under their own kind
        (e.g. ``depth_size_mismatch``), so those are not logged again here; anything unexpected
        from them is reported too.
        """
        try:
            value = convert()
        except Exception as exc:
            self._report(kind, exc)
            return
        try:
            consume(value)
        except InputError:
            pass  # recorded and logged by the runtime, with its kind and level
        except Exception as exc:
            self._report(f"{kind}_unexpected", exc)

    # ------------------------------------------------------------------ inputs

    def _on_image(self, msg: Image | CompressedImage) -> None:
        def convert() -> tuple[int, str, Any]:
            return conv.stamp_ns(msg), msg.header.frame_id, conv.color_msg_to_rgb(msg)

        def consume(value: tuple[int, str, Any]) -> None:
            stamp, frame_id, rgb = value
            if self.cfg.node.pose_source == "tf" and frame_id != self._tf_camera_frame:
                self._tf_camera_frame = frame_id
                self.get_logger().info(f"camera pose from tf: {self.cfg.node.world_frame} -> {frame_id!r} at each image stamp")
            self.runtime.add_image(stamp, frame_id, rgb)

        self._handle("image_invalid", convert, consume)

    def _on_depth(self, msg: Image) -> None:
        self._handle("depth_invalid", lambda: (conv.stamp_ns(msg), conv.depth_msg_to_metres(msg)),
                     lambda v: self.runtime.add_depth(*v))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        key = (tuple(msg.k), msg.width, msg.height)
        if key == self._last_camera_info:
            return  # CameraInfo repeats at camera rate; only changes matter

        def consume(value: tuple[Any, int, int]) -> None:
            self.runtime.set_camera_info(*value)
            self._last_camera_info = key

        self._handle("camera_info_invalid", lambda: conv.camera_info_msg_to_K(msg), consume)

    def _on_odometry(self, msg: Odometry) -> None:
        def consume(value: tuple[int, Any, tuple[float, float]]) -> None:
            stamp, T_odom_base, velocity = value
            self.runtime.add_odometry(stamp, T_odom_base, velocity=velocity)

        self._handle("odometry_invalid", lambda: conv.odometry_msg_to_pose(msg), consume)

    def _on_instruction(self, msg: String) -> None:
        self._handle("instruction_invalid", lambda: msg.data, self.runtime.set_instruction)

    # ------------------------------------------------------------------ tf (node.pose_source: tf)

    def _start_tf(self, callback_group: Callable[[], Any]) -> str:
        """Camera poses from /tf and /tf_static: tf2_ros's buffer and listener when tf2_ros is
        installed, otherwise our own subscriptions into the runtime's TransformBuffer (needs
        tf2_msgs, which ``tools/build_tf2_msgs.sh`` builds for a pip-installed ROS 2). The
        runtime looks the image's frame up at the image stamp when it pairs the frame.
        Returns what the start-up line says about the pose input."""
        world = self.cfg.node.world_frame
        try:
            import tf2_ros
        except ImportError:
            tf2_ros = None
        if tf2_ros is not None:
            self._tf2 = tf2_ros
            self._tf2_buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(self._tf2_buffer, self)
            self.runtime.set_transform_lookup(self._tf2_lookup)
            return f"tf {world}->(image frame_id) via tf2_ros"
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            raise ConfigError(
                "node.pose_source is 'tf' but neither tf2_ros nor tf2_msgs can be imported: build tf2_msgs "
                "into this Python with tools/build_tf2_msgs.sh (make venv does), or install ROS 2's tf2_ros"
            ) from None
        self.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), tf_qos(False),
                                 callback_group=callback_group())
        self.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), tf_qos(True),
                                 callback_group=callback_group())
        return f"tf {world}->(image frame_id) from /tf + /tf_static"

    def _on_tf(self, msg: Any, static: bool) -> None:
        self._handle("tf_invalid", lambda: conv.tf_msg_to_transforms(msg),
                     lambda transforms: self.runtime.add_transforms(transforms, static=static))

    def _tf2_lookup(self, target: str, source: str, stamp_ns: int, tolerance_ns: int) -> tuple[Any, int]:
        """tf2_ros's lookup in the runtime's protocol (TransformBuffer.lookup): ``(T, stamp)`` or
        TransformError / ExtrapolationError(future); within ``tolerance_ns`` after the newest
        transform, the newest is used."""
        from rclpy.time import Time

        tf2 = self._tf2
        try:
            try:
                tf = self._tf2_buffer.lookup_transform(target, source, Time(nanoseconds=stamp_ns))
            except tf2.ExtrapolationException as exc:
                future = "future" in str(exc)
                if not (future and tolerance_ns > 0):
                    raise ExtrapolationError(str(exc), future=future) from None
                tf = self._tf2_buffer.lookup_transform(target, source, Time())  # the newest
                if stamp_ns - conv.stamp_ns(tf) > tolerance_ns:
                    raise ExtrapolationError(str(exc), future=True) from None
        except tf2.TransformException as exc:
            raise TransformError(str(exc)) from None
        return pose_fields_to_matrix(tf.transform.translation, tf.transform.rotation), stamp_ns

    # ------------------------------------------------------------------ inference and outputs

    def _on_inference_tick(self) -> None:
        # step() records its own failures (kind "step_failed") and returns None
        try:
            # the mosaic costs more than the geometry backend: draw it only for a subscriber
            # (as image_transport publishers do); the runtime counts drawn / skipped overlays
            overlay = self.cfg.node.publish_overlay and self._overlay_pub.get_subscription_count() > 0
            output = self.runtime.step(overlay=overlay)
        except Exception as exc:
            self._report("step_unexpected", exc)
            return
        if output is None:
            return
        try:
            self._publish(output)
        except Exception as exc:
            if self._shutting_down():
                return  # SIGINT / SIGTERM invalidated the context mid-publish: not an error
            self._report("publish_failed", exc)

    def _shutting_down(self) -> bool:
        """The node is stopping (destroy_node called, or rclpy's context shut down by a signal)."""
        inference = getattr(self, "_inference", None)
        if inference is not None and inference.stopping:
            return True
        try:
            return not self.context.ok()
        except Exception:  # noqa: BLE001 - a context torn down far enough to raise is shut down
            return True

    def _publish(self, out: Any) -> None:
        stamp, frame_id = int(out.stamp_ns), str(out.frame_id)
        self._heatmap_pub.publish(conv.heatmaps_to_image_msg(out.heatmaps.heatmap, stamp, frame_id))
        indices, stamps = conv.keyframe_arrays(out.keyframe_indices, out.keyframe_stamps, stamp)
        self._keyframe_index_pub.publish(indices)
        self._keyframe_stamp_pub.publish(stamps)
        if self.cfg.node.publish_overlay and out.overlay is not None:
            self._overlay_pub.publish(conv.rgb_to_image_msg(out.overlay, stamp, frame_id))
        if out.goal_heatmap is not None:
            self._goal_pub.publish(conv.heatmaps_to_image_msg(np.asarray(out.goal_heatmap)[None], stamp, frame_id))
        if out.waypoints is not None:
            # waypoints are (x forward, y left) in base_link at the image stamp: into the world frame
            # with the odometry base pose, else the camera pose and the mount, else left in base_link
            if out.T_odom_base is not None:
                T_world_base = np.asarray(out.T_odom_base, dtype=np.float64)
            elif out.T_wc is not None:
                T_world_base = out.T_wc @ np.linalg.inv(self.runtime.T_base_cam)
            else:
                T_world_base = None
            path_frame = self.cfg.node.world_frame if T_world_base is not None else self.cfg.node.base_frame
            self._path_pub.publish(conv.waypoints_to_path(out.waypoints, stamp, path_frame, T_world_base))
            self._marker_pub.publish(conv.waypoints_to_markers(out.waypoints, stamp, path_frame, T_world_base))

    def _on_reload_model(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.runtime.reload_model()
        self.get_logger().info(f"~/reload_model: {response.message}")
        return response

    def _on_diagnostics_timer(self) -> None:
        try:
            self.runtime.poll_model()  # a replaced node.model_path starts loading in the background
            statuses = self.runtime.diagnostics()
            self._diagnostics_pub.publish(conv.diagnostics_to_msg(statuses, time.time_ns(), hardware_id=NODE_NAME))
        except Exception as exc:
            if not self._shutting_down():
                self._report("diagnostics_failed", exc)

    def destroy_node(self) -> None:
        inference = getattr(self, "_inference", None)  # absent when the constructor failed
        if inference is not None:
            inference.stop()
        runtime = getattr(self, "runtime", None)  # absent when the configuration was rejected
        if runtime is not None:
            try:
                runtime.close()  # finishes a recording, releases the backend
            except Exception as exc:
                self._log("shutdown", exc)
        super().destroy_node()


USAGE = f"""usage: vln_heatmap_node [-h] [--ros-args [--params-file FILE] [-p NAME:=VALUE ...] [-r FROM:=TO ...]]

The vln_heatmap ROS 2 node: colour + depth + camera_info + odometry (or /tf) in, frame-indexed
keyframe heatmaps, overlay, waypoints and /diagnostics out.

  -h, --help            show this message and exit (the node does not start)
  --params-file FILE    ROS 2 parameter file: top-level key the node name ({NODE_NAME} or /**),
                        under it ros__parameters with the config tree (the package's
                        config/vln_heatmap.yaml; keys as in vln_core/config.py)
  -p NAME:=VALUE        one setting by dotted name, e.g. -p node.inference_rate_hz:=5.0
  -r FROM:=TO           remap a topic or the node name, e.g. -r /camera/color/image_raw:=/cam/image

Example: vln_heatmap_node --ros-args --params-file config/vln_heatmap.yaml -p node.backend:=geometry
Topics, parameters and diagnostics: the package README (ros2_ws/src/vln_heatmap/README.md)."""


def _check_params_file_node_names(node: Node, argv: list[str]) -> None:
    """Warn about parameter files none of whose top-level node names applies to this node
    (rcl ignores them silently: the node would run on defaults)."""
    name, fqn = node.get_name(), node.get_fully_qualified_name()
    for path in params_files_from_args(argv):
        keys = params_file_node_names(path)
        if not keys:
            node.get_logger().warning(f"parameter file {path} holds no node parameters: running on the defaults")
        elif not any(node_name_matches(k, name, fqn) for k in keys):
            node.get_logger().warning(
                f"parameter file {path} has parameters for node(s) {keys} but this node is {fqn!r}: none of "
                f"them applies (running on the other settings); name the top-level key {name!r} or '/**'")


def main(args: list[str] | None = None) -> int:
    """Entry point of ``vln_heatmap_node`` (``ros2 run vln_heatmap vln_heatmap_node --ros-args ...``)."""
    argv = list(sys.argv if args is None else args)
    own = argv[1:argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if any(a in ("-h", "--help") for a in own):
        print(USAGE)
        return 0
    for path in params_files_from_args(argv):  # before rcl, which names neither key nor column
        problem = check_params_file(path)
        if problem:
            print(f"vln_heatmap_node: {problem}", file=sys.stderr)
            return 2
    transport = use_transport_profile()  # before rclpy creates the participant
    try:
        rclpy.init(args=args)
    except Exception as exc:  # rclpy's RCLError: a parameter file rcl cannot parse, a bad --ros-args
        if type(exc).__name__ != "RCLError":
            raise
        print(f"vln_heatmap_node: {explain_params_file_error(str(exc), argv)}", file=sys.stderr)
        return 2
    try:
        node = VLNHeatmapNode()
    except (ConfigError, InputError) as exc:
        print(f"vln_heatmap_node: configuration error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    _check_params_file_node_names(node, argv)
    node.get_logger().info(transport)
    executor = SingleThreadedExecutor()  # inputs and diagnostics; inference has its own thread
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Replay an episode folder or a rosbag2 into the vln_heatmap node over real ROS 2 topics.

    vln_heatmap_replay /path/to/episode --rate 1.0 --loop --instruction "go to the kitchen"
    python -m vln_heatmap.replay /path/to/rosbag2_dir --remap /camera/image:=/camera/color/image_raw

Episode folders (``vln_core.data.episode.read_episode``: simulator output, recordings, plain
posed-image folders) are published per frame as CameraInfo, Odometry, depth ``16UC1`` (or
``32FC1``) and colour ``rgb8`` (or CompressedImage with ``--compressed``), on the topics of the
parameter file's ``node.topics``, at the recorded rate times ``--rate``, with reliable QoS.
Stamps are "now" at start plus the recorded time offsets, and keep increasing across ``--loop``
passes; ``--manifest FILE`` writes which stamp each published frame got (JSON), so outputs can be
matched back to episode frames.

``--no-depth`` leaves the depth topic out (a colour-only robot: no depth publisher at all),
``--no-odometry`` the odometry topic (RGB only).

Images follow their odometry by ``--camera-latency`` seconds (default 0.04 s), as a real camera
driver delivers them after exposure and transfer while odometry is prompt.

Odometry is ``T_odom_base``: the episode's base poses when it has them and its camera mount equals
the node's ``node.camera_mount``; otherwise derived from the camera poses as
``T_wc @ inv(T_base_cam)`` with the node's mount, so that the node reconstructs exactly the
recorded camera poses.

A rosbag2 directory is read with ``rosbags`` and its messages are republished as recorded (the
CDR bytes unchanged, header stamps as recorded), timed by the bag's receive times; ``/tf`` and
``/tf_static`` too (``tf2_msgs``, built by ``tools/build_tf2_msgs.sh`` for a pip-installed ROS 2),
``/tf_static`` with transient-local durability as tf2's static broadcasters offer it. A bag damaged
in the middle is replayed from what can be read; the closing summary says how many of the
messages ``metadata.yaml`` lists could not be read, per topic ("replay: warning: ..."), exit 0.
"""
from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import rclpy
import torch
from nav_msgs.msg import Odometry
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from vln_core.atomic import atomic_write_text
from vln_core.config import VLNConfig, load_config
from vln_core.data.episode import Episode, odometry_for_mount, read_episode
from vln_core.data.rosbag_import import BagReadStats, iter_bag_messages
from vln_core.errors import InputError
from vln_core.geometry.transforms import pose_from_xyz_quat

from vln_heatmap import msg_conversions as conv
from vln_heatmap.transport import use_transport_profile

DEFAULT_PARAMS = Path(__file__).resolve().parents[1] / "config" / "vln_heatmap.yaml"


def find_params_file() -> Optional[Path]:
    """The package's parameter file: next to the source tree, or in the installed share dir."""
    if DEFAULT_PARAMS.is_file():
        return DEFAULT_PARAMS
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("vln_heatmap")) / "config" / "vln_heatmap.yaml"
        return share if share.is_file() else None
    except Exception:  # ament index not available or package not installed
        return None


def reliable_qos(depth: int) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def is_tf_static(topic: str) -> bool:
    return topic == "/tf_static" or topic.endswith("/tf_static")


def bag_topic_qos(topic: str) -> QoSProfile:
    """Reliable, 10 deep; ``/tf_static`` transient local and 100 deep (every recorded static
    broadcaster's message stays available to subscribers that join later, as tf2 offers it)."""
    if is_tf_static(topic):
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return reliable_qos(10)


def mount_matrix(cfg: VLNConfig) -> np.ndarray:
    """``T_base_cam (4, 4)`` from ``node.camera_mount`` ``[x, y, z, qx, qy, qz, qw]``."""
    return pose_from_xyz_quat(torch.tensor(cfg.node.camera_mount, dtype=torch.float64)).numpy()


def base_poses_for_node(episode: Episode, T_base_cam_node: np.ndarray) -> tuple[np.ndarray, str]:
    """``(N, 4, 4)`` ``T_odom_base`` that make the node (mount ``T_base_cam_node``) see ``episode.poses``,
    and where they came from (:func:`vln_core.data.episode.odometry_for_mount`)."""
    return odometry_for_mount(episode, T_base_cam_node)


class EpisodePublisher(Node):
    """Publishes one episode (optionally looped) on the node's input topics."""

    def __init__(self, cfg: VLNConfig, compressed: str = "", depth_encoding: str = "16UC1",
                 camera_frame: str = "camera_color_optical_frame", depth: bool = True, odometry: bool = True) -> None:
        super().__init__("vln_heatmap_replay")
        topics = cfg.node.topics
        # a deep writer queue: a busy subscriber (the node under load) gets frames late rather than never
        qos = reliable_qos(max(cfg.node.sensor_qos_depth, 30))
        self.compressed = compressed
        if compressed:
            if not topics.compressed_image:
                raise InputError("--compressed needs node.topics.compressed_image set in the parameter file")
            self.image_pub = self.create_publisher(CompressedImage, topics.compressed_image, qos)
        else:
            self.image_pub = self.create_publisher(Image, topics.image, qos)
        # None: the topic is not published at all (--no-depth / --no-odometry)
        self.depth_pub = self.create_publisher(Image, topics.depth, qos) if depth else None
        self.info_pub = self.create_publisher(CameraInfo, topics.camera_info, qos)
        self.odom_pub = self.create_publisher(Odometry, topics.odometry, reliable_qos(50)) if odometry else None
        self.instruction_pub = self.create_publisher(String, topics.instruction, reliable_qos(10))
        self.depth_encoding = depth_encoding
        self.camera_frame = camera_frame
        self.odom_frame = cfg.node.world_frame
        self.base_frame = cfg.node.base_frame

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Wait until the colour and instruction topics each have a subscriber (the node is up)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.image_pub.get_subscription_count() > 0 and self.instruction_pub.get_subscription_count() > 0:
                return True
            time.sleep(0.05)
        return False

    def flush(self, timeout_s: float) -> bool:
        """Wait until every subscriber acknowledged everything published (reliable QoS)."""
        deadline = time.monotonic() + timeout_s
        publishers = (self.info_pub, self.odom_pub, self.depth_pub, self.image_pub, self.instruction_pub)
        return all(
            pub.wait_for_all_acked(Duration(seconds=max(deadline - time.monotonic(), 0.0)))
            for pub in publishers if pub is not None
        )

    def publish_instruction(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))

    def publish_pose(self, K: np.ndarray, image_size: tuple[int, int], T_odom_base: np.ndarray,
                     velocity: tuple[float, float], stamp: int) -> None:
        """CameraInfo (``K (3, 3)`` of the ``(H, W)`` image) and Odometry (``T_odom_base (4, 4)``) at ``stamp`` (ns)."""
        height, width = image_size
        self.info_pub.publish(conv.camera_info_msg(K, width, height, stamp, self.camera_frame))
        if self.odom_pub is not None:
            self.odom_pub.publish(conv.odometry_msg(T_odom_base, stamp, self.odom_frame, self.base_frame, velocity))

    def encode_frame(self, rgb: np.ndarray, depth_m: Optional[np.ndarray]) -> tuple[Any, Optional[Image]]:
        """Colour (``(H, W, 3)`` uint8 RGB) and depth (``(H, W)`` metres or None) messages, stamp 0;
        built once so publishing costs only the transfer."""
        if self.compressed:
            color = conv.rgb_to_compressed_msg(rgb, 0, self.camera_frame, self.compressed)
        else:
            color = conv.rgb_to_image_msg(rgb, 0, self.camera_frame)
        depth = None if depth_m is None or self.depth_pub is None else conv.depth_to_image_msg(depth_m, 0, self.camera_frame, self.depth_encoding)
        return color, depth

    def publish_images(self, color: Any, depth: Optional[Image], stamp: int) -> None:
        """Depth (if any) then colour from :meth:`encode_frame`, both stamped ``stamp`` (ns)."""
        header = conv.header(stamp, self.camera_frame)
        if depth is not None:
            depth.header = header
            self.depth_pub.publish(depth)
        color.header = header
        self.image_pub.publish(color)


class _Stop:
    """Set by SIGINT/SIGTERM so the replay loop ends between frames."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.event.set())

    def sleep_until(self, t_monotonic: float) -> bool:
        """Sleep until ``t_monotonic``; False if stopped meanwhile."""
        remaining = t_monotonic - time.monotonic()
        if remaining > 0:
            return not self.event.wait(remaining)
        return not self.event.is_set()


def replay_episode(args: argparse.Namespace, cfg: VLNConfig, stop: _Stop) -> int:
    episode = read_episode(args.source)
    n = len(episode) if args.max_frames is None else min(len(episode), args.max_frames)
    if n == 0:
        raise InputError(f"episode {args.source} has no frames")
    base_poses, pose_origin = base_poses_for_node(episode, mount_matrix(cfg))
    velocities = episode.base_velocities
    instruction = args.instruction if args.instruction is not None else (episode.instruction or "")
    times = np.asarray(episode.timestamps[:n], dtype=np.float64) - float(episode.timestamps[0])
    period = float(np.median(np.diff(times))) if n > 1 else 1.0 / 30.0
    latency_s = args.camera_latency * args.rate  # in recorded time (events are scaled by 1 / rate)
    print(f"replay: {args.source}: {n} frames {episode.image_size[1]}x{episode.image_size[0]}, "
          f"{1.0 / period:.1f} Hz recorded x {args.rate:g}, odometry: {pose_origin}", flush=True)

    print(f"replay: {use_transport_profile()}", flush=True)  # before rclpy creates the participant
    rclpy.init(args=args.ros_args, signal_handler_options=SignalHandlerOptions.NO)  # _Stop handles SIGINT/SIGTERM
    publisher = EpisodePublisher(cfg, args.compressed, args.depth_encoding, args.camera_frame,
                                 depth=not args.no_depth, odometry=not args.no_odometry)
    manifest: list[dict[str, Any]] = []
    published = 0
    try:
        # decode and encode once up front so the publishing rate is not limited by PNG decoding
        frames = [publisher.encode_frame(episode.color(i), None if args.no_depth else episode.depth(i)) for i in range(n)]
        if args.wait_for_node > 0 and not publisher.wait_for_subscribers(args.wait_for_node):
            print(f"replay: no subscriber on the input topics after {args.wait_for_node:g} s", file=sys.stderr)
            return 3
        print("replay: publishing", flush=True)
        if instruction:
            publisher.publish_instruction(instruction)
        loop_length_s = (times[-1] + period) / args.rate
        stamp0 = time.time_ns()
        t_start = time.monotonic()
        passes = 0
        last_instruction = time.monotonic()
        while not stop.event.is_set():
            # per frame two events: its pose (CameraInfo + Odometry) at the recorded time, its
            # depth + colour images --camera-latency later, as a real camera delivers them
            events = sorted([(times[i], 0, i) for i in range(n)] + [(times[i] + latency_s, 1, i) for i in range(n)])
            for t_event, kind, i in events:
                if not stop.sleep_until(t_start + passes * loop_length_s + t_event / args.rate):
                    break
                stamp = stamp0 + int(round(passes * (times[-1] + period) * 1e9 + times[i] * 1e9))
                if kind == 0:
                    velocity = tuple(velocities[i]) if velocities is not None else (0.0, 0.0)
                    publisher.publish_pose(episode.K, episode.image_size, base_poses[i], velocity, stamp)
                    continue
                color, depth = frames[i]
                publisher.publish_images(color, depth, stamp)
                manifest.append({"index": i, "frame_id": int(episode.frame_ids[i]), "stamp_ns": stamp, "pass": passes})
                published += 1
                if instruction and time.monotonic() - last_instruction > 5.0:
                    publisher.publish_instruction(instruction)  # late joiners get it too
                    last_instruction = time.monotonic()
            passes += 1
            if not args.loop:
                break
        elapsed = time.monotonic() - t_start
        print(f"replay: published {published} frames in {elapsed:.2f} s "
              f"({published / max(elapsed, 1e-9):.1f} Hz)", flush=True)
        # deliver the tail (a busy subscriber may be a queue behind) before the process exits
        if not publisher.flush(args.linger):
            print(f"replay: subscribers did not acknowledge every frame within {args.linger:g} s", flush=True)
    finally:
        if args.manifest:
            atomic_write_text(args.manifest, json.dumps({"source": str(args.source), "frames": manifest}, indent=1))
        publisher.destroy_node()
        rclpy.try_shutdown()
    return 0


# ------------------------------------------------------------------------------ rosbag2


def _message_class(msgtype: str) -> Any:
    """``"sensor_msgs/msg/Image"`` -> the rclpy message class."""
    package, _, name = msgtype.partition("/msg/")
    if not name:
        raise InputError(f"cannot publish bag message type {msgtype!r} (expected pkg/msg/Name)")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def _bag_messages(path: Path, topics: Optional[set[str]],
                  stats: Optional[BagReadStats] = None) -> Iterator[tuple[str, str, int, bytes]]:
    """The bag's messages in order; corrupt ones are skipped and counted in ``stats``, a damaged
    bag raises InputError (vln_core.data.rosbag_import.iter_bag_messages)."""
    return iter_bag_messages(path, topics, stats)


def bag_summary_warnings(stats: BagReadStats) -> list[str]:
    """The replay's closing lines about what could not be read from the bag (none if all was):
    corrupt messages skipped, and what ``metadata.yaml`` lists that was not published."""
    lines = []
    if stats.undecodable:
        lines.append(f"replay: skipped {stats.undecodable} corrupt bag messages (first: {stats.first_undecodable})")
    loss = stats.loss_warning()
    if loss:
        lines.append(f"replay: warning: {loss}")
    return lines


def replay_bag(args: argparse.Namespace, stop: _Stop) -> int:
    remap = dict(r.split(":=", 1) for r in args.remap)
    wanted = set(args.topics) if args.topics else None
    print(f"replay: {use_transport_profile()}", flush=True)  # before rclpy creates the participant
    rclpy.init(args=args.ros_args, signal_handler_options=SignalHandlerOptions.NO)  # _Stop handles SIGINT/SIGTERM
    node = rclpy.create_node("vln_heatmap_replay")
    publishers: dict[str, Any] = {}
    published = 0
    bag_stats = BagReadStats()
    try:
        passes = 0
        t_start = time.monotonic()
        while not stop.event.is_set():
            first_ts = None
            pass_start = time.monotonic()
            for topic, msgtype, timestamp, raw in _bag_messages(Path(args.source), wanted, bag_stats):
                if first_ts is None:
                    first_ts = timestamp
                if topic not in publishers:
                    try:
                        cls = _message_class(msgtype)
                    except (ImportError, AttributeError, InputError) as exc:
                        print(f"replay: skipping {topic} ({msgtype}): {exc}", file=sys.stderr)
                        publishers[topic] = None
                        continue
                    publishers[topic] = node.create_publisher(cls, remap.get(topic, topic), bag_topic_qos(topic))
                    if args.wait_for_node > 0 and not is_tf_static(topic):  # transient local: no need
                        deadline = time.monotonic() + args.wait_for_node
                        while publishers[topic].get_subscription_count() == 0 and time.monotonic() < deadline:
                            time.sleep(0.05)
                pub = publishers[topic]
                if pub is None:
                    continue
                if not stop.sleep_until(pass_start + (timestamp - first_ts) * 1e-9 / args.rate):
                    break
                pub.publish(raw)  # serialized CDR, exactly as recorded
                published += 1
            passes += 1
            if not args.loop or first_ts is None:
                break
        elapsed = time.monotonic() - t_start
        print(f"replay: published {published} bag messages in {elapsed:.2f} s ({passes} passes)", flush=True)
        for line in bag_summary_warnings(bag_stats):
            print(line, file=sys.stderr, flush=True)
        time.sleep(args.linger)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def is_rosbag2(path: Path) -> bool:
    return path.is_dir() and (path / "metadata.yaml").is_file() or path.suffix in (".db3", ".mcap")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="episode folder (episode.json or posed images) or rosbag2 directory")
    parser.add_argument("--params-file", type=Path, default=None,
                        help="the node's parameter file (topics, mount); default: the package's config/vln_heatmap.yaml")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    parser.add_argument("--loop", action="store_true", help="start over at the end until interrupted")
    parser.add_argument("--instruction", default=None, help="instruction to publish (default: the episode's)")
    parser.add_argument("--max-frames", type=int, default=None, help="episodes: publish only the first N frames")
    parser.add_argument("--compressed", choices=["jpeg", "png"], default="",
                        help="episodes: publish colour as CompressedImage on node.topics.compressed_image")
    parser.add_argument("--depth-encoding", choices=["16UC1", "32FC1"], default="16UC1")
    parser.add_argument("--camera-frame", default="camera_color_optical_frame")
    parser.add_argument("--no-depth", action="store_true", help="episodes: publish no depth (a colour-only camera)")
    parser.add_argument("--no-odometry", action="store_true", help="episodes: publish no odometry (RGB only)")
    parser.add_argument("--camera-latency", type=float, default=0.04,
                        help="episodes: seconds between a frame's odometry and its images (camera transfer delay)")
    parser.add_argument("--wait-for-node", type=float, default=30.0,
                        help="seconds to wait for a subscriber on the input topics (0: do not wait)")
    parser.add_argument("--linger", type=float, default=5.0,
                        help="at the end, wait up to this long for subscribers to acknowledge every message")
    parser.add_argument("--manifest", type=Path, default=None, help="episodes: write published stamps per frame (JSON)")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO", help="rosbag2: rename a topic")
    parser.add_argument("--topics", nargs="*", default=None, help="rosbag2: only these topics")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``vln_heatmap_replay``."""
    argv = sys.argv[1:] if argv is None else argv
    # "--ros-args ..." (as launch passes it) goes to rclpy, the rest is ours; no legacy "a:=b"
    # parsing, so "--remap FROM:=TO" reaches argparse intact
    ros_args: list[str] = []
    if "--ros-args" in argv:
        cut = argv.index("--ros-args")
        end = argv.index("--", cut) if "--" in argv[cut:] else len(argv)
        ros_args, argv = argv[cut:end], argv[:cut] + argv[end + 1:]
    args = build_parser().parse_args(argv)
    args.ros_args = ["vln_heatmap_replay", *ros_args]
    if args.rate <= 0:
        print("replay: --rate must be > 0", file=sys.stderr)
        return 2
    stop = _Stop()
    stop.install()
    try:
        if is_rosbag2(args.source):
            return replay_bag(args, stop)
        params = args.params_file or find_params_file()
        cfg = load_config(params) if params else VLNConfig()
        return replay_episode(args, cfg, stop)
    except InputError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""A robot that publishes its camera pose only through tf, for tests/test_node_tf.py.

Run as a process (the publisher side of the test)::

    python tests/tf_stream_publisher.py --frames 30 --manifest out.json

publishes, like a real robot does:

* ``/tf_static`` once at start (reliable, transient local, as tf2's StaticTransformBroadcaster):
  ``base_link -> camera_color_optical_frame`` = the parameter file's ``node.camera_mount``;
* ``/tf`` (reliable, volatile, 100 deep, as tf2's TransformBroadcaster) at twice the camera rate:
  ``odom -> base_link``, stamped half a camera period before and after each image, so the node
  must interpolate the pose at the image stamp;
* colour (rgb8), depth (32FC1, exact) and CameraInfo of an analytic scene (floor and three
  walls) seen from ``odom -> base_link -> optical`` at each image stamp, no odometry topic.

The scene functions are imported by the test to recompute the expected heatmaps.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from ros_helpers import PARAMS_FILE  # noqa: E402  (puts the vln_heatmap package on sys.path)

H, W = 48, 64
K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])
CAMERA_FRAME = "camera_color_optical_frame"
BASE_FRAME = "base_link"
WORLD_FRAME = "odom"
PERIOD_NS = 100_000_000  # 10 Hz camera
# planes n . p = c in odom (z up): floor, far wall, two side walls
PLANES = [((0.0, 0.0, 1.0), 0.0), ((1.0, 0.0, 0.0), 5.0), ((0.0, 1.0, 0.0), 2.5), ((0.0, -1.0, 0.0), 2.5)]


def base_pose(t_s: float) -> np.ndarray:
    """T_odom_base at ``t_s`` seconds after the start: forward at 0.5 m/s while turning at
    0.6 rad/s (constant rates, so lerp + slerp between two samples is exact)."""
    yaw = 0.6 * t_s
    c, s = math.cos(yaw), math.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    T[:3, 3] = [0.5 * t_s, 0.2 * t_s, 0.0]
    return T


def mount() -> np.ndarray:
    """T_base_cam from the parameter file's node.camera_mount."""
    from vln_core.config import load_config
    from vln_core.geometry.tf_buffer import transform_to_matrix

    m = load_config(PARAMS_FILE).node.camera_mount
    return transform_to_matrix(m[:3], m[3:])


def plane_depth(T_wc: np.ndarray) -> np.ndarray:
    """Exact depth (z along the optical axis) of the nearest plane, float32 (H, W)."""
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T
    dirs = rays @ T_wc[:3, :3].T
    origin = T_wc[:3, 3]
    depth = np.full((H, W), np.inf)
    for n, c in PLANES:
        n = np.asarray(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (c - origin @ n) / (dirs @ n)
        depth = np.where((z > 1e-6) & (z < depth), z, depth)
    depth[~np.isfinite(depth)] = 0.0
    return depth.astype(np.float32)


def frame_rgb(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 255, (H, W, 3), dtype=np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--manifest", type=Path, required=True, help="JSON: start stamp and image stamps")
    parser.add_argument("--wait-subscriber-s", type=float, default=60.0)
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.duration import Duration
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from vln_core.config import load_config
    from vln_heatmap import msg_conversions as conv

    topics = load_config(PARAMS_FILE).node.topics
    rclpy.init()
    node = rclpy.create_node("tf_robot")
    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
    tf_pub = node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))  # tf2_ros.TransformBroadcaster's QoS
    static_pub = node.create_publisher(  # tf2_ros.StaticTransformBroadcaster's QoS
        TFMessage, "/tf_static",
        QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                   durability=DurabilityPolicy.TRANSIENT_LOCAL))
    image_pub = node.create_publisher(Image, topics.image, reliable)
    depth_pub = node.create_publisher(Image, topics.depth, reliable)
    info_pub = node.create_publisher(CameraInfo, topics.camera_info, reliable)

    T_base_cam = mount()
    t0 = time.time_ns()
    # static first, before anyone listens: transient local must bring it to the node later
    static_pub.publish(conv.tf_msg([(BASE_FRAME, CAMERA_FRAME, t0, T_base_cam)]))
    print("published /tf_static", flush=True)
    deadline = time.monotonic() + args.wait_subscriber_s
    pubs = (tf_pub, image_pub, depth_pub, info_pub)
    while any(p.get_subscription_count() == 0 for p in pubs) and time.monotonic() < deadline:
        time.sleep(0.05)
    if any(p.get_subscription_count() == 0 for p in pubs):
        print("no subscriber appeared", file=sys.stderr)
        return 2

    def send_tf(stamp: int) -> None:
        tf_pub.publish(conv.tf_msg([(WORLD_FRAME, BASE_FRAME, stamp, base_pose((stamp - t0) * 1e-9))]))

    stamps = []
    send_tf(t0 - PERIOD_NS // 2)
    for i in range(args.frames):
        stamp = t0 + i * PERIOD_NS
        send_tf(stamp + PERIOD_NS // 2)  # odometry runs ahead of the camera
        T_wc = base_pose((stamp - t0) * 1e-9) @ T_base_cam
        info_pub.publish(conv.camera_info_msg(K, W, H, stamp, CAMERA_FRAME))
        depth_pub.publish(conv.depth_to_image_msg(plane_depth(T_wc), stamp, CAMERA_FRAME, encoding="32FC1"))
        image_pub.publish(conv.rgb_to_image_msg(frame_rgb(i), stamp, CAMERA_FRAME))
        stamps.append(stamp)
        time.sleep(PERIOD_NS * 1e-9)
    for p in pubs:
        p.wait_for_all_acked(Duration(seconds=10))
    args.manifest.write_text(json.dumps({"t0": t0, "stamps": stamps}))
    print(f"published {args.frames} frames", flush=True)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

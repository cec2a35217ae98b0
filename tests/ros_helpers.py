"""Helpers for tests that talk over real ROS 2 middleware (rclpy + Fast DDS), no mocks.

Every test gets its own ``ROS_DOMAIN_ID`` and localhost-only discovery, so tests (and other
people's processes on the machine) never see each other's topics. Subprocesses are started with
the virtualenv interpreter (``sys.executable``): the ROS wheels' bootstrapper re-executes it once
with ``LD_LIBRARY_PATH`` set, keeping the same PID, so terminating the ``Popen`` handle stops the
real process.

Run as a script, this file is also the publisher side of ``tests/test_ros_dds.py``::

    python tests/ros_helpers.py publish-images --count 5 --topic /dds_test/image
"""
from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_SRC = REPO_ROOT / "ros2_ws" / "src" / "vln_heatmap"
if str(PACKAGE_SRC) not in sys.path:  # the ROS package's Python modules, without a colcon build
    sys.path.insert(0, str(PACKAGE_SRC))
_domain_counter = itertools.count()


def unique_domain_id() -> int:
    """A ROS domain id in 1..101, different for each call within a process and (likely) between
    concurrently running pytest processes (mixed from the PID)."""
    return (os.getpid() * 7 + next(_domain_counter)) % 101 + 1


def ros_env(domain_id: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a ROS process isolated on ``domain_id`` with localhost-only discovery."""
    env = dict(os.environ if base is None else base)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated since Jazzy; the range above replaces it
    env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")
    env["PYTHONUNBUFFERED"] = "1"
    pythonpath = [str(REPO_ROOT), str(PACKAGE_SRC)]
    if env.get("PYTHONPATH"):
        pythonpath.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    return env


def start_process(args: list[str], domain_id: int, log_path: Path) -> subprocess.Popen:
    """Start ``[sys.executable, *args]`` on ``domain_id``; stdout+stderr go to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")
    try:
        return subprocess.Popen(
            [sys.executable, *args], cwd=REPO_ROOT, env=ros_env(domain_id), stdout=log, stderr=subprocess.STDOUT
        )
    finally:
        log.close()  # the child holds its own descriptor


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGINT (what Ctrl-C sends, so rclpy shuts down cleanly), then SIGKILL; return the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


# the test process's own rclpy node: the same helper the demo and benchmarks use
from vln_heatmap.session import IsolatedRosNode as RosTestNode  # noqa: E402


def reliable_qos(depth: int = 10):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
    )


# ------------------------------------------------------------------ vln_heatmap node outputs

NODE_NAME = "vln_heatmap_node"
PARAMS_FILE = REPO_ROOT / "ros2_ws" / "src" / "vln_heatmap" / "config" / "vln_heatmap.yaml"


def real_rgbd_dir() -> Path:
    """The real posed RGB-D sequence (``VLN_REAL_RGBD_DIR`` or ``<repo>/../shared/data/real_rgbd_box``)."""
    env = os.environ.get("VLN_REAL_RGBD_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "real_rgbd_box"


def node_command(*parameters: str, params_file: Path = PARAMS_FILE) -> list[str]:
    """Arguments (after the interpreter) that start the node with the parameter file and
    ``name:=value`` overrides."""
    args = ["-m", "vln_heatmap.node", "--ros-args", "--params-file", str(params_file)]
    for p in parameters:
        args += ["-p", p]
    return args


class NodeOutputs:
    """Subscribes to everything the node publishes and keeps it, with receive times."""

    def __init__(self, ros: RosTestNode, node_name: str = NODE_NAME):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image
        from std_msgs.msg import Int32MultiArray, Int64MultiArray

        self.heatmaps: list = []
        self.keyframe_indices: list = []
        self.keyframe_stamps: list = []
        self.overlays: list = []
        self.diagnostics: list = []
        qos = reliable_qos(50)
        node = ros.node
        node.create_subscription(Image, f"/{node_name}/heatmaps", lambda m: self.heatmaps.append((time.monotonic(), m)), qos)
        node.create_subscription(Int32MultiArray, f"/{node_name}/keyframe_indices", self.keyframe_indices.append, qos)
        node.create_subscription(Int64MultiArray, f"/{node_name}/keyframe_stamps", self.keyframe_stamps.append, qos)
        node.create_subscription(Image, f"/{node_name}/overlay", self.overlays.append, reliable_qos(5))
        node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, qos)

    def clear(self) -> None:
        for name in ("heatmaps", "keyframe_indices", "keyframe_stamps", "overlays", "diagnostics"):
            getattr(self, name).clear()

    def latest_status(self, name_part: str) -> dict | None:
        """The newest diagnostics entry whose name contains ``name_part`` (as a dict)."""
        from vln_heatmap.msg_conversions import diagnostic_array_to_dicts

        for msg in reversed(self.diagnostics):
            for status in diagnostic_array_to_dicts(msg):
                if name_part in status["name"]:
                    return status
        return None


# ------------------------------------------------------------------ publisher for test_ros_dds


def image_pattern(index: int, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 image that differs in every pixel and every frame (content check)."""
    yy, xx = np.mgrid[0:height, 0:width]
    r = (xx + 3 * index) % 256
    g = (yy * 2 + 5 * index) % 256
    b = (xx * yy + 7 * index) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)




def _publish_images(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--wait-subscriber-s", type=float, default=20.0)
    args = parser.parse_args(argv)

    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("dds_test_image_publisher")
    pub = node.create_publisher(Image, args.topic, reliable_qos(args.count))
    deadline = time.monotonic() + args.wait_subscriber_s
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    if pub.get_subscription_count() == 0:
        print("no subscriber appeared", file=sys.stderr)
        return 2
    for i in range(args.count):
        msg = Image()
        msg.header.stamp.sec = 1_700_000_000 + i
        msg.header.stamp.nanosec = 123_456_789 + i
        msg.header.frame_id = f"camera_optical_{i}"
        msg.height, msg.width = args.height, args.width
        msg.encoding = "rgb8"
        msg.is_bigendian = 0
        msg.step = args.width * 3
        msg.data = image_pattern(i, args.height, args.width).tobytes()
        pub.publish(msg)
        time.sleep(0.02)
    # keep the writer alive until the reader has acknowledged everything (reliable QoS)
    pub.wait_for_all_acked(rclpy.duration.Duration(seconds=10))
    node.destroy_node()
    rclpy.shutdown()
    print(f"published {args.count} images")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "publish-images":
        print("usage: ros_helpers.py publish-images --topic T [--count N]", file=sys.stderr)
        return 2
    return _publish_images(argv[1:])


def iter_lines(path: Path) -> Iterator[str]:
    """Lines of a subprocess log (for assertion messages)."""
    return iter(path.read_text(errors="replace").splitlines()) if path.exists() else iter(())


if __name__ == "__main__":
    sys.exit(main())

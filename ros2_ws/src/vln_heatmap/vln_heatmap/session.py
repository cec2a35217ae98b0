"""Run the node and a replay as processes and collect what the node publishes (demo, benchmarks).

Everything goes over real ROS 2 middleware: the node and the replay are separate processes on an
isolated ``ROS_DOMAIN_ID`` with localhost-only discovery; :class:`OutputCollector` is an rclpy node
in the calling process.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

PACKAGE_SRC = Path(__file__).resolve().parents[1]
NODE_NAME = "vln_heatmap_node"


def isolated_ros_env(domain_id: int) -> dict[str, str]:
    """Environment for child processes: ``domain_id``, localhost discovery, this package importable."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)
    env["PYTHONUNBUFFERED"] = "1"
    repo_root = PACKAGE_SRC.parents[2]
    paths = [str(repo_root), str(PACKAGE_SRC)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def pick_domain_id(environ: Optional[dict[str, str]] = None) -> int:
    """The ``ROS_DOMAIN_ID`` the user set (environment), else a random id in 1..101 unlikely to
    be in use by other runs on this machine.

    Raises:
        ValueError: ``ROS_DOMAIN_ID`` is set but not an integer in 0..232 (the range DDS allows).
    """
    environ = os.environ if environ is None else environ
    text = environ.get("ROS_DOMAIN_ID", "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not 0 <= value <= 232:
            raise ValueError(f"ROS_DOMAIN_ID={text!r} is not a domain id (an integer in 0..232)")
        return value
    return random.Random(os.getpid() ^ time.time_ns()).randint(1, 101)


class ChildProcess:
    """A Python module run as a child process (the same interpreter), output to a log file."""

    def __init__(self, module_args: list[str], domain_id: int, log_path: Path):
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, *module_args], env=isolated_ros_env(domain_id),
                                         stdout=log, stderr=subprocess.STDOUT)

    def running(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGINT (clean rclpy shutdown), then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)
        return self.proc.returncode


def start_node(params_file: Path, overrides: dict[str, Any], domain_id: int, log_path: Path) -> ChildProcess:
    """``python -m vln_heatmap.node --ros-args --params-file FILE -p key:=value ...``."""
    args = ["-m", "vln_heatmap.node", "--ros-args", "--params-file", str(params_file)]
    for key, value in overrides.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{key}:={text}"]
    return ChildProcess(args, domain_id, log_path)


def start_replay(source: Path, params_file: Path, domain_id: int, log_path: Path, manifest: Path,
                 extra: Optional[list[str]] = None) -> ChildProcess:
    """``python -m vln_heatmap.replay SOURCE --params-file FILE --manifest MANIFEST ...``."""
    args = ["-m", "vln_heatmap.replay", str(source), "--params-file", str(params_file), "--manifest", str(manifest)]
    return ChildProcess(args + list(extra or []), domain_id, log_path)


@dataclass
class CollectedOutput:
    """One heatmap output as received: arrival time (wall clock ns), stamp, the maps, keyframes."""

    received_ns: int
    stamp_ns: int
    frame_id: str
    heatmaps: np.ndarray  # (K, H, W) float32
    keyframe_stamps: list[int] = field(default_factory=list)
    keyframe_indices: list[int] = field(default_factory=list)


class IsolatedRosNode:
    """An rclpy context + node + single-threaded executor of its own, on one localhost-only domain.

    For processes that talk to the node from outside (demo, benchmarks, tests). Use as a context
    manager or call :meth:`close`.
    """

    def __init__(self, name: str, domain_id: int):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from vln_heatmap.transport import use_transport_profile

        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        os.environ.pop("ROS_LOCALHOST_ONLY", None)
        use_transport_profile()  # this process publishes camera-rate images too (tests, demo, benchmarks)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def __enter__(self) -> "IsolatedRosNode":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def spin_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Spin until ``predicate()`` holds (True) or ``timeout_s`` passes (its last value)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


class OutputCollector(IsolatedRosNode):
    """Records the vln_heatmap node's outputs and diagnostics (own rclpy context)."""

    def __init__(self, domain_id: int, node_name: str = NODE_NAME, keep_overlays: bool = True,
                 subscribe_overlay: Optional[bool] = None):
        """``subscribe_overlay`` (default: ``keep_overlays``): subscribe to ``~/overlay`` at all; the
        node draws the mosaic only while somebody does, so a benchmark without it measures a
        robot with no RViz attached."""
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Int32MultiArray, Int64MultiArray

        from vln_heatmap import msg_conversions as conv

        super().__init__("vln_heatmap_collector", domain_id)
        self._conv = conv
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        self.outputs: list[CollectedOutput] = []
        self.overlays: list[tuple[int, np.ndarray]] = []  # (stamp_ns, (H, W, 3) uint8 RGB)
        self.diagnostics: list[list[dict]] = []
        self._keyframe_stamps: dict[int, list[int]] = {}
        self._keyframe_indices: dict[int, list[int]] = {}
        self._pending: list[tuple[int, Any]] = []
        self.keep_overlays = keep_overlays
        self.node.create_subscription(Image, f"/{node_name}/heatmaps", self._on_heatmaps, qos)
        self.node.create_subscription(Int64MultiArray, f"/{node_name}/keyframe_stamps", self._on_keyframe_stamps, qos)
        self.node.create_subscription(Int32MultiArray, f"/{node_name}/keyframe_indices", self._on_keyframe_indices, qos)
        if keep_overlays if subscribe_overlay is None else subscribe_overlay:
            self.node.create_subscription(Image, f"/{node_name}/overlay", self._on_overlay, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diagnostics.append(conv.diagnostic_array_to_dicts(m)), qos)

    # -------------------------------------------------------------- callbacks
    def _on_heatmaps(self, msg: Any) -> None:
        self._pending.append((time.time_ns(), msg))
        self._pair()

    def _on_keyframe_stamps(self, msg: Any) -> None:
        self._keyframe_stamps[self._conv.keyframe_label_stamp(msg)] = list(msg.data)
        self._pair()

    def _on_keyframe_indices(self, msg: Any) -> None:
        self._keyframe_indices[self._conv.keyframe_label_stamp(msg)] = list(msg.data)
        self._pair()

    def _pair(self) -> None:
        """Turn heatmap images into :class:`CollectedOutput` once their keyframe arrays arrived."""
        still = []
        for received_ns, msg in self._pending:
            stamp = self._conv.stamp_ns(msg)
            if stamp in self._keyframe_stamps and stamp in self._keyframe_indices:
                kf_stamps = self._keyframe_stamps.pop(stamp)
                self.outputs.append(CollectedOutput(
                    received_ns, stamp, msg.header.frame_id,
                    self._conv.image_msg_to_heatmaps(msg, len(kf_stamps)), kf_stamps,
                    self._keyframe_indices.pop(stamp),
                ))
            else:
                still.append((received_ns, msg))
        self._pending = still

    def _on_overlay(self, msg: Any) -> None:
        if self.keep_overlays:
            from vln_core.ros_codec import image_msg_to_rgb

            self.overlays.append((self._conv.stamp_ns(msg), image_msg_to_rgb(msg)))

    # -------------------------------------------------------------- queries

    def latest_status(self, name_part: str) -> Optional[dict]:
        """Newest diagnostics entry whose name contains ``name_part``."""
        for array in reversed(self.diagnostics):
            for status in array:
                if name_part in status["name"]:
                    return status
        return None

    def status_history(self, name_part: str) -> list[dict]:
        return [s for array in self.diagnostics for s in array if name_part in s["name"]]


def percentile_summary(values_ms: list[float]) -> dict[str, float]:
    """``{"median_ms", "p95_ms", "max_ms", "n"}`` of a list of milliseconds (NaN when empty)."""
    if not values_ms:
        return {"median_ms": float("nan"), "p95_ms": float("nan"), "max_ms": float("nan"), "n": 0}
    arr = np.asarray(values_ms, dtype=np.float64)
    return {"median_ms": float(np.median(arr)), "p95_ms": float(np.percentile(arr, 95)),
            "max_ms": float(arr.max()), "n": int(arr.size)}

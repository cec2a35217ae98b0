"""A colour-only robot: the node on real ROS 2 middleware with no depth topic at all.

The node runs as its own process with ``node.topics.depth`` empty, once per learned backend:
``node.backend: auto`` (the default), ``model`` and ``onnx`` (the shipped checkpoint exported by
export/export_onnx.py into a temporary folder, ``node.model_path``: ``exports/`` is not in the
repository); ``vln_heatmap_replay --no-depth`` (another process) publishes the real sequence's
colour, CameraInfo and odometry at 30 Hz. ``auto`` must pick the learned backend (the shipped
checkpoint) in the RGB + pose mode and say why; the backend's diagnostics must be what the backend
itself describes; heatmaps, keyframe arrays, ``~/goal_heatmap``, ``~/waypoints`` (in
``node.world_frame``) and ``~/waypoint_markers`` must arrive with the input image's stamp, and
equal (1e-4) what the same backend (``model`` for ``auto``) computes when called directly on the
same frames in the same order. ``~/overlay`` is drawn only once somebody subscribes to it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) is not installed")

from ros_helpers import (  # noqa: E402
    PARAMS_FILE,
    RosTestNode,
    node_command,
    real_rgbd_dir,
    reliable_qos,
    start_process,
    stop_process,
    unique_domain_id,
)
from vln_core.config import load_config  # noqa: E402
from vln_core.data.episode import read_episode  # noqa: E402
from vln_core.geometry.camera import PinholeCamera  # noqa: E402
from vln_core.geometry.transforms import camera_pose_from_base  # noqa: E402
from vln_core.models.shipped import SHIPPED_CHECKPOINT  # noqa: E402
from vln_core.backends import CameraFrame, create_backend  # noqa: E402
from vln_heatmap import msg_conversions as conv  # noqa: E402
from vln_heatmap.replay import base_poses_for_node, mount_matrix  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CAMERA_FRAME = "camera_color_optical_frame"
INSTRUCTION = "go to the box on the table"
# rgb_pose: a frame is used only with its own odometry sample (same stamp, max_stamp_gap_s 0.01,
# frames 33 ms apart), so the test knows every pose the node used
PARAMETERS = ("node.learned_mode:=rgb_pose", "node.inference_rate_hz:=2.0", "node.max_stamp_gap_s:=0.01")
NODE = "/vln_heatmap_node"


def _params_file(tmp: Path) -> Path:
    """The package's parameter file with no depth topic (``node.topics.depth: ""``)."""
    text = PARAMS_FILE.read_text()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("depth: /"))
    path = tmp / "colour_only.yaml"
    path.write_text(text.replace(line, line.split("depth:")[0] + 'depth: ""'))
    return path


class Probe:
    """Everything the node publishes, by stamp (overlay only after :meth:`subscribe_overlay`)."""

    def __init__(self, ros: RosTestNode):
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Path as PathMsg
        from sensor_msgs.msg import Image
        from std_msgs.msg import Int32MultiArray, Int64MultiArray
        from visualization_msgs.msg import MarkerArray

        self.ros = ros
        self.heatmaps, self.goals, self.paths, self.markers, self.overlays = [], [], [], [], []
        self.keyframe_stamps, self.keyframe_indices, self.diagnostics = {}, {}, []
        qos = reliable_qos(100)
        node = ros.node
        node.create_subscription(Image, f"{NODE}/heatmaps", self.heatmaps.append, qos)
        node.create_subscription(Image, f"{NODE}/goal_heatmap", self.goals.append, qos)
        node.create_subscription(PathMsg, f"{NODE}/waypoints", self.paths.append, qos)
        node.create_subscription(MarkerArray, f"{NODE}/waypoint_markers", self.markers.append, qos)
        node.create_subscription(Int64MultiArray, f"{NODE}/keyframe_stamps",
                                 lambda m: self.keyframe_stamps.__setitem__(conv.keyframe_label_stamp(m), list(m.data)), qos)
        node.create_subscription(Int32MultiArray, f"{NODE}/keyframe_indices",
                                 lambda m: self.keyframe_indices.__setitem__(conv.keyframe_label_stamp(m), list(m.data)), qos)
        node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: self.diagnostics.append(conv.diagnostic_array_to_dicts(m)), qos)

    def subscribe_overlay(self):
        from sensor_msgs.msg import Image

        return self.ros.node.create_subscription(Image, f"{NODE}/overlay", self.overlays.append, reliable_qos(5))

    def status(self, part: str) -> dict:
        for array in reversed(self.diagnostics):
            for status in array:
                if part in status["name"]:
                    return status
        return {"name": "", "message": "", "values": {}}


def _frame(episode, index: int, stamp: int, seq: int, K: np.ndarray, T_base_cam: np.ndarray,
           base_poses: np.ndarray) -> CameraFrame:
    """The frame as the node assembles it from the replay's messages (same conversions)."""
    odom = conv.odometry_msg(base_poses[index], stamp)
    _, T_odom_base, velocity = conv.odometry_msg_to_pose(odom)
    T_wc = camera_pose_from_base(T_odom_base, T_base_cam).numpy()
    rgb = conv.color_msg_to_rgb(conv.rgb_to_image_msg(episode.color(index), stamp, CAMERA_FRAME))
    return CameraFrame(stamp_ns=stamp, frame_id=CAMERA_FRAME, rgb=rgb, depth_m=None, K=K, T_wc=T_wc,
                       T_odom_base=T_odom_base, seq=seq, base_velocity=velocity)


@pytest.mark.parametrize("backend_name", ["auto", "model", "onnx"])
def test_colour_only_robot_gets_learned_heatmaps_and_waypoints_equal_to_the_backend(tmp_path, request, backend_name):
    if not (real_rgbd_dir() / "intrinsics.K.txt").is_file():
        pytest.skip(f"real RGB-D sequence not found at {real_rgbd_dir()} (set VLN_REAL_RGBD_DIR)")
    assert SHIPPED_CHECKPOINT.is_file(), f"the shipped checkpoint {SHIPPED_CHECKPOINT} is missing"
    parameters = (f"node.backend:={backend_name}", *PARAMETERS)
    if backend_name == "onnx":  # the shipped checkpoint exported by export/export_onnx.py (conftest.py)
        export_dir, _ = request.getfixturevalue("onnx_export")
        parameters += (f"node.model_path:={export_dir}",)
    params = _params_file(tmp_path)
    cfg = load_config(params, [p.replace(":=", "=") for p in parameters])
    assert cfg.node.topics.depth == "" and cfg.node.backend == backend_name
    domain_id = unique_domain_id()  # each test (and parametrization) on its own ROS domain
    node_log, replay_log, manifest = tmp_path / "node.log", tmp_path / "replay.log", tmp_path / "manifest.json"
    proc = start_process(node_command(*parameters, params_file=params), domain_id, node_log)
    ros = RosTestNode("learned_node_probe", domain_id)
    probe = Probe(ros)
    replay = None
    try:
        up = ros.spin_until(lambda: probe.diagnostics or proc.poll() is not None, timeout_s=90)
        assert up and proc.poll() is None, f"node did not come up:\n{node_log.read_text(errors='replace')}"
        assert "depth=(none)" in node_log.read_text(errors="replace")
        replay = start_process(
            ["-m", "vln_heatmap.replay", str(real_rgbd_dir()), "--loop", "--no-depth", "--manifest", str(manifest),
             "--params-file", str(params), "--camera-frame", CAMERA_FRAME, "--instruction", INSTRUCTION],
            domain_id, replay_log)
        started = ros.spin_until(lambda: "replay: publishing" in replay_log.read_text(errors="replace")
                                 or replay.poll() is not None, 90)
        assert started and replay.poll() is None, replay_log.read_text(errors="replace")

        # --- phase 1: nobody subscribes to ~/overlay, so the node draws none
        assert ros.spin_until(lambda: len(probe.heatmaps) >= 4 or proc.poll() is not None, 90), (
            f"{len(probe.heatmaps)} outputs; node said: {probe.status('output')['message']}\n"
            f"{node_log.read_text(errors='replace')[-3000:]}")
        # wait for what is asserted: a diagnostics message that counts those outputs (a fixed
        # 1.5 s raced the 1 Hz diagnostics timer on a loaded CPU)
        ros.spin_until(lambda: int(probe.status("output")["values"].get("overlays_skipped_no_subscriber", 0)) >= 4, 15)
        out_values = probe.status("output")["values"]
        assert int(out_values["overlays_drawn"]) == 0 and int(out_values["overlays_skipped_no_subscriber"]) >= 4, out_values

        # --- phase 2: a subscriber appears: overlays are drawn and arrive, with output stamps
        probe.subscribe_overlay()
        assert ros.spin_until(lambda: len(probe.overlays) >= 2 or proc.poll() is not None, 60), (
            f"no overlay after subscribing; {probe.status('output')['values']}")

        replay_code = stop_process(replay, timeout=20)

        def settled() -> bool:
            """The node's own output count (diagnostics) matches what arrived on every topic: the
            last outputs and a diagnostics message after them are in (a fixed 3 s raced them)."""
            produced_now = int(probe.status("output")["values"].get("outputs", -1))
            n = len(probe.heatmaps)
            return (produced_now == n == len(probe.goals) == len(probe.paths) == len(probe.markers)
                    and len(probe.keyframe_stamps) == len(probe.keyframe_indices) == n)

        ros.spin_until(settled, 20)
        assert replay_code == 0, replay_log.read_text(errors="replace")
        assert proc.poll() is None, node_log.read_text(errors="replace")[-3000:]
        backend_status = probe.status("backend")
        if backend_name == "auto":
            assert "backend auto (model): model (rgb_pose): no depth image received yet" in backend_status["message"], backend_status
            assert backend_status["values"]["auto_learned_backend"] == "model (loaded)", backend_status
        else:  # chosen explicitly: the message names it and gives no auto reason
            assert backend_status["message"] == f"backend {backend_name}", backend_status
        assert backend_status["values"]["last_update_mode"] == "rgb_pose"
        assert backend_status["values"]["keyframe_geometry"] == "predicted"
        inputs = probe.status("inputs")
        assert "depth" not in inputs["message"], inputs  # depth is not required, so never stale
        assert int(probe.status("output")["values"]["overlays_drawn"]) >= 2
        produced = int(probe.status("output")["values"]["outputs"])
        errors = probe.status("errors")["values"]
        assert "step_failed" not in errors and "space_aware_unavailable" not in errors, errors
    finally:
        if replay is not None:
            stop_process(replay, timeout=20)
        code = stop_process(proc, timeout=20)
        ros.close()
    assert code in (0, -2, 130), f"node did not shut down cleanly ({code}):\n{node_log.read_text(errors='replace')[-3000:]}"

    # --- every output arrived, each on every topic, with the image's stamp
    frames = json.loads(manifest.read_text())["frames"]
    position = {f["stamp_ns"]: n for n, f in enumerate(frames)}
    stamps = [conv.stamp_ns(m) for m in probe.heatmaps]
    assert len(stamps) == produced >= 4, f"received {len(stamps)} of {produced} outputs"
    assert stamps == sorted(stamps) and all(s in position for s in stamps)
    for name, msgs in (("goal_heatmap", probe.goals), ("waypoints", probe.paths)):
        assert [conv.stamp_ns(m) for m in msgs] == stamps, name
    assert [conv.stamp_ns(m.markers[1]) for m in probe.markers] == stamps
    assert set(probe.keyframe_stamps) == set(stamps) == set(probe.keyframe_indices)
    assert {m.header.frame_id for m in probe.heatmaps + probe.goals} == {CAMERA_FRAME}
    assert {m.header.frame_id for m in probe.paths} == {cfg.node.world_frame}
    assert {m.markers[1].header.frame_id for m in probe.markers} == {cfg.node.world_frame}
    assert all(conv.stamp_ns(m) in position for m in probe.overlays) and probe.overlays[-1].encoding == "rgb8"

    # --- the outputs are the same backend's (auto: the model backend it chose) on the same frames,
    # called directly in the same order
    episode = read_episode(real_rgbd_dir())
    H, W = episode.image_size
    K_msg, width, height = conv.camera_info_msg_to_K(conv.camera_info_msg(episode.K, W, H, 0, CAMERA_FRAME))
    K = PinholeCamera.from_K(K_msg, width=width, height=height).K
    T_base_cam = mount_matrix(cfg)
    base_poses, _ = base_poses_for_node(episode, T_base_cam)
    backend = create_backend("onnx" if backend_name == "onnx" else "model", cfg)

    def frame(stamp: int) -> CameraFrame:
        return _frame(episode, frames[position[stamp]]["index"], stamp, position[stamp], K, T_base_cam, base_poses)

    worst = {"heatmaps": 0.0, "goal": 0.0, "waypoints": 0.0, "path": 0.0}
    for msg, goal_msg, path_msg in zip(probe.heatmaps, probe.goals, probe.paths):
        stamp = conv.stamp_ns(msg)
        key_stamps = probe.keyframe_stamps[stamp]
        assert 1 <= len(key_stamps) <= cfg.video.keyframes and all(s in position and s <= stamp for s in key_stamps)
        current = frame(stamp)
        expected = backend.infer(current, [frame(s) for s in key_stamps], INSTRUCTION)
        got = conv.image_msg_to_heatmaps(msg, len(key_stamps))
        want = expected.heatmaps.heatmap.numpy()
        assert got.shape == want.shape == (len(key_stamps), *cfg.video.frame_size)
        peak = max(float(want.max()), 1e-12)
        worst["heatmaps"] = max(worst["heatmaps"], float(np.abs(got - want).max()) / peak)
        goal = conv.image_msg_to_heatmaps(goal_msg, 1)[0]
        worst["goal"] = max(worst["goal"], float(np.abs(goal - expected.goal_heatmap).max()) / float(expected.goal_heatmap.max()))
        # the Path holds the waypoints moved into the odometry frame by the image's base pose
        path = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in path_msg.poses])
        world = (np.c_[expected.waypoints, np.zeros(20), np.ones(20)] @ current.T_odom_base.T)[:, :3]
        worst["path"] = max(worst["path"], float(np.abs(path - world).max()))
        local = (np.c_[path, np.ones(20)] @ np.linalg.inv(current.T_odom_base).T)[:, :3]
        worst["waypoints"] = max(worst["waypoints"], float(np.abs(local[:, :2] - expected.waypoints).max()),
                                 float(np.abs(local[:, 2]).max()))
    # the node's diagnostics are what that backend describes of itself (auto: named "auto (model)"),
    # e.g. the onnx export folder and the execution providers in use
    described = backend.describe()
    backend.close()
    if backend_name == "auto":
        described["backend"] = "auto (model)"
    if backend_name == "onnx":
        assert described["onnx_export"] == str(Path(export_dir).resolve()) and described["onnx_providers"], described
    assert {k: backend_status["values"].get(k) for k in described} == described, backend_status
    # relative to the peak for the maps (they sum to 1 over 224x224, values ~1e-4), metres otherwise
    assert all(v <= 1e-4 for v in worst.values()), worst

"""An RGB-D robot on ``backend: auto`` (depth + odometry: the exact geometry path) still gets the
learned goal heatmap and waypoints (``node.auto_learned_heads``, on by default), on real DDS."""
from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) is not installed")

from ros_helpers import (  # noqa: E402
    NodeOutputs,
    RosTestNode,
    node_command,
    real_rgbd_dir,
    reliable_qos,
    start_process,
    stop_process,
    unique_domain_id,
)
from vln_heatmap import msg_conversions as conv  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_auto_with_depth_publishes_exact_heatmaps_and_learned_waypoints(tmp_path):
    from nav_msgs.msg import Path as PathMsg
    from sensor_msgs.msg import Image

    if not (real_rgbd_dir() / "intrinsics.K.txt").is_file():
        pytest.skip(f"real RGB-D sequence not found at {real_rgbd_dir()} (set VLN_REAL_RGBD_DIR)")
    domain_id = unique_domain_id()
    node_log, replay_log = tmp_path / "node.log", tmp_path / "replay.log"
    proc = start_process(node_command("node.backend:=auto", "node.inference_rate_hz:=2.0", "node.publish_overlay:=false"),
                         domain_id, node_log)
    ros = RosTestNode("auto_heads_probe", domain_id)
    outputs = NodeOutputs(ros)
    goals, paths = [], []
    ros.node.create_subscription(Image, "/vln_heatmap_node/goal_heatmap", goals.append, reliable_qos(50))
    ros.node.create_subscription(PathMsg, "/vln_heatmap_node/waypoints", paths.append, reliable_qos(50))
    replay = None
    try:
        assert ros.spin_until(lambda: outputs.diagnostics or proc.poll() is not None, 90) and proc.poll() is None, (
            node_log.read_text(errors="replace")[-3000:])
        replay = start_process(["-m", "vln_heatmap.replay", str(real_rgbd_dir()), "--loop", "--instruction",
                                "go to the box"], domain_id, replay_log)
        assert ros.spin_until(lambda: len(paths) >= 3 and len(goals) >= 3 or proc.poll() is not None, 120), (
            f"{len(outputs.heatmaps)} heatmaps, {len(paths)} paths, {len(goals)} goals\n"
            f"{node_log.read_text(errors='replace')[-3000:]}")
        # wait for what is asserted: a diagnostics message from the geometry path with the model loaded
        ros.spin_until(lambda: "auto (geometry)" in ((outputs.latest_status("backend") or {}).get("message", "")), 20)
        backend = outputs.latest_status("backend")
    finally:
        if replay is not None:
            stop_process(replay, timeout=20)
        code = stop_process(proc, timeout=20)
        ros.close()
    assert backend is not None and "backend auto (geometry)" in backend["message"], backend
    assert "predicts no waypoints" not in backend["message"]
    assert backend["values"]["keyframe_geometry"] == "measured"  # the heatmaps are the exact ones
    heatmap_stamps = {conv.stamp_ns(m) for _, m in outputs.heatmaps}
    for msgs in (paths, goals):
        assert all(conv.stamp_ns(m) in heatmap_stamps for m in msgs)  # one output: heatmaps + goal + waypoints
    assert all(len(p.poses) == 20 for p in paths)
    assert code in (0, -2, 130), node_log.read_text(errors="replace")[-3000:]

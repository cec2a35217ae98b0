"""vln_heatmap.msg_conversions: the node's messages are built and parsed consistently."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 message packages are not installed")

import ros_helpers  # noqa: E402,F401  (puts the package source on sys.path)
from vln_core.errors import InputError  # noqa: E402
from vln_heatmap import msg_conversions as conv  # noqa: E402


def test_heatmap_stack_layout_and_roundtrip():
    heatmaps = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    msg = conv.heatmaps_to_image_msg(heatmaps, 1_700_000_000_123_456_789, "cam")
    assert (msg.encoding, msg.height, msg.width) == ("32FC1", 12, 5)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (1_700_000_000, 123_456_789, "cam")
    rows = np.frombuffer(bytes(msg.data), np.float32).reshape(12, 5)
    np.testing.assert_array_equal(rows[4:8], heatmaps[1])  # keyframe k occupies rows k*H .. (k+1)*H-1
    np.testing.assert_array_equal(conv.image_msg_to_heatmaps(msg, 3), heatmaps)
    with pytest.raises(InputError, match="not a multiple of 5 keyframes"):
        conv.image_msg_to_heatmaps(msg, 5)
    with pytest.raises(InputError, match=r"\(K, H, W\)"):
        conv.heatmaps_to_image_msg(np.zeros((4, 5)), 0, "cam")


def test_keyframe_arrays_name_the_output_stamp():
    indices, stamps = conv.keyframe_arrays([3, 9], [100, 200], current_stamp_ns=250)
    assert list(indices.data) == [3, 9] and list(stamps.data) == [100, 200]
    assert conv.keyframe_label_stamp(indices) == conv.keyframe_label_stamp(stamps) == 250
    with pytest.raises(InputError, match="2 keyframe indices but 1"):
        conv.keyframe_arrays([3, 9], [100], 250)


def test_odometry_roundtrip_and_rejects_non_rotation():
    yaw = 0.4
    T = np.eye(4)
    T[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    T[:3, 3] = [1.0, -2.0, 0.0]
    msg = conv.odometry_msg(T, 5_000_000_001, velocity=(0.3, -0.1))
    assert (msg.header.frame_id, msg.child_frame_id) == ("odom", "base_link")
    stamp, T_back, velocity = conv.odometry_msg_to_pose(msg)
    assert stamp == 5_000_000_001 and velocity == pytest.approx((0.3, -0.1))
    np.testing.assert_allclose(T_back, T, atol=1e-12)
    msg.pose.pose.orientation.w = 3.0
    with pytest.raises(InputError, match="not a rotation"):
        conv.odometry_msg_to_pose(msg)


def test_waypoints_path_in_world_frame():
    T_world_base = np.eye(4)
    T_world_base[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # base facing world +y
    T_world_base[:3, 3] = [2.0, 3.0, 0.0]
    waypoints = np.array([[1.0, 0.0], [2.0, 0.0], [2.0, 1.0]])  # forward, forward, then left
    path = conv.waypoints_to_path(waypoints, 7, "odom", T_world_base)
    xy = np.array([(p.pose.position.x, p.pose.position.y) for p in path.poses])
    np.testing.assert_allclose(xy, [(2.0, 4.0), (2.0, 5.0), (1.0, 5.0)], atol=1e-12)
    yaws = [2 * np.arctan2(p.pose.orientation.z, p.pose.orientation.w) for p in path.poses]
    assert yaws == pytest.approx([np.pi / 2, np.pi, np.pi])  # each pose faces the next waypoint
    markers = conv.waypoints_to_markers(waypoints, 7, "odom", T_world_base)
    assert [m.action for m in markers.markers][0] == markers.markers[0].DELETEALL
    assert len(markers.markers[1].points) == 3 and len(markers.markers[2].colors) == 3
    with pytest.raises(InputError, match=r"\(N, 2\)"):
        conv.waypoints_to_path(np.zeros((20, 3)), 7, "odom")


def test_diagnostics_roundtrip():
    statuses = [
        {"name": "vln_heatmap: inputs", "level": "OK", "message": "all inputs flowing", "values": {"image_rate_hz": 30.0}},
        {"name": "vln_heatmap: errors", "level": "ERROR", "message": "image_invalid x1", "values": {}},
    ]
    msg = conv.diagnostics_to_msg(statuses, 1, hardware_id="vln")
    assert [s.level for s in msg.status] == [b"\x00", b"\x02"]
    back = conv.diagnostic_array_to_dicts(msg)
    assert back[0]["values"] == {"image_rate_hz": "30.0"} and back[1]["level"] == "ERROR"


def test_camera_info_and_images():
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    info = conv.camera_info_msg(K, 640, 480, 3, "cam")
    K_back, width, height = conv.camera_info_msg_to_K(info)
    np.testing.assert_array_equal(K_back, K)
    assert (width, height) == (640, 480) and list(info.p)[:3] == [500.0, 0.0, 319.5]
    depth = np.array([[0.0, 1.25], [np.nan, 3.0]], np.float32)
    mm = conv.depth_to_image_msg(depth, 3, "cam")
    assert mm.encoding == "16UC1"
    np.testing.assert_allclose(conv.depth_msg_to_metres(mm), [[0, 1.25], [0, 3.0]])
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(conv.color_msg_to_rgb(conv.rgb_to_image_msg(rgb, 3, "cam", "bgr8")), rgb)

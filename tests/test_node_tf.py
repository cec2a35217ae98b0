"""node.pose_source: tf across processes on real ROS 2 middleware (rclpy + Fast DDS), no mocks.

A robot process (tests/tf_stream_publisher.py) publishes ``/tf_static`` (base_link -> camera
optical frame, before the node listens: transient local), ``/tf`` (odom -> base_link at twice the
camera rate, half a period off the image stamps) and colour, 32FC1 depth and CameraInfo, but no
odometry. The node (its own process, ROS 2 from PyPI without tf2_ros) must compose the camera pose
from tf at each image stamp, and its heatmaps must equal the geometry core's for those poses.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) is not installed")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not built (tools/build_tf2_msgs.sh, run by make venv)")

from ros_helpers import (  # noqa: E402
    PARAMS_FILE,
    REPO_ROOT,
    NodeOutputs,
    RosTestNode,
    node_command,
    ros_env,
    start_process,
    stop_process,
    unique_domain_id,
)
from tf_stream_publisher import CAMERA_FRAME, K, base_pose, mount, plane_depth  # noqa: E402
from vln_core.config import load_config  # noqa: E402
from vln_core.heatmaps import heatmaps_from_config  # noqa: E402
from vln_heatmap import msg_conversions as conv  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FRAMES = 30
#: The type hash of tf2_msgs/msg/TFMessage that real ROS 2 (Jazzy, Kilted) tf publishers announce
#: (`ros2 topic info -v /tf`); ours, generated from the same definition, must be identical.
TF_MESSAGE_TYPE_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
PARAMETERS = ("node.backend:=geometry", "node.pose_source:=tf", "node.inference_rate_hz:=2.0", "node.geometry_resolution:=input",
              "node.publish_overlay:=false")


def _expected(cfg, t0: int, current: int, keys: list[int]) -> np.ndarray:
    """The geometry core's heatmaps for camera poses odom->base_link(t) x base_link->optical."""
    T_base_cam = mount()

    def pose(stamp: int) -> np.ndarray:
        return base_pose((stamp - t0) * 1e-9) @ T_base_cam

    cur = pose(current)
    key_poses = [pose(s) for s in keys]
    result = heatmaps_from_config(
        np.stack([plane_depth(T) for T in key_poses]), np.stack([K] * len(keys)).astype(np.float32),
        np.stack(key_poses).astype(np.float32), K.astype(np.float32), cur.astype(np.float32),
        plane_depth(cur).shape, plane_depth(cur), cfg=cfg.heatmap,
    )
    return result.heatmap.numpy()


def test_camera_pose_from_tf_and_tf_static_published_by_another_process(tmp_path):
    cfg = load_config(PARAMS_FILE, [p.replace(":=", "=") for p in PARAMETERS])
    domain_id = unique_domain_id()
    manifest = tmp_path / "published.json"
    robot_log, node_log = tmp_path / "robot.log", tmp_path / "node.log"
    # the robot first: its /tf_static goes out before the node exists
    robot = start_process(["tests/tf_stream_publisher.py", "--frames", str(FRAMES), "--manifest", str(manifest)],
                          domain_id, robot_log)
    node = None
    try:
        with RosTestNode("tf_test_probe", domain_id) as ros:
            outputs = NodeOutputs(ros)
            assert ros.spin_until(lambda: "published /tf_static" in robot_log.read_text(errors="replace")
                                  or robot.poll() is not None, 90), robot_log.read_text()
            node = start_process(node_command(*PARAMETERS), domain_id, node_log)
            ros.spin_until(lambda: robot.poll() is not None or node.poll() is not None, 120)
            assert robot.poll() == 0, f"robot failed:\n{robot_log.read_text()}\nnode:\n{node_log.read_text()}"
            ros.spin_until(lambda: len(outputs.heatmaps) >= 3, 5)
            ros.spin_for(1.5)  # one more diagnostics message
            assert node.poll() is None, node_log.read_text()
            published = json.loads(manifest.read_text())
            t0, stamps = published["t0"], published["stamps"]
            log = node_log.read_text(errors="replace")
            assert "pose=tf odom->(image frame_id) from /tf + /tf_static" in log, log
            assert f"camera pose from tf: odom -> '{CAMERA_FRAME}'" in log, log

            assert len(outputs.heatmaps) >= 3, (
                f"{len(outputs.heatmaps)} heatmap messages; waiting for: "
                f"{(outputs.latest_status('output') or {}).get('values', {}).get('waiting_for')}\n{log[-3000:]}")
            keyframe_stamps = {conv.keyframe_label_stamp(m): list(m.data) for m in outputs.keyframe_stamps}
            checked = 0
            for _, msg in outputs.heatmaps:
                stamp = conv.stamp_ns(msg)
                assert stamp in stamps and msg.header.frame_id == CAMERA_FRAME
                keys = keyframe_stamps[stamp]
                assert all(k in stamps for k in keys)
                got = conv.image_msg_to_heatmaps(msg, len(keys))
                expected = _expected(cfg, t0, stamp, keys)
                assert got.shape == expected.shape
                peak = float(expected.max())
                assert peak > 0, "the scene's frames should overlap"
                np.testing.assert_allclose(got, expected, atol=1e-3 * peak, rtol=0,
                                           err_msg=f"heatmaps of stamp {stamp} differ from the geometry core")
                checked += 1
            assert checked >= 3 and max(len(v) for v in keyframe_stamps.values()) >= 2

            inputs = outputs.latest_status("inputs")
            assert inputs is not None and int(inputs["values"]["camera_pose_count"]) >= 3, inputs
            assert int(inputs["values"]["odometry_count"]) == 0
            errors = outputs.latest_status("errors")
            assert errors is not None and "tf" not in errors["message"], errors
    finally:
        code = stop_process(node, timeout=20) if node is not None else 0
        stop_process(robot)
    assert code in (0, -2, 130), node_log.read_text()[-3000:]


def test_replay_republishes_tf_and_tf_static_from_a_bag(tmp_path):
    """vln_heatmap_replay on a rosbag2 with /tf and /tf_static: both republished as recorded (no
    'No module named tf2_msgs'), /tf_static transient local so a subscriber that joins after it
    was sent still gets it."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import Image
    from tf2_msgs.msg import TFMessage
    from ros_helpers import reliable_qos

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    bag = tmp_path / "bag"
    s0 = 1_700_000_000_000_000_000
    static_msg = conv.tf_msg([("base_link", CAMERA_FRAME, s0, mount())])
    tf_msgs = [conv.tf_msg([("odom", "base_link", s0 + i * 50_000_000, base_pose(0.05 * i))]) for i in range(5)]
    static_raw, tf_raws = serialize_message(static_msg), [serialize_message(m) for m in tf_msgs]
    with Writer(bag, version=9) as writer:
        image_conn = writer.add_connection("/camera/color/image_raw", "sensor_msgs/msg/Image", typestore=typestore)
        static_conn = writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=typestore)
        tf_conn = writer.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=typestore)
        # the image first: the replay waits for its subscriber (this probe) before publishing
        writer.write(image_conn, s0 - 1_000_000, serialize_message(conv.rgb_to_image_msg(np.zeros((4, 6, 3), np.uint8), s0, CAMERA_FRAME)))
        writer.write(static_conn, s0, static_raw)
        for i, raw in enumerate(tf_raws):
            writer.write(tf_conn, s0 + 1_000_000 + i * 50_000_000, raw)

    domain_id = unique_domain_id()
    images, tf, static = [], [], []
    with RosTestNode("tf_bag_probe", domain_id) as ros:
        ros.node.create_subscription(Image, "/camera/color/image_raw", images.append, reliable_qos(10))
        ros.node.create_subscription(TFMessage, "/tf", tf.append, reliable_qos(10))
        log = tmp_path / "replay.log"
        proc = start_process(["-m", "vln_heatmap.replay", str(bag), "--wait-for-node", "30", "--linger", "6"],
                             domain_id, log)
        try:
            # wait for everything asserted on (the image may arrive after the five /tf messages)
            ros.spin_until(lambda: len(tf) == 5 and len(images) == 1, 90)
            assert len(tf) == 5 and len(images) == 1, log.read_text()
            # join /tf_static only now, after the replay published it
            ros.node.create_subscription(
                TFMessage, "/tf_static", static.append,
                QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
            ros.spin_until(lambda: len(static) == 1, 5)
            offered = ros.node.get_publishers_info_by_topic("/tf_static")
            ros.spin_until(lambda: proc.poll() is not None, 30)  # exits after --linger
        finally:
            code = stop_process(proc)
    text = log.read_text()
    assert code == 0, text
    assert "skipping" not in text, text
    # (compared decoded: CDR padding bytes are not defined, rclpy leaves them uninitialised)
    assert [conv.tf_msg_to_transforms(m) for m in tf] == [conv.tf_msg_to_transforms(m) for m in tf_msgs]
    assert len(static) == 1 and conv.tf_msg_to_transforms(static[0]) == conv.tf_msg_to_transforms(static_msg)
    assert conv.tf_msg_to_transforms(static[0])[0][:3] == ("base_link", CAMERA_FRAME, s0)
    assert offered and offered[0].qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
    # on the wire exactly what tf2 peers use: type name and type hash
    assert offered[0].topic_type == "tf2_msgs/msg/TFMessage"
    assert str(offered[0].topic_type_hash) == TF_MESSAGE_TYPE_HASH


def test_tf_mode_without_tf2_ros_or_tf2_msgs_stops_with_one_clear_line(tmp_path):
    """Where neither can be imported the node must not run without poses (0 outputs, as before):
    exit 2, one line saying what to install."""
    hidden = tmp_path / "hide" / "tf2_msgs"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('tf2_msgs hidden by the test')\n")
    env = ros_env(unique_domain_id())
    env["PYTHONPATH"] = os.pathsep.join([str(hidden.parent), env["PYTHONPATH"]])
    proc = subprocess.run([sys.executable, *node_command("node.pose_source:=tf")], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "node.pose_source is 'tf' but neither tf2_ros nor tf2_msgs can be imported" in output
    assert "tools/build_tf2_msgs.sh" in output and "Traceback" not in output, output

"""ROS 2 is real here: two processes exchange sensor_msgs/Image over DDS through rclpy."""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) is not installed")
from sensor_msgs.msg import Image  # noqa: E402

from ros_helpers import RosTestNode, reliable_qos, start_process, stop_process, image_pattern, unique_domain_id  # noqa: E402

pytestmark = pytest.mark.ros


def test_image_crosses_process_boundary_intact(tmp_path):
    domain_id = unique_domain_id()
    count, height, width = 5, 48, 64
    topic = "/dds_test/image"
    received: list[Image] = []
    with RosTestNode("dds_test_subscriber", domain_id) as ros:
        ros.node.create_subscription(Image, topic, received.append, reliable_qos(count))
        log = tmp_path / "publisher.log"
        publisher = start_process(
            ["tests/ros_helpers.py", "publish-images", "--topic", topic, "--count", str(count),
             "--height", str(height), "--width", str(width)],
            domain_id, log,
        )
        try:
            ros.spin_until(lambda: len(received) >= count or publisher.poll() not in (None, 0), timeout_s=30)
            ros.spin_until(lambda: publisher.poll() is not None, timeout_s=15)
        finally:
            code = stop_process(publisher)
        assert code == 0, f"publisher failed ({code}):\n{log.read_text(errors='replace')}"
    assert len(received) == count, f"received {len(received)} of {count} images"
    for i, msg in enumerate(received):
        assert msg.encoding == "rgb8"
        assert (msg.height, msg.width, msg.step) == (height, width, width * 3)
        assert msg.header.frame_id == f"camera_optical_{i}"
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000 + i, 123_456_789 + i)
        pixels = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(height, width, 3)
        np.testing.assert_array_equal(pixels, image_pattern(i, height, width))


def test_separate_domains_do_not_see_each_other(tmp_path):
    """The per-test domain isolation the other ROS tests rely on actually isolates."""
    domain_a, domain_b = unique_domain_id(), unique_domain_id()
    assert domain_a != domain_b
    received: list[Image] = []
    with RosTestNode("dds_test_other_domain", domain_b) as ros:
        ros.node.create_subscription(Image, "/dds_test/image", received.append, reliable_qos(2))
        log = tmp_path / "publisher.log"
        publisher = start_process(
            ["tests/ros_helpers.py", "publish-images", "--topic", "/dds_test/image", "--count", "2",
             "--wait-subscriber-s", "3"],
            domain_a, log,
        )
        try:
            ros.spin_until(lambda: publisher.poll() is not None, timeout_s=20)
        finally:
            code = stop_process(publisher)
    assert code == 2, f"publisher on domain {domain_a} found a subscriber on domain {domain_b}:\n{log.read_text()}"
    assert received == []

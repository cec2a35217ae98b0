"""The Fast DDS profile the node and the replay run with (``vln_heatmap/transport.py``).

With Fast DDS's default 512 kB shared-memory segments the node lost 25-31 % of 30 Hz odometry
published beside 640x480 images while the model served (``benchmarks/node_latency.py --backend
model``); with the shipped profile in the publishing process it received 100 %. These tests check
the profile is chosen only when the user has not chosen one, and that Fast DDS parses it.
"""
from __future__ import annotations

import subprocess
import sys

from ros_helpers import ros_env, unique_domain_id
from vln_heatmap.transport import PROFILE_ENV, TRANSPORT_PROFILE, use_transport_profile  # noqa: E402 (path from ros_helpers)


def test_profile_is_set_unless_the_user_chose_one_or_another_middleware(tmp_path):
    env: dict[str, str] = {}
    assert "16 MB" in use_transport_profile(env)
    assert env[PROFILE_ENV[0]] == str(TRANSPORT_PROFILE) and TRANSPORT_PROFILE.is_file()

    mine = {PROFILE_ENV[1]: str(tmp_path / "mine.xml")}
    assert "kept" in use_transport_profile(mine) and PROFILE_ENV[0] not in mine

    cyclone = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert "rmw_cyclonedds_cpp" in use_transport_profile(cyclone) and PROFILE_ENV[0] not in cyclone


def test_fast_dds_parses_the_profile_and_talks_with_it():
    """A publisher and a subscriber in a process started with the profile exchange a message and
    Fast DDS reports no XML problem (a broken file is only logged, and the defaults come back)."""
    code = """
import rclpy, time
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("profile_check")
got = []
node.create_subscription(String, "/profile_check", lambda m: got.append(m.data), 10)
pub = node.create_publisher(String, "/profile_check", 10)
end = time.monotonic() + 10
while not got and time.monotonic() < end:
    pub.publish(String(data="ok"))
    rclpy.spin_once(node, timeout_sec=0.1)
print("received", got[:1])
"""
    env = ros_env(unique_domain_id())
    env[PROFILE_ENV[0]] = str(TRANSPORT_PROFILE)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "received ['ok']" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "XML" not in proc.stderr and "Error" not in proc.stderr, proc.stderr[-2000:]

"""Issue 19 item 2: a bag damaged in the middle (100 kB overwritten inside a valid 40-frame MCAP,
as ``dd ... conv=notrunc`` does) must not lose frames without a word. The import and the replay
count what ``metadata.yaml`` lists and could not be read, say so in one warning line, exit 0, and
keep what was read (intact frames, from before and after the damage)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rosbags = pytest.importorskip("rosbags")
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402

import test_rosbag_import as bags  # noqa: E402
from vln_core.data.episode import read_episode  # noqa: E402
from vln_core.data.rosbag_import import BagReadStats, iter_bag_messages  # noqa: E402
from vln_core.ros_codec import array_to_image_fields, matrix_to_pose_fields  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_FRAMES = 40
H, W = 96, 128  # raw rgb8 + 16UC1: ~62 kB a frame, 2.5 MB and three 1 MB chunks in all
COLOR, DEPTH, INFO, ODOM = "/camera/color/image_raw", "/camera/depth/image_raw", "/camera/color/camera_info", "/odom"
T_ = bags.T_


def frame_ns(i: int) -> int:
    return bags.T0 * 10**9 + i * 100_000_000


def colors() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(N_FRAMES)]


def write_bag(path: Path) -> None:
    """40 frames of camera info, odometry, depth and colour: 160 messages."""
    rng = np.random.default_rng(8)
    K = np.array([[100.0, 0.0, 63.5], [0.0, 100.0, 47.5], [0.0, 0.0, 1.0]])
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}

        def put(topic: str, msgtype: str, ns: int, msg) -> None:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=bags.TS)
            writer.write(conns[topic], ns, bags.TS.serialize_cdr(msg, msgtype))

        for i, rgb in enumerate(colors()):
            ns = frame_ns(i)
            put(INFO, "sensor_msgs/msg/CameraInfo", ns, T_["sensor_msgs/msg/CameraInfo"](
                header=bags.header(ns, "camera_optical"), height=H, width=W, distortion_model="plumb_bob",
                d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1), p=np.hstack([K, np.zeros((3, 1))]).reshape(-1),
                binning_x=0, binning_y=0,
                roi=T_["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)))
            xyz, q = matrix_to_pose_fields(bags.base_pose(i * 0.1))
            put(ODOM, "nav_msgs/msg/Odometry", ns + 1_000_000, T_["nav_msgs/msg/Odometry"](
                header=bags.header(ns, "odom"), child_frame_id="base_link",
                pose=T_["geometry_msgs/msg/PoseWithCovariance"](
                    pose=T_["geometry_msgs/msg/Pose"](position=T_["geometry_msgs/msg/Point"](x=xyz[0], y=xyz[1], z=xyz[2]),
                                                      orientation=bags.quat(q)), covariance=np.zeros(36)),
                twist=T_["geometry_msgs/msg/TwistWithCovariance"](
                    twist=T_["geometry_msgs/msg/Twist"](linear=bags.vec3([0.5, 0, 0]), angular=bags.vec3([0, 0, 0.3])),
                    covariance=np.zeros(36))))
            for topic, array, encoding, dt in ((DEPTH, rng.integers(300, 9000, (H, W)).astype(np.uint16), "16UC1", 2),
                                               (COLOR, rgb, "rgb8", 3)):
                fields = array_to_image_fields(array, encoding)
                fields["data"] = np.frombuffer(fields["data"], np.uint8)
                put(topic, "sensor_msgs/msg/Image", ns + dt * 1_000_000,
                    T_["sensor_msgs/msg/Image"](header=bags.header(ns, "camera_optical"), **fields))


def damage_middle(mcap: Path, kind: str) -> None:
    """Overwrite 100 kB in the middle of the file in place (``dd bs=1k count=100 seek=... conv=notrunc``)."""
    size = mcap.stat().st_size
    data = bytes(100 * 1024) if kind == "zeros" else np.random.default_rng(3).bytes(100 * 1024)
    with mcap.open("r+b") as f:
        f.seek(size // 2)
        f.write(data)
    assert mcap.stat().st_size == size


@pytest.fixture(scope="module")
def good_bag(tmp_path_factory) -> Path:
    bag = tmp_path_factory.mktemp("bags") / "good"
    write_bag(bag)
    return bag


def damaged_copy(good_bag: Path, dst: Path, kind: str) -> Path:
    import shutil

    shutil.copytree(good_bag, dst)
    damage_middle(next(dst.glob("*.mcap")), kind)
    return dst


# "zeros": rosbags' MCAP reader ends the damaged chunk early without an error (the silent loss of
# the issue); "random": it raises in the damaged chunk (an OverflowError traceback before)
@pytest.mark.parametrize("kind", ["zeros", "random"])
def test_import_of_a_bag_damaged_in_the_middle_warns_exits_0_and_keeps_the_intact_frames(good_bag, tmp_path, kind):
    bag = damaged_copy(good_bag, tmp_path / "bag", kind)
    xyz, q = matrix_to_pose_fields(np.eye(4))
    proc = subprocess.run(
        [sys.executable, str(REPO / "training" / "import_bag.py"), str(bag), "--out", str(tmp_path / "ep"),
         "--color-topic", COLOR, "--depth-topic", DEPTH, "--odom-topic", ODOM,
         "--mount", ",".join(repr(v) for v in (*xyz, *q)), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    warning = [line for line in proc.stdout.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1, proc.stdout
    m = re.search(r"warning: (\d+) of 160 messages listed in metadata\.yaml could not be read \(.*"
                  + re.escape(COLOR) + r": (\d+) of 40", warning[0])
    assert m, warning[0]
    lost_total, lost_color = int(m.group(1)), int(m.group(2))
    assert 0 < lost_color < N_FRAMES and lost_total >= lost_color
    assert f"{N_FRAMES - lost_color} of {N_FRAMES - lost_color} colour frames kept ({lost_color} more listed in " \
           "metadata.yaml could not be read)" in proc.stdout, proc.stdout
    ep = read_episode(tmp_path / "ep")
    assert len(ep) == N_FRAMES - lost_color
    assert ep.extra["import"]["unreadable_color"] == lost_color and ep.extra["import"]["listed_messages"] == 160
    originals = colors()
    kept = [int(round((t - frame_ns(0) / 1e9) * 10)) for t in ep.timestamps]
    assert kept[0] == 0 and kept[-1] == N_FRAMES - 1  # frames from before and after the damage
    for j, i in enumerate(kept):
        np.testing.assert_array_equal(ep.color(j), originals[i])  # every kept frame is intact


@pytest.mark.parametrize("kind", ["zeros", "random"])
def test_replay_reading_of_a_damaged_bag_counts_and_reports_the_loss(good_bag, tmp_path, kind):
    bag = damaged_copy(good_bag, tmp_path / "bag", kind)
    stats = BagReadStats()
    messages = list(iter_bag_messages(bag, None, stats))
    lost = stats.lost()
    n_lost = sum(v[0] for v in lost.values())
    assert 0 < n_lost and len(messages) == 160 - n_lost
    assert sum(stats.listed.values()) == 160 and stats.listed[COLOR] == 40
    assert messages[0][2] < frame_ns(1) and messages[-1][2] >= frame_ns(N_FRAMES - 1)  # read on after the damage
    pytest.importorskip("rclpy")
    from ros_helpers import PACKAGE_SRC  # noqa: F401  (the package on sys.path)
    from vln_heatmap.replay import bag_summary_warnings

    lines = bag_summary_warnings(stats)
    warning = [line for line in lines if line.startswith("replay: warning: ")]
    assert len(warning) == 1, lines
    assert f"{n_lost} of 160 messages listed in metadata.yaml could not be read" in warning[0]
    assert f"{COLOR}: {lost[COLOR][0]} of 40" in warning[0] and "mcap recover" in warning[0], warning[0]
    # an intact bag: nothing to say
    good_stats = BagReadStats()
    assert len(list(iter_bag_messages(good_bag, None, good_stats))) == 160
    assert good_stats.lost() == {} and bag_summary_warnings(good_stats) == []

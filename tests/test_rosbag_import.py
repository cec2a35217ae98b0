"""Rosbag2 import: real bags written with ``rosbags`` (sqlite3 and MCAP), imported and compared."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rosbags = pytest.importorskip("rosbags")
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from vln_core.data.episode import read_episode  # noqa: E402
from vln_core.data.rosbag_import import PoseTrack, TransformBuffer, import_rosbag, slerp  # noqa: E402
from vln_core.errors import InputError  # noqa: E402
from vln_core.ros_codec import array_to_compressed, array_to_image_fields, matrix_to_pose_fields  # noqa: E402

TS = get_typestore(Stores.LATEST)
T_ = TS.types
H, W = 20, 28
K = np.array([[25.0, 0.0, 13.5], [0.0, 25.0, 9.5], [0.0, 0.0, 1.0]])
T0 = 1_700_000_000  # seconds: realistic ROS stamps (float64 seconds keep ~0.2 us)
N_FRAMES = 6
NO_DEPTH_FRAME = 3
REPO = Path(__file__).resolve().parents[1]

# camera optical frame in base_link: 0.2 m forward, 1.1 m up, looking along base x
R_BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
MOUNT = np.eye(4)
MOUNT[:3, :3] = R_BODY_FROM_OPTICAL
MOUNT[:3, 3] = [0.2, 0.0, 1.1]


def base_pose(t_rel: float) -> np.ndarray:
    """Ground truth T_odom_base: constant velocity and yaw rate, so linear + slerp interpolation is exact."""
    yaw = 0.3 * t_rel + 0.1
    c, s = math.cos(yaw), math.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = [0.5 * t_rel + 1.0, 0.1 * t_rel - 2.0, 0.0]
    return T


def color_stamp_ns(i: int) -> int:
    return T0 * 10**9 + 200_000_000 + i * 100_000_000 + (i * 7_919_123) % 9_000_000  # 10 Hz with jitter


def stamp(ns: int):
    return T_["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)


def header(ns: int, frame: str):
    return T_["std_msgs/msg/Header"](stamp=stamp(ns), frame_id=frame)


def vec3(v):
    return T_["geometry_msgs/msg/Vector3"](x=float(v[0]), y=float(v[1]), z=float(v[2]))


def quat(q):
    return T_["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])


def transform_stamped(ns: int, parent: str, child: str, T: np.ndarray):
    xyz, q = matrix_to_pose_fields(T)
    return T_["geometry_msgs/msg/TransformStamped"](
        header=header(ns, parent), child_frame_id=child,
        transform=T_["geometry_msgs/msg/Transform"](translation=vec3(xyz), rotation=quat(q)),
    )


def make_frames(seed: int = 0):
    rng = np.random.default_rng(seed)
    colors = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(N_FRAMES)]
    depths_mm = []
    for _ in range(N_FRAMES):
        d = rng.integers(300, 9000, (H, W)).astype(np.uint16)
        d[0, :3] = 0
        depths_mm.append(d)
    return colors, depths_mm


def write_bag(path: Path, storage: StoragePlugin, *, color_kind="png", depth_kind="16UC1", pose_kind="odom",
              colors=None, depths_mm=None) -> None:
    """A bag with camera info, colour, depth (missing for NO_DEPTH_FRAME) and odometry or tf.

    Messages are written in receive-time order (stamp + a latency that differs per topic), so
    colour and depth arrive interleaved and not in stamp order across topics.
    """
    messages = []  # (log_time_ns, topic, msgtype, msg)
    info = T_["sensor_msgs/msg/CameraInfo"](
        header=header(color_stamp_ns(0), "camera_optical"), height=H, width=W, distortion_model="plumb_bob",
        d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1), p=np.hstack([K, np.zeros((3, 1))]).reshape(-1),
        binning_x=0, binning_y=0,
        roi=T_["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )
    for i in range(N_FRAMES):
        ns = color_stamp_ns(i)
        messages.append((ns + 1_000_000, "/camera/color/camera_info", "sensor_msgs/msg/CameraInfo", info))
        if color_kind == "bgr8":
            fields = array_to_image_fields(np.ascontiguousarray(colors[i][:, :, ::-1]), "bgr8")
            fields["data"] = np.frombuffer(fields["data"], np.uint8)
            msg = T_["sensor_msgs/msg/Image"](header=header(ns, "camera_optical"), **fields)
            messages.append((ns + 30_000_000, "/camera/color/image_raw", "sensor_msgs/msg/Image", msg))
        else:
            fields = array_to_compressed(colors[i], color_kind, jpeg_quality=95)
            msg = T_["sensor_msgs/msg/CompressedImage"](
                header=header(ns, "camera_optical"), format=fields["format"],
                data=np.frombuffer(fields["data"], np.uint8),
            )
            messages.append((ns + 30_000_000, "/camera/color/image_raw/compressed",
                             "sensor_msgs/msg/CompressedImage", msg))
        if depth_kind and i != NO_DEPTH_FRAME:
            depth_ns = ns + 13_000_000 - (i % 2) * 20_000_000  # +13 ms or -7 ms from the colour stamp
            if depth_kind == "16UC1":
                fields = array_to_image_fields(depths_mm[i], "16UC1")
            else:
                fields = array_to_image_fields(depths_mm[i].astype(np.float32) / 1000.0, "32FC1")
            fields["data"] = np.frombuffer(fields["data"], np.uint8)
            msg = T_["sensor_msgs/msg/Image"](header=header(depth_ns, "camera_optical"), **fields)
            messages.append((depth_ns + 5_000_000, "/camera/depth/image_raw", "sensor_msgs/msg/Image", msg))
    start = color_stamp_ns(0) - 150_000_000
    end = color_stamp_ns(N_FRAMES - 1) + 150_000_000
    if pose_kind == "odom":
        for ns in range(start, end, 20_000_000):  # 50 Hz
            t_rel = (ns - T0 * 10**9) / 1e9
            xyz, q = matrix_to_pose_fields(base_pose(t_rel))
            msg = T_["nav_msgs/msg/Odometry"](
                header=header(ns, "odom"), child_frame_id="base_link",
                pose=T_["geometry_msgs/msg/PoseWithCovariance"](
                    pose=T_["geometry_msgs/msg/Pose"](position=T_["geometry_msgs/msg/Point"](x=xyz[0], y=xyz[1], z=xyz[2]),
                                                      orientation=quat(q)),
                    covariance=np.zeros(36)),
                twist=T_["geometry_msgs/msg/TwistWithCovariance"](
                    twist=T_["geometry_msgs/msg/Twist"](linear=vec3([0.5, 0, 0]), angular=vec3([0, 0, 0.3 + t_rel])),
                    covariance=np.zeros(36)),
            )
            messages.append((ns + 2_000_000, "/odom", "nav_msgs/msg/Odometry", msg))
    else:
        # tf: odom -> base_link at 30 Hz, starting only after frame 0 (frame 0 has no pose),
        # static base_link -> camera_link -> camera_optical
        T_base_link = np.eye(4)
        T_base_link[:3, 3] = [0.2, 0.0, 1.1]
        T_link_optical = np.eye(4)
        T_link_optical[:3, :3] = R_BODY_FROM_OPTICAL
        static = T_["tf2_msgs/msg/TFMessage"](transforms=[
            transform_stamped(start, "base_link", "camera_link", T_base_link),
            transform_stamped(start, "camera_link", "camera_optical", T_link_optical),
        ])
        messages.append((start, "/tf_static", "tf2_msgs/msg/TFMessage", static))
        for ns in range(color_stamp_ns(1) - 30_000_000, end, 33_333_333):
            t_rel = (ns - T0 * 10**9) / 1e9
            msg = T_["tf2_msgs/msg/TFMessage"](transforms=[transform_stamped(ns, "odom", "base_link", base_pose(t_rel))])
            messages.append((ns + 1_000_000, "/tf", "tf2_msgs/msg/TFMessage", msg))
    messages.sort(key=lambda m: m[0])
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conns = {}
        for log_ns, topic, msgtype, msg in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TS)
            writer.write(conns[topic], log_ns, TS.serialize_cdr(msg, msgtype))


def expected_camera_pose(i: int) -> np.ndarray:
    return base_pose((color_stamp_ns(i) - T0 * 10**9) / 1e9) @ MOUNT


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP], ids=["sqlite3", "mcap"])
def test_odometry_png_depth_mm_exact(tmp_path: Path, storage):
    colors, depths_mm = make_frames()
    bag = tmp_path / "bag"
    write_bag(bag, storage, colors=colors, depths_mm=depths_mm)
    out = import_rosbag(
        bag, tmp_path / "ep", "/camera/color/image_raw/compressed", depth_topic="/camera/depth/image_raw",
        odom_topic="/odom", T_base_cam=MOUNT, instruction="find the box",
    )
    ep = read_episode(out)
    kept = [i for i in range(N_FRAMES) if i != NO_DEPTH_FRAME]
    assert len(ep) == len(kept) and ep.source == "rosbag" and ep.instruction == "find the box"
    stats = ep.extra["import"]
    assert stats["kept"] == len(kept) and stats["skipped_no_depth"] == 1 and stats["color_messages"] == N_FRAMES
    np.testing.assert_array_equal(ep.K, K)
    np.testing.assert_array_equal(ep.T_base_cam, MOUNT)
    for j, i in enumerate(kept):
        np.testing.assert_array_equal(ep.color(j), colors[i])  # png: pixel exact
        depth_mm = np.round(ep.depth(j) * 1000.0).astype(np.uint16)
        np.testing.assert_array_equal(depth_mm, depths_mm[i])  # millimetre exact
        assert ep.timestamps[j] == pytest.approx(color_stamp_ns(i) / 1e9, abs=1e-6)
        np.testing.assert_allclose(ep.poses[j], expected_camera_pose(i), atol=1e-6)
        np.testing.assert_allclose(ep.base_poses[j], base_pose((color_stamp_ns(i) - T0 * 10**9) / 1e9), atol=1e-6)
        t_rel = (color_stamp_ns(i) - T0 * 10**9) / 1e9
        np.testing.assert_allclose(ep.base_velocities[j], [0.5, 0.3 + t_rel], atol=1e-6)


def test_tf_chain_jpeg_32fc1(tmp_path: Path):
    colors, depths_mm = make_frames(1)
    # smooth images so the jpeg error is meaningful
    v, u = np.mgrid[0:H, 0:W]
    colors = [np.stack([u * 9 + i, v * 12, 200 - u * 3], -1).astype(np.uint8) for i in range(N_FRAMES)]
    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.MCAP, color_kind="jpeg", depth_kind="32FC1", pose_kind="tf",
              colors=colors, depths_mm=depths_mm)
    out = import_rosbag(
        bag, tmp_path / "ep", "/camera/color/image_raw/compressed", depth_topic="/camera/depth/image_raw",
        camera_info_topic="/camera/color/camera_info", use_tf=True,
    )
    ep = read_episode(out)
    stats = ep.extra["import"]
    # frame 0 precedes the first /tf sample by more than max_pair_dt; frame 3 has no depth
    kept = [1, 2, 4, 5]
    assert stats["skipped_no_pose"] == 1 and stats["skipped_no_depth"] == 1 and len(ep) == len(kept)
    assert "before the first sample" in stats["first_pose_failure"]
    np.testing.assert_allclose(ep.T_base_cam, MOUNT, atol=1e-12)  # from the static chain
    for j, i in enumerate(kept):
        err = np.abs(ep.color(j).astype(int) - colors[i])
        assert err.mean() < 3 and err.max() < 40
        np.testing.assert_array_equal(np.round(ep.depth(j) * 1000.0).astype(np.uint16), depths_mm[i])
        np.testing.assert_allclose(ep.poses[j], expected_camera_pose(i), atol=1e-6)
        np.testing.assert_allclose(ep.base_poses[j] @ ep.T_base_cam, ep.poses[j], atol=1e-9)


def test_raw_bgr8_without_depth_and_mount_from_7_numbers(tmp_path: Path):
    colors, _ = make_frames(2)
    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.SQLITE3, color_kind="bgr8", depth_kind=None, colors=colors)
    xyz, q = matrix_to_pose_fields(MOUNT)
    out = import_rosbag(bag, tmp_path / "ep", "/camera/color/image_raw", odom_topic="/odom",
                        T_base_cam=[*xyz, *q])
    ep = read_episode(out)
    assert len(ep) == N_FRAMES and not ep.has_depth and ep.depth(0) is None
    for i in range(N_FRAMES):
        np.testing.assert_array_equal(ep.color(i), colors[i])
        np.testing.assert_allclose(ep.poses[i], expected_camera_pose(i), atol=1e-6)


def test_errors_name_the_problem(tmp_path: Path):
    colors, depths_mm = make_frames()
    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.MCAP, colors=colors, depths_mm=depths_mm)
    with pytest.raises(InputError, match=r"colour topic '/nope' is not in bag.*'/odom'"):
        import_rosbag(bag, tmp_path / "a", "/nope", odom_topic="/odom", T_base_cam=MOUNT)
    with pytest.raises(InputError, match="no camera pose source"):
        import_rosbag(bag, tmp_path / "a", "/camera/color/image_raw/compressed")
    with pytest.raises(InputError, match="needs the camera mount"):
        import_rosbag(bag, tmp_path / "a", "/camera/color/image_raw/compressed", odom_topic="/odom")
    with pytest.raises(InputError, match="has type"):
        import_rosbag(bag, tmp_path / "a", "/odom", odom_topic="/odom", T_base_cam=MOUNT)
    with pytest.raises(InputError, match="survived pairing"):
        import_rosbag(bag, tmp_path / "a", "/camera/color/image_raw/compressed", depth_topic="/camera/depth/image_raw",
                      odom_topic="/odom", T_base_cam=MOUNT, max_pair_dt=0.001)
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.partial").exists()


def test_transform_buffer_interpolates_and_reports():
    buffer = TransformBuffer(max_gap_ns=10**9, max_hold_ns=10**7)
    buffer.add("odom", "base", 0, base_pose(0.0), static=False)
    buffer.add("odom", "base", 10**9, base_pose(1.0), static=False)
    buffer.add("base", "cam", 0, MOUNT, static=True)
    T, reason = buffer.lookup("odom", "cam", 250_000_000)
    assert reason == ""
    np.testing.assert_allclose(T, base_pose(0.25) @ MOUNT, atol=1e-12)
    T_inv, _ = buffer.lookup("cam", "odom", 250_000_000)
    np.testing.assert_allclose(T_inv @ T, np.eye(4), atol=1e-12)
    assert buffer.lookup("odom", "cam", 2 * 10**9)[0] is None
    assert "after the last sample" in buffer.lookup("odom", "cam", 2 * 10**9)[1]
    assert "not connected" in buffer.lookup("odom", "map", 0)[1]
    with pytest.raises(InputError, match="two parents"):
        buffer.add("map", "base", 0, np.eye(4), static=False)
    # slerp halfway between identity and 90 deg about z is 45 deg about z
    q = slerp(np.array([[0, 0, 0, 1.0]]), np.array([[0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)]]),
              np.array([0.5]))
    np.testing.assert_allclose(q[0], [0, 0, math.sin(math.pi / 8), math.cos(math.pi / 8)], atol=1e-12)
    track = PoseTrack()
    track.add(0, np.eye(4))
    track.add(5 * 10**9, np.eye(4))
    assert "gap" in track.interpolate(10**9, max_gap_ns=10**9, max_hold_ns=0)[2]


def test_cli_imports_a_bag(tmp_path: Path):
    colors, depths_mm = make_frames()
    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.MCAP, colors=colors, depths_mm=depths_mm)
    xyz, q = matrix_to_pose_fields(MOUNT)
    mount = ",".join(repr(v) for v in (*xyz, *q))
    proc = subprocess.run(
        [sys.executable, str(REPO / "training" / "import_bag.py"), str(bag), "--out", str(tmp_path / "ep"),
         "--color-topic", "/camera/color/image_raw/compressed", "--depth-topic", "/camera/depth/image_raw",
         "--odom-topic", "/odom", "--mount", mount, "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "5 of 6 colour frames kept" in proc.stdout
    ep = read_episode(tmp_path / "ep")
    assert len(ep) == 5
    np.testing.assert_allclose(ep.poses[0], expected_camera_pose(0), atol=1e-6)
    bad = subprocess.run(
        [sys.executable, str(REPO / "training" / "import_bag.py"), str(bag), "--out", str(tmp_path / "ep2"),
         "--color-topic", "/missing", "--odom-topic", "/odom", "--mount", mount],
        capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode != 0 and "'/missing' is not in bag" in bad.stderr

"""vln_core.geometry.tf_buffer: chained lookup, static + dynamic, interpolation, clear errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vln_core.errors import InputError
from vln_core.geometry.tf_buffer import (
    ConnectivityError,
    ExtrapolationError,
    FrameNotFoundError,
    TransformBuffer,
    quat_slerp,
    rotation_to_quat,
    transform_to_matrix,
)

S = 1_000_000_000  # ns per second


def yaw_quat(deg: float) -> tuple[float, float, float, float]:
    h = math.radians(deg) / 2
    return (0.0, 0.0, math.sin(h), math.cos(h))


def Rz(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def robot() -> TransformBuffer:
    """odom -> base_link (dynamic: at 1 s origin yaw 0, at 2 s (2, 0, 0) yaw 90 deg),
    base_link -> camera (static: (0.2, 0, 1.0), yaw 90 deg), base_link -> laser (static)."""
    tf = TransformBuffer()
    tf.set_transform("odom", "base_link", 1 * S, (0, 0, 0), yaw_quat(0))
    tf.set_transform("odom", "base_link", 2 * S, (2, 0, 0), yaw_quat(90))
    tf.set_transform("base_link", "camera", 0, (0.2, 0, 1.0), yaw_quat(90), static=True)
    tf.set_transform("base_link", "laser", 0, (0.1, 0.05, 0.3), yaw_quat(0), static=True)
    return tf


def test_chain_interpolated_at_midpoint_matches_hand_computed_pose():
    T, used = robot().lookup("odom", "camera", 1_500_000_000)
    assert used == 1_500_000_000
    # base at 1.5 s: (1, 0, 0), yaw 45 deg; camera = base * mount
    c = math.cos(math.radians(45))
    np.testing.assert_allclose(T[:3, 3], [1 + 0.2 * c, 0.2 * c, 1.0], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], Rz(135), atol=1e-12)
    np.testing.assert_allclose(T[3], [0, 0, 0, 1])


def test_rotation_is_slerped_not_lerped():
    # a quarter of the way from yaw 0 to yaw 90: slerp gives exactly 22.5 deg, lerp+normalise 20.6
    T, _ = robot().lookup("odom", "base_link", 1_250_000_000)
    np.testing.assert_allclose(T[:3, :3], Rz(22.5), atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [0.5, 0, 0], atol=1e-12)
    # the shortest arc: q and -q are one rotation
    q = quat_slerp(yaw_quat(0), -np.asarray(yaw_quat(90)), 0.5)
    np.testing.assert_allclose(abs(q[2]), math.sin(math.radians(22.5)), atol=1e-12)


def test_exact_stamp_static_only_and_inverse():
    tf = robot()
    T, _ = tf.lookup("odom", "camera", 2 * S)
    expected = transform_to_matrix((2, 0, 0), yaw_quat(90)) @ transform_to_matrix((0.2, 0, 1.0), yaw_quat(90))
    np.testing.assert_allclose(T, expected, atol=1e-12)
    T_inv, _ = tf.lookup("camera", "odom", 2 * S)
    np.testing.assert_allclose(T_inv @ T, np.eye(4), atol=1e-12)
    # a static-only chain holds at any stamp, even one no dynamic transform covers
    T_cam_laser, _ = tf.lookup("camera", "laser", 123 * S)
    expected = np.linalg.inv(transform_to_matrix((0.2, 0, 1.0), yaw_quat(90))) @ transform_to_matrix((0.1, 0.05, 0.3), yaw_quat(0))
    np.testing.assert_allclose(T_cam_laser, expected, atol=1e-12)
    np.testing.assert_allclose(tf.lookup("camera", "camera", 5 * S)[0], np.eye(4))


def test_stamp_zero_means_latest_common_time():
    tf = robot()
    T, used = tf.lookup("odom", "camera", 0)
    assert used == 2 * S
    np.testing.assert_allclose(T, tf.lookup("odom", "camera", 2 * S)[0])
    assert tf.latest_common_stamp("camera", "laser") == 0


def test_disconnected_and_unknown_frames_say_so():
    tf = robot()
    tf.set_transform("map", "landmark", 1 * S, (1, 2, 3), yaw_quat(10))
    with pytest.raises(ConnectivityError, match="frame 'camera' is not connected to 'map'") as err:
        tf.lookup("map", "camera", 1 * S)
    assert "rooted at 'odom'" in str(err.value) and "rooted at 'map'" in str(err.value)
    with pytest.raises(FrameNotFoundError, match="frame 'camera_depth_optical_frame' does not exist"):
        tf.lookup("odom", "camera_depth_optical_frame", 1 * S)
    with pytest.raises(FrameNotFoundError, match="no transform received yet"):
        TransformBuffer().lookup("odom", "camera", 1 * S)


def test_extrapolation_errors_name_direction_and_stamps():
    tf = robot()
    with pytest.raises(ExtrapolationError) as err:
        tf.lookup("odom", "camera", 2_100_000_000)
    assert err.value.future
    assert str(err.value) == ("extrapolation: stamp 2.100 s is after the newest transform odom -> base_link "
                              "at 2.000 s (0.100 s later)")
    with pytest.raises(ExtrapolationError, match="before the oldest kept transform odom -> base_link") as err:
        tf.lookup("odom", "camera", 900_000_000)
    assert not err.value.future
    # within a tolerance the nearest transform is used unchanged, never extrapolated
    T, _ = tf.lookup("odom", "camera", 2_100_000_000, tolerance_ns=150_000_000)
    np.testing.assert_allclose(T, tf.lookup("odom", "camera", 2 * S)[0])
    assert not tf.can_transform("odom", "camera", 2_100_000_000)


def test_history_is_bounded_by_age_and_count():
    tf = TransformBuffer(cache_s=1.0, max_per_frame=5)
    for i in range(20):
        tf.set_transform("odom", "base_link", i * 100_000_000, (i, 0, 0), yaw_quat(0))
    # count bound: the newest five (1.5 .. 1.9 s)
    with pytest.raises(ExtrapolationError, match="before the oldest kept transform odom -> base_link at 1.500 s"):
        tf.lookup("odom", "base_link", 1_400_000_000)
    tf = TransformBuffer(cache_s=1.0, max_per_frame=100)
    for i in range(30):
        tf.set_transform("odom", "base_link", i * 100_000_000, (i, 0, 0), yaw_quat(0))
    # age bound: 1 s before the newest (2.9 s) -> 1.9 s
    np.testing.assert_allclose(tf.lookup("odom", "base_link", 1_950_000_000)[0][:3, 3], [19.5, 0, 0])
    with pytest.raises(ExtrapolationError, match="oldest kept transform odom -> base_link at 1.900 s"):
        tf.lookup("odom", "base_link", 1_800_000_000)


def test_out_of_order_inserts_and_clock_jump_back():
    tf = TransformBuffer(cache_s=10.0)
    tf.set_transform("odom", "base_link", 3 * S, (3, 0, 0), yaw_quat(0))
    tf.set_transform("odom", "base_link", 1 * S, (1, 0, 0), yaw_quat(0))  # late message: slotted in
    np.testing.assert_allclose(tf.lookup("odom", "base_link", 2 * S)[0][:3, 3], [2, 0, 0])
    # a bag loop: stamps restart far in the past -> the old timeline is dropped
    tf.set_transform("odom", "base_link", 100 * S, (100, 0, 0), yaw_quat(0))
    tf.set_transform("odom", "base_link", 1 * S, (-1, 0, 0), yaw_quat(0))
    with pytest.raises(ExtrapolationError, match="after the newest transform odom -> base_link at 1.000 s"):
        tf.lookup("odom", "base_link", 100 * S)
    tf.clear()
    with pytest.raises(FrameNotFoundError):
        tf.lookup("odom", "base_link", 1 * S)


def test_static_and_dynamic_mix_reparenting_and_clear():
    tf = robot()
    tf.clear()  # dynamic only: the static mount stays
    np.testing.assert_allclose(tf.lookup("base_link", "camera", 7 * S)[0][:3, 3], [0.2, 0, 1.0])
    with pytest.raises(FrameNotFoundError, match="'odom' does not exist"):
        tf.lookup("odom", "camera", 1 * S)
    # a new static transform for the same child replaces the old one
    tf.set_transform("base_link", "camera", 0, (0.3, 0, 1.1), yaw_quat(0), static=True)
    np.testing.assert_allclose(tf.lookup("base_link", "camera", 7 * S)[0][:3, 3], [0.3, 0, 1.1])
    # re-parenting camera under a mast frame
    tf.set_transform("base_link", "mast", 0, (0, 0, 2), yaw_quat(0), static=True)
    tf.set_transform("mast", "camera", 0, (0, 0, 0.5), yaw_quat(0), static=True)
    assert tf.parent_of("/camera") == "mast"
    np.testing.assert_allclose(tf.lookup("base_link", "camera", 0)[0][:3, 3], [0, 0, 2.5])
    assert tf.frames == ["base_link", "camera", "laser", "mast"]


def test_bad_transforms_are_rejected_with_the_reason():
    tf = TransformBuffer()
    with pytest.raises(InputError, match="not normalised"):
        tf.set_transform("odom", "base_link", 1, (0, 0, 0), (0, 0, 0, 2))
    with pytest.raises(InputError, match="non-finite"):
        tf.set_transform("odom", "base_link", 1, (0, float("nan"), 0), yaw_quat(0))
    with pytest.raises(InputError, match="to itself"):
        tf.set_transform("odom", "/odom", 1, (0, 0, 0), yaw_quat(0))
    with pytest.raises(InputError, match="must not be empty"):
        tf.set_transform("", "base_link", 1, (0, 0, 0), yaw_quat(0))
    accepted, problems = tf.set_transforms([
        ("odom", "base_link", 1, (0, 0, 0), (0, 0, 0, 1.004)),  # slightly off: renormalised
        ("odom", "wheel", 1, (0, 0, 0), (0, 0, 0, 0)),
    ])
    assert accepted == 1 and len(problems) == 1 and "wheel" in problems[0]
    assert tf.frames == ["base_link", "odom"]
    np.testing.assert_allclose(tf.lookup("odom", "base_link", 1)[0], np.eye(4), atol=1e-12)


def test_matrix_input_round_trip():
    rng = np.random.default_rng(0)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    T = transform_to_matrix(rng.normal(size=3), q)
    np.testing.assert_allclose(abs(np.dot(rotation_to_quat(T[:3, :3]), q)), 1.0, atol=1e-12)
    tf = TransformBuffer()
    tf.set_transform_matrix("a", "b", 5, T)
    np.testing.assert_allclose(tf.lookup("a", "b", 5)[0], T, atol=1e-12)
    with pytest.raises(InputError, match="not a rotation"):
        tf.set_transform_matrix("a", "c", 5, np.diag([1.0, 1.0, -1.0, 1.0]))

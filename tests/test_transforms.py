"""Rotations, quaternions (x, y, z, w), poses and the optical <-> body axis change."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vln_core.config import NodeConfig
from vln_core.errors import InputError
from vln_core.geometry.transforms import (
    R_BODY_FROM_OPTICAL,
    body_to_optical_pose,
    camera_pose_from_base,
    invert_pose,
    is_rotation,
    make_pose,
    matrix_to_quat,
    optical_to_body_pose,
    pose_from_xyz_quat,
    pose_to_xyz_quat,
    quat_to_matrix,
    transform_points,
    yaw_of_pose,
)


def _random_quats(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return q / q.norm(dim=-1, keepdim=True)


def _rot_z(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], dtype=torch.float64)


def test_known_quaternion():
    s = math.sqrt(0.5)
    R = quat_to_matrix(torch.tensor([0.0, 0.0, s, s]))
    torch.testing.assert_close(R, _rot_z(90).float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(matrix_to_quat(_rot_z(90)), torch.tensor([0, 0, s, s], dtype=torch.float64))


def test_quaternion_round_trips_including_half_turns():
    q = _random_quats(500)
    R = quat_to_matrix(q)
    assert bool(is_rotation(R, atol=1e-9).all())
    q_back = matrix_to_quat(R)
    assert bool((q_back[:, 3] >= 0).all())
    # q and -q are the same rotation: compare up to sign
    sign = torch.sign((q * q_back).sum(-1, keepdim=True))
    torch.testing.assert_close(q_back * sign, q, atol=1e-9, rtol=0)
    # 180 degree turns (w = 0), where a naive trace formula divides by zero
    s = math.sqrt(0.5)
    half_turns = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [s, s, 0, 0]], dtype=torch.float64)
    back = matrix_to_quat(quat_to_matrix(half_turns))
    torch.testing.assert_close(quat_to_matrix(back), quat_to_matrix(half_turns), atol=1e-12, rtol=0)
    assert bool(torch.isfinite(back).all())


def test_batched_shapes_and_numpy_input():
    q = _random_quats(6).reshape(2, 3, 4).numpy()
    R = quat_to_matrix(q)
    assert R.shape == (2, 3, 3, 3) and R.dtype == torch.float64
    assert matrix_to_quat(R).shape == (2, 3, 4)
    with pytest.raises(InputError, match="shape"):
        quat_to_matrix(torch.zeros(3))
    with pytest.raises(InputError, match="zero norm"):
        quat_to_matrix(torch.zeros(4))


def test_poses_invert_and_transform():
    R = quat_to_matrix(_random_quats(4, seed=1))
    t = torch.tensor([[1.0, 2, 3], [0, 0, 0], [-1, 0.5, 2], [3, -2, 1]], dtype=torch.float64)
    T = make_pose(R, t)
    assert T.shape == (4, 4, 4)
    torch.testing.assert_close(invert_pose(T) @ T, torch.eye(4, dtype=torch.float64).expand(4, 4, 4))
    torch.testing.assert_close(invert_pose(T), torch.linalg.inv(T))
    p = torch.randn(4, 10, 3, dtype=torch.float64)
    p_h = torch.cat([p, torch.ones(4, 10, 1, dtype=torch.float64)], dim=-1)
    torch.testing.assert_close(transform_points(T, p), (p_h @ T.transpose(-1, -2))[..., :3])
    # one pose broadcast over a batch of point sets
    torch.testing.assert_close(transform_points(T[0], p)[1], transform_points(T[0], p[1]))


def test_is_rotation_rejects_reflections_and_scales():
    R = quat_to_matrix(_random_quats(3, seed=2))
    bad = torch.stack([R[0] * 1.1, R[1] @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)), R[2]])
    assert is_rotation(bad).tolist() == [False, False, True]


def test_body_optical_conversion():
    # optical z (forward) is body x (forward); optical x (right) is body -y; optical y (down) is body -z
    torch.testing.assert_close(R_BODY_FROM_OPTICAL @ torch.tensor([0.0, 0, 1]), torch.tensor([1.0, 0, 0]))
    torch.testing.assert_close(R_BODY_FROM_OPTICAL @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, -1, 0]))
    torch.testing.assert_close(R_BODY_FROM_OPTICAL @ torch.tensor([0.0, 1, 0]), torch.tensor([0.0, 0, -1]))
    assert bool(is_rotation(R_BODY_FROM_OPTICAL))
    # the default camera mount quaternion is exactly this axis change
    mount = pose_from_xyz_quat(torch.tensor(NodeConfig().camera_mount))
    torch.testing.assert_close(mount[:3, :3], R_BODY_FROM_OPTICAL, atol=1e-6, rtol=0)

    # a camera at (1, 2, 3) looking along world +z (optical identity rotation)
    T_wc = make_pose(torch.eye(3), torch.tensor([1.0, 2.0, 3.0]))
    T_wb = optical_to_body_pose(T_wc)
    torch.testing.assert_close(T_wb[:3, 0], torch.tensor([0.0, 0, 1]))  # body x = viewing direction
    torch.testing.assert_close(T_wb[:3, 3], T_wc[:3, 3])  # same origin
    torch.testing.assert_close(body_to_optical_pose(T_wb), T_wc)
    # the same world point has body coordinates = R_BODY_FROM_OPTICAL @ optical coordinates
    p_w = torch.tensor([[0.5, -1.0, 7.0]])
    p_opt = transform_points(invert_pose(T_wc), p_w)
    p_body = transform_points(invert_pose(T_wb), p_w)
    torch.testing.assert_close(p_body[0], R_BODY_FROM_OPTICAL @ p_opt[0])


def test_camera_pose_from_base_and_yaw():
    # robot at (1, 2, 0) facing world +y (yaw 90 deg), camera 0.2 m ahead and 1 m up, looking forward
    T_odom_base = make_pose(_rot_z(90).float(), torch.tensor([1.0, 2.0, 0.0]))
    T_base_cam = pose_from_xyz_quat(torch.tensor(NodeConfig().camera_mount))
    T_wc = camera_pose_from_base(T_odom_base, T_base_cam)
    torch.testing.assert_close(T_wc[:3, 3], torch.tensor([1.0, 2.2, 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(T_wc[:3, 2], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)  # optical z
    torch.testing.assert_close(T_wc[:3, 1], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6, rtol=0)  # optical y down
    assert float(yaw_of_pose(T_odom_base)) == pytest.approx(math.pi / 2, abs=1e-6)
    assert float(yaw_of_pose(optical_to_body_pose(T_wc))) == pytest.approx(math.pi / 2, abs=1e-6)
    assert float(yaw_of_pose(make_pose(_rot_z(180), torch.zeros(3, dtype=torch.float64)))) == pytest.approx(math.pi)


def test_xyz_quat_round_trip():
    q = _random_quats(5, seed=3)
    q = torch.where(q[:, 3:] < 0, -q, q)
    xyzq = torch.cat([torch.randn(5, 3, dtype=torch.float64), q], dim=-1)
    torch.testing.assert_close(pose_to_xyz_quat(pose_from_xyz_quat(xyzq)), xyzq)
    np_pose = pose_from_xyz_quat(np.array([0.0, 0, 0, 0, 0, 0, 1.0]))
    torch.testing.assert_close(np_pose, torch.eye(4, dtype=torch.float64))

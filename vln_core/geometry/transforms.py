"""Rigid transforms: rotations, quaternions (x, y, z, w), 4x4 poses, optical <-> body axes.

Conventions (``docs/conventions.md``): poses are ``T_<to><from>`` 4x4 matrices, e.g. ``T_wc``
maps camera coordinates to world coordinates (``p_w = T_wc @ p_c``); quaternions are ``(x, y, z,
w)`` in ROS order; cameras use OpenCV optical axes (x right, y down, z forward); robot bodies use
REP 103 (x forward, y left, z up).

All functions are batched over leading dimensions, take torch tensors or anything
``torch.as_tensor`` accepts (numpy arrays, lists), and return torch tensors. Integer input becomes
float32; float64 input stays float64.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from vln_core.errors import InputError

__all__ = [
    "R_BODY_FROM_OPTICAL",
    "as_float_tensor",
    "quat_to_matrix",
    "matrix_to_quat",
    "make_pose",
    "invert_pose",
    "transform_points",
    "is_rotation",
    "ROTATION_TOLERANCE",
    "rotation_error",
    "nearest_rotation",
    "optical_to_body_pose",
    "body_to_optical_pose",
    "pose_from_xyz_quat",
    "pose_to_xyz_quat",
    "camera_pose_from_base",
    "yaw_of_pose",
]

#: (3, 3) rotation taking OpenCV optical coordinates (x right, y down, z forward) to REP 103 body
#: coordinates (x forward, y left, z up): ``p_body = R_BODY_FROM_OPTICAL @ p_optical``.
#: Its columns are the optical axes seen in the body frame: right = -y_body, down = -z_body,
#: forward = +x_body. As a quaternion (x, y, z, w) it is (-0.5, 0.5, -0.5, 0.5), the usual
#: ``camera_link -> camera_optical_frame`` mount.
R_BODY_FROM_OPTICAL = torch.tensor(
    [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float32
)


def as_float_tensor(x: Any, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """``torch.as_tensor`` that yields a floating tensor (int/bool input -> float32 unless ``dtype``)."""
    t = torch.as_tensor(x, device=device)
    if dtype is not None:
        return t.to(dtype)
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return t


def _common(*tensors: Any) -> list[torch.Tensor]:
    """Convert to floating tensors of one promoted dtype on the first tensor's device."""
    ts = [as_float_tensor(t) for t in tensors]
    dtype = ts[0].dtype
    for t in ts[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    device = ts[0].device
    return [t.to(dtype=dtype, device=device) for t in ts]


def _check_last(t: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if t.dim() < len(shape) or tuple(t.shape[-len(shape):]) != shape:
        raise InputError(f"{name} must have shape (..., {', '.join(map(str, shape))}), got {tuple(t.shape)}")


def quat_to_matrix(q: Any) -> torch.Tensor:
    """Rotation matrices from quaternions.

    Args:
        q: ``(..., 4)`` quaternions ``(x, y, z, w)``; normalised here (must not be zero).

    Returns:
        ``(..., 3, 3)`` rotation matrices.
    """
    q = as_float_tensor(q)
    _check_last(q, (4,), "q")
    norm = q.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-8).any()):
        raise InputError("quaternion with (near) zero norm cannot be a rotation")
    x, y, z, w = (q / norm).unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = [
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(R: Any) -> torch.Tensor:
    """Quaternions from rotation matrices, numerically robust for every angle (incl. 180 deg).

    Uses the best-conditioned of the four Shepperd candidates per matrix.

    Args:
        R: ``(..., 3, 3)`` rotation matrices.

    Returns:
        ``(..., 4)`` unit quaternions ``(x, y, z, w)`` with ``w >= 0``.
    """
    R = as_float_tensor(R)
    _check_last(R, (3, 3), "R")
    m = R.reshape(R.shape[:-2] + (9,))
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    four_sq = torch.stack(
        [
            1.0 + m00 + m11 + m22,  # 4 w^2
            1.0 + m00 - m11 - m22,  # 4 x^2
            1.0 - m00 + m11 - m22,  # 4 y^2
            1.0 - m00 - m11 + m22,  # 4 z^2
        ],
        dim=-1,
    )
    q_abs = torch.sqrt(four_sq.clamp(min=0.0))  # 2|w|, 2|x|, 2|y|, 2|z|
    # each row is 4 * (w, x, y, z) * (that component), computed from the matrix entries
    cand = torch.stack(
        [
            torch.stack([four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, four_sq[..., 2], m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]], dim=-1),
        ],
        dim=-2,
    )
    cand = cand / (2.0 * q_abs.clamp(min=0.1)[..., None])
    best = q_abs.argmax(dim=-1)
    wxyz = torch.gather(cand, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    wxyz = wxyz / wxyz.norm(dim=-1, keepdim=True)
    wxyz = torch.where(wxyz[..., :1] < 0, -wxyz, wxyz)
    return torch.cat([wxyz[..., 1:], wxyz[..., :1]], dim=-1)


def make_pose(R: Any, t: Any) -> torch.Tensor:
    """Stack rotation and translation into homogeneous poses.

    Args:
        R: ``(..., 3, 3)`` rotations.
        t: ``(..., 3)`` translations (broadcast against ``R``'s batch shape).

    Returns:
        ``(..., 4, 4)`` poses ``[[R, t], [0, 0, 0, 1]]``.
    """
    R, t = _common(R, t)
    _check_last(R, (3, 3), "R")
    _check_last(t, (3,), "t")
    batch = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    T = torch.zeros(batch + (4, 4), dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def invert_pose(T: Any) -> torch.Tensor:
    """Inverse of rigid poses using ``R^T`` (no general matrix inverse).

    Args:
        T: ``(..., 4, 4)`` rigid poses ``T_ab``.

    Returns:
        ``(..., 4, 4)`` poses ``T_ba``.
    """
    T = as_float_tensor(T)
    _check_last(T, (4, 4), "T")
    R_t = T[..., :3, :3].transpose(-1, -2)
    t = T[..., :3, 3:]
    return make_pose(R_t, (-(R_t @ t))[..., 0])


def transform_points(T: Any, p: Any) -> torch.Tensor:
    """Apply poses to point sets.

    Args:
        T: ``(..., 4, 4)`` poses ``T_ba`` (frame a -> frame b).
        p: ``(..., N, 3)`` points in frame a; batch dims broadcast against ``T``'s.

    Returns:
        ``(..., N, 3)`` the points in frame b: ``R p + t``.
    """
    T, p = _common(T, p)
    _check_last(T, (4, 4), "T")
    _check_last(p, (3,), "p")
    if p.dim() < 2:
        raise InputError(f"p must have shape (..., N, 3), got {tuple(p.shape)}")
    R = T[..., :3, :3]
    t = T[..., None, :3, 3]
    return p @ R.transpose(-1, -2) + t


#: The project's one tolerance for "is this 3x3 block a rotation": ``max(|R R^T - I|, |det R - 1|)``.
#: Real datasets store poses with 4-6 digits (KinectFusion, SfM exports: errors of 1e-4 and more),
#: so what passes is re-orthonormalised (:func:`nearest_rotation`) rather than refused; a block
#: off by more than this is not a rotation at all (a scaled, sheared or transposed matrix).
ROTATION_TOLERANCE = 1e-2


def rotation_error(R: Any) -> float:
    """``max(|R R^T - I|max, |det R - 1|)`` of one ``(3, 3)`` matrix (inf when not finite)."""
    R = np.asarray(R, dtype=np.float64)
    if not np.isfinite(R).all():
        return float("inf")
    return float(max(np.abs(R @ R.T - np.eye(3)).max(), abs(np.linalg.det(R) - 1.0)))


def nearest_rotation(R: Any) -> np.ndarray:
    """The proper rotation closest to ``R`` (Frobenius norm; SVD ``U diag(1, 1, det) V^T``), float64.

    A matrix already orthonormal to 1e-12 is returned unchanged (a copy), so exact poses
    round-trip bit for bit."""
    R = np.array(R, dtype=np.float64)
    if rotation_error(R) <= 1e-12:
        return R
    U, _, Vt = np.linalg.svd(R)
    d = np.sign(np.linalg.det(U @ Vt)) or 1.0
    return U @ np.diag([1.0, 1.0, d]) @ Vt


def is_rotation(R: Any, atol: float = ROTATION_TOLERANCE) -> torch.Tensor:
    """Whether each matrix is a proper rotation (``R R^T = I`` and ``det R = +1`` within ``atol``).

    Args:
        R: ``(..., 3, 3)`` matrices.

    Returns:
        ``(...)`` bool tensor.
    """
    R = as_float_tensor(R)
    _check_last(R, (3, 3), "R")
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    orth = ((R @ R.transpose(-1, -2)) - eye).abs().amax(dim=(-1, -2)) <= atol
    det = (torch.linalg.det(R) - 1.0).abs() <= atol
    finite = torch.isfinite(R).all(dim=-1).all(dim=-1)
    return orth & det & finite


def _axes_change(T: torch.Tensor, R_old_from_new: torch.Tensor) -> torch.Tensor:
    """``T_w_new = T_w_old @ [R_old_from_new | 0]``: same origin, new axes."""
    T = as_float_tensor(T)
    _check_last(T, (4, 4), "T")
    out = T.clone()
    out[..., :3, :3] = T[..., :3, :3] @ R_old_from_new.to(dtype=T.dtype, device=T.device)
    return out


def optical_to_body_pose(T_wc_optical: Any) -> torch.Tensor:
    """Re-express a camera pose with body axes instead of optical axes (world frame unchanged).

    Args:
        T_wc_optical: ``(..., 4, 4)`` camera-optical-to-world poses (z = viewing direction).

    Returns:
        ``(..., 4, 4)`` camera-body-to-world poses (REP 103: x = viewing direction, y left, z up),
        same origin.
    """
    return _axes_change(T_wc_optical, R_BODY_FROM_OPTICAL.T)


def body_to_optical_pose(T_wb: Any) -> torch.Tensor:
    """Inverse of :func:`optical_to_body_pose`.

    Args:
        T_wb: ``(..., 4, 4)`` body-to-world poses (REP 103 axes).

    Returns:
        ``(..., 4, 4)`` optical-to-world poses (OpenCV axes), same origin.
    """
    return _axes_change(T_wb, R_BODY_FROM_OPTICAL)


def pose_from_xyz_quat(xyzq: Any) -> torch.Tensor:
    """Poses from ``[x, y, z, qx, qy, qz, qw]`` vectors (ROS ``Pose`` order).

    Args:
        xyzq: ``(..., 7)`` translation in metres then quaternion (x, y, z, w).

    Returns:
        ``(..., 4, 4)`` poses.
    """
    xyzq = as_float_tensor(xyzq)
    _check_last(xyzq, (7,), "xyzq")
    return make_pose(quat_to_matrix(xyzq[..., 3:]), xyzq[..., :3])


def pose_to_xyz_quat(T: Any) -> torch.Tensor:
    """Inverse of :func:`pose_from_xyz_quat`.

    Args:
        T: ``(..., 4, 4)`` poses.

    Returns:
        ``(..., 7)`` ``[x, y, z, qx, qy, qz, qw]`` with ``qw >= 0``.
    """
    T = as_float_tensor(T)
    _check_last(T, (4, 4), "T")
    return torch.cat([T[..., :3, 3], matrix_to_quat(T[..., :3, :3])], dim=-1)


def camera_pose_from_base(T_odom_base: Any, T_base_cam: Any) -> torch.Tensor:
    """Camera (optical) pose in the odom frame from the robot's odometry and the camera mount.

    Args:
        T_odom_base: ``(..., 4, 4)`` base_link-to-odom poses (odometry).
        T_base_cam: ``(4, 4)`` (or broadcastable) camera-optical-to-base_link mount.

    Returns:
        ``(..., 4, 4)`` ``T_wc``: camera-optical-to-odom poses, the world frame of episodes.
    """
    T_odom_base, T_base_cam = _common(T_odom_base, T_base_cam)
    _check_last(T_odom_base, (4, 4), "T_odom_base")
    _check_last(T_base_cam, (4, 4), "T_base_cam")
    return T_odom_base @ T_base_cam


def yaw_of_pose(T: Any) -> torch.Tensor:
    """Heading about the world z axis of a body-axes pose (REP 103: x forward, z up).

    The yaw is the angle of the pose's x axis projected on the world xy plane, counter-clockwise
    from world +x, in ``(-pi, pi]``. For an optical camera pose convert it first with
    :func:`optical_to_body_pose` (its x axis is the camera's right, not its viewing direction).

    Args:
        T: ``(..., 4, 4)`` body-to-world poses.

    Returns:
        ``(...)`` yaw in radians.
    """
    T = as_float_tensor(T)
    _check_last(T, (4, 4), "T")
    yaw = torch.atan2(T[..., 1, 0], T[..., 0, 0])
    return torch.where(yaw <= -math.pi, yaw + 2 * math.pi, yaw)

"""Geometry core: pinhole cameras, rigid transforms, depth unprojection and reprojection.

Frames follow ``docs/conventions.md``: OpenCV optical cameras, ``T_wc`` camera-to-world poses,
quaternions (x, y, z, w), depth in metres along the optical axis.
"""
from vln_core.geometry.camera import PinholeCamera
from vln_core.geometry.reproject import (
    MIN_POSITIVE_DEPTH_M,
    depth_from_uint16_mm,
    depth_to_uint16_mm,
    pixel_grid,
    project_points,
    reproject_depth,
    unproject_depth,
    valid_depth_mask,
)
from vln_core.geometry.transforms import (
    R_BODY_FROM_OPTICAL,
    as_float_tensor,
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

__all__ = [
    "PinholeCamera",
    "MIN_POSITIVE_DEPTH_M",
    "depth_from_uint16_mm",
    "depth_to_uint16_mm",
    "pixel_grid",
    "project_points",
    "reproject_depth",
    "unproject_depth",
    "valid_depth_mask",
    "R_BODY_FROM_OPTICAL",
    "as_float_tensor",
    "body_to_optical_pose",
    "camera_pose_from_base",
    "invert_pose",
    "is_rotation",
    "make_pose",
    "matrix_to_quat",
    "optical_to_body_pose",
    "pose_from_xyz_quat",
    "pose_to_xyz_quat",
    "quat_to_matrix",
    "transform_points",
    "yaw_of_pose",
]

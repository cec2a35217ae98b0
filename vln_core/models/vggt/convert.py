"""VGGT's output conventions -> ours. The only place that knows VGGT's conventions.

VGGT (see the paper and its ``pose_encoding_to_extri_intri``):

* pose encoding ``(..., S, 9)`` = ``[t (3), quaternion (x, y, z, w) scalar last (4), fov_h, fov_w]``
  of the **world-to-camera** extrinsics ``E_i = [R | t]`` (``p_cam = R p_world + t``), OpenCV
  axes (x right, y down, z forward); the quaternion need not be unit (it is normalised);
* world = the camera of the **first** frame of the clip (``E_0`` ~ identity), scale normalised by
  the network (not metres unless rescaled);
* intrinsics from the fovs: ``fy = (H/2) / tan(fov_h/2)``, ``fx = (W/2) / tan(fov_w/2)``, principal
  point ``(W/2, H/2)`` with pixel centres at integer coordinates (what VGGT's own unprojection uses);
* depth along the optical axis; world points in the first frame's camera.

Ours (``docs/conventions.md``): OpenCV axes, ``T_<to><from>`` 4x4 matrices, and the model's
contract is **camera-to-current** ``T_cur_cam`` where the current frame is the **last** one.
So ``T_cur_cam_i = E_cur @ inv(E_i)`` and ``p_cur = E_cur p_world``.
"""
from __future__ import annotations

import torch

from vln_core.geometry.transforms import invert_pose, make_pose, quat_to_matrix, transform_points
from vln_core.models.geometry_encoder import extrinsics_intrinsics_to_pose_encoding

__all__ = [
    "vggt_world_to_camera",
    "vggt_intrinsics",
    "vggt_to_camera_to_current",
    "vggt_points_to_current",
    "resize_intrinsics",
    "camera_to_current_pose_encoding",
]


def vggt_world_to_camera(pose_enc: torch.Tensor) -> torch.Tensor:
    """``(..., 9)`` VGGT pose encodings -> ``(..., 4, 4)`` world-to-camera ``E`` (world = first camera)."""
    if pose_enc.shape[-1] != 9:
        raise ValueError(f"VGGT pose encodings end in 9 values, got shape {tuple(pose_enc.shape)}")
    pose_enc = pose_enc.float()
    return make_pose(quat_to_matrix(pose_enc[..., 3:7]), pose_enc[..., :3])


def vggt_intrinsics(pose_enc: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """``(..., 9)`` -> ``(..., 3, 3)`` pinhole ``K`` at ``image_hw = (H, W)``, principal point ``(W/2, H/2)``."""
    H, W = image_hw
    pose_enc = pose_enc.float()
    K = torch.zeros(pose_enc.shape[:-1] + (3, 3), dtype=pose_enc.dtype, device=pose_enc.device)
    K[..., 0, 0] = (W / 2.0) / torch.tan(pose_enc[..., 8] / 2.0)
    K[..., 1, 1] = (H / 2.0) / torch.tan(pose_enc[..., 7] / 2.0)
    K[..., 0, 2] = W / 2.0
    K[..., 1, 2] = H / 2.0
    K[..., 2, 2] = 1.0
    return K


def vggt_to_camera_to_current(pose_enc: torch.Tensor, image_hw: tuple[int, int], current: int = -1
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """VGGT pose encodings of a clip -> our camera-to-current poses and intrinsics.

    Args:
        pose_enc: ``(..., S, 9)`` VGGT encodings of the ``S`` frames (frame 0 = VGGT's world).
        image_hw: ``(H, W)`` the network ran at.
        current: index of the current frame (default the last, our contract).

    Returns:
        ``T_cur_cam (..., S, 4, 4)`` (``p_cur = T_cur_cam_i p_cam_i``; the current frame's is the
        identity) and ``K (..., S, 3, 3)``.
    """
    E = vggt_world_to_camera(pose_enc)  # (..., S, 4, 4) T_cam_world
    E_cur = E[..., current, :, :].unsqueeze(-3)  # (..., 1, 4, 4) T_cur_world
    return E_cur @ invert_pose(E), vggt_intrinsics(pose_enc, image_hw)


def vggt_points_to_current(world_points: torch.Tensor, pose_enc: torch.Tensor, current: int = -1) -> torch.Tensor:
    """VGGT world points (first camera's frame) -> points in the current camera's frame.

    Args:
        world_points: ``(..., S, H, W, 3)``.
        pose_enc: ``(..., S, 9)`` of the same clip.

    Returns:
        ``(..., S, H, W, 3)``.
    """
    E_cur = vggt_world_to_camera(pose_enc[..., current, :])  # (..., 4, 4)
    shape = world_points.shape
    flat = world_points.float().reshape(shape[:-4] + (-1, 3))  # (..., S*H*W, 3)
    return transform_points(E_cur, flat).reshape(shape)


def resize_intrinsics(K: torch.Tensor, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> torch.Tensor:
    """``K (..., 3, 3)`` of an image of ``from_hw`` -> the same camera resized to ``to_hw``
    (pixel centres at integer coordinates: ``u' = (u + 0.5) s - 0.5``)."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    out = K.clone()
    out[..., 0, 0] = K[..., 0, 0] * sx
    out[..., 1, 1] = K[..., 1, 1] * sy
    out[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    out[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return out


def camera_to_current_pose_encoding(T_cur_cam: torch.Tensor, K: torch.Tensor, image_hw: tuple[int, int]
                                    ) -> torch.Tensor:
    """Our 9-d encoding ``[t, quat xyzw, fov_h, fov_w]`` of ``T_cur_cam`` (what
    :class:`~vln_core.models.spatial_model.ModelOutputs.pose_enc` holds). Decoding it with
    :func:`~vln_core.models.geometry_encoder.pose_encoding_to_extrinsics_intrinsics` puts the
    principal point at ``((W-1)/2, (H-1)/2)``, half a pixel from VGGT's ``(W/2, H/2)``."""
    return extrinsics_intrinsics_to_pose_encoding(T_cur_cam, K, image_hw)

"""Depth maps <-> 3D points <-> pixels, and depth reprojection between posed views.

Frames (``docs/conventions.md``): cameras use OpenCV optical axes; ``T_wc`` is the camera-to-world
pose; depth is the z coordinate in the optical frame (metres, not the ray length); pixel
``(u, v)`` is column ``u``, row ``v`` with pixel centres at integer coordinates.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from vln_core.errors import InputError
from vln_core.geometry.transforms import as_float_tensor, invert_pose, transform_points

__all__ = [
    "valid_depth_mask",
    "depth_from_uint16_mm",
    "depth_to_uint16_mm",
    "pixel_grid",
    "unproject_depth",
    "project_points",
    "reproject_depth",
]

#: Points closer than this (metres, along the optical axis) count as "not in front" of a camera.
MIN_POSITIVE_DEPTH_M = 1e-6

_UINT16_INVALID = 65535


def valid_depth_mask(depth: Any) -> Any:
    """Where depth is a measurement: finite and > 0.

    Args:
        depth: depth in metres, any shape; numpy array or torch tensor.

    Returns:
        bool mask of the same shape and kind (numpy in -> numpy out, torch in -> torch out).
    """
    if isinstance(depth, torch.Tensor):
        # NaN fails both comparisons; two comparisons are cheaper than isfinite's four ops
        return (depth > 0) & (depth < float("inf"))
    arr = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        return np.isfinite(arr) & (arr > 0)


def depth_from_uint16_mm(arr: np.ndarray) -> np.ndarray:
    """Decode a 16-bit millimetre depth image (the ``.depth.png`` format) to metres.

    Args:
        arr: ``(H, W)`` uint16 numpy array, millimetres; 0 and 65535 mean "no measurement".

    Returns:
        ``(H, W)`` float32 metres with invalid pixels set to 0.
    """
    arr = np.asarray(arr)
    if arr.dtype != np.uint16:
        raise InputError(f"depth image must be uint16 millimetres, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InputError(f"depth image must be (H, W), got shape {arr.shape}")
    depth = arr.astype(np.float32) * np.float32(1e-3)
    depth[arr == _UINT16_INVALID] = 0.0
    return depth


def depth_to_uint16_mm(depth_m: Any) -> np.ndarray:
    """Encode metres as 16-bit millimetres (rounded); invalid or >= 65.535 m become 0.

    Args:
        depth_m: depth in metres, any shape (numpy or torch).

    Returns:
        uint16 numpy array of the same shape.
    """
    if isinstance(depth_m, torch.Tensor):
        depth_m = depth_m.detach().cpu().numpy()
    d = np.asarray(depth_m, dtype=np.float64)
    valid = valid_depth_mask(d)
    mm = np.zeros(d.shape, dtype=np.float64)
    mm[valid] = np.round(d[valid] * 1000.0)
    mm[(mm >= _UINT16_INVALID) | (mm < 1)] = 0
    return mm.astype(np.uint16)


def pixel_grid(height: int, width: int, stride: int = 1, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``u`` (columns) and ``v`` (rows) of ``img[::stride, ::stride]``.

    Returns:
        ``(u, v)``, each ``(ceil(H/stride), ceil(W/stride))``.
    """
    vs = torch.arange(0, height, stride, dtype=dtype, device=device)
    us = torch.arange(0, width, stride, dtype=dtype, device=device)
    v, u = torch.meshgrid(vs, us, indexing="ij")
    return u, v


def _batched(x: torch.Tensor, dims: int, name: str, shape_hint: str) -> tuple[torch.Tensor, bool]:
    """Add a batch dim to an unbatched input; returns (tensor, was_unbatched)."""
    if x.dim() == dims - 1:
        return x[None], True
    if x.dim() != dims:
        raise InputError(f"{name} must have shape {shape_hint}, got {tuple(x.shape)}")
    return x, False


def unproject_depth(depth: Any, K: Any, T_wc: Any | None = None, stride: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Back-project depth maps to 3D points.

    Args:
        depth: ``(B, H, W)`` depth in metres (z along the optical axis); 0/NaN/inf = invalid.
            ``(H, W)`` is accepted and gives unbatched outputs.
        K: ``(B, 3, 3)`` or ``(3, 3)`` intrinsics of the depth grid.
        T_wc: ``(B, 4, 4)`` or ``(4, 4)`` camera-to-world poses, or None for camera-frame points.
        stride: use pixels ``[::stride, ::stride]``.

    Returns:
        ``(points, valid)``: ``points (B, h, w, 3)`` in the world frame (the camera's optical
        frame if ``T_wc`` is None), ``h = ceil(H / stride)``; ``valid (B, h, w)`` bool. Invalid
        pixels have points exactly 0 and valid False.
    """
    if int(stride) != stride or stride < 1:
        raise InputError(f"stride must be a positive integer, got {stride}")
    depth = as_float_tensor(depth)
    depth, unbatched = _batched(depth, 3, "depth", "(B, H, W)")
    B, H, W = depth.shape
    K = as_float_tensor(K, dtype=depth.dtype, device=depth.device)
    if K.shape[-2:] != (3, 3) or K.dim() not in (2, 3) or (K.dim() == 3 and K.shape[0] not in (1, B)):
        raise InputError(f"K must have shape (B={B}, 3, 3) or (3, 3), got {tuple(K.shape)}")
    K = K.expand(B, 3, 3) if K.dim() == 3 else K[None].expand(B, 3, 3)

    d = depth[:, ::stride, ::stride]
    valid = valid_depth_mask(d)
    d = torch.where(valid, d, torch.zeros((), dtype=d.dtype, device=d.device))
    u, v = pixel_grid(H, W, stride, dtype=depth.dtype, device=depth.device)
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (h, w, 3)
    rays = torch.einsum("bij,hwj->bhwi", torch.linalg.inv(K), pix)  # (B, h, w, 3), z = 1
    points = rays * d[..., None]
    if T_wc is not None:
        T_wc = as_float_tensor(T_wc, dtype=depth.dtype, device=depth.device)
        if T_wc.shape[-2:] != (4, 4) or T_wc.dim() not in (2, 3) or (T_wc.dim() == 3 and T_wc.shape[0] not in (1, B)):
            raise InputError(f"T_wc must have shape (B={B}, 4, 4) or (4, 4), got {tuple(T_wc.shape)}")
        T_wc = T_wc.expand(B, 4, 4) if T_wc.dim() == 3 else T_wc[None].expand(B, 4, 4)
        h, w = d.shape[1:]
        points = transform_points(T_wc, points.reshape(B, h * w, 3)).reshape(B, h, w, 3)
        points = points * valid[..., None]
    if unbatched:
        return points[0], valid[0]
    return points, valid


def project_points(points_w: Any, K: Any, T_wc: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into posed cameras.

    Args:
        points_w: ``(B, N, 3)`` points in the world frame.
        K: ``(B, 3, 3)`` intrinsics (``(3, 3)`` broadcasts).
        T_wc: ``(B, 4, 4)`` camera-to-world poses (``(4, 4)`` broadcasts).

    Returns:
        ``(uv, z)``: ``uv (B, N, 2)`` pixel coordinates (column, row; pixel centres at integers),
        NaN where the point is not in front of the camera (``z <= 1e-6``); ``z (B, N)`` depth
        along the optical axis in metres (negative = behind the camera).
    """
    points_w = as_float_tensor(points_w)
    if points_w.dim() != 3 or points_w.shape[-1] != 3:
        raise InputError(f"points_w must have shape (B, N, 3), got {tuple(points_w.shape)}")
    K = as_float_tensor(K, dtype=points_w.dtype, device=points_w.device)
    T_wc = as_float_tensor(T_wc, dtype=points_w.dtype, device=points_w.device)
    if K.shape[-2:] != (3, 3):
        raise InputError(f"K must have shape (B, 3, 3), got {tuple(K.shape)}")
    if T_wc.shape[-2:] != (4, 4):
        raise InputError(f"T_wc must have shape (B, 4, 4), got {tuple(T_wc.shape)}")
    p_c = transform_points(invert_pose(T_wc), points_w)  # (B, N, 3)
    z = p_c[..., 2]
    in_front = z > MIN_POSITIVE_DEPTH_M
    safe_z = torch.where(in_front, z, torch.ones_like(z))
    pix = p_c @ K.transpose(-1, -2)  # (B, N, 3)
    uv = pix[..., :2] / safe_z[..., None]
    uv = torch.where(in_front[..., None], uv, torch.full_like(uv, float("nan")))
    return uv, z


def reproject_depth(depth_src: Any, K_src: Any, T_wc_src: Any, K_dst: Any, T_wc_dst: Any,
                    dst_size: Sequence[int]) -> torch.Tensor:
    """Render the source view's depth surface into another camera (z-buffer, nearest pixel).

    Each valid source pixel becomes a 3D point, is projected into the destination camera and
    rounded to the nearest destination pixel; where several land on one pixel the nearest
    (smallest z) wins. No hole filling: pixels nothing lands on are 0.

    Args:
        depth_src: ``(H, W)`` source depth in metres.
        K_src: ``(3, 3)`` source intrinsics.
        T_wc_src: ``(4, 4)`` source camera-to-world pose.
        K_dst: ``(3, 3)`` destination intrinsics.
        T_wc_dst: ``(4, 4)`` destination camera-to-world pose.
        dst_size: ``(H_dst, W_dst)``.

    Returns:
        ``(H_dst, W_dst)`` float tensor: depth of the source surface along the destination's
        optical axis, 0 where nothing lands.
    """
    depth_src = as_float_tensor(depth_src)
    if depth_src.dim() != 2:
        raise InputError(f"depth_src must have shape (H, W), got {tuple(depth_src.shape)}")
    H_dst, W_dst = (int(s) for s in dst_size)
    points, valid = unproject_depth(depth_src[None], K_src, T_wc_src)
    points = points.reshape(1, -1, 3)[:, valid.reshape(-1)]
    uv, z = project_points(points, as_float_tensor(K_dst)[None], as_float_tensor(T_wc_dst)[None])
    uv, z = uv[0], z[0]
    ui = torch.round(uv[:, 0])
    vi = torch.round(uv[:, 1])
    keep = (z > MIN_POSITIVE_DEPTH_M) & (ui >= 0) & (ui <= W_dst - 1) & (vi >= 0) & (vi <= H_dst - 1)
    flat = (vi[keep].long() * W_dst + ui[keep].long())
    out = torch.full((H_dst * W_dst,), float("inf"), dtype=depth_src.dtype, device=depth_src.device)
    out.scatter_reduce_(0, flat, z[keep].to(out.dtype), reduce="amin", include_self=True)
    out = torch.where(torch.isinf(out), torch.zeros_like(out), out)
    return out.reshape(H_dst, W_dst)

"""Fusion of geometry and semantic tokens with 3D positional encodings.

For each chosen frame (the N_k keyframes and the current view), geometry tokens and semantic
tokens are resampled to one common patch grid, concatenated and projected, then two encodings
are added:

* a 3D positional encoding of each patch's world coordinates: the patch average of the
  unprojected predicted depth, moved into the current camera's frame with the predicted pose
  (the "world" of one update is the current camera, OpenCV optical axes, metres);
  ``sinusoidal`` (NeRF-style sines/cosines of normalised xyz at octave frequencies, then a
  linear map) or ``mlp`` (a small MLP on normalised xyz);
* a learned frame-slot embedding: slot ``i < N_k`` for the i-th keyframe, slot ``N_k`` for the
  current view.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vln_core.errors import InputError
from vln_core.geometry.reproject import pixel_grid, valid_depth_mask
from vln_core.geometry.transforms import transform_points

__all__ = [
    "resample_token_grid",
    "patch_world_coordinates",
    "SinusoidalPositionalEncoding3D",
    "MLPPositionalEncoding3D",
    "build_positional_encoding_3d",
    "TokenFusion",
]


def resample_token_grid(tokens: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resample row-major token maps to another grid.

    Args:
        tokens: ``(..., h*w, D)`` tokens on ``src_grid = (h, w)``.
        dst_grid: ``(h2, w2)``.

    Returns:
        ``(..., h2*w2, D)``.
    """
    h, w = src_grid
    if tokens.shape[-2] != h * w:
        raise InputError(f"tokens have {tokens.shape[-2]} positions, grid {src_grid} needs {h * w}")
    if tuple(src_grid) == tuple(dst_grid):
        return tokens
    lead, D = tokens.shape[:-2], tokens.shape[-1]
    maps = tokens.reshape(-1, h, w, D).permute(0, 3, 1, 2)
    maps = F.interpolate(maps, size=dst_grid, mode="bilinear", align_corners=False)
    return maps.permute(0, 2, 3, 1).reshape(*lead, dst_grid[0] * dst_grid[1], D)


def patch_world_coordinates(depth: torch.Tensor, K: torch.Tensor, T_cur_cam: torch.Tensor, grid: tuple[int, int]
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch 3D points in the current camera frame from depth and poses.

    Every valid pixel is back-projected with the zero-skew pinhole ``K`` of the conventions
    (``x = (u - cx) / fx * d``, ``y = (v - cy) / fy * d``, ``z = d``; written out instead of
    :func:`vln_core.geometry.reproject.unproject_depth` because its general ``linalg.inv`` has no
    ONNX export and this runs inside the exported network), moved with ``T_cur_cam``, and the
    points are averaged over the valid pixels of each patch cell.

    Args:
        depth: ``(M, H, W)`` depth in metres (invalid = 0/NaN/inf).
        K: ``(M, 3, 3)`` intrinsics at ``(H, W)``.
        T_cur_cam: ``(M, 4, 4)`` camera-to-current poses.
        grid: ``(h, w)`` patch grid.

    Returns:
        ``(xyz (M, h, w, 3), valid (M, h, w) bool)``; patches without a valid pixel are 0 and
        invalid.
    """
    if depth.dim() != 3:
        raise InputError(f"depth must have shape (M, H, W), got {tuple(depth.shape)}")
    M, H, W = depth.shape
    if K.shape != (M, 3, 3) or T_cur_cam.shape != (M, 4, 4):
        raise InputError(f"K must be (M={M}, 3, 3) and T_cur_cam (M, 4, 4), got {tuple(K.shape)}, {tuple(T_cur_cam.shape)}")
    valid = valid_depth_mask(depth)
    d = torch.where(valid, depth, torch.zeros((), dtype=depth.dtype, device=depth.device))
    u, v = pixel_grid(H, W, dtype=depth.dtype, device=depth.device)  # (H, W) each
    fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]
    cx, cy = K[:, 0, 2, None, None], K[:, 1, 2, None, None]
    cam = torch.stack([(u - cx) / fx * d, (v - cy) / fy * d, d], dim=-1)  # (M, H, W, 3)
    points = transform_points(T_cur_cam, cam.reshape(M, H * W, 3)).reshape(M, H, W, 3)
    weights = valid.to(points.dtype)[:, None]  # (M, 1, H, W)
    summed = F.adaptive_avg_pool2d(points.permute(0, 3, 1, 2) * weights, grid)
    counts = F.adaptive_avg_pool2d(weights, grid)
    xyz = summed / counts.clamp(min=1e-6)
    return xyz.permute(0, 2, 3, 1), counts[:, 0] > 0


class SinusoidalPositionalEncoding3D(nn.Module):
    """NeRF-style encoding: ``[p, sin(2^k pi p), cos(2^k pi p)]_{k<L}`` of ``p = xyz / scale``,
    then a linear map to ``dim``.

    Args:
        dim: output width.
        num_frequencies: ``L`` octaves.
        scale_m: metres that map to 1 (indoor scenes: a few metres).
    """

    def __init__(self, dim: int, num_frequencies: int = 8, scale_m: float = 8.0) -> None:
        super().__init__()
        self.scale_m = float(scale_m)
        self.register_buffer("frequencies", (2.0 ** torch.arange(num_frequencies)) * math.pi, persistent=False)
        self.proj = nn.Linear(3 + 6 * num_frequencies, dim)

    def features(self, xyz: torch.Tensor) -> torch.Tensor:
        """``(..., 3)`` metres -> ``(..., 3 + 6L)`` fixed sinusoidal features."""
        p = xyz / self.scale_m
        angles = (p[..., :, None] * self.frequencies).flatten(-2)  # (..., 3L)
        return torch.cat([p, torch.sin(angles), torch.cos(angles)], dim=-1)

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        """``(..., 3)`` points (metres, current camera frame) -> ``(..., dim)``."""
        if xyz.shape[-1] != 3:
            raise InputError(f"xyz must end in 3 coordinates, got shape {tuple(xyz.shape)}")
        return self.proj(self.features(xyz))


class MLPPositionalEncoding3D(nn.Module):
    """A learned encoding: MLP on ``xyz / scale`` -> ``dim``."""

    def __init__(self, dim: int, hidden: int = 128, scale_m: float = 8.0) -> None:
        super().__init__()
        self.scale_m = float(scale_m)
        self.mlp = nn.Sequential(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, dim))

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        """``(..., 3)`` points (metres, current camera frame) -> ``(..., dim)``."""
        if xyz.shape[-1] != 3:
            raise InputError(f"xyz must end in 3 coordinates, got shape {tuple(xyz.shape)}")
        return self.mlp(xyz / self.scale_m)


def build_positional_encoding_3d(kind: str, dim: int) -> nn.Module:
    """``"sinusoidal"`` or ``"mlp"`` (``model.pos_encoding_3d``) -> the encoding module."""
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding3D(dim)
    if kind == "mlp":
        return MLPPositionalEncoding3D(dim)
    raise InputError(f"model.pos_encoding_3d must be 'sinusoidal' or 'mlp', got {kind!r}")


class TokenFusion(nn.Module):
    """Geometry + semantic tokens of the chosen frames -> fused tokens on one grid.

    Args:
        geometry_dim, semantic_dim: input widths.
        dim: fused width.
        num_slots: frame slots (N_k keyframes + 1 current).
        pos_encoding_3d: ``"sinusoidal"`` or ``"mlp"``.
    """

    def __init__(self, geometry_dim: int, semantic_dim: int, dim: int, num_slots: int,
                 pos_encoding_3d: str = "sinusoidal") -> None:
        super().__init__()
        self.geometry_norm = nn.LayerNorm(geometry_dim)
        self.semantic_norm = nn.LayerNorm(semantic_dim)
        self.join = nn.Sequential(nn.Linear(geometry_dim + semantic_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.pos3d = build_positional_encoding_3d(pos_encoding_3d, dim)
        self.invalid_position = nn.Parameter(torch.zeros(dim))
        self.slot_embed = nn.Embedding(num_slots, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, geometry_tokens: torch.Tensor, geometry_grid: tuple[int, int], semantic_tokens: torch.Tensor,
                semantic_grid: tuple[int, int], xyz: torch.Tensor, xyz_valid: torch.Tensor, slots: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        """Args:
            geometry_tokens: ``(B, F, hg*wg, Dg)`` on ``geometry_grid``.
            semantic_tokens: ``(B, F, hs*ws, Ds)`` on ``semantic_grid``.
            xyz: ``(B, F, h, w, 3)`` patch points on the common grid (current camera frame).
            xyz_valid: ``(B, F, h, w)`` bool.
            slots: ``(F,)`` long slot index of each frame.
            grid: ``(h, w)`` the common token grid.

        Returns:
            ``(B, F, h*w, D)`` fused tokens on the common grid.
        """
        B, Fr = geometry_tokens.shape[:2]
        if semantic_tokens.shape[:2] != (B, Fr):
            raise InputError(
                f"semantic tokens {tuple(semantic_tokens.shape)} and geometry tokens {tuple(geometry_tokens.shape)} "
                "must cover the same (B, frames)"
            )
        h, w = grid
        if xyz.shape != (B, Fr, h, w, 3):
            raise InputError(f"xyz must have shape {(B, Fr, h, w, 3)}, got {tuple(xyz.shape)}")
        geo = resample_token_grid(self.geometry_norm(geometry_tokens), geometry_grid, grid)
        sem = resample_token_grid(self.semantic_norm(semantic_tokens), semantic_grid, grid)
        fused = self.join(torch.cat([geo, sem], dim=-1))
        pe = self.pos3d(xyz.reshape(B, Fr, h * w, 3))
        valid = xyz_valid.reshape(B, Fr, h * w, 1)
        pe = torch.where(valid, pe, self.invalid_position.expand_as(pe))
        fused = fused + pe + self.slot_embed(slots)[None, :, None, :]
        return self.norm(fused)

"""Ground-truth frame-indexed inter-frame heatmaps from posed depth.

For the current camera ``c`` and each keyframe ``k``, the heatmap over ``c``'s image says where
``k``'s content lands: every valid depth pixel of ``k`` becomes a world point (pooled into one
weighted point per ``source_stride x source_stride`` cell, see :func:`pool_keyframe_points`), is
projected into ``c``, bilinearly splatted onto ``c``'s pixel grid and blurred with a Gaussian of
``sigma_px`` pixels. All masses and fractions count keyframe pixels. Points that land inside ``c``'s image are split
into *visible* (in front of ``c``'s own surfaces, or where ``c`` has no depth) and *hidden*
(behind ``c``'s measured surface by more than ``occlusion_margin_m + occlusion_margin_rel * z``);
the rest are *out of view* (outside the image or behind the camera) and summarised by a
fraction and a bearing.

Frames and shapes: OpenCV optical cameras, ``T_wc`` camera-to-world, depth in metres along the
optical axis, heatmaps ``(K, H, W)`` float32 on the current frame's grid (see
``docs/conventions.md``). Bearings are radians in ``c``'s horizontal plane (its optical x-z
plane): 0 straight ahead, positive to the left, range (-pi, pi], near +-pi behind.
"""
from __future__ import annotations

import dataclasses

import functools
import math
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vln_core.config import HeatmapConfig
from vln_core.errors import InputError
from vln_core.geometry.reproject import MIN_POSITIVE_DEPTH_M, unproject_depth, valid_depth_mask
from vln_core.geometry.transforms import as_float_tensor, invert_pose

__all__ = [
    "NO_OVERLAP_FRACTION",
    "SPACING_TO_SIGMA",
    "InterFrameHeatmaps",
    "gaussian_blur",
    "splat_bilinear",
    "pool_keyframe_points",
    "frame_indexed_heatmaps",
    "heatmaps_from_config",
    "predicted_depth_config",
]

#: A keyframe "overlaps" the current view when at least this fraction of its valid points lands
#: inside the current image (visible or hidden). Below it the keyframe's maps are exactly zero
#: and ``has_overlap`` is False: a handful of stray points (depth noise at image borders) should
#: not produce a normalised heatmap made of a few blurred dots.
NO_OVERLAP_FRACTION = 1e-3

#: Blur sigma per pixel of sample spacing when samples land sparser than the grid (see
#: ``adaptive_sigma``): 0.5 fills the gaps of a regular lattice without smearing it further.
SPACING_TO_SIGMA = 0.5
#: Samples count as sparse (gaps between them on the grid) above this spacing in pixels.
SPARSE_SPACING_PX = 1.5


@dataclass
class InterFrameHeatmaps:
    """Where each keyframe's content lands in the current view.

    Attributes (torch tensors; numpy arrays after :meth:`numpy`):
        heatmap: ``(K, H, W)`` float32 on the current image grid. All of keyframe k's valid
            points that land inside the image (visible and hidden), splatted and blurred,
            normalised to sum 1 when ``has_overlap[k]``; exactly zeros otherwise.
        occluded: ``(K, H, W)`` the part of ``heatmap`` from hidden points (behind the current
            frame's own surfaces); ``0 <= occluded <= heatmap``; zeros without current depth.
        in_view_fraction: ``(K,)`` fraction of k's valid points in front of c, inside the image
            and not hidden.
        occluded_fraction: ``(K,)`` fraction inside the image but hidden.
        out_of_view_fraction: ``(K,)`` fraction outside the image or behind the camera.
            The three fractions sum to 1 (all 0 when k has no valid depth).
        out_of_view_bearing: ``(K,)`` radians, circular mean direction of the out-of-view points
            in c's horizontal plane (0 ahead, + left, +-pi behind); NaN when there are none.
        has_overlap: ``(K,)`` bool, see :data:`NO_OVERLAP_FRACTION`.
        num_valid: ``(K,)`` int64 number of valid keyframe depth pixels (full resolution).
    """

    heatmap: Any
    occluded: Any
    in_view_fraction: Any
    occluded_fraction: Any
    out_of_view_fraction: Any
    out_of_view_bearing: Any
    has_overlap: Any
    num_valid: Any

    @property
    def num_keyframes(self) -> int:
        return int(self.heatmap.shape[0])

    def to(self, device: torch.device | str) -> "InterFrameHeatmaps":
        """Copy with every tensor on ``device``."""
        return InterFrameHeatmaps(**{f.name: torch.as_tensor(getattr(self, f.name)).to(device) for f in fields(self)})

    def numpy(self) -> "InterFrameHeatmaps":
        """Copy whose fields are numpy arrays (for messages, files and drawing)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        return InterFrameHeatmaps(**out)


#: Grids up to this many pixels per side are blurred with banded matrix products (BLAS is much
#: faster than single-channel convolution there); larger grids use ``F.conv2d``.
_MATMUL_BLUR_MAX_SIDE = 320


@functools.lru_cache(maxsize=32)
def _gaussian_kernel(sigma_px: float, dtype: torch.dtype, device: str) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma_px)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma_px) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=32)
def _blur_matrix(n: int, sigma_px: float, dtype: torch.dtype, device: str) -> torch.Tensor:
    """(n, n) banded matrix M with ``(M @ x)`` = zero-padded 1D Gaussian blur of x (M symmetric)."""
    kernel = _gaussian_kernel(sigma_px, torch.float64, "cpu")
    radius = (kernel.numel() - 1) // 2
    offset = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    band = offset.abs() <= radius
    m = torch.where(band, kernel[(offset + radius).clamp(0, 2 * radius)], torch.zeros((), dtype=torch.float64))
    return m.to(dtype=dtype, device=device)


def gaussian_blur(maps: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur with zero padding (mass near the border leaks out).

    Args:
        maps: ``(B, H, W)`` float maps.
        sigma_px: standard deviation in pixels; 0 returns ``maps`` unchanged. The kernel is
            truncated at ``ceil(3 * sigma_px)`` pixels and normalised to sum 1.

    Returns:
        ``(B, H, W)`` blurred maps.
    """
    if sigma_px < 0:
        raise InputError(f"sigma_px must be >= 0, got {sigma_px}")
    if sigma_px == 0:
        return maps
    H, W = maps.shape[-2:]
    sigma_px = float(sigma_px)
    device = str(maps.device)
    if max(H, W) <= _MATMUL_BLUR_MAX_SIDE:
        rows = _blur_matrix(H, sigma_px, maps.dtype, device)
        cols = _blur_matrix(W, sigma_px, maps.dtype, device)
        return rows @ (maps @ cols)
    kernel = _gaussian_kernel(sigma_px, maps.dtype, device)
    radius = (kernel.numel() - 1) // 2
    out = maps[:, None]
    out = F.conv2d(out, kernel.view(1, 1, 1, -1), padding=(0, radius))
    out = F.conv2d(out, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    return out[:, 0]


def splat_bilinear(uv: torch.Tensor, weights: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Accumulate weighted points onto pixel grids with bilinear weights.

    Coordinates are clamped to the pixel-centre range ``[0, W-1] x [0, H-1]`` first, so a point
    in the outer half pixel puts all its weight on the border pixels and no mass is lost.

    Args:
        uv: ``(B, N, 2)`` pixel coordinates (column, row); entries with weight 0 may be NaN.
        weights: ``(B, N)`` non-negative weights, or ``(C, B, N)`` for C weight channels that
            share the positions (one scatter for all of them).
        size: ``(H, W)`` of the grid, both >= 2.

    Returns:
        ``(B, H, W)`` maps (``(C, B, H, W)`` for channelled weights); map b sums to
        ``weights[..., b, :].sum()``.
    """
    H, W = (int(s) for s in size)
    if H < 2 or W < 2:
        raise InputError(f"splat grid must be at least 2x2, got {H}x{W}")
    channelled = weights.dim() == 3
    weights_c = weights if channelled else weights[None]
    C, B, N = weights_c.shape
    if uv.shape != (B, N, 2):
        raise InputError(f"uv must have shape (B={B}, N={N}, 2) to match weights, got {tuple(uv.shape)}")
    uv = torch.nan_to_num(uv, nan=0.0, posinf=0.0, neginf=0.0)
    u = uv[..., 0].clamp(0.0, W - 1.0)
    v = uv[..., 1].clamp(0.0, H - 1.0)
    u0 = u.floor().clamp(max=W - 2)
    v0 = v.floor().clamp(max=H - 2)
    fu = u - u0
    fv = v - v0
    base = (torch.arange(B, device=uv.device) * (H * W))[:, None]
    i00 = base + v0.long() * W + u0.long()
    index = torch.stack([i00, i00 + 1, i00 + W, i00 + W + 1]).reshape(-1)  # (4 B N,)
    corner = torch.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv])  # (4, B, N)
    src = (weights_c[:, None] * corner[None]).reshape(C, -1)
    out = torch.zeros(C, B * H * W, dtype=weights.dtype, device=weights.device)
    out.index_add_(1, index, src)
    out = out.view(C, B, H, W)
    return out if channelled else out[0]


def pool_keyframe_points(
    depth: torch.Tensor, K: torch.Tensor, stride: int, edge_margin_m: float = 0.05, edge_margin_rel: float = 0.02
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keyframe depth -> one weighted 3D point per ``stride x stride`` cell (camera frame).

    Plain strided sampling aliases: real depth maps have regular hole patterns (registration
    leaves a lattice of invalid rows and columns) that beat with the stride into strong moire in
    the heatmap. Instead every cell with at least one valid pixel becomes one point carrying the
    number of its valid pixels as weight, so the total mass is the valid-pixel count. The point
    is the mean of the cell's valid 3D points when they lie on one surface (depth spread within
    ``edge_margin_m + edge_margin_rel * z_min``), else the nearest of them, so cells straddling
    a depth edge do not invent a point floating between two surfaces. ``stride = 1`` is exactly
    one point per valid pixel with weight 1.

    Args:
        depth: ``(B, h, w)`` depth in metres (0/NaN/inf invalid).
        K: ``(B, 3, 3)`` intrinsics of the depth grid.
        stride: cell size in pixels (the image is padded with invalid pixels to a multiple).

    Returns:
        ``(points, weights)``: ``points (B, N, 3)`` in the depth camera's optical frame,
        ``N = ceil(h / stride) * ceil(w / stride)``; ``weights (B, N)`` valid-pixel counts (0 for
        empty cells, whose points are 0).
    """
    B, h, w = depth.shape
    if stride == 1:
        points, valid = unproject_depth(depth, K)
        return points.reshape(B, h * w, 3), valid.reshape(B, h * w).to(depth.dtype)
    hp, wp = -(-h // stride) * stride, -(-w // stride) * stride
    if (hp, wp) != (h, w):
        depth = F.pad(depth, (0, wp - w, 0, hp - h))  # padding is invalid (0)
    dtype = depth.dtype
    valid = valid_depth_mask(depth)
    d = depth.masked_fill(~valid, 0.0)
    hc, wc = hp // stride, wp // stride
    n_off = stride * stride

    def by_offset(t: torch.Tensor) -> torch.Tensor:
        """(B, hp, wp) -> (B, stride^2, hc, wc): slot j holds pixel (dy, dx) = divmod(j, stride) of each cell."""
        return t.reshape(B, hc, stride, wc, stride).permute(0, 2, 4, 1, 3).reshape(B, n_off, hc, wc)

    d_off = by_offset(d)
    valid_off = by_offset(valid)
    offset = torch.arange(n_off, device=depth.device)
    off_x = (offset % stride).to(dtype)[None, :, None, None]
    off_y = (offset // stride).to(dtype)[None, :, None, None]
    cell_u = (torch.arange(wc, device=depth.device) * stride).to(dtype)[None, None, :]  # (1, 1, wc)
    cell_v = (torch.arange(hc, device=depth.device) * stride).to(dtype)[None, :, None]  # (1, hc, 1)
    count = valid_off.sum(dim=1).to(dtype)  # (B, hc, wc)
    sum_z = d_off.sum(dim=1)
    sum_zu = (d_off * off_x).sum(dim=1) + cell_u * sum_z
    sum_zv = (d_off * off_y).sum(dim=1) + cell_v * sum_z
    invalid_off = ~valid_off
    z_min, nearest = d_off.masked_fill(invalid_off, float("inf")).min(dim=1)
    z_max = d_off.masked_fill(invalid_off, float("-inf")).amax(dim=1)
    near_u = cell_u + (nearest % stride).to(dtype)
    near_v = cell_v + (nearest // stride).to(dtype)
    # a 3D point is z * K^-1 [u, v, 1], linear in (z u, z v, z): pool those, unproject once per cell
    mean_zuv = torch.stack([sum_zu, sum_zv, sum_z], dim=1) / count.clamp(min=1)[:, None]
    straddles = (count > 1) & (z_max - z_min > edge_margin_m + edge_margin_rel * z_min)
    near_zuv = torch.stack([z_min * near_u, z_min * near_v, z_min], dim=1)
    zuv = torch.where(straddles[:, None], near_zuv, mean_zuv)  # (B, 3, hc, wc)
    K_inv = torch.linalg.inv(K)[:, :, :, None]  # (B, 3, 3, 1)
    zuv = zuv.reshape(B, 3, -1)
    # K^-1 @ zuv elementwise: a batched matmul with inner size 3 is much slower on CPU
    points = torch.stack([K_inv[:, i, 0] * zuv[:, 0] + K_inv[:, i, 1] * zuv[:, 1] + K_inv[:, i, 2] * zuv[:, 2]
                          for i in range(3)], dim=-1)
    return points, count.reshape(B, -1)


def _check_matrix(x: torch.Tensor, n: int, batch: int, name: str) -> torch.Tensor:
    if x.shape == (n, n):
        return x[None].expand(batch, n, n)
    if x.dim() == 3 and x.shape[1:] == (n, n) and x.shape[0] in (1, batch):
        return x.expand(batch, n, n)
    raise InputError(f"{name} must have shape ({batch}, {n}, {n}) or ({n}, {n}), got {tuple(x.shape)}")


def frame_indexed_heatmaps(
    key_depth: Any,
    key_K: Any,
    key_T_wc: Any,
    cur_K: Any,
    cur_T_wc: Any,
    cur_size: Sequence[int],
    cur_depth: Any | None = None,
    sigma_px: float = 2.0,
    source_stride: int = 2,
    occlusion_margin_m: float = 0.05,
    occlusion_margin_rel: float = 0.02,
    min_overlap_fraction: float = NO_OVERLAP_FRACTION,
    adaptive_sigma: bool = True,
    depth_spread: float = 0.0,
) -> InterFrameHeatmaps:
    """Heatmaps over the current image of where each keyframe's depth content lands.

    Args:
        key_depth: ``(K, h, w)`` keyframe depth in metres (0/NaN/inf invalid).
        key_K: ``(K, 3, 3)`` (or ``(3, 3)`` shared) intrinsics of the keyframe depth grids.
        key_T_wc: ``(K, 4, 4)`` keyframe camera-to-world poses.
        cur_K: ``(3, 3)`` intrinsics of the current frame on the ``cur_size`` grid.
        cur_T_wc: ``(4, 4)`` current camera-to-world pose (same world as the keyframes).
        cur_size: ``(H, W)`` of the output heatmaps (the current image grid).
        cur_depth: ``(H, W)`` current depth in metres for the visibility test, or None (then
            nothing counts as hidden). Pixels without a measurement never hide anything.
        sigma_px: Gaussian blur sigma in pixels of the current grid (0: plain bilinear splat).
        source_stride: pool keyframe pixels in ``stride x stride`` cells, one weighted point
            each (:func:`pool_keyframe_points`; the margins below also decide which cells
            straddle a depth edge).
        occlusion_margin_m, occlusion_margin_rel: a point at depth ``z`` (in c) landing on a
            pixel where c measured ``d`` is hidden when ``z > d + margin_m + margin_rel * z``.
        min_overlap_fraction: see :data:`NO_OVERLAP_FRACTION`.
        adaptive_sigma: widen keyframe k's blur to ``max(sigma_px, SPACING_TO_SIGMA * s_k)``,
            when ``s_k > SPARSE_SPACING_PX``; ``s_k`` is the median spacing, in current pixels, of
            k's samples that land in view (``stride * (f_c / f_k) * (z_k / z_c)``). When the current camera is much closer
            to a surface than the keyframe was, its samples land sparser than the grid and a
            fixed sigma draws a lattice of dots instead of a surface.
        depth_spread: standard deviation of ``log(key_depth)`` (0: the depth is exact, as for the
            ground truth). Predicted depth is uncertain, and where a point lands moves along its
            epipolar line with its depth: each point is then also splatted at
            ``exp(+-sqrt(3) depth_spread)`` times its depth, weights 1/6, 2/3, 1/6 (three-point
            Gauss-Hermite), so the map is the expected landing. Only ``heatmap`` spreads;
            ``occluded`` (the hidden part, 2/3 of it then), the fractions, the bearing and
            ``has_overlap`` come from the depth as given.

    Returns:
        :class:`InterFrameHeatmaps` on ``key_depth``'s device, float32 unless the depth is float64.
    """
    key_depth = as_float_tensor(key_depth)
    if key_depth.dim() != 3:
        raise InputError(f"key_depth must have shape (K, h, w), got {tuple(key_depth.shape)}")
    if sigma_px < 0 or occlusion_margin_m < 0 or occlusion_margin_rel < 0 or not 0 <= depth_spread < 1:
        raise InputError(
            f"sigma_px and occlusion margins must be >= 0 and depth_spread in [0, 1), got sigma_px={sigma_px}, "
            f"occlusion_margin_m={occlusion_margin_m}, occlusion_margin_rel={occlusion_margin_rel}, "
            f"depth_spread={depth_spread}"
        )
    num_key = key_depth.shape[0]
    dtype, device = key_depth.dtype, key_depth.device
    H, W = (int(s) for s in cur_size)
    key_K = _check_matrix(as_float_tensor(key_K, dtype, device), 3, num_key, "key_K")
    key_T_wc = _check_matrix(as_float_tensor(key_T_wc, dtype, device), 4, num_key, "key_T_wc")
    cur_K = as_float_tensor(cur_K, dtype, device)
    cur_T_wc = as_float_tensor(cur_T_wc, dtype, device)
    if cur_K.shape != (3, 3):
        raise InputError(f"cur_K must have shape (3, 3), got {tuple(cur_K.shape)}")
    if cur_T_wc.shape != (4, 4):
        raise InputError(f"cur_T_wc must have shape (4, 4), got {tuple(cur_T_wc.shape)}")

    if int(source_stride) != source_stride or source_stride < 1:
        raise InputError(f"source_stride must be a positive integer, got {source_stride}")
    # keyframe pixels -> weighted points in each keyframe's camera -> current optical frame
    points_k, weight = pool_keyframe_points(key_depth, key_K, int(source_stride), occlusion_margin_m, occlusion_margin_rel)
    valid = weight > 0
    T_ck = invert_pose(cur_T_wc)[None] @ key_T_wc  # (K, 4, 4): keyframe camera -> current camera
    P = cur_K[None] @ T_ck[:, :3, :]  # (K, 3, 4) projection of keyframe-camera points into c
    X, Y, Z = points_k.unbind(-1)  # (K, N) each

    def linear(M: torch.Tensor, i: int) -> torch.Tensor:
        # elementwise 3x3 row times [X, Y, Z]: much faster than a matmul with inner size 3
        return M[:, i, 0, None] * X + M[:, i, 1, None] * Y + M[:, i, 2, None] * Z

    rows = {name: (linear(M, i), M[:, i, 3, None]) for name, (M, i) in
            {"x": (T_ck, 0), "z": (T_ck, 2), "u": (P, 0), "v": (P, 1), "w": (P, 2)}.items()}
    if cur_depth is not None:
        cur_depth = as_float_tensor(cur_depth, dtype, device)
        if cur_depth.shape != (H, W):
            raise InputError(f"cur_depth must have shape cur_size {(H, W)}, got {tuple(cur_depth.shape)}")

    def land(f: float) -> tuple[torch.Tensor, ...]:
        """``(z, u, v, inside)`` of the keyframe points at ``f`` times their depth."""
        z, w_proj = (f * rows[n][0] + rows[n][1] for n in ("z", "w"))  # w equals z for a pinhole K
        in_front = valid & (z > MIN_POSITIVE_DEPTH_M)
        safe_w = torch.where(in_front, w_proj, torch.ones_like(w_proj))
        u = (f * rows["u"][0] + rows["u"][1]) / safe_w
        v = (f * rows["v"][0] + rows["v"][1]) / safe_w
        return z, u, v, in_front & (u >= -0.5) & (u < W - 0.5) & (v >= -0.5) & (v < H - 0.5)

    x = rows["x"][0] + rows["x"][1]
    z, u, v, inside = land(1.0)
    if cur_depth is not None:
        ui = torch.round(u).clamp(0, W - 1).long()
        vi = torch.round(v).clamp(0, H - 1).long()
        ui = torch.where(inside, ui, torch.zeros_like(ui))
        vi = torch.where(inside, vi, torch.zeros_like(vi))
        d_c = cur_depth.reshape(-1)[vi * W + ui]
        hidden = inside & valid_depth_mask(d_c) & (z > d_c + occlusion_margin_m + occlusion_margin_rel * z)
    else:
        hidden = torch.zeros_like(inside)
    out_of_view = valid & ~inside

    def mass(mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, weight, torch.zeros_like(weight)).sum(dim=-1)

    total_mass = mass(valid)
    num_valid = total_mass.round().to(torch.int64)
    denom = total_mass.clamp(min=1)
    inside_mass = mass(inside)
    hidden_mass = mass(hidden)
    in_view_fraction = (inside_mass - hidden_mass) / denom
    occluded_fraction = hidden_mass / denom
    out_of_view_fraction = mass(out_of_view) / denom
    has_overlap = (inside_mass > 0) & (inside_mass / denom >= min_overlap_fraction)

    # splat all inside points and the hidden ones in one pass, blur, share the normaliser
    # (without current depth nothing is hidden: skip the second channel)
    zero = torch.zeros_like(weight)
    share = 1.0 if depth_spread <= 0 else 2.0 / 3.0
    channels = [torch.where(inside, weight * share, zero)]
    if cur_depth is not None:
        channels.append(torch.where(hidden, weight * share, zero))
    weights = torch.stack(channels)  # (C, K, N)
    raw = splat_bilinear(torch.stack([u, v], dim=-1), weights, (H, W))  # (C, K, H, W)
    if depth_spread > 0:  # the depth's uncertainty along each point's ray (see the docstring)
        step = math.exp(math.sqrt(3.0) * depth_spread)
        spread = [land(f)[1:] for f in (1.0 / step, step)]
        spread_w = torch.cat([torch.where(ins, weight / 6.0, zero) for _, _, ins in spread], dim=-1)
        spread_uv = torch.cat([torch.stack([uu, vv], dim=-1) for uu, vv, _ in spread], dim=1)
        raw[0] += splat_bilinear(spread_uv, spread_w, (H, W))  # the hidden part stays at the given depth
    raw = raw.reshape(len(channels) * num_key, H, W)
    maps = gaussian_blur(raw, sigma_px)
    if adaptive_sigma:
        # a blur width is a choice, not a prediction: no gradient through it
        spacing = float(source_stride) * (cur_K[0, 0] / key_K[:, 0, 0])[:, None] * (Z / torch.where(inside, z, torch.ones_like(z)))
        spacing = spacing.detach()
        spacing = torch.where(inside, spacing, torch.full_like(spacing, float("nan"))).nanmedian(dim=-1).values
        sigmas = torch.nan_to_num(spacing * SPACING_TO_SIGMA, nan=0.0)
        sparse = (spacing > SPARSE_SPACING_PX) & (sigmas > sigma_px + 0.25)
        for k in torch.nonzero(sparse).flatten().tolist():
            rows = [c * num_key + k for c in range(len(channels))]
            maps[rows] = gaussian_blur(raw[rows], float(sigmas[k]))
    heat = maps[:num_key]
    total = heat.sum(dim=(-1, -2))
    scale = torch.where(has_overlap & (total > 0), 1.0 / total.clamp(min=torch.finfo(dtype).tiny), torch.zeros_like(total))
    heatmap = heat * scale[:, None, None]
    if cur_depth is not None:
        occluded = torch.minimum(maps[num_key:] * scale[:, None, None], heatmap)
    else:
        occluded = torch.zeros_like(heatmap)

    # circular mean of out-of-view directions in c's x-z plane (bearing = atan2(-x, z))
    r = torch.sqrt(x * x + z * z)
    use = out_of_view & (r > MIN_POSITIVE_DEPTH_M)
    safe_r = torch.where(use, r, torch.ones_like(r))
    sum_left = torch.where(use, -x * weight / safe_r, torch.zeros_like(x)).sum(dim=-1)
    sum_fwd = torch.where(use, z * weight / safe_r, torch.zeros_like(z)).sum(dim=-1)
    bearing = torch.atan2(sum_left, sum_fwd)
    bearing = torch.where(use.any(dim=-1), bearing, torch.full_like(bearing, float("nan")))

    return InterFrameHeatmaps(
        heatmap=heatmap,
        occluded=occluded,
        in_view_fraction=in_view_fraction,
        occluded_fraction=occluded_fraction,
        out_of_view_fraction=out_of_view_fraction,
        out_of_view_bearing=bearing,
        has_overlap=has_overlap,
        num_valid=num_valid,
    )


def heatmaps_from_config(
    key_depth: Any,
    key_K: Any,
    key_T_wc: Any,
    cur_K: Any,
    cur_T_wc: Any,
    cur_size: Sequence[int],
    cur_depth: Any | None = None,
    *,
    cfg: HeatmapConfig,
) -> InterFrameHeatmaps:
    """:func:`frame_indexed_heatmaps` with sigma, stride, margins and overlap threshold from ``cfg``
    (the ``heatmap`` section of the project config). Shapes as there."""
    return frame_indexed_heatmaps(
        key_depth, key_K, key_T_wc, cur_K, cur_T_wc, cur_size, cur_depth,
        sigma_px=cfg.sigma_px,
        source_stride=cfg.source_stride,
        occlusion_margin_m=cfg.occlusion_margin_m,
        occlusion_margin_rel=cfg.occlusion_margin_rel,
        min_overlap_fraction=cfg.min_overlap_fraction,
        adaptive_sigma=cfg.adaptive_sigma,
        depth_spread=cfg.depth_spread,
    )


def predicted_depth_config(cfg: HeatmapConfig) -> HeatmapConfig:
    """The heatmap settings for *predicted* depth (the learned modes): the ground truth's, with
    ``predicted_occlusion_margin_rel`` as the relative occlusion margin and
    ``predicted_depth_spread`` as the depth's uncertainty."""
    return dataclasses.replace(cfg, occlusion_margin_rel=cfg.predicted_occlusion_margin_rel,
                               depth_spread=cfg.predicted_depth_spread)

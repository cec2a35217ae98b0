"""Model-free baselines for frame-indexed heatmaps, scored by the same evaluation as the model.

Every baseline answers the same question as the model (where does keyframe ``k``'s content land
in the current view?) and returns :class:`vln_core.heatmaps.InterFrameHeatmaps`, so the evaluation
compares maps *and* the in-view / hidden / out-of-view shares and bearings alike.

* :func:`prior_heatmaps` -- ``uniform`` and ``center`` maps (no geometry: shares from a prior).
* :func:`identity_heatmaps` -- the keyframe's content stays where it was in its own image.
* :func:`constant_depth_heatmaps` -- known poses, every pixel at one depth (no images used).
* :func:`classical_heatmaps_known_pose` -- ORB matches, epipolar-filtered with the known relative
  pose and triangulated; the sparse depths are spread over the image (inverse-distance weighting)
  and reprojected by the ground truth's own code. Where parallax is too small to triangulate (the
  camera only turned), depth does not matter for the reprojection and the constant depth is used.
* :func:`classical_heatmaps_homography` -- ORB matches, RANSAC homography, the keyframe's pixels
  warped into the current view (no poses needed).

A classical baseline whose matching fails reports *no overlap* (zero maps, everything out of view).

Images are ``(H, W, 3)`` uint8 RGB or ``(3, H, W)`` float in [0, 1]; poses camera-to-current
``T_cur_cam`` (OpenCV axes), depth metres, maps ``(K, H, W)`` on the current image grid.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from vln_core.config import HeatmapConfig
from vln_core.geometry.matching import MIN_MATCHES, orb_matches, triangulate_matches
from vln_core.heatmaps import InterFrameHeatmaps, gaussian_blur, heatmaps_from_config, splat_bilinear

__all__ = [
    "prior_heatmaps",
    "identity_heatmaps",
    "constant_depth_heatmaps",
    "classical_heatmaps_known_pose",
    "classical_heatmaps_homography",
    "orb_matches",
    "MIN_MATCHES",
]

def _no_overlap(num_key: int, size: Sequence[int]) -> dict:
    H, W = size
    return dict(heatmap=torch.zeros(H, W), occluded=torch.zeros(H, W), in_view_fraction=0.0, occluded_fraction=0.0,
                out_of_view_fraction=1.0, out_of_view_bearing=float("nan"), has_overlap=False, num_valid=0)


def _stack(rows: list[dict]) -> InterFrameHeatmaps:
    return InterFrameHeatmaps(
        heatmap=torch.stack([torch.as_tensor(r["heatmap"], dtype=torch.float32) for r in rows]),
        occluded=torch.stack([torch.as_tensor(r["occluded"], dtype=torch.float32) for r in rows]),
        in_view_fraction=torch.tensor([float(r["in_view_fraction"]) for r in rows]),
        occluded_fraction=torch.tensor([float(r["occluded_fraction"]) for r in rows]),
        out_of_view_fraction=torch.tensor([float(r["out_of_view_fraction"]) for r in rows]),
        out_of_view_bearing=torch.tensor([float(r["out_of_view_bearing"]) for r in rows]),
        has_overlap=torch.tensor([bool(r["has_overlap"]) for r in rows]),
        num_valid=torch.tensor([int(r["num_valid"]) for r in rows], dtype=torch.int64),
    )


def _row(hm: InterFrameHeatmaps, k: int) -> dict:
    return {name: getattr(hm, name)[k] for name in ("heatmap", "occluded", "in_view_fraction", "occluded_fraction",
                                                    "out_of_view_fraction", "out_of_view_bearing", "has_overlap", "num_valid")}


# ------------------------------------------------------------------------------------------ priors
def prior_heatmaps(kind: str, num_key: int, size: Sequence[int], in_view_fraction: float,
                   hidden_fraction: float = 0.0) -> InterFrameHeatmaps:
    """``uniform`` (every pixel alike) or ``center`` (Gaussian at the centre, sigma = min(H, W) / 4)
    maps for ``num_key`` keyframes, with the given shares (a prior: e.g. a data set's mean) and
    no bearing."""
    H, W = (int(s) for s in size)
    if kind == "uniform":
        m = torch.full((H, W), 1.0 / (H * W))
    elif kind == "center":
        ys = torch.arange(H, dtype=torch.float32)[:, None] - (H - 1) / 2
        xs = torch.arange(W, dtype=torch.float32)[None, :] - (W - 1) / 2
        sigma = 0.25 * min(H, W)
        m = torch.exp(-(xs**2 + ys**2) / (2 * sigma**2))
        m = m / m.sum()
    else:
        raise ValueError(f"unknown prior {kind!r}; use 'uniform' or 'center'")
    row = dict(heatmap=m, occluded=torch.zeros(H, W), in_view_fraction=in_view_fraction - hidden_fraction,
               occluded_fraction=hidden_fraction, out_of_view_fraction=1.0 - in_view_fraction,
               out_of_view_bearing=float("nan"), has_overlap=True, num_valid=H * W)
    return _stack([row] * num_key)


def identity_heatmaps(num_key: int, K: torch.Tensor, size: Sequence[int], cfg: HeatmapConfig,
                      depth_m: float = 2.0) -> InterFrameHeatmaps:
    """Content stays where it was in the keyframe's own image (identity motion), drawn by the
    reprojection itself (with identity poses the depth does not matter)."""
    H, W = (int(s) for s in size)
    depth = torch.full((num_key, H, W), float(depth_m))
    eye = torch.eye(4).expand(num_key, 4, 4)
    return heatmaps_from_config(depth, K, eye, K, torch.eye(4), (H, W), None, cfg=cfg)


def constant_depth_heatmaps(T_cur_key: torch.Tensor, K: torch.Tensor, size: Sequence[int], cfg: HeatmapConfig,
                            depth_m: float, key_valid: Optional[torch.Tensor] = None,
                            cur_valid: Optional[torch.Tensor] = None) -> InterFrameHeatmaps:
    """Known poses, every keyframe (and current) pixel at ``depth_m`` metres; no image is used.

    Args:
        T_cur_key: ``(K, 4, 4)`` keyframe camera-to-current poses.
        K: ``(3, 3)`` intrinsics on ``size``.
        key_valid / cur_valid: optional ``(K, H, W)`` / ``(H, W)`` masks of the pixels to place
            (the evaluation scores only pixels the ground truth has depth for).
    """
    H, W = (int(s) for s in size)
    n = T_cur_key.shape[0]
    depth = torch.full((n, H, W), float(depth_m))
    if key_valid is not None:
        depth = torch.where(key_valid, depth, torch.zeros_like(depth))
    cur = torch.full((H, W), float(depth_m))
    if cur_valid is not None:
        cur = torch.where(cur_valid, cur, torch.zeros_like(cur))
    return heatmaps_from_config(depth, K, T_cur_key, K, torch.eye(4), (H, W), cur, cfg=cfg)


# ------------------------------------------------------------------------------------------ classical
def _densify(points_uv: np.ndarray, depths: np.ndarray, size: Sequence[int], grid: int = 4) -> np.ndarray:
    """Spread sparse depths over an ``(H, W)`` image by inverse-distance weighting (power 2) on a
    ``1/grid`` lattice, then nearest-neighbour up-sampling. Returns ``(H, W)`` float32 metres."""
    H, W = (int(s) for s in size)
    h, w = -(-H // grid), -(-W // grid)
    gv, gu = np.meshgrid((np.arange(h) + 0.5) * grid - 0.5, (np.arange(w) + 0.5) * grid - 0.5, indexing="ij")
    d2 = (gu.reshape(-1, 1) - points_uv[None, :, 0]) ** 2 + (gv.reshape(-1, 1) - points_uv[None, :, 1]) ** 2
    wgt = 1.0 / (d2 + 4.0)
    inv_depth = (wgt * (1.0 / depths)[None]).sum(1) / wgt.sum(1)  # interpolate inverse depth (planes stay planes)
    coarse = (1.0 / inv_depth).reshape(h, w).astype(np.float32)
    return cv2.resize(coarse, (W, H), interpolation=cv2.INTER_NEAREST)


def classical_heatmaps_known_pose(key_images: Sequence, cur_image, K: torch.Tensor, T_cur_key: torch.Tensor,
                                  size: Sequence[int], cfg: HeatmapConfig, fallback_depth_m: float,
                                  key_valid: Optional[torch.Tensor] = None,
                                  cur_valid: Optional[torch.Tensor] = None) -> InterFrameHeatmaps:
    """ORB + known relative pose: triangulated, densified depth reprojected (see the module doc).

    Args:
        key_images: ``K`` keyframe images; ``cur_image`` the current image.
        K: ``(3, 3)`` intrinsics on ``size``; T_cur_key: ``(K, 4, 4)`` keyframe camera-to-current.
        fallback_depth_m: depth used where no point could be triangulated (pure rotation).
        key_valid / cur_valid: optional masks of the pixels to place (see
            :func:`constant_depth_heatmaps`).
    """
    H, W = (int(s) for s in size)
    Kn = K.detach().cpu().double().numpy()
    rows, cur_points_uv, cur_points_z = [], [], []
    key_depths = []
    usable = []
    for k, image in enumerate(key_images):
        T = T_cur_key[k].detach().cpu().double().numpy()
        pk, pc = orb_matches(image, cur_image)
        if len(pk) < MIN_MATCHES:
            usable.append(False)
            key_depths.append(np.zeros((H, W), np.float32))
            continue
        usable.append(True)
        keep, z_k, z_c = triangulate_matches(pk, pc, Kn, T)
        if keep.sum() >= MIN_MATCHES // 2:
            key_depths.append(_densify(pk[keep], z_k[keep], (H, W)))
            cur_points_uv.append(pc[keep])
            cur_points_z.append(z_c[keep])
        else:  # too little parallax to triangulate: the motion is (nearly) a rotation
            key_depths.append(np.full((H, W), fallback_depth_m, np.float32))
    if cur_points_uv:
        cur_depth = _densify(np.concatenate(cur_points_uv), np.concatenate(cur_points_z), (H, W))
    else:
        cur_depth = np.full((H, W), fallback_depth_m, np.float32)
    depth = torch.from_numpy(np.stack(key_depths))
    if key_valid is not None:
        depth = torch.where(key_valid, depth, torch.zeros_like(depth))
    cur = torch.from_numpy(cur_depth)
    if cur_valid is not None:
        cur = torch.where(cur_valid, cur, torch.zeros_like(cur))
    hm = heatmaps_from_config(depth, K.float(), T_cur_key.float(), K.float(), torch.eye(4), (H, W), cur, cfg=cfg)
    for k in range(len(key_images)):
        rows.append(_row(hm, k) if usable[k] else _no_overlap(1, (H, W)))
    return _stack(rows)


def classical_heatmaps_homography(key_images: Sequence, cur_image, K: torch.Tensor, size: Sequence[int],
                                  cfg: HeatmapConfig, key_valid: Optional[torch.Tensor] = None) -> InterFrameHeatmaps:
    """ORB + RANSAC homography (3 px): every keyframe pixel (cell of ``cfg.source_stride``) is
    warped into the current view, splatted and blurred like the ground truth; pixels warped
    outside the image (or behind the camera, homogeneous w <= 0) are out of view with a bearing
    from their ray. Nothing is hidden (a homography has no depth). No poses needed."""
    H, W = (int(s) for s in size)
    s = int(cfg.source_stride)
    Kn = K.detach().cpu().double().numpy()
    K_inv = np.linalg.inv(Kn)
    gv, gu = np.meshgrid(np.arange(0, H, s) + (s - 1) / 2.0, np.arange(0, W, s) + (s - 1) / 2.0, indexing="ij")
    rows = []
    for k, image in enumerate(key_images):
        pk, pc = orb_matches(image, cur_image)
        Hm = None
        if len(pk) >= MIN_MATCHES:
            Hm, inliers = cv2.findHomography(pk, pc, cv2.RANSAC, 3.0)
            if Hm is None or inliers is None or int(inliers.sum()) < MIN_MATCHES:
                Hm = None
        if Hm is None:
            rows.append(_no_overlap(1, (H, W)))
            continue
        weight = np.ones_like(gu)
        if key_valid is not None:  # pool the scored pixels per cell, as the ground truth does
            valid = key_valid[k].cpu().numpy().astype(np.float64)
            hp, wp = gu.shape
            pad = np.zeros((hp * s, wp * s))
            pad[:H, :W] = valid
            weight = pad.reshape(hp, s, wp, s).sum(axis=(1, 3))
        pts = np.stack([gu.ravel(), gv.ravel(), np.ones(gu.size)])
        q = Hm @ pts
        w = q[2]
        front = w > 1e-9
        u = q[0] / np.where(front, w, 1.0)
        v = q[1] / np.where(front, w, 1.0)
        wt = weight.ravel()
        inside = front & (u >= -0.5) & (u < W - 0.5) & (v >= -0.5) & (v < H - 0.5)
        total = wt.sum()
        if total <= 0 or wt[inside].sum() <= 0:
            rows.append(_no_overlap(1, (H, W)))
            continue
        uv = torch.from_numpy(np.stack([u, v], -1)[None]).float()
        raw = splat_bilinear(uv, torch.from_numpy(np.where(inside, wt, 0.0)[None]).float(), (H, W))
        m = gaussian_blur(raw, cfg.sigma_px)[0]
        m = m / m.sum().clamp(min=1e-12)
        out = ~inside & (wt > 0)
        ray = K_inv @ np.stack([q[0], q[1], q[2]])  # direction in the current camera (sign of w kept)
        bearing = float("nan")
        if out.any():
            x, z = ray[0][out], ray[2][out]
            r = np.maximum(np.hypot(x, z), 1e-12)
            bearing = math.atan2(float((-x / r * wt[out]).sum()), float((z / r * wt[out]).sum()))
        frac_in = float(wt[inside].sum() / total)
        rows.append(dict(heatmap=m, occluded=torch.zeros(H, W), in_view_fraction=frac_in, occluded_fraction=0.0,
                         out_of_view_fraction=1.0 - frac_in, out_of_view_bearing=bearing,
                         has_overlap=frac_in >= cfg.min_overlap_fraction, num_valid=int(total)))
    return _stack(rows)

"""The geometry stage's depth and poses -> keyframe heatmap outputs, through the one reprojection.

Every model configuration (``embedded``, ``base``, ``full``) makes its frame-indexed heatmaps
here, with :func:`vln_core.heatmaps.heatmaps_from_config`, the function that also makes the
ground truth, the node's geometry backend and video inference's maps. The result is in the
form :class:`~vln_core.models.spatial_model.ModelOutputs` carries: logits whose softmax gives the
map back, the out-of-view fraction as a logit, and the out-of-view bearing as ``(cos, sin)``.
The splatting is differentiable in depth and pose, so the heatmap loss trains the geometry stage.
"""
from __future__ import annotations

import torch

from vln_core.config import HeatmapConfig
from vln_core.heatmaps import heatmaps_from_config

__all__ = ["HEATMAP_LOG_EPS", "reprojected_heatmap_outputs"]

#: ``heatmap_logits = log(heatmap + HEATMAP_LOG_EPS)``: softmax of the logits gives back the
#: reprojected map with this floor per pixel (so a map with no overlap becomes uniform).
HEATMAP_LOG_EPS = 1e-7


def reprojected_heatmap_outputs(depth: torch.Tensor, K: torch.Tensor, T_cur_cam: torch.Tensor,
                                keyframes: torch.Tensor, cfg: HeatmapConfig
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heatmaps of the keyframes over the current (last) frame of each window.

    Args:
        depth: ``(B, N, H, W)`` depth of every frame, metres (the last frame is the current view).
        K: ``(B, 3, 3)`` intrinsics shared by the window's frames, or ``(B, N, 3, 3)`` per frame,
            at ``(H, W)``.
        T_cur_cam: ``(B, N, 4, 4)`` camera-to-current poses (the current camera is the world).
        keyframes: ``(B, N_k)`` long indices into the ``N`` frames.
        cfg: the ``heatmap`` section (sigma, stride, occlusion margins, overlap threshold).

    Returns:
        ``heatmap_logits (B, N_k, H, W)`` = ``log(heatmap + HEATMAP_LOG_EPS)``,
        ``out_of_view_logit (B, N_k)`` (logit of the out-of-view fraction, clamped to
        [1e-4, 1 - 1e-4]) and ``out_of_view_bearing (B, N_k, 2)`` ``(cos, sin)`` (0 where none).
    """
    B = depth.shape[0]
    eye = torch.eye(4, dtype=depth.dtype, device=depth.device)
    logits, oov_logit, bearing = [], [], []
    for b in range(B):
        kf = keyframes[b]
        key_K, cur_K = (K[b], K[b]) if K.dim() == 3 else (K[b, kf], K[b, -1])
        hm = heatmaps_from_config(depth[b, kf], key_K, T_cur_cam[b, kf], cur_K, eye, depth.shape[-2:], depth[b, -1],
                                  cfg=cfg)
        logits.append(torch.log(hm.heatmap + HEATMAP_LOG_EPS))
        frac = hm.out_of_view_fraction.clamp(1e-4, 1 - 1e-4)
        oov_logit.append(torch.log(frac) - torch.log1p(-frac))
        b_rad = torch.nan_to_num(hm.out_of_view_bearing, nan=0.0)
        bearing.append(torch.stack([torch.cos(b_rad), torch.sin(b_rad)], dim=-1))
    return torch.stack(logits), torch.stack(oov_logit), torch.stack(bearing)

"""The ``geometry`` backend: exact frame-indexed heatmaps from measured depth and poses.

It runs :func:`vln_core.heatmaps.heatmaps_from_config`, the one reprojection that the learned
backends and the training targets use too; it predicts no waypoints and no goal.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from vln_core.backends.base import BackendResult, CameraFrame, HeatmapBackend, register_backend
from vln_core.config import VLNConfig
from vln_core.errors import InputError
from vln_core.geometry.camera import PinholeCamera
from vln_core.heatmaps import heatmaps_from_config

__all__ = ["GeometryBackend", "frame_on_grid"]

def frame_on_grid(frame: CameraFrame, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """A frame's depth and intrinsics resampled to another ``(H, W)`` grid.

    Depth is resampled by nearest neighbour at pixel centres (``cv2.INTER_NEAREST_EXACT``: no
    blending across depth edges, invalid pixels stay invalid); ``K`` follows with
    :meth:`PinholeCamera.resized` (pixel-area mapping, consistent with that sampling).

    Args:
        frame: needs ``depth_m`` ``(h, w)`` metres and ``K`` ``(3, 3)`` of the ``(h, w)`` grid.
        size: target ``(H, W)``.

    Returns:
        ``(depth (H, W) float32 metres, K (3, 3) float64)``; unchanged arrays when the size matches.
    """
    if frame.depth_m is None or frame.K is None:
        raise InputError(f"frame seq {frame.seq}: resampling needs depth and K")
    H, W = (int(s) for s in size)
    h, w = frame.depth_m.shape
    if (h, w) == (H, W):
        return frame.depth_m, np.asarray(frame.K, dtype=np.float64)
    depth = cv2.resize(frame.depth_m, (W, H), interpolation=cv2.INTER_NEAREST_EXACT)
    K = PinholeCamera.from_K(frame.K, width=w, height=h).resized(W, H).K
    return depth, K


@register_backend("geometry")
class GeometryBackend(HeatmapBackend):
    """Exact frame-indexed heatmaps from depth and poses (no learning, no instruction use).

    Grid: with ``node.geometry_resolution == "frame_size"`` (default) every frame's depth and
    intrinsics are resampled to ``video.frame_size`` and the heatmaps come out on that grid, the
    same grid the learned model predicts on and is trained against, so both backends publish
    interchangeable maps and the CPU cost does not grow with the camera resolution. With
    ``"input"`` the heatmaps are on the current image's own grid. ``heatmap.sigma_px`` is in
    pixels of the output grid. Waypoints and goal heatmap: None (not predicted).
    """

    name = "geometry"
    needs_depth = True
    needs_intrinsics = True
    needs_pose = True
    predicts_waypoints = False

    def __init__(self, cfg: VLNConfig) -> None:
        self.heatmap_cfg = cfg.heatmap
        self.resolution = cfg.node.geometry_resolution
        self.frame_size = tuple(int(s) for s in cfg.video.frame_size)

    def output_size(self, current: CameraFrame) -> tuple[int, int]:
        return self.frame_size if self.resolution == "frame_size" else current.size

    @staticmethod
    def _check(frame: CameraFrame, role: str) -> None:
        missing = [n for n in ("depth_m", "K", "T_wc") if getattr(frame, n) is None]
        if missing:
            raise InputError(f"geometry backend: {role} frame seq {frame.seq} has no {', '.join(missing)}")

    def infer(self, current: CameraFrame, keyframes: list[CameraFrame], instruction: str) -> BackendResult:
        """Heatmaps ``(K, H, W)`` over the current view on :meth:`output_size`; see the class doc.

        Args:
            current: needs ``depth_m`` ``(h, w)``, ``K`` ``(3, 3)``, ``T_wc`` ``(4, 4)``.
            keyframes: each needs the same fields (any resolution); at least one.
            instruction: unused (geometry does not read language).
        """
        if not keyframes:
            raise InputError("geometry backend: needs at least one keyframe")
        self._check(current, "current")
        for kf in keyframes:
            self._check(kf, "key")
        size = self.output_size(current)
        cur_depth, cur_K = frame_on_grid(current, size)
        key_grid = self.frame_size if self.resolution == "frame_size" else None
        key_depths, key_Ks = [], []
        for kf in keyframes:
            d, K = frame_on_grid(kf, key_grid) if key_grid is not None else (kf.depth_m, kf.K)
            key_depths.append(d)
            key_Ks.append(K)
        shapes = {d.shape for d in key_depths}
        if len(shapes) != 1:  # "input" mode across a resolution change: bring keyframes to the current grid
            resampled = [frame_on_grid(kf, size) for kf in keyframes]
            key_depths, key_Ks = [d for d, _ in resampled], [K for _, K in resampled]
        with torch.no_grad():
            heatmaps = heatmaps_from_config(
                torch.from_numpy(np.stack(key_depths).astype(np.float32, copy=False)),
                torch.from_numpy(np.stack(key_Ks)).float(),
                torch.from_numpy(np.stack([kf.T_wc for kf in keyframes])).float(),
                torch.from_numpy(np.asarray(cur_K)).float(),
                torch.from_numpy(np.asarray(current.T_wc)).float(),
                size,
                torch.from_numpy(np.asarray(cur_depth, dtype=np.float32)),
                cfg=self.heatmap_cfg,
            )
        return BackendResult(heatmaps=heatmaps, waypoints=None, goal_heatmap=None)

    def describe(self) -> dict[str, str]:
        info = super().describe()
        info["heatmap_grid"] = (
            f"video.frame_size {self.frame_size[0]}x{self.frame_size[1]} (HxW)"
            if self.resolution == "frame_size" else "current image resolution"
        )
        info["waypoints"] = "none: the geometry backend predicts no waypoints and no goal heatmap"
        return info


"""Pictures of a closed-loop episode: the top-down map beside the first-person view.

:func:`nav_frame` draws one step: left, the occupancy grid with the planner's shortest path
(grey), the path driven so far (blue), the goal object (red) and the robot (green, with its
heading); right, the camera image with the goal heatmap blended in and the predicted waypoints
(yellow dots, projected from the floor into the image). :func:`write_gif` writes the frames.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from vln_core.atomic import atomic_write_bytes
from vln_core.sim.closed_loop import NavEpisode
from vln_core.viz import blend_heatmap

__all__ = ["top_down_map", "nav_frame", "write_gif"]


def top_down_map(episode: NavEpisode, driven_xy: np.ndarray, yaw: float, height: int) -> np.ndarray:
    """``(height, w, 3)`` uint8 RGB map of the episode so far (see the module doc)."""
    grid = episode.grid
    H, W = grid.occupied.shape
    scale = height / H
    img = np.where(grid.occupied[..., None], np.uint8(60), np.uint8(235)).repeat(3, axis=2)
    img = cv2.resize(img, (max(1, int(round(W * scale))), height), interpolation=cv2.INTER_NEAREST)
    img = np.ascontiguousarray(img[::-1])  # world y up

    def px(xy: np.ndarray) -> np.ndarray:
        rc = (np.asarray(xy, dtype=np.float64) - grid.origin) / grid.resolution * scale
        return np.stack([rc[..., 0], height - 1 - rc[..., 1]], axis=-1).round().astype(np.int32)

    cv2.fillPoly(img, [px(episode.goal.footprint_corners())], (220, 40, 40))
    cv2.polylines(img, [px(episode.shortest_path)], False, (150, 150, 150), 1, cv2.LINE_AA)
    if len(driven_xy) > 1:
        cv2.polylines(img, [px(driven_xy)], False, (40, 90, 220), 2, cv2.LINE_AA)
    here = px(driven_xy[-1])
    tip = px(driven_xy[-1] + 0.4 * np.array([math.cos(yaw), math.sin(yaw)]))
    cv2.circle(img, tuple(int(v) for v in here), 4, (30, 170, 30), -1, cv2.LINE_AA)
    cv2.line(img, tuple(int(v) for v in here), tuple(int(v) for v in tip), (30, 170, 30), 2, cv2.LINE_AA)
    return img


def _project_waypoints(waypoints: np.ndarray, T_base_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]
                       ) -> list[tuple[int, int]]:
    """Image pixels of base-frame waypoints ``(20, 2)`` on the floor (those in front of the camera)."""
    T_cam_base = np.linalg.inv(T_base_cam)
    pts = np.c_[waypoints, np.zeros(len(waypoints)), np.ones(len(waypoints))] @ T_cam_base.T
    out = []
    H, W = size
    for x, y, z, _ in pts:
        if z > 0.05:
            u, v = K[0, 0] * x / z + K[0, 2], K[1, 1] * y / z + K[1, 2]
            if 0 <= u < W and 0 <= v < H:
                out.append((int(round(u)), int(round(v))))
    return out


def nav_frame(episode: NavEpisode, driven_xy: np.ndarray, yaw: float, rgb: np.ndarray, K: np.ndarray,
              T_base_cam: np.ndarray, goal_heatmap: Optional[np.ndarray], waypoints: Optional[np.ndarray],
              caption: str) -> np.ndarray:
    """One GIF frame (see the module doc), ``(H, w_map + W, 3)`` uint8 RGB with a caption line."""
    view = blend_heatmap(rgb, goal_heatmap) if goal_heatmap is not None else rgb.copy()
    if waypoints is not None:
        for u, v in _project_waypoints(np.asarray(waypoints, dtype=np.float64), T_base_cam, K, rgb.shape[:2]):
            cv2.circle(view, (u, v), 3, (250, 220, 40), -1, cv2.LINE_AA)
    mosaic = np.concatenate([top_down_map(episode, driven_xy, yaw, rgb.shape[0]), view], axis=1)
    bar = np.full((18, mosaic.shape[1], 3), 20, np.uint8)
    cv2.putText(bar, caption[:110], (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (240, 240, 240), 1, cv2.LINE_AA)
    return np.concatenate([bar, mosaic], axis=0)


def write_gif(frames: Sequence[np.ndarray], path: str | Path, frame_ms: int = 250) -> Path:
    """Write RGB frames as a looping GIF, atomically."""
    import io

    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0,
                   optimize=True)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)

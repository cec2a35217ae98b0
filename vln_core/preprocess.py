"""The one image preprocessing step shared by training and the node's learned backend.

Every model input frame goes through :func:`preprocess_frames`: colour is area-resampled to the
network's ``(H, W)``, depth is nearest-neighbour resampled (no invented depth values across
object edges) with invalid measurements set to 0, and the intrinsics are rescaled with
:meth:`vln_core.geometry.camera.PinholeCamera.resized`, so pixels and ``K`` keep agreeing
(pixel-centre convention, see ``docs/conventions.md``). Training and inference calling the same
function is what keeps a trained network's notion of "pixel (u, v)" the same on the robot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch

from vln_core.errors import InputError
from vln_core.geometry.camera import PinholeCamera

__all__ = ["PreprocessedFrames", "preprocess_frames", "resize_depth"]


@dataclass
class PreprocessedFrames:
    """Frames ready for the network.

    Attributes:
        frames: ``(N, 3, H, W)`` float32 RGB in [0, 1].
        depths: ``(N, H, W)`` float32 metres, 0 where there is no valid measurement; None when no
            depth was given.
        K: ``(3, 3)`` float32 intrinsics of the ``(H, W)`` grid.
    """

    frames: torch.Tensor
    depths: Optional[torch.Tensor]
    K: torch.Tensor


def resize_depth(depth: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of one depth map; invalid (0, NaN, inf, negative) become 0.

    Args:
        depth: ``(h, w)`` float depth in metres.
        size: ``(H, W)`` output size.

    Returns:
        ``(H, W)`` float32 metres.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise InputError(f"depth must have shape (h, w), got {depth.shape}")
    clean = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
    H, W = int(size[0]), int(size[1])
    if clean.shape == (H, W):
        return clean
    return cv2.resize(clean, (W, H), interpolation=cv2.INTER_NEAREST)


def _resize_color(color: np.ndarray, size: Sequence[int]) -> np.ndarray:
    H, W = int(size[0]), int(size[1])
    if color.shape[:2] == (H, W):
        return color
    shrinking = color.shape[0] > H or color.shape[1] > W
    return cv2.resize(color, (W, H), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def preprocess_frames(
    colors: Sequence[np.ndarray] | np.ndarray,
    depths: Sequence[np.ndarray] | np.ndarray | None,
    K: Any,
    size: Sequence[int],
) -> PreprocessedFrames:
    """Resize a frame sequence to the network size and keep its intrinsics right.

    Args:
        colors: ``N`` RGB images ``(h, w, 3)`` uint8 (or a ``(N, h, w, 3)`` array), all one size.
        depths: ``N`` depth maps ``(h, w)`` float metres on the colour grid, or None.
        K: ``(3, 3)`` pinhole intrinsics of the ``(h, w)`` colour grid (numpy or torch).
        size: ``(H, W)`` the network input size (``cfg.video.frame_size``).

    Returns:
        :class:`PreprocessedFrames` with ``frames (N, 3, H, W)``, ``depths (N, H, W)`` or None,
        ``K (3, 3)`` for the ``(H, W)`` grid.
    """
    if len(colors) == 0:
        raise InputError("preprocess_frames needs at least one colour frame")
    H, W = int(size[0]), int(size[1])
    first = np.asarray(colors[0])
    if first.ndim != 3 or first.shape[2] != 3:
        raise InputError(f"colour frames must be (h, w, 3) RGB, got {first.shape}")
    h, w = first.shape[:2]
    resized = []
    for i, color in enumerate(colors):
        color = np.asarray(color)
        if color.shape != first.shape:
            raise InputError(f"colour frame {i} has shape {color.shape}, frame 0 has {first.shape}")
        if color.dtype != np.uint8:
            raise InputError(f"colour frame {i} must be uint8 RGB, got {color.dtype}")
        resized.append(_resize_color(color, (H, W)))
    frames = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)

    depth_t: Optional[torch.Tensor] = None
    if depths is not None:
        if len(depths) != len(colors):
            raise InputError(f"got {len(depths)} depth maps for {len(colors)} colour frames")
        out = []
        for i, depth in enumerate(depths):
            depth = np.asarray(depth)
            if depth.shape != (h, w):
                raise InputError(f"depth map {i} has shape {depth.shape}, colour frames are {(h, w)}")
            out.append(resize_depth(depth, (H, W)))
        depth_t = torch.from_numpy(np.stack(out))

    camera = PinholeCamera.from_K(K, width=w, height=h).resized(W, H)
    return PreprocessedFrames(frames=frames, depths=depth_t, K=camera.K_tensor(torch.float32))

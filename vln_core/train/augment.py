"""Photometric augmentation that narrows the gap between simulated and real cameras.

The simulator renders noise-free, perfectly exposed, white-balanced, lossless images; a robot's
camera has auto-exposure, a colour cast, motion and focus blur, sensor noise and JPEG or H.264
artefacts. :func:`camera_augment` applies those to one window of frames. The parameters are drawn
once per window (a camera does not change its white balance between two frames) with a small
per-frame exposure jitter (auto-exposure hunting). Geometry (depth, poses, intrinsics) is left
untouched: only the colour input changes, so every target stays exact.

Deterministic: the same ``rng`` state gives the same output.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

__all__ = ["CameraAugmentation", "camera_augment"]


@dataclass(frozen=True)
class CameraAugmentation:
    """Ranges of the augmentation (defaults: a cheap webcam to a good robot camera)."""

    exposure: tuple[float, float] = (0.55, 1.6)  # global gain
    frame_exposure_jitter: float = 0.06  # per-frame relative gain std
    gamma: tuple[float, float] = (0.8, 1.25)
    white_balance: float = 0.15  # per-channel gain in [1 - wb, 1 + wb]
    blur_prob: float = 0.35
    blur_sigma: tuple[float, float] = (0.4, 1.6)  # pixels at the network's input size
    noise_std: tuple[float, float] = (0.0, 0.035)  # additive, on [0, 1] intensities
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (25, 90)


def camera_augment(frames: torch.Tensor, rng: np.random.Generator,
                   params: CameraAugmentation = CameraAugmentation()) -> torch.Tensor:
    """Augment one window.

    Args:
        frames: ``(N, 3, H, W)`` float RGB in [0, 1].
        rng: the random source (seed it per sample for reproducible training).
        params: ranges.

    Returns:
        ``(N, 3, H, W)`` float32 in [0, 1], a new tensor.
    """
    x = frames.detach().cpu().numpy().astype(np.float32, copy=True)  # (N, 3, H, W)
    N = x.shape[0]
    gain = rng.uniform(*params.exposure) * np.exp(rng.normal(0.0, params.frame_exposure_jitter, size=N))
    wb = rng.uniform(1 - params.white_balance, 1 + params.white_balance, size=3)
    gamma = rng.uniform(*params.gamma)
    x = np.clip(x * (gain[:, None, None, None] * wb[None, :, None, None]), 0.0, 1.0) ** gamma
    if rng.random() < params.blur_prob:
        sigma = rng.uniform(*params.blur_sigma)
        for i in range(N):
            img = np.ascontiguousarray(x[i].transpose(1, 2, 0))
            x[i] = cv2.GaussianBlur(img, (0, 0), sigma).transpose(2, 0, 1)
    noise = rng.uniform(*params.noise_std)
    if noise > 0:
        x = x + rng.normal(0.0, noise, size=x.shape).astype(np.float32)
    x = np.clip(x, 0.0, 1.0)
    if rng.random() < params.jpeg_prob:
        quality = int(rng.integers(params.jpeg_quality[0], params.jpeg_quality[1] + 1))
        for i in range(N):
            img = (x[i].transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
            ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok:
                x[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(x))

"""Photometric augmentation that narrows the gap between simulated and real cameras.

The simulator renders noise-free, perfectly exposed, white-balanced, lossless images; a robot's
camera has auto-exposure, a colour cast, lens vignetting, motion and focus blur, sensor noise and JPEG or H.264
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

__all__ = ["CameraAugmentation", "camera_augment", "CropAugmentation", "crop_window"]


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
    vignette_prob: float = 0.5  # lens fall-off: gain 1 - strength * r^2 (r = 1 at the corners)
    vignette_strength: tuple[float, float] = (0.1, 0.45)
    motion_blur_prob: float = 0.25  # per window; each frame gets its own linear streak
    motion_blur_px: tuple[float, float] = (2.0, 7.0)  # streak length at the network's input size


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
    H, W = x.shape[-2:]
    if rng.random() < params.vignette_prob:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        r2 = ((xx - (W - 1) / 2) ** 2 + (yy - (H - 1) / 2) ** 2) / (((W - 1) / 2) ** 2 + ((H - 1) / 2) ** 2)
        x = x * (1.0 - rng.uniform(*params.vignette_strength) * r2)[None, None].astype(np.float32)
    if rng.random() < params.motion_blur_prob:
        for i in range(N):
            x[i] = _motion_blur(x[i], rng.uniform(*params.motion_blur_px), rng.uniform(0.0, np.pi))
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


def _motion_blur(image: np.ndarray, length_px: float, angle_rad: float) -> np.ndarray:
    """``(3, H, W)`` blurred along a line of ``length_px`` at ``angle_rad`` (a camera moving
    during the exposure)."""
    size = int(np.ceil(length_px)) | 1
    kernel = np.zeros((size, size), np.float32)
    c = (size - 1) / 2.0
    for s in np.linspace(-length_px / 2, length_px / 2, 4 * size):
        kernel[int(round(c + s * np.sin(angle_rad))), int(round(c + s * np.cos(angle_rad)))] += 1.0
    kernel /= kernel.sum()
    img = np.ascontiguousarray(image.transpose(1, 2, 0))
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT).transpose(2, 0, 1)


@dataclass(frozen=True)
class CropAugmentation:
    """Ranges of the geometric augmentation :func:`crop_window`."""

    area: tuple[float, float] = (0.45, 1.0)  # crop area as a fraction of the image
    aspect: tuple[float, float] = (0.75, 1.4)  # crop (w/h) over image (w/h), log-uniform


def crop_window(colors, depths, K: np.ndarray, rng: np.random.Generator,
                params: CropAugmentation = CropAugmentation()) -> tuple[list, list, np.ndarray]:
    """One random crop, the same for every frame of a window, with the intrinsics moved along.

    The simulator renders one field of view with square pixels; robots have others, and a 4:3
    camera resized to the square network input has pixels 4:3 wide. Cropping before the resize
    to the network size varies both (a crop of another aspect ends up stretched or squeezed), and
    because depth, intrinsics and therefore every reprojected target follow the crop, all targets
    stay exact.

    Args:
        colors: ``N`` images ``(h, w, 3)``; depths: ``N`` maps ``(h, w)`` (or None entries).
        K: ``(3, 3)`` intrinsics of the ``(h, w)`` grid.

    Returns:
        ``(colors, depths, K)`` of the crop (the principal point shifted by the crop's corner).
    """
    h, w = np.asarray(colors[0]).shape[:2]
    area = rng.uniform(*params.area)
    aspect = float(np.exp(rng.uniform(np.log(params.aspect[0]), np.log(params.aspect[1]))))
    cw = int(round(min(w, w * np.sqrt(area * aspect))))
    ch = int(round(min(h, h * np.sqrt(area / aspect))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0, 2] -= x0
    K2[1, 2] -= y0
    crop_colors = [np.ascontiguousarray(np.asarray(c)[y0:y0 + ch, x0:x0 + cw]) for c in colors]
    crop_depths = [None if d is None else np.ascontiguousarray(np.asarray(d)[y0:y0 + ch, x0:x0 + cw]) for d in depths]
    return crop_colors, crop_depths, K2

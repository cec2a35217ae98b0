"""Camera sensor model: linear scene radiance -> 8-bit sRGB image, as a cheap real camera shows it.

Steps (all parameters per scene, drawn by :func:`vln_core.sim.scene.generate_scene`):
auto exposure with temporal lag, partial grey-world auto white balance with lag plus a residual
white-balance error, lens vignetting, a soft tone curve,
contrast/saturation jitter, the sRGB transfer curve, slight lens blur, signal-dependent (shot)
and read noise, 8-bit quantisation and (for half of the scenes) JPEG compression artefacts.
The geometry (depth, poses) is untouched; only colour is degraded.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["SensorState", "apply_sensor"]


@dataclass
class SensorState:
    """Auto-exposure memory carried from frame to frame within one episode."""

    log_gain: float | None = None
    history: list[float] = field(default_factory=list)
    wb_gains: np.ndarray | None = None  # (3,) auto-white-balance gains


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def apply_sensor(radiance: np.ndarray, params: dict, rng: np.random.Generator, state: SensorState) -> np.ndarray:
    """Turn linear radiance into the 8-bit image a camera would deliver.

    Args:
        radiance: ``(H, W, 3)`` float linear RGB radiance.
        params: scene sensor parameters (``white_balance``, ``awb_strength``, ``exposure_bias``, ``noise_std``,
            ``vignette``, ``blur_sigma_px``, ``jpeg_quality`` (0 = none), ``contrast``, ``saturation``).
        rng: random generator for the noise (seeded per episode: deterministic output).
        state: auto-exposure state, updated in place.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    H, W, _ = radiance.shape
    lum = radiance @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    key = float(np.exp(np.mean(np.log(lum + 1e-3))))
    target = np.log(0.2 / max(key, 1e-4)) + params["exposure_bias"] * np.log(2.0)
    if state.log_gain is None:
        state.log_gain = target
    else:  # auto exposure adapts over a few frames, like a real camera
        state.log_gain += 0.35 * (target - state.log_gain)
    state.history.append(state.log_gain)
    img = radiance * np.float32(np.exp(state.log_gain))
    # auto white balance (grey world, partial and slow like a real camera's), then the
    # per-scene residual error of the white balance
    means = radiance.reshape(-1, 3).mean(axis=0) + 1e-6
    target_wb = np.clip(means.mean() / means, 0.6, 1.7)
    target_wb = 1.0 + params.get("awb_strength", 0.8) * (target_wb - 1.0)
    state.wb_gains = target_wb if state.wb_gains is None else state.wb_gains + 0.3 * (target_wb - state.wb_gains)
    gains = state.wb_gains * np.asarray(params["white_balance"])
    img = img * gains.astype(np.float32)[None, None, :]
    # vignetting (cos^4-like radial falloff)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r2 = ((xx - (W - 1) / 2) ** 2 + (yy - (H - 1) / 2) ** 2) / (((W - 1) / 2) ** 2 + ((H - 1) / 2) ** 2)
    img *= (1.0 - params["vignette"] * r2)[..., None]
    # soft shoulder tone curve (keeps lamps and windows from hard clipping)
    img = img * (1.0 + img / 4.0) / (1.0 + img)
    img = np.clip(img * 1.25, 0.0, None)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * params["saturation"]
    img = np.clip(img, 0.0, 1.0)
    out = _linear_to_srgb(img).astype(np.float32)
    out = 0.5 + (out - 0.5) * params["contrast"]
    if params["blur_sigma_px"] > 0:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=params["blur_sigma_px"])
    # shot + read noise in the encoded domain (brighter pixels noisier), and faint chroma noise
    sigma = params["noise_std"] * (0.6 + 0.8 * np.sqrt(np.clip(out, 0, 1)))
    noise = rng.standard_normal((H, W, 1), dtype=np.float32) + 0.3 * rng.standard_normal((H, W, 3), dtype=np.float32)
    out = out + sigma * noise
    img8 = np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)
    if params.get("jpeg_quality", 0):
        ok, buf = cv2.imencode(".jpg", img8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(params["jpeg_quality"])])
        if ok:
            img8 = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return img8

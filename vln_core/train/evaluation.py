"""Score a model on episode windows next to model-free baselines, so numbers mean something.

Heatmaps (over keyframes with overlap): KL, CC, NSS, SIM, AUC-Judd, peak distance in pixels
(:func:`vln_core.metrics.heatmap_metrics`) for

* ``model``: ``softmax(heatmap_logits)`` over the image,
* ``uniform``: every pixel equally likely,
* ``center_gaussian``: an isotropic Gaussian at the image centre, sigma = min(H, W) / 4.

Waypoints (windows with all 20 future waypoints, i.e. not within 2 s of an episode end): ADE / FDE
in metres for the model, ``constant_velocity`` (repeat the last past displacement) and ``stand_still``.
Out of view: mean absolute error of ``sigmoid(out_of_view_logit)`` against the out-of-view
fraction, for the model and for always predicting the eval set's mean fraction.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch

from vln_core.metrics import ade, fde, heatmap_metrics
from vln_core.train.dataset import EpisodeWindowDataset, collate_samples
from vln_core.train.trainer import model_inputs_from_batch

__all__ = ["HEATMAP_BASELINES", "center_gaussian", "uniform_maps", "constant_velocity_waypoints", "evaluate_model"]

HEATMAP_METRICS = ("kl", "cc", "nss", "sim", "auc_judd", "peak_distance_px")


def uniform_maps(shape: Sequence[int]) -> torch.Tensor:
    """``(..., H, W)`` maps of ``1 / (H W)``."""
    H, W = shape[-2:]
    return torch.full(tuple(shape), 1.0 / (H * W))


def center_gaussian(shape: Sequence[int], sigma_fraction: float = 0.25) -> torch.Tensor:
    """``(..., H, W)`` normalised Gaussians at the image centre, sigma = ``sigma_fraction * min(H, W)``."""
    H, W = shape[-2:]
    ys = torch.arange(H, dtype=torch.float32)[:, None] - (H - 1) / 2
    xs = torch.arange(W, dtype=torch.float32)[None, :] - (W - 1) / 2
    sigma = sigma_fraction * min(H, W)
    g = torch.exp(-(xs**2 + ys**2) / (2 * sigma**2))
    return (g / g.sum()).expand(tuple(shape)).clone()


HEATMAP_BASELINES: dict[str, Callable[[Sequence[int]], torch.Tensor]] = {
    "uniform": uniform_maps,
    "center_gaussian": center_gaussian,
}


def constant_velocity_waypoints(past: torch.Tensor, horizon: int) -> torch.Tensor:
    """``(B, horizon, 2)``: keep moving by the last past displacement (``past (B, T, 4)``,
    the current position last at the origin)."""
    step = past[:, -1, :2] - past[:, -2, :2]
    k = torch.arange(1, horizon + 1, dtype=past.dtype)[None, :, None]
    return step[:, None, :] * k


class _Mean:
    """Weighted running means of named values, NaN-aware."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, name: str, value: float, weight: float = 1.0) -> None:
        if weight <= 0 or not math.isfinite(value):
            return
        self.sums[name] = self.sums.get(name, 0.0) + value * weight
        self.weights[name] = self.weights.get(name, 0.0) + weight

    def result(self) -> dict[str, float]:
        return {k: self.sums[k] / self.weights[k] for k in self.sums}


@torch.no_grad()
def evaluate_model(model: Optional[torch.nn.Module], dataset: EpisodeWindowDataset, max_samples: int,
                   batch_size: int, device: torch.device, max_instruction_length: int) -> dict[str, Any]:
    """Metrics of ``model`` (None: baselines only) on up to ``max_samples`` evenly spread windows.

    Returns:
        ``{"num_windows", "num_keyframes", "num_full_routes", "heatmap": {method: {metric: value}},
        "waypoints": {method: {"ade_m", "fde_m"}}, "out_of_view": {method: {"fraction_mae"}}}``.
    """
    n = len(dataset)
    count = min(n, max_samples)
    indices = sorted({int(i) for i in torch.linspace(0, n - 1, count).round().tolist()})
    heat = {name: _Mean() for name in (["model"] if model is not None else []) + list(HEATMAP_BASELINES)}
    way = {name: _Mean() for name in (["model"] if model is not None else []) + ["constant_velocity", "stand_still"]}
    oov_err: list[torch.Tensor] = []
    oov_frac: list[torch.Tensor] = []
    num_keyframes = 0
    full_routes = 0
    if model is not None:
        model.eval()
    for lo in range(0, len(indices), batch_size):
        batch = collate_samples([dataset[i] for i in indices[lo:lo + batch_size]])
        gt = batch["heatmap"]
        valid = batch["has_overlap"]
        B = gt.shape[0]
        outputs = None
        if model is not None:
            outputs = model(model_inputs_from_batch(model, batch, device, max_instruction_length))
            logits = outputs.heatmap_logits.float().cpu()
            pred = torch.softmax(logits.reshape(*logits.shape[:2], -1), -1).reshape(logits.shape)
            if pred.shape[-2:] != gt.shape[-2:]:
                pred = torch.nn.functional.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=False)
        for b in range(B):
            k = int(valid[b].sum())
            if k == 0:
                continue
            num_keyframes += k
            methods = {name: fn(gt[b].shape) for name, fn in HEATMAP_BASELINES.items()}
            if outputs is not None:
                methods["model"] = pred[b]
            for name, maps in methods.items():
                for metric, value in heatmap_metrics(maps, gt[b], valid[b]).items():
                    if metric in HEATMAP_METRICS:
                        heat[name].add(metric, value, k)
        full = batch["waypoint_mask"].all(-1)
        if full.any():
            target = batch["waypoints"][full]
            full_routes += int(full.sum())
            candidates = {
                "constant_velocity": constant_velocity_waypoints(batch["past_trajectory"][full], target.shape[1]),
                "stand_still": torch.zeros_like(target),
            }
            if outputs is not None:
                candidates["model"] = outputs.waypoints.float().cpu()[full]
            for name, wp in candidates.items():
                for value in ade(wp, target).tolist():
                    way[name].add("ade_m", value)
                for value in fde(wp, target).tolist():
                    way[name].add("fde_m", value)
        has_depth = batch["key_has_depth"]
        oov_frac.append(batch["out_of_view_fraction"][has_depth])
        if outputs is not None:
            prob = torch.sigmoid(outputs.out_of_view_logit.float().cpu())
            oov_err.append((prob - batch["out_of_view_fraction"]).abs()[has_depth])
    result: dict[str, Any] = {
        "num_windows": len(indices),
        "num_keyframes": num_keyframes,
        "num_full_routes": full_routes,
        "heatmap": {name: m.result() for name, m in heat.items()},
        "waypoints": {name: m.result() for name, m in way.items()},
    }
    fractions = torch.cat(oov_frac) if oov_frac else torch.zeros(0)
    out_of_view: dict[str, dict[str, float]] = {}
    if fractions.numel():
        out_of_view["mean_fraction"] = {"fraction_mae": float((fractions - fractions.mean()).abs().mean())}
    if oov_err:
        out_of_view["model"] = {"fraction_mae": float(torch.cat(oov_err).mean())}
    result["out_of_view"] = out_of_view
    return result

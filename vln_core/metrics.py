"""Evaluation metrics for frame-indexed heatmaps and waypoints, implemented once (torch).

Heatmap metrics follow the saliency-benchmark definitions (Bylinskii et al., "What do
different evaluation metrics tell us about saliency models?", TPAMI 2019) and are batched over
any leading dimensions: maps are ``(..., H, W)`` and every metric returns ``(...)``.

* Distribution metrics (:func:`kl_divergence`, :func:`similarity`) normalise each map to sum 1
  over ``(H, W)``; negative values are clamped to 0 first.
* :func:`correlation_coefficient` (CC) and :func:`nss` standardise the raw values.
* Fixation metrics (:func:`nss`, :func:`auc_judd`) need a boolean fixation map. Our ground
  truth is a dense heatmap (where a keyframe's content lands in the current image), so
  :func:`fixations_from_heatmap` derives fixations from it: the top ``top_fraction`` of pixels
  by value (or the pixels at or above ``threshold``), never pixels of value 0.

Degenerate inputs never raise: an all-zero (or non-finite) map, a constant map where a
standard deviation is needed, or an empty fixation map gives NaN for that item, and
:func:`heatmap_metrics` averages only the finite values of valid keyframes.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from vln_core.errors import InputError

__all__ = [
    "kl_divergence",
    "correlation_coefficient",
    "similarity",
    "fixations_from_heatmap",
    "nss",
    "auc_judd",
    "peak_distance_px",
    "centroid_distance_px",
    "ade",
    "fde",
    "heatmap_metrics",
]

_NAN = float("nan")


def _as_maps(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() < 2:
        raise InputError(f"{name} must have shape (..., H, W), got {tuple(t.shape)}")
    return t


def _pair(pred: Any, gt: Any) -> tuple[torch.Tensor, torch.Tensor]:
    pred = _as_maps(pred, "pred").to(torch.float64)
    gt = _as_maps(gt, "gt").to(torch.float64)
    if pred.shape != gt.shape:
        raise InputError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape (..., H, W)")
    return pred, gt


def _normalise(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clamp at 0 and divide by the sum over (H, W); returns (map, ok) with ok False for zero/non-finite maps."""
    m = m.clamp_min(0.0)
    total = m.sum(dim=(-2, -1), keepdim=True)
    ok = torch.isfinite(total) & (total > 0)
    return m / torch.where(ok, total, torch.ones_like(total)), ok[..., 0, 0]


def _standardise(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero mean, unit (population) std over (H, W); ok False where the std is 0 or not finite."""
    mean = m.mean(dim=(-2, -1), keepdim=True)
    std = m.std(dim=(-2, -1), keepdim=True, correction=0)
    ok = torch.isfinite(std) & (std > 0)
    return (m - mean) / torch.where(ok, std, torch.ones_like(std)), ok[..., 0, 0]


def kl_divergence(pred: Any, gt: Any, eps: float = 1e-7) -> torch.Tensor:
    """KL(gt || pred) between the maps normalised to distributions over (H, W).

    ``sum_{P > 0} P * log(P / Q)`` with ``P = gt / sum(gt)`` and the prediction smoothed so no
    pixel has probability 0: ``Q = (pred / sum(pred) + eps) / (1 + eps * H * W)``. Q stays a
    distribution, so the result is >= 0, and 0 for identical maps (up to ~eps * H * W); lower
    is better.

    Args:
        pred: ``(..., H, W)`` predicted heatmap, non-negative.
        gt: ``(..., H, W)`` ground-truth heatmap, non-negative.
        eps: regulariser of the ratio and the log.

    Returns:
        ``(...)`` float64; NaN where either map is all zero or non-finite.
    """
    pred, gt = _pair(pred, gt)
    q, ok_q = _normalise(pred)
    p, ok_p = _normalise(gt)
    H, W = q.shape[-2:]
    q = (q + eps) / (1.0 + eps * H * W)
    terms = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p)) / q), torch.zeros_like(p))
    kl = terms.sum(dim=(-2, -1))
    return torch.where(ok_p & ok_q, kl, torch.full_like(kl, _NAN))


def correlation_coefficient(pred: Any, gt: Any) -> torch.Tensor:
    """Pearson correlation coefficient (CC) of the two maps' pixel values, in [-1, 1].

    Args:
        pred, gt: ``(..., H, W)``.

    Returns:
        ``(...)`` float64; NaN where either map is constant (zero variance) or non-finite.
    """
    pred, gt = _pair(pred, gt)
    a, ok_a = _standardise(pred)
    b, ok_b = _standardise(gt)
    cc = (a * b).mean(dim=(-2, -1))
    return torch.where(ok_a & ok_b, cc, torch.full_like(cc, _NAN))


def similarity(pred: Any, gt: Any) -> torch.Tensor:
    """SIM, the histogram intersection ``sum min(P, Q)`` of the maps normalised to sum 1; in [0, 1].

    Args:
        pred, gt: ``(..., H, W)`` non-negative.

    Returns:
        ``(...)`` float64, 1 for identical maps; NaN where either map is all zero or non-finite.
    """
    pred, gt = _pair(pred, gt)
    q, ok_q = _normalise(pred)
    p, ok_p = _normalise(gt)
    sim = torch.minimum(p, q).sum(dim=(-2, -1))
    return torch.where(ok_p & ok_q, sim, torch.full_like(sim, _NAN))


def fixations_from_heatmap(gt: Any, top_fraction: float = 0.02, threshold: float | None = None) -> torch.Tensor:
    """Binary fixation maps from dense ground-truth heatmaps.

    With ``threshold`` None: the ``ceil(top_fraction * H * W)`` highest-valued pixels of each map
    (all pixels tied with the last one included). With ``threshold``: every pixel ``>= threshold``.
    Either way only pixels with value > 0 count, so an all-zero map has no fixations.

    Args:
        gt: ``(..., H, W)`` dense heatmap.
        top_fraction: in (0, 1].
        threshold: absolute value threshold, overrides ``top_fraction``.

    Returns:
        ``(..., H, W)`` bool.
    """
    gt = _as_maps(gt, "gt").to(torch.float64)
    positive = torch.isfinite(gt) & (gt > 0)
    if threshold is not None:
        return positive & (gt >= threshold)
    if not 0.0 < top_fraction <= 1.0:
        raise InputError(f"top_fraction must be in (0, 1], got {top_fraction}")
    H, W = gt.shape[-2:]
    count = max(1, math.ceil(top_fraction * H * W))
    flat = torch.where(positive, gt, torch.full_like(gt, -math.inf)).flatten(-2)
    kth = flat.topk(count, dim=-1).values[..., -1:]  # (..., 1): value of the count-th largest
    return positive & (flat >= kth).reshape(gt.shape)


def _check_fixations(pred: Any, fixations: Any) -> tuple[torch.Tensor, torch.Tensor]:
    pred = _as_maps(pred, "pred").to(torch.float64)
    fixations = torch.as_tensor(fixations)
    if fixations.shape != pred.shape:
        raise InputError(f"fixations {tuple(fixations.shape)} must match pred {tuple(pred.shape)}")
    if fixations.dtype != torch.bool:
        raise InputError(f"fixations must be a bool map, got dtype {fixations.dtype}")
    return pred, fixations


def nss(pred: Any, fixations: Any) -> torch.Tensor:
    """Normalised scanpath saliency: mean of the standardised prediction at the fixations.

    Args:
        pred: ``(..., H, W)`` predicted heatmap.
        fixations: ``(..., H, W)`` bool (see :func:`fixations_from_heatmap`).

    Returns:
        ``(...)`` float64 (0 = chance, higher is better); NaN where pred is constant or there
        are no fixations.
    """
    pred, fixations = _check_fixations(pred, fixations)
    z, ok = _standardise(pred)
    count = fixations.sum(dim=(-2, -1))
    score = (z * fixations).sum(dim=(-2, -1)) / count.clamp_min(1)
    return torch.where(ok & (count > 0), score, torch.full_like(score, _NAN))


def _auc_judd_single(pred: torch.Tensor, fixations: torch.Tensor) -> float:
    values = pred.flatten()
    fix = fixations.flatten()
    n_fix = int(fix.sum())
    n_other = values.numel() - n_fix
    if n_fix == 0 or n_other == 0 or not bool(torch.isfinite(values).all()):
        return _NAN
    all_sorted = torch.sort(values).values
    fix_sorted = torch.sort(values[fix]).values
    thresholds = torch.unique(fix_sorted).flip(0)  # descending
    above_all = values.numel() - torch.searchsorted(all_sorted, thresholds, right=False)
    above_fix = n_fix - torch.searchsorted(fix_sorted, thresholds, right=False)
    tp = above_fix.to(torch.float64) / n_fix
    fp = (above_all - above_fix).to(torch.float64) / n_other
    zero = torch.zeros(1, dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    tp = torch.cat([zero, tp, one])
    fp = torch.cat([zero, fp, one])
    return float(torch.trapezoid(tp, fp))


def auc_judd(pred: Any, fixations: Any) -> torch.Tensor:
    """AUC-Judd: area under the ROC of the prediction separating fixated from other pixels.

    Thresholds are the predicted values at fixations; at threshold ``t`` the true-positive rate
    is the fraction of fixations with ``pred >= t`` and the false-positive rate the fraction of
    non-fixated pixels with ``pred >= t``; the curve runs from (0, 0) to (1, 1). Ties are not
    broken randomly, so a constant map scores exactly 0.5 and a map higher at every fixation
    than anywhere else scores 1.

    Args:
        pred: ``(..., H, W)`` predicted heatmap.
        fixations: ``(..., H, W)`` bool.

    Returns:
        ``(...)`` float64; NaN where there are no fixations, only fixations, or non-finite pred.
    """
    pred, fixations = _check_fixations(pred, fixations)
    lead = pred.shape[:-2]
    flat_pred = pred.reshape(-1, *pred.shape[-2:])
    flat_fix = fixations.reshape(-1, *pred.shape[-2:])
    scores = [_auc_judd_single(p, f) for p, f in zip(flat_pred, flat_fix)]
    return torch.tensor(scores, dtype=torch.float64).reshape(lead)


def _argmax_xy(m: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., 2) pixel (u, v) = (column, row) of the first maximum."""
    W = m.shape[-1]
    flat = torch.nan_to_num(m, nan=-math.inf).flatten(-2).argmax(dim=-1)
    return torch.stack([flat % W, flat // W], dim=-1).to(torch.float64)


def peak_distance_px(pred: Any, gt: Any) -> torch.Tensor:
    """Euclidean distance in pixels between the argmax locations of pred and gt.

    Args:
        pred, gt: ``(..., H, W)`` on the same pixel grid.

    Returns:
        ``(...)`` float64; NaN where either map has no positive finite value (no peak).
    """
    pred, gt = _pair(pred, gt)
    has_peak = lambda m: (torch.isfinite(m) & (m > 0)).flatten(-2).any(dim=-1)  # noqa: E731
    distance = torch.linalg.vector_norm(_argmax_xy(pred) - _argmax_xy(gt), dim=-1)
    return torch.where(has_peak(pred) & has_peak(gt), distance, torch.full_like(distance, _NAN))


def centroid_distance_px(pred: Any, gt: Any) -> torch.Tensor:
    """Euclidean distance in pixels between the mass centroids of pred and gt.

    Exact heatmaps are often flat plateaus whose argmax sits on a thin ridge (a depth edge), so
    the peak alone misleads; the centroid says where the mass is.

    Args:
        pred, gt: ``(..., H, W)`` non-negative maps on the same pixel grid.

    Returns:
        ``(...)`` float64; NaN where either map has no positive mass.
    """
    pred, gt = _pair(pred, gt)
    H, W = pred.shape[-2:]
    us = torch.arange(W, dtype=torch.float64)
    vs = torch.arange(H, dtype=torch.float64)

    def centroid(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.nan_to_num(m.to(torch.float64), nan=0.0).clamp(min=0)
        total = m.sum(dim=(-1, -2))
        safe = torch.where(total > 0, total, torch.ones_like(total))
        c = torch.stack([(m.sum(-2) * us).sum(-1) / safe, (m.sum(-1) * vs).sum(-1) / safe], dim=-1)
        return c, total > 0

    cp, okp = centroid(pred)
    cg, okg = centroid(gt)
    distance = torch.linalg.vector_norm(cp - cg, dim=-1)
    return torch.where(okp & okg, distance, torch.full_like(distance, _NAN))


def _trajectories(pred: Any, gt: Any) -> tuple[torch.Tensor, torch.Tensor]:
    pred = torch.as_tensor(pred).to(torch.float64)
    gt = torch.as_tensor(gt).to(torch.float64)
    if pred.dim() < 2 or pred.shape != gt.shape or pred.shape[-2] < 1:
        raise InputError(
            f"pred and gt waypoints must have the same shape (..., T, D) with T >= 1, got "
            f"{tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    return pred, gt


def ade(pred: Any, gt: Any) -> torch.Tensor:
    """Average displacement error: mean over T of the Euclidean waypoint error.

    Args:
        pred: ``(..., T, 2)`` predicted waypoints (any D works, e.g. metres in the body frame).
        gt: ``(..., T, 2)`` ground truth in the same frame and units.

    Returns:
        ``(...)`` float64 in the waypoints' units.
    """
    pred, gt = _trajectories(pred, gt)
    return torch.linalg.vector_norm(pred - gt, dim=-1).mean(dim=-1)


def fde(pred: Any, gt: Any) -> torch.Tensor:
    """Final displacement error: Euclidean error of the last waypoint.

    Args:
        pred, gt: ``(..., T, 2)`` (see :func:`ade`).

    Returns:
        ``(...)`` float64.
    """
    pred, gt = _trajectories(pred, gt)
    return torch.linalg.vector_norm(pred[..., -1, :] - gt[..., -1, :], dim=-1)


def _finite_mean(values: torch.Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else _NAN


def heatmap_metrics(
    pred: Any, gt: Any, valid: Any | None = None, top_fraction: float = 0.02, eps: float = 1e-7
) -> dict[str, float]:
    """All heatmap metrics, averaged over the valid keyframes.

    Fixations for NSS and AUC-Judd come from ``gt`` via :func:`fixations_from_heatmap` with
    ``top_fraction``. A keyframe counts only when ``valid`` is True; a metric that is NaN for a
    valid keyframe (e.g. an all-zero map) is left out of that metric's mean.

    Args:
        pred: ``(K, H, W)`` predicted heatmaps over the current image, one per keyframe.
        gt: ``(K, H, W)`` ground-truth heatmaps.
        valid: ``(K,)`` bool, or None for all.
        top_fraction: see :func:`fixations_from_heatmap`.
        eps: see :func:`kl_divergence`.

    Returns:
        ``{"kl", "cc", "nss", "sim", "auc_judd", "peak_distance_px"}`` as floats (NaN when no
        keyframe contributes), plus ``"num_valid"``: the number of valid keyframes.
    """
    pred, gt = _pair(pred, gt)
    if pred.dim() != 3:
        raise InputError(f"heatmap_metrics expects (K, H, W) maps, got {tuple(pred.shape)}")
    K = pred.shape[0]
    valid = torch.ones(K, dtype=torch.bool) if valid is None else torch.as_tensor(valid)
    if valid.shape != (K,) or valid.dtype != torch.bool:
        raise InputError(f"valid must be a ({K},) bool tensor, got shape {tuple(valid.shape)} dtype {valid.dtype}")
    pred, gt = pred[valid], gt[valid]
    names = ("kl", "cc", "nss", "sim", "auc_judd", "peak_distance_px")
    if pred.shape[0] == 0:
        return {**{name: _NAN for name in names}, "num_valid": 0}
    fixations = fixations_from_heatmap(gt, top_fraction=top_fraction)
    per_frame = {
        "kl": kl_divergence(pred, gt, eps=eps),
        "cc": correlation_coefficient(pred, gt),
        "nss": nss(pred, fixations),
        "sim": similarity(pred, gt),
        "auc_judd": auc_judd(pred, fixations),
        "peak_distance_px": peak_distance_px(pred, gt),
    }
    return {**{name: _finite_mean(v) for name, v in per_frame.items()}, "num_valid": int(pred.shape[0])}

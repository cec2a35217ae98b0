"""Training losses for the VLN spatial model, each a named, separately weighted term.

Every term is reduced *per sample* first (a masked mean over that sample's keyframes, frames or
waypoints) and then averaged over the batch, a sample with nothing to score counting 0. With equal
per-rank batch sizes, the mean of per-rank losses that DDP's gradient averaging computes is then
exactly the loss of the global batch, so multi-process training matches a single process.

Terms (names are the keys of ``training.loss_weights``):

=============  ================================================================================
heatmap        soft-target cross-entropy ``-sum g log softmax(logits)`` per keyframe with overlap
smoothness     total variation of the predicted probability maps (sum over pixel neighbours)
distinctness   ``relu(SIM(p_i, p_j) - SIM(g_i, g_j))`` for keyframe pairs, SIM = histogram
               intersection: two keyframes' predictions may only be as alike as their targets
temporal       two windows one frame apart: the change of a keyframe's predicted map must match
               the change of its target (the reprojection), ``0.5 * sum |dp - dg|``
entropy        ``|H(p) - H(g)|``: predicted maps as sharp as the targets
out_of_view    BCE of ``out_of_view_logit`` against the out-of-view fraction (soft target)
bearing        ``1 - cos`` between predicted and target bearing where out-of-view mass exists
goal           soft-target cross-entropy of ``goal_logits`` against a Gaussian at the goal's
               projection, where the goal is in view
waypoint       mean Euclidean distance of predicted and target waypoints (masked at episode end)
depth          confidence-weighted, scale-normalised L1 on valid target depth ``c|d-g|/s - a log c``
pose           L1 on relative translation + sign-aligned L1 on quaternions + L1 on the two FoVs
=============  ================================================================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F

from vln_core.config import ConfigError

__all__ = [
    "LOSS_TERMS",
    "DEFAULT_LOSS_WEIGHTS",
    "STAGE_TERMS",
    "DEPTH_CONF_ALPHA",
    "resolve_loss_weights",
    "heatmap_cross_entropy",
    "heatmap_smoothness",
    "heatmap_distinctness",
    "heatmap_temporal_consistency",
    "heatmap_entropy_gap",
    "out_of_view_loss",
    "bearing_loss",
    "waypoint_loss",
    "depth_loss",
    "pose_loss",
    "LossResult",
    "compute_losses",
]

LOSS_TERMS = (
    "heatmap", "smoothness", "distinctness", "temporal", "entropy",
    "out_of_view", "bearing", "goal", "waypoint", "depth", "pose", "multiview",
)

#: Defaults from a measurement (finetune stage, embedded model at initialisation, 12 windows of
#: simulated episodes at 112x112, 8 frames, 4 keyframes): the gradient norm of each term with
#: weight 1 was heatmap 0.25, smoothness 0.036, distinctness 0.25, temporal 0.033, entropy 0.021,
#: out_of_view 1.04, bearing 12.4, goal 1.03, waypoint 3.29, depth 1.40, pose 5.01. The
#: supervised heads are weighted to about the heatmap's gradient (so none drowns it, and the sum
#: stays under the clipping norm instead of being scaled down 14x), the regularisers to 5-20 % of it.
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {
    "heatmap": 1.0,
    "smoothness": 0.5,
    "distinctness": 0.2,
    "temporal": 0.0,  # needs pair batches (twice the forward cost): opt in, 1.0 gives ~13 %
    "entropy": 1.0,
    "out_of_view": 0.25,
    "bearing": 0.02,
    "goal": 0.25,
    "waypoint": 0.1,
    "depth": 0.2,
    "pose": 0.05,
    "multiview": 1.0,
}

#: Which terms each training stage optimises (others are not computed).
#: The geometry encoder keeps training in the later stages (``VLNSpatialModel.stage_groups``), so
#: its depth and pose supervision stays on there; set their weights to 0 to drop it.
STAGE_TERMS: dict[str, tuple[str, ...]] = {
    "geometry": ("depth", "pose"),
    "heatmap": ("heatmap", "smoothness", "distinctness", "temporal", "entropy", "out_of_view", "bearing",
                "goal", "depth", "pose"),
    "finetune": ("heatmap", "smoothness", "distinctness", "temporal", "entropy", "out_of_view", "bearing",
                 "goal", "waypoint", "depth", "pose"),
    "multiview": ("multiview",),
}

#: ``a`` in the depth term ``c |d - g| / s - a log c``: the confidence a pixel with relative error
#: ``e`` settles at is ``a / e``.
DEPTH_CONF_ALPHA = 0.2

_EPS = 1e-8


def resolve_loss_weights(overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """Default weights updated by ``training.loss_weights``; unknown names raise ConfigError."""
    weights = dict(DEFAULT_LOSS_WEIGHTS)
    for name, value in (overrides or {}).items():
        if name not in weights:
            raise ConfigError(
                f"training.loss_weights.{name} is not a loss term; valid terms: {list(LOSS_TERMS)}"
            )
        if value < 0 or not math.isfinite(value):
            raise ConfigError(f"training.loss_weights.{name} must be a finite number >= 0, got {value}")
        weights[name] = float(value)
    return weights


def _masked_sample_mean(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean of ``values (B, ...)`` over ``mask (B, ...)``.

    Returns ``(means (B,), has_any (B,) bool)``; samples without any masked entry get 0.
    """
    mask = mask.to(values.dtype)
    flat_v = (values * mask).reshape(values.shape[0], -1).sum(-1)
    count = mask.reshape(mask.shape[0], -1).sum(-1)
    return flat_v / count.clamp(min=1.0), count > 0


def _batch_mean(per_sample: torch.Tensor, has_any: torch.Tensor) -> torch.Tensor:
    """Mean over *all* samples, those with nothing to score counting 0.

    Dividing by the batch size rather than by the number of scored samples keeps every rank's
    loss a fixed share of the global batch loss, so DDP's gradient average is exactly the
    single-process gradient on the same global batch.
    """
    weight = has_any.to(per_sample.dtype)
    return (per_sample * weight).sum() / max(per_sample.shape[0], 1)


def _fit_target(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-resample ``(B, K, H, W)`` probability maps to ``size`` keeping each map's total mass."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    B, K, H, W = target.shape
    resized = F.interpolate(target.reshape(B * K, 1, H, W), size=size, mode="area")
    resized = resized * (H * W) / (size[0] * size[1])
    return resized.reshape(B, K, *size)


def heatmap_cross_entropy(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-target cross-entropy between ``softmax(logits)`` over all pixels and the target maps.

    Args:
        logits: ``(B, K, H, W)`` heatmap logits.
        target: ``(B, K, H, W)`` target maps, each summing to 1 where ``valid``.
        valid: ``(B, K)`` bool, keyframes with overlap.

    Returns:
        ``(per_sample (B,), has_any (B,))``: mean over valid keyframes of ``-sum g log p`` (nats).
    """
    B, K = logits.shape[:2]
    log_p = F.log_softmax(logits.float().reshape(B, K, -1), dim=-1)
    ce = -(target.float().reshape(B, K, -1) * log_p).sum(-1)
    return _masked_sample_mean(ce, valid)


def heatmap_smoothness(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Anisotropic total variation of probability maps.

    Args:
        probs: ``(B, K, H, W)`` maps (each summing to 1).

    Returns:
        ``(per_sample (B,), has_any (B,))``: mean over keyframes of ``sum |dp/dx| + sum |dp/dy|``;
        0 for constant maps, 4 * peak for a single-pixel spike away from the border.
    """
    tv = (probs[..., :, 1:] - probs[..., :, :-1]).abs().sum((-1, -2)) + (
        probs[..., 1:, :] - probs[..., :-1, :]
    ).abs().sum((-1, -2))
    return tv.mean(-1), torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device)


def _intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise histogram intersection ``sum min(a_i, b_j)`` of ``(B, K, P)`` maps -> ``(B, K, K)``."""
    return torch.minimum(a[:, :, None, :], b[:, None, :, :]).sum(-1)


def heatmap_distinctness(probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Penalise keyframe predictions that are more alike than their targets.

    Args:
        probs: ``(B, K, H, W)`` predicted probability maps.
        target: ``(B, K, H, W)`` target maps (sum 1 where valid).
        valid: ``(B, K)`` bool, keyframes with overlap.

    Returns:
        ``(per_sample (B,), has_any (B,))``: mean over pairs ``i < j`` of valid keyframes of
        ``relu(SIM(p_i, p_j) - SIM(g_i, g_j))``, SIM the histogram intersection in [0, 1].
    """
    B, K = probs.shape[:2]
    if K < 2:
        zero = probs.sum((1, 2, 3)) * 0.0
        return zero, torch.zeros(B, dtype=torch.bool, device=probs.device)
    p = probs.float().reshape(B, K, -1)
    g = target.float().reshape(B, K, -1)
    excess = F.relu(_intersection(p, p) - _intersection(g, g))
    upper = torch.triu(torch.ones(K, K, dtype=torch.bool, device=probs.device), diagonal=1)
    pair_valid = valid[:, :, None] & valid[:, None, :] & upper
    return _masked_sample_mean(excess, pair_valid)


def heatmap_temporal_consistency(
    probs_prev: torch.Tensor, probs_cur: torch.Tensor,
    target_prev: torch.Tensor, target_cur: torch.Tensor, valid: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive updates must move a keyframe's map the way the geometry moves it.

    The two windows end one frame apart and list the same keyframes (same absolute frames, same
    order); each map lies on its own window's current image grid. With a static camera the
    target change is 0 and this asks for identical predictions.

    Args:
        probs_prev, probs_cur: ``(P, K, H, W)`` predicted maps of the earlier / later window.
        target_prev, target_cur: ``(P, K, H, W)`` their targets.
        valid: ``(P, K)`` bool, keyframes with overlap in both windows.

    Returns:
        ``(per_pair (P,), has_any (P,))``: mean over valid keyframes of ``0.5 * sum |dp - dg|`` in [0, 2].
    """
    change = (probs_cur.float() - probs_prev.float()) - (target_cur.float() - target_prev.float())
    gap = 0.5 * change.abs().sum((-1, -2))
    return _masked_sample_mean(gap, valid)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp(min=_EPS))).sum((-1, -2))


def heatmap_entropy_gap(probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``|H(p) - H(g)|`` (nats) per valid keyframe: predictions as spread as the targets.

    Args:
        probs, target: ``(B, K, H, W)`` probability maps. valid: ``(B, K)`` bool.

    Returns:
        ``(per_sample (B,), has_any (B,))``.
    """
    gap = (_entropy(probs.float()) - _entropy(target.float())).abs()
    return _masked_sample_mean(gap, valid)


def out_of_view_loss(logit: torch.Tensor, fraction: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary cross-entropy of the out-of-view logit against the out-of-view fraction.

    Args:
        logit: ``(B, K)`` predicted out-of-view logits.
        fraction: ``(B, K)`` target fraction of the keyframe's points outside the current view, [0, 1].
        valid: ``(B, K)`` bool, keyframes with any valid depth.

    Returns:
        ``(per_sample (B,), has_any (B,))``; minimal (the entropy of the target) at
        ``sigmoid(logit) = fraction``.
    """
    bce = F.binary_cross_entropy_with_logits(logit.float(), fraction.float().clamp(0.0, 1.0), reduction="none")
    return _masked_sample_mean(bce, valid)


def bearing_loss(pred_cos_sin: torch.Tensor, bearing_rad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``1 - cos(predicted - target)`` where the target bearing exists (not NaN).

    Args:
        pred_cos_sin: ``(B, K, 2)`` predicted (cos, sin) of the bearing (normalised here).
        bearing_rad: ``(B, K)`` target bearing, radians, + left, NaN where nothing is out of view.

    Returns:
        ``(per_sample (B,), has_any (B,))`` in [0, 2].
    """
    valid = torch.isfinite(bearing_rad)
    b = torch.where(valid, bearing_rad, torch.zeros_like(bearing_rad)).float()
    unit = pred_cos_sin.float() / pred_cos_sin.float().norm(dim=-1, keepdim=True).clamp(min=1e-6)
    cos_gap = unit[..., 0] * torch.cos(b) + unit[..., 1] * torch.sin(b)
    return _masked_sample_mean(1.0 - cos_gap, valid)


def waypoint_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean Euclidean distance between predicted and target waypoints (metres).

    Args:
        pred, target: ``(B, T, 2)`` waypoints (x forward, y left) in the current base frame.
        mask: ``(B, T)`` bool, target exists (False past the episode end).

    Returns:
        ``(per_sample (B,), has_any (B,))``.
    """
    dist = torch.sqrt(((pred.float() - target.float()) ** 2).sum(-1) + 1e-9)
    return _masked_sample_mean(dist, mask)


def depth_loss(pred: torch.Tensor, conf: Optional[torch.Tensor], target: torch.Tensor,
               alpha: float = DEPTH_CONF_ALPHA) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidence-weighted L1 depth error, normalised by each sample's mean target depth.

    Args:
        pred: ``(B, N, H, W)`` predicted depth, metres.
        conf: ``(B, N, H, W)`` positive per-pixel confidence, or None (plain scale-normalised L1).
        target: ``(B, N, H, W)`` target depth, metres, 0 where invalid.
        alpha: weight of the ``-log(conf)`` term that keeps confidences from collapsing to 0.

    Returns:
        ``(per_sample (B,), has_any (B,))``: mean over valid pixels of ``c |d - g| / s - alpha log c``,
        ``s`` = the sample's mean valid target depth.
    """
    if pred.shape != target.shape:
        raise ValueError(f"depth prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    valid = torch.isfinite(target) & (target > 0)
    tgt = torch.where(valid, target, torch.zeros_like(target)).float()
    scale, _ = _masked_sample_mean(tgt, valid)
    err = (pred.float() - tgt).abs() / scale.clamp(min=1e-3).reshape(-1, *([1] * (pred.dim() - 1)))
    if conf is not None:
        c = conf.float().clamp(min=1e-6)
        err = c * err - alpha * torch.log(c)
    return _masked_sample_mean(err, valid)


def pose_loss(pred: torch.Tensor, target: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative-pose error on the 9-d encoding ``[t (3), quat xyzw (4), fov_h, fov_w]``.

    Args:
        pred, target: ``(B, N, 9)`` camera-to-current poses (translation metres, unit quaternion
            with the target's sign convention free, fields of view in radians).
        frame_mask: ``(B, N)`` bool, frames to score (default all).

    Returns:
        ``(per_sample (B,), has_any (B,))``: mean over frames of
        ``sum|dt| + sum|q_hat - q| (q_hat normalised, sign-aligned to q) + sum|dfov|``.
    """
    pred = pred.float()
    target = target.float()
    t_err = (pred[..., :3] - target[..., :3]).abs().sum(-1)
    q_pred = pred[..., 3:7] / pred[..., 3:7].norm(dim=-1, keepdim=True).clamp(min=1e-6)
    q_tgt = target[..., 3:7]
    sign = torch.where((q_pred * q_tgt).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    q_err = (sign * q_pred - q_tgt).abs().sum(-1)
    fov_err = (pred[..., 7:9] - target[..., 7:9]).abs().sum(-1)
    if frame_mask is None:
        frame_mask = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
    return _masked_sample_mean(t_err + q_err + fov_err, frame_mask)


@dataclass
class LossResult:
    """``total``: the weighted sum to back-propagate; ``terms``: each unweighted term (detached),
    plus the unweighted diagnostic ``heatmap_kl`` (cross-entropy minus target entropy)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


def _get(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


def _has(obj: Any, name: str) -> bool:
    return (obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)) is not None


def compute_losses(outputs: Any, batch: Mapping[str, Any], weights: Mapping[str, float], stage: str) -> LossResult:
    """All loss terms of ``stage`` with non-zero weight, and their weighted total.

    Args:
        outputs: the model's ``ModelOutputs`` (or a dict with the same fields): ``heatmap_logits
            (B, K, H, W)``, ``out_of_view_logit (B, K)``, ``out_of_view_bearing (B, K, 2)``,
            ``goal_logits (B, H, W)``, ``waypoints (B, 20, 2)``, ``depth / depth_conf (B, N, H, W)``,
            ``pose_enc (B, N, 9)``.
        batch: targets from :func:`vln_core.train.dataset.collate_samples`: ``heatmap (B, K, H, W)``,
            ``has_overlap (B, K)``, ``key_has_depth (B, K)``, ``out_of_view_fraction (B, K)``,
            ``out_of_view_bearing (B, K)`` radians/NaN, ``goal_heatmap (B, H, W)``, ``goal_valid (B,)``,
            ``waypoints (B, 20, 2)``,
            ``waypoint_mask (B, 20)``, ``depth (B, N, H, W)``, ``pose_enc (B, N, 9)`` and, for pair
            batches, ``temporal_pairs (P, 2)`` long (earlier, later) sample indices.
        weights: ``{term: weight}`` (see :func:`resolve_loss_weights`).
        stage: ``"geometry"``, ``"heatmap"`` or ``"finetune"``.

    Returns:
        :class:`LossResult`.
    """
    if stage not in STAGE_TERMS:
        raise ConfigError(f"training.stage must be one of {list(STAGE_TERMS)}, got {stage!r}")
    active = [t for t in STAGE_TERMS[stage] if weights.get(t, 0.0) > 0]
    terms: dict[str, torch.Tensor] = {}
    diagnostics: dict[str, torch.Tensor] = {}

    heatmap_terms = {"heatmap", "smoothness", "distinctness", "temporal", "entropy"}
    if heatmap_terms & set(active):
        logits = _get(outputs, "heatmap_logits")
        size = tuple(logits.shape[-2:])
        target = _fit_target(batch["heatmap"].to(logits.device, torch.float32), size)
        valid = batch["has_overlap"].to(logits.device)
        B, K = logits.shape[:2]
        probs = F.softmax(logits.float().reshape(B, K, -1), dim=-1).reshape(logits.shape)
        if "heatmap" in active:
            terms["heatmap"] = _batch_mean(*heatmap_cross_entropy(logits, target, valid))
            # diagnostic, not weighted: CE minus the targets' own entropy = KL(g || p) >= 0
            target_entropy = _batch_mean(*_masked_sample_mean(_entropy(target), valid))
            diagnostics["heatmap_kl"] = (terms["heatmap"] - target_entropy).detach()
        if "smoothness" in active:
            terms["smoothness"] = _batch_mean(*heatmap_smoothness(probs))
        if "distinctness" in active:
            terms["distinctness"] = _batch_mean(*heatmap_distinctness(probs, target, valid))
        if "entropy" in active:
            terms["entropy"] = _batch_mean(*heatmap_entropy_gap(probs, target, valid))
        if "temporal" in active:
            pairs = batch.get("temporal_pairs")
            if pairs is None or len(pairs) == 0:
                raise ValueError(
                    "loss weight 'temporal' > 0 needs pair batches (EpisodeWindowDataset(temporal_pairs=True))"
                )
            prev, cur = pairs[:, 0].to(logits.device), pairs[:, 1].to(logits.device)
            terms["temporal"] = _batch_mean(*heatmap_temporal_consistency(
                probs[prev], probs[cur], target[prev], target[cur], valid[prev] & valid[cur]))
    if "out_of_view" in active:
        logit = _get(outputs, "out_of_view_logit")
        terms["out_of_view"] = _batch_mean(*out_of_view_loss(
            logit, batch["out_of_view_fraction"].to(logit.device), batch["key_has_depth"].to(logit.device)))
    if "bearing" in active:
        pred = _get(outputs, "out_of_view_bearing")
        terms["bearing"] = _batch_mean(*bearing_loss(pred, batch["out_of_view_bearing"].to(pred.device)))
    if "goal" in active:
        goal_logits = _get(outputs, "goal_logits")
        goal_target = _fit_target(batch["goal_heatmap"][:, None].to(goal_logits.device, torch.float32),
                                  tuple(goal_logits.shape[-2:]))
        terms["goal"] = _batch_mean(*heatmap_cross_entropy(
            goal_logits[:, None], goal_target, batch["goal_valid"][:, None].to(goal_logits.device)))
    if "waypoint" in active:
        pred = _get(outputs, "waypoints")
        terms["waypoint"] = _batch_mean(*waypoint_loss(
            pred, batch["waypoints"].to(pred.device), batch["waypoint_mask"].to(pred.device)))
    if "depth" in active:
        pred = _get(outputs, "depth")
        conf = _get(outputs, "depth_conf")
        terms["depth"] = _batch_mean(*depth_loss(pred, conf, batch["depth"].to(pred.device)))
    if "multiview" in active:
        terms["multiview"] = multiview_depth_loss(outputs, batch)
    if "pose" in active:
        # a model given the true poses (RGB + pose) still reports its own estimate to train on
        pred = _get(outputs, "pose_enc_predicted") if _has(outputs, "pose_enc_predicted") else _get(outputs, "pose_enc")
        terms["pose"] = _batch_mean(*pose_loss(pred, batch["pose_enc"].to(pred.device)))

    if not terms:
        raise ConfigError(f"stage {stage!r} has no loss term with a weight > 0 (weights: {dict(weights)})")
    total = sum(weights[name] * value for name, value in terms.items())
    return LossResult(total=total, terms={**{k: v.detach() for k, v in terms.items()}, **diagnostics})


def multiview_depth_loss(outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
    """Stage ``multiview``: log-depth L1 of the fused and of the multi-view-only depth, plus a
    0.1-weighted cross-entropy of the plane logits against two-hot true planes.

    Args:
        outputs: ``{"multiview": MultiViewOutput (R rows), "multiview_index": (R, 2) [window, frame]}``.
        batch: ``depth (B, N, H, W)`` true depth (0 = unknown).
    """
    from vln_core.models.multiview import plane_targets

    out = outputs["multiview"]
    idx = outputs["multiview_index"]
    target = batch["depth"].to(out.depth.device)[idx[:, 0], idx[:, 1]]  # (R, H, W)
    valid = target > 0
    if not bool(valid.any()):
        return out.depth.sum() * 0.0
    log_t = torch.log(target.clamp(min=1e-3))
    fused = (torch.log(out.depth) - log_t).abs()[valid].mean()
    mvs = (torch.log(out.multiview_depth) - log_t).abs()[valid].mean()
    h, w = out.logits.shape[-2:]
    small = F.interpolate(target[:, None], size=(h, w), mode="nearest")[:, 0]
    two_hot, ok = plane_targets(small, out.planes.to(small.dtype))
    ce = -(two_hot * F.log_softmax(out.logits.float(), dim=1)).sum(1)
    ce = ce[ok].mean() if bool(ok.any()) else ce.sum() * 0.0
    return fused + mvs + 0.1 * ce

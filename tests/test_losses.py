"""Loss terms on hand-computable cases."""
from __future__ import annotations

import math

import pytest
import torch

from vln_core.config import ConfigError
from vln_core.train import losses as L


def _gaussian_map(H: int, W: int, cx: float, cy: float, sigma: float = 1.5) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    g = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    return g / g.sum()


def test_cross_entropy_is_minimal_and_stationary_at_the_target():
    target = torch.stack([_gaussian_map(8, 8, 2, 3), _gaussian_map(8, 8, 5, 5)])[None]  # (1, 2, 8, 8)
    valid = torch.ones(1, 2, dtype=torch.bool)
    at_target = torch.log(target).clone().requires_grad_(True)
    ce, has = L.heatmap_cross_entropy(at_target, target, valid)
    entropy = -(target * torch.log(target)).sum((-1, -2)).mean()
    assert has.all()
    assert torch.allclose(ce, entropy[None], atol=1e-5)  # CE = H(g) + KL(g||p), KL = 0 here
    ce.sum().backward()
    assert at_target.grad.abs().max() < 1e-6  # gradient softmax(logits) - g vanishes
    shifted = torch.log(torch.stack([_gaussian_map(8, 8, 4, 3), _gaussian_map(8, 8, 5, 5)]))[None]
    assert L.heatmap_cross_entropy(shifted, target, valid)[0] > ce.detach() + 0.1
    # uniform logits: CE = log(H * W) for any normalised target
    uniform = L.heatmap_cross_entropy(torch.zeros(1, 2, 8, 8), target, valid)[0]
    assert torch.allclose(uniform, torch.tensor([math.log(64.0)]))


def test_cross_entropy_ignores_keyframes_without_overlap():
    target = torch.zeros(1, 2, 4, 4)
    target[0, 0, 1, 1] = 1.0
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 1] = torch.randn(4, 4) * 5  # keyframe 1 has no overlap: whatever it predicts is free
    ce, _ = L.heatmap_cross_entropy(logits, target, torch.tensor([[True, False]]))
    assert torch.allclose(ce, torch.tensor([math.log(16.0)]))
    _, has = L.heatmap_cross_entropy(logits, target, torch.tensor([[False, False]]))
    assert not has.any()


def test_total_variation_zero_for_constant_and_four_peaks_for_a_spike():
    constant = torch.full((1, 1, 6, 6), 1.0 / 36)
    assert L.heatmap_smoothness(constant)[0].item() == pytest.approx(0.0, abs=1e-7)
    spike = torch.zeros(1, 1, 6, 6)
    spike[0, 0, 3, 3] = 1.0
    assert L.heatmap_smoothness(spike)[0].item() == pytest.approx(4.0)


def test_distinctness_penalises_identical_predictions_only_when_targets_differ():
    a, b = _gaussian_map(8, 8, 1, 1, 0.7), _gaussian_map(8, 8, 6, 6, 0.7)
    target = torch.stack([a, b])[None]
    valid = torch.ones(1, 2, dtype=torch.bool)
    same = torch.stack([a, a])[None]
    penalty, has = L.heatmap_distinctness(same, target, valid)
    sim_targets = torch.minimum(a, b).sum()
    assert has.all()
    assert penalty.item() == pytest.approx(1.0 - sim_targets.item(), abs=1e-5)  # SIM(a, a) = 1
    assert L.heatmap_distinctness(target, target, valid)[0].item() == pytest.approx(0.0, abs=1e-7)
    # identical targets: identical predictions are right, no penalty
    assert L.heatmap_distinctness(same, same, valid)[0].item() == pytest.approx(0.0, abs=1e-7)


def test_temporal_consistency_follows_the_target_motion():
    p0, p1 = _gaussian_map(8, 8, 2, 4), _gaussian_map(8, 8, 3, 4)
    valid = torch.ones(1, 1, dtype=torch.bool)
    # predictions that move exactly like the targets: 0
    moved = L.heatmap_temporal_consistency(p0[None, None], p1[None, None], p0[None, None], p1[None, None], valid)[0]
    assert moved.item() == pytest.approx(0.0, abs=1e-7)
    # predictions that stay put while the target moved: half the L1 change of the target
    stuck = L.heatmap_temporal_consistency(p0[None, None], p0[None, None], p0[None, None], p1[None, None], valid)[0]
    assert stuck.item() == pytest.approx(0.5 * (p1 - p0).abs().sum().item(), rel=1e-5)


def test_entropy_gap_zero_at_target_and_positive_for_flatter_prediction():
    g = _gaussian_map(8, 8, 4, 4, 1.0)[None, None]
    valid = torch.ones(1, 1, dtype=torch.bool)
    assert L.heatmap_entropy_gap(g, g, valid)[0].item() == pytest.approx(0.0, abs=1e-6)
    flat = torch.full_like(g, 1 / 64)
    expected = math.log(64) + (g * torch.log(g)).sum().item()
    assert L.heatmap_entropy_gap(flat, g, valid)[0].item() == pytest.approx(expected, rel=1e-5)


def test_out_of_view_bce_minimal_at_target_fraction_and_bearing_cosine():
    frac = torch.tensor([[0.25, 0.9]])
    valid = torch.tensor([[True, True]])
    at = torch.logit(frac)
    best = L.out_of_view_loss(at, frac, valid)[0]
    assert best < L.out_of_view_loss(at + 0.5, frac, valid)[0]
    assert best < L.out_of_view_loss(at - 0.5, frac, valid)[0]
    bearing = torch.tensor([[math.pi / 2, float("nan")]])
    left = torch.tensor([[[0.0, 3.0], [1.0, 0.0]]])  # unnormalised (cos, sin) pointing left
    right = torch.tensor([[[0.0, -1.0], [1.0, 0.0]]])
    assert L.bearing_loss(left, bearing)[0].item() == pytest.approx(0.0, abs=1e-6)
    assert L.bearing_loss(right, bearing)[0].item() == pytest.approx(2.0, abs=1e-6)
    assert not L.bearing_loss(left, torch.full((1, 2), float("nan")))[1].any()


def test_waypoint_loss_is_masked_mean_distance():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[3.0, 4.0], [0.0, 1.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert L.waypoint_loss(pred, target, mask)[0].item() == pytest.approx(3.0, abs=1e-4)  # (5 + 1) / 2


def test_depth_loss_scale_normalised_and_confidence_weighted():
    target = torch.tensor([[[[2.0, 4.0], [0.0, float("nan")]]]])  # mean valid depth 3
    pred = torch.tensor([[[[2.0, 1.0], [7.0, 7.0]]]])
    plain = L.depth_loss(pred, None, target)[0]
    assert plain.item() == pytest.approx((0.0 + 3.0 / 3.0) / 2)
    # doubling every depth doubles the error but also the scale: scale-normalised stays equal
    assert L.depth_loss(pred * 2, None, target * 2)[0].item() == pytest.approx(plain.item())
    conf = torch.full_like(pred, 2.0)
    weighted = L.depth_loss(pred, conf, target, alpha=0.2)[0]
    assert weighted.item() == pytest.approx(2 * plain.item() - 0.2 * math.log(2.0), rel=1e-5)


def test_pose_loss_zero_for_equal_and_sign_flipped_quaternions():
    target = torch.tensor([[[0.1, -0.2, 0.3, 0.0, 0.0, 0.38268343, 0.92387953, 1.0, 1.2]]])
    flipped = target.clone()
    flipped[..., 3:7] *= -2.0  # same rotation, other sign and unnormalised
    assert L.pose_loss(target, target)[0].item() == pytest.approx(0.0, abs=1e-6)
    assert L.pose_loss(flipped, target)[0].item() == pytest.approx(0.0, abs=1e-6)
    moved = target.clone()
    moved[..., 0] += 0.5
    moved[..., 8] -= 0.1
    assert L.pose_loss(moved, target)[0].item() == pytest.approx(0.6, abs=1e-5)


def test_weights_reject_unknown_terms_and_stage_selects_terms():
    with pytest.raises(ConfigError, match="heatmapp"):
        L.resolve_loss_weights({"heatmapp": 1.0})
    with pytest.raises(ConfigError, match="smoothness"):
        L.resolve_loss_weights({"smoothness": -1.0})
    B, K, N, H, W = 2, 2, 3, 6, 6
    outputs = {
        "heatmap_logits": torch.zeros(B, K, H, W, requires_grad=True),
        "out_of_view_logit": torch.zeros(B, K),
        "out_of_view_bearing": torch.tensor([1.0, 0.0]).expand(B, K, 2),
        "goal_logits": torch.zeros(B, H, W),
        "waypoints": torch.zeros(B, 20, 2),
        "depth": torch.ones(B, N, H, W),
        "depth_conf": torch.ones(B, N, H, W),
        "pose_enc": torch.zeros(B, N, 9),
    }
    target = torch.zeros(B, K, H, W)
    target[..., 2, 2] = 1.0
    batch = {
        "heatmap": target, "has_overlap": torch.ones(B, K, dtype=torch.bool),
        "key_has_depth": torch.ones(B, K, dtype=torch.bool), "out_of_view_fraction": torch.zeros(B, K),
        "out_of_view_bearing": torch.full((B, K), float("nan")), "waypoints": torch.ones(B, 20, 2),
        "waypoint_mask": torch.ones(B, 20, dtype=torch.bool), "depth": torch.ones(B, N, H, W),
        "pose_enc": torch.zeros(B, N, 9), "goal_heatmap": target[:, 0],
        "goal_valid": torch.tensor([True, False]),
    }
    weights = L.resolve_loss_weights({})
    geo = L.compute_losses(outputs, batch, weights, "geometry")
    assert set(geo.terms) == {"depth", "pose"}
    heat = L.compute_losses(outputs, batch, weights, "heatmap")
    assert "waypoint" not in heat.terms and "heatmap" in heat.terms
    assert heat.terms["heatmap"].item() == pytest.approx(math.log(36), rel=1e-5)
    assert heat.terms["heatmap_kl"].item() == pytest.approx(math.log(36), rel=1e-5)  # one-hot target: H(g) = 0
    # goal: only sample 0 has a visible goal; a sample without one counts 0 in the batch mean
    assert heat.terms["goal"].item() == pytest.approx(math.log(36) / 2, rel=1e-5)
    assert {"depth", "pose"} <= set(heat.terms)  # the geometry encoder still trains in later stages
    fine = L.compute_losses(outputs, batch, weights, "finetune")
    assert fine.terms["waypoint"].item() == pytest.approx(math.sqrt(2), rel=1e-4)
    expected = sum(weights[k] * v for k, v in fine.terms.items() if k != "heatmap_kl")
    assert fine.total.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="pair batches"):
        L.compute_losses(outputs, batch, {**weights, "temporal": 1.0}, "heatmap")

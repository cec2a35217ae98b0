"""Heatmap and waypoint metrics on cases that can be worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vln_core.errors import InputError
from vln_core.metrics import (
    ade,
    auc_judd,
    correlation_coefficient,
    fde,
    fixations_from_heatmap,
    heatmap_metrics,
    kl_divergence,
    nss,
    peak_distance_px,
    similarity,
)


def gaussian(h: int, w: int, u: float, v: float, sigma: float = 2.0) -> torch.Tensor:
    vv, uu = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.exp(-((uu - u) ** 2 + (vv - v) ** 2) / (2 * sigma**2))


def test_identical_maps_are_perfect():
    gt = torch.stack([gaussian(20, 30, 10, 5), gaussian(20, 30, 3, 15, sigma=4.0)])
    pred = gt * 7.0  # scale does not matter for distribution metrics nor CC
    kl = kl_divergence(pred, gt)  # >= 0, and within eps * H * W of 0 (the smoothing of pred)
    assert bool((kl >= 0).all()) and bool((kl <= 1e-7 * 20 * 30).all())
    assert torch.allclose(kl_divergence(pred, gt, eps=1e-12), torch.zeros(2, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(correlation_coefficient(pred, gt), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(similarity(pred, gt), torch.ones(2, dtype=torch.float64))
    assert torch.equal(peak_distance_px(pred, gt), torch.zeros(2, dtype=torch.float64))


def test_kl_and_sim_by_hand():
    # gt = (1/2, 1/2, 0, 0), pred = (1/4, 1/4, 1/4, 1/4): KL = 2 * 1/2 * log(2) = log 2, SIM = 1/2
    gt = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    pred = torch.ones(2, 2)
    assert float(kl_divergence(pred, gt)) == pytest.approx(math.log(2), abs=1e-5)
    assert float(similarity(pred, gt)) == pytest.approx(0.5)
    # disjoint supports: SIM 0, CC negative
    other = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert float(similarity(other, gt)) == pytest.approx(0.0)
    assert float(correlation_coefficient(other, gt)) == pytest.approx(-1.0)


def test_shifted_peak_gives_exact_pixel_distance():
    gt = gaussian(40, 50, u=10, v=12)
    pred = gaussian(40, 50, u=13, v=16)  # shifted by (3, 4): distance 5
    assert float(peak_distance_px(pred, gt)) == pytest.approx(5.0)
    batch = torch.stack([pred, gt, gaussian(40, 50, u=10, v=30)])
    np.testing.assert_allclose(peak_distance_px(batch, gt.expand(3, 40, 50)).numpy(), [5.0, 0.0, 18.0])


def test_fixations_from_heatmap_top_fraction_and_threshold():
    gt = torch.arange(100, dtype=torch.float64).reshape(10, 10)
    fix = fixations_from_heatmap(gt, top_fraction=0.05)
    assert int(fix.sum()) == 5 and bool(fix[9, 5:].all())
    fix_t = fixations_from_heatmap(gt, threshold=90)
    assert int(fix_t.sum()) == 10
    sparse = torch.zeros(10, 10)
    sparse[2, 3] = 1.0  # fewer positive pixels than the top fraction asks for
    assert fixations_from_heatmap(sparse, top_fraction=0.1).nonzero().tolist() == [[2, 3]]
    assert not fixations_from_heatmap(torch.zeros(4, 4)).any()


def test_auc_judd_perfect_constant_and_inverted():
    gt = gaussian(30, 30, 15, 15)
    fix = fixations_from_heatmap(gt, top_fraction=0.02)
    assert float(auc_judd(gt, fix)) == pytest.approx(1.0)
    assert float(auc_judd(torch.full((30, 30), 0.3), fix)) == pytest.approx(0.5)
    # inverted predictor: at its first threshold (the weakest fixations) every other pixel is
    # already above it, so the curve is (0, 0) -> (1, tp0) -> (1, 1) and the area is tp0 / 2
    weakest = gt[fix].min()
    tp0 = float((gt[fix] == weakest).sum()) / int(fix.sum())
    assert float(auc_judd(-gt, fix)) == pytest.approx(tp0 / 2)
    # hand case: 4 pixels, fixation at the value-2 pixel; values (3, 2, 1, 0):
    # threshold 2 -> tp 1, fp 1/3 -> AUC = 1/2 * 1/3 + 1 * 2/3 = 5/6
    pred = torch.tensor([[3.0, 2.0], [1.0, 0.0]])
    fix = torch.tensor([[False, True], [False, False]])
    assert float(auc_judd(pred, fix)) == pytest.approx(5 / 6)


def test_nss_by_hand():
    pred = torch.tensor([[0.0, 0.0], [0.0, 4.0]])  # mean 1, std sqrt(3)
    fix = torch.tensor([[False, False], [False, True]])
    assert float(nss(pred, fix)) == pytest.approx(3 / math.sqrt(3))
    assert float(nss(pred, ~fix)) == pytest.approx(-1 / math.sqrt(3))


def test_degenerate_maps_give_nan_not_errors():
    zero = torch.zeros(8, 8)
    gt = gaussian(8, 8, 4, 4)
    no_fix = torch.zeros(8, 8, dtype=torch.bool)
    assert math.isnan(float(kl_divergence(zero, gt)))
    assert math.isnan(float(kl_divergence(gt, zero)))
    assert math.isnan(float(correlation_coefficient(zero, gt)))
    assert math.isnan(float(similarity(gt, zero)))
    assert math.isnan(float(nss(zero, fixations_from_heatmap(gt))))
    assert math.isnan(float(nss(gt, no_fix)))
    assert math.isnan(float(auc_judd(gt, no_fix)))
    assert math.isnan(float(peak_distance_px(zero, gt)))
    nan_map = gt.clone()
    nan_map[0, 0] = float("nan")
    assert math.isnan(float(kl_divergence(nan_map, gt)))


def test_heatmap_metrics_average_valid_keyframes_and_skip_nan():
    gt = torch.stack([gaussian(16, 16, 4, 4), gaussian(16, 16, 10, 10), torch.zeros(16, 16), gaussian(16, 16, 2, 12)])
    pred = gt.clone()
    pred[1] = gaussian(16, 16, 13, 14)  # peak off by 5 px
    pred[3] = torch.rand(16, 16)  # invalid keyframe: must not count
    valid = torch.tensor([True, True, True, False])  # keyframe 2 has an all-zero gt -> NaN, skipped
    m = heatmap_metrics(pred, gt, valid)
    assert m["num_valid"] == 3
    assert m["peak_distance_px"] == pytest.approx((0.0 + 5.0) / 2)
    assert m["sim"] == pytest.approx((1.0 + float(similarity(pred[1], gt[1]))) / 2)
    assert m["cc"] == pytest.approx((1.0 + float(correlation_coefficient(pred[1], gt[1]))) / 2)
    assert m["auc_judd"] <= 1.0 and m["kl"] > 0
    assert all(math.isfinite(v) for v in m.values())
    empty = heatmap_metrics(pred, gt, torch.zeros(4, dtype=torch.bool))
    assert empty["num_valid"] == 0 and math.isnan(empty["kl"])
    with pytest.raises(InputError, match="valid"):
        heatmap_metrics(pred, gt, torch.ones(3, dtype=torch.bool))
    with pytest.raises(InputError, match="same shape"):
        heatmap_metrics(pred, gt[:, :8])


def test_ade_fde_on_simple_trajectories():
    gt = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    pred = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])  # offset by 1 everywhere
    assert float(ade(pred, gt)) == pytest.approx(1.0)
    assert float(fde(pred, gt)) == pytest.approx(1.0)
    pred2 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 4.0]])  # last point off by (3, 4)
    assert float(ade(pred2, gt)) == pytest.approx(5.0 / 3)
    assert float(fde(pred2, gt)) == pytest.approx(5.0)
    batch = ade(torch.stack([pred, pred2]), torch.stack([gt, gt]))
    np.testing.assert_allclose(batch.numpy(), [1.0, 5.0 / 3])
    with pytest.raises(InputError, match="same shape"):
        ade(pred[:2], gt)

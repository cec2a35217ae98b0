"""The evaluation's scoring of methods that leave keyframes unanswered (vln_core.train.evaluation).

A method that reports "no overlap" for a keyframe is scored as a uniform map, whose CC is
undefined and left out of the CC mean; so the classical baselines' CC is a mean over the keyframes
they answered. The scorer also reports each method's answered share, CC with an unanswered
keyframe as 0, and CC on the keyframes the classical baseline answers (like for like).
"""
import dataclasses

import pytest
import torch

from vln_core.config import HeatmapConfig
from vln_core.heatmaps import heatmaps_from_config
from vln_core.metrics import correlation_coefficient
from vln_core.train.evaluation import _Mean, _score, format_report

H, W = 48, 64
K = torch.tensor([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])


def _plane_heatmaps(distance_m: float):
    """Three keyframes of a fronto-parallel plane, moved sideways, seen from the current camera."""
    T = torch.eye(4).repeat(3, 1, 1)
    T[:, 0, 3] = torch.tensor([0.0, 0.15, -0.2])
    depth = torch.full((3, H, W), distance_m)
    return heatmaps_from_config(depth, K, T, K, torch.eye(4), (H, W), torch.full((H, W), distance_m),
                                cfg=HeatmapConfig())


def test_unanswered_keyframes_are_counted_and_compared_like_for_like():
    oracle = _plane_heatmaps(2.0)
    model = _plane_heatmaps(1.2)  # a wrong depth: its maps are shifted against the truth
    silent = 1
    classical = dataclasses.replace(
        model, heatmap=model.heatmap.clone(), has_overlap=model.has_overlap.clone())
    classical.heatmap[silent] = 0.0  # "no overlap" for one keyframe, as a baseline whose matching fails
    classical.has_overlap[silent] = False
    assert bool(oracle.has_overlap.all())
    acc: dict[str, _Mean] = {}
    _score({"oracle": oracle, "model": model, "classical": classical}, oracle, acc)
    got = {name: m.result() for name, m in acc.items()}

    cc = correlation_coefficient(model.heatmap, oracle.heatmap)  # (3,) the model's CC per keyframe
    assert float(cc.min()) < 0.95  # the wrong depth shows
    answered = [0, 2]
    assert got["model"]["answered"] == pytest.approx(1.0)
    assert got["classical"]["answered"] == pytest.approx(2 / 3)
    # the CC mean skips the unanswered keyframe; cc_all counts it as 0
    assert got["classical"]["cc"] == pytest.approx(float(cc[answered].mean()), abs=1e-6)
    assert got["classical"]["cc_all"] == pytest.approx(float(cc[answered].sum() / 3), abs=1e-6)
    assert got["model"]["cc_all"] == pytest.approx(float(cc.mean()), abs=1e-6)
    # like for like: on the keyframes the classical baseline answers, the same maps score the same
    assert got["model"]["cc_where_classical_answers"] == pytest.approx(float(cc[answered].mean()), abs=1e-6)
    assert got["classical"]["cc_where_classical_answers"] == pytest.approx(got["model"]["cc_where_classical_answers"])
    assert got["oracle"]["cc_all"] == pytest.approx(1.0, abs=1e-5)

    result = {"num_windows": 1, "num_keyframes": 3, "waypoints": {}, "goal": {},
              "modes": {"rgb_only": {"heatmap": got, "depth": {}}}}
    line = next(l for l in format_report(result).splitlines() if "keyframes answered" in l)
    assert "model 100%, classical 67%" in line and f"classical {got['classical']['cc_all']:.3f}" in line


def test_depth_error_panel_colours_too_near_blue_and_too_far_red():
    import numpy as np

    from vln_core.viz import depth_error_panel

    rgb = np.zeros((H, W, 3), np.uint8)
    true = np.full((H, W), 2.0)
    true[:, :8] = 0.0  # unmeasured
    pred = np.full((H, W), 2.0)
    pred[:, 20:40] = 1.0  # too near
    pred[:, 40:] = 4.0  # too far
    panel = depth_error_panel(rgb, true, pred, "kf -3")
    assert panel.shape == (H, 4 * W, 3) and panel.dtype == np.uint8
    error = panel[:, 3 * W:]
    assert (error[:, 25] == [0, 0, 255]).all() and (error[:, 50] == [255, 0, 0]).all()
    assert (error[:, 12] == 255).all() and (error[:, 2] == 96).all()  # right: white; unmeasured: grey

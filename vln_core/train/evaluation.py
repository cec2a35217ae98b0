"""Score the learned model per mode next to model-free baselines and the oracle, on the same windows.

Each window (see :mod:`vln_core.train.dataset`) gives the colour frames, the true depth and poses,
the keyframes (space-aware sampling on the true geometry, the same for every method) and the
current frame last. The **oracle** is the ground truth itself: the reprojection of true depth with
true poses. Every method answers in the same form (:class:`vln_core.heatmaps.InterFrameHeatmaps`)
and is scored against it.

Modes and methods:

* ``rgb_pose`` (mode 2, colour + known poses): ``model`` (predicted depth, true poses),
  ``constant_depth`` (true poses, every pixel at the training data's median depth),
  ``classical`` (ORB + known pose, triangulated depth, :func:`vln_core.baselines.classical_heatmaps_known_pose`),
* ``rgb_only`` (mode 3, colour only): ``model`` (predicted depth and poses), ``classical`` (ORB +
  RANSAC homography),
* in both: ``uniform`` and ``center`` (maps with the evaluated set's mean shares: this favours
  them), ``identity`` (content stays where it was), ``oracle``.

Scoring protocol: every method places only the keyframe pixels that the ground truth has a depth
measurement for (on real RGB-D data about a third), because only their landing is known; the
current frame's unmeasured pixels hide nothing, as in the ground truth. A keyframe a method
reports without overlap is scored as a uniform map (an honest "don't know").

Metrics (means over keyframes): maps over keyframes with true overlap -- KL, CC, SIM, NSS,
AUC-Judd, peak and centroid distance (px); shares over keyframes with depth -- in-view and hidden
fraction absolute error; bearing error (degrees) over keyframes with >= 5 % out of view where the
method gives a bearing (its coverage is reported); per method, the share of keyframes with true
overlap it ``answered`` (a map, not "no overlap"), ``cc_all`` (CC with an unanswered keyframe as 0,
since CC above skips them) and ``cc_where_classical_answers`` (CC per keyframe on the keyframes the
classical baseline answers: the like-for-like comparison with it); depth AbsRel / delta<1.25 over the keyframes
and current frame (model, constant depth); relative pose rotation (deg) / translation (m) errors
of the keyframes (mode 3); waypoints ADE/FDE against constant velocity; the goal heatmap's peak
within ``GOAL_HIT_RADIUS`` of the goal's projection against a centre prior.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from vln_core.atomic import atomic_write_bytes
from vln_core.baselines import (
    classical_heatmaps_homography,
    classical_heatmaps_known_pose,
    constant_depth_heatmaps,
    identity_heatmaps,
    prior_heatmaps,
)
from vln_core.config import VLNConfig
from vln_core.errors import InputError
from vln_core.geometry.matching import orb_features
from vln_core.models.window_geometry import window_geometry
from vln_core.heatmaps import InterFrameHeatmaps, heatmaps_from_config, predicted_depth_config
from vln_core.metrics import ade, centroid_distance_px, correlation_coefficient, fde, heatmap_metrics

__all__ = [
    "MODES",
    "MODE_METHODS",
    "GOAL_HIT_FRACTION",
    "constant_velocity_waypoints",
    "window_methods",
    "evaluate_windows",
    "format_report",
]

MODES = ("rgb_pose", "rgb_only")
MODE_METHODS = {
    "rgb_pose": ("model", "model_net", "constant_depth", "classical", "uniform", "center", "identity", "oracle"),
    "rgb_only": ("model", "model_net", "classical", "uniform", "center", "identity", "oracle"),
}
#: The goal counts as found when the goal heatmap's peak is within this fraction of min(H, W) of
#: the goal's projection (22 px at 224x224).
GOAL_HIT_FRACTION = 0.1
#: Keyframes with at least this out-of-view share are scored on bearing.
BEARING_MIN_FRACTION = 0.05
MAP_METRICS = ("kl", "cc", "sim", "nss", "auc_judd", "peak_distance_px", "centroid_distance_px")


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
        self.counts: dict[str, float] = {}

    def add(self, name: str, values: Any) -> None:
        for v in np.atleast_1d(np.asarray(values, dtype=np.float64)):
            if math.isfinite(v):
                self.sums[name] = self.sums.get(name, 0.0) + float(v)
                self.counts[name] = self.counts.get(name, 0.0) + 1.0

    def result(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi
    return d.abs() * 180.0 / math.pi


def _rotation_error_deg(T_pred: torch.Tensor, T_true: torch.Tensor) -> torch.Tensor:
    R = T_pred[..., :3, :3].transpose(-1, -2) @ T_true[..., :3, :3]
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def _depth_metrics(pred: torch.Tensor, true: torch.Tensor) -> tuple[float, float]:
    valid = true > 0
    p, t = pred[valid].double(), true[valid].double()
    if t.numel() == 0:
        return float("nan"), float("nan")
    absrel = float(((p - t).abs() / t).mean())
    delta = float((torch.maximum(p / t, t / p) < 1.25).double().mean())
    return absrel, delta


#: Depth ranges (metres) of the per-range depth metrics: close-up, desk, room, far.
DEPTH_RANGES = ((0.0, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, float("inf")))


def _range_name(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}m" if math.isfinite(hi) else f">{lo:g}m"


def _depth_metrics_by_range(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """AbsRel and delta<1.25 per true-depth range (:data:`DEPTH_RANGES`), with the pixel share of
    each range: ``{"abs_rel@0-1m": ..., "delta_1.25@0-1m": ..., "share@0-1m": ...}``."""
    valid = true > 0
    total = int(valid.sum())
    out: dict[str, float] = {}
    for lo, hi in DEPTH_RANGES:
        m = valid & (true >= lo) & (true < hi)
        n = int(m.sum())
        name = _range_name(lo, hi)
        out[f"share@{name}"] = n / total if total else float("nan")
        if n:
            p, t = pred[m].double(), true[m].double()
            out[f"abs_rel@{name}"] = float(((p - t).abs() / t).mean())
            out[f"delta_1.25@{name}"] = float((torch.maximum(p / t, t / p) < 1.25).double().mean())
    return out


def window_methods(sample: dict[str, Any], mode: str, cfg: VLNConfig, model: Optional[torch.nn.Module],
                   constant_depth_m: float, prior_in_view: float, prior_hidden: float
                   ) -> tuple[dict[str, InterFrameHeatmaps], dict[str, Any]]:
    """Every method's heatmaps for one window in one mode.

    Args:
        sample: one dataset item (``frames (N, 3, H, W)``, ``depth (N, H, W)``, ``intrinsics (3, 3)``,
            ``camera_poses (N, 4, 4)`` camera-to-current, ``keyframe_indices (N_k,)``).
        mode: ``"rgb_pose"`` or ``"rgb_only"``.
        model: a :class:`~vln_core.models.reprojection_model.ReprojectionHeatmapModel`, or None.
        constant_depth_m: the constant-depth baseline's depth.
        prior_in_view / prior_hidden: shares the prior maps report.

    Returns:
        ``({method: InterFrameHeatmaps}, extras)``; extras hold the model's ``depth (N, H, W)`` and
        ``T_cur_cam (N, 4, 4)`` when a model ran.
    """
    frames = sample["frames"]
    depth = sample["depth"]
    K = sample["intrinsics"].float()
    T = sample["camera_poses"].float()
    kf = sample["keyframe_indices"].long()
    H, W = depth.shape[-2:]
    hcfg = cfg.heatmap
    key_valid = depth[kf] > 0
    cur_valid = depth[-1] > 0
    eye = torch.eye(4)
    methods: dict[str, InterFrameHeatmaps] = {}
    extras: dict[str, Any] = {}
    methods["oracle"] = heatmaps_from_config(depth[kf], K, T[kf], K, eye, (H, W), depth[-1], cfg=hcfg)
    n_key = int(kf.numel())
    methods["uniform"] = prior_heatmaps("uniform", n_key, (H, W), prior_in_view, prior_hidden)
    methods["center"] = prior_heatmaps("center", n_key, (H, W), prior_in_view, prior_hidden)
    methods["identity"] = identity_heatmaps(n_key, K, (H, W), hcfg)
    key_images = [frames[i] for i in kf.tolist()]
    if mode == "rgb_pose":
        methods["constant_depth"] = constant_depth_heatmaps(T[kf], K, (H, W), hcfg, constant_depth_m, key_valid, cur_valid)
        methods["classical"] = classical_heatmaps_known_pose(key_images, frames[-1], K, T[kf], (H, W), hcfg,
                                                             constant_depth_m, key_valid, cur_valid)
    else:
        methods["classical"] = classical_heatmaps_homography(key_images, frames[-1], K, (H, W), hcfg, key_valid)
    if model is not None:
        with torch.no_grad():
            device = next(model.parameters()).device
            enc, T_pred = model.predict_geometry(frames.to(device), T.to(device) if mode == "rgb_pose" else None)
            pred_depth = enc.depth.float().cpu()
            T_pred = T_pred.float().cpu()
            extras.update(net_depth=pred_depth, net_T_cur_cam=T_pred)
            net_name = "model_net" if cfg.model.match_refinement else "model"
            methods[net_name] = _reprojected(pred_depth, T_pred, kf, key_valid, cur_valid, K, hcfg)
            steps = None
            if mode == "rgb_only":  # the network's motion between neighbours, for odometry steps that do not match
                steps = model.relative_poses(enc.index(slice(0, len(frames) - 1)),
                                             enc.index(slice(1, len(frames)))).float().cpu()
            multiview = cfg.model.depth_source != "monocular" and getattr(model, "has_multiview", False)
            orb = [orb_features(im) for im in frames] if cfg.model.match_refinement else None
            if multiview or orb is not None:
                pred_depth, T_pred, refined = window_geometry(
                    pred_depth, enc.depth_conf.float().cpu(), K, T_pred, mode == "rgb_pose",
                    depth_source=cfg.model.depth_source, num_sources=cfg.model.multiview_sources,
                    relative_pose=cfg.model.relative_pose,
                    network=model.multiview if multiview else None,
                    features=model.multiview_features(frames.to(device)).float() if multiview else None,
                    orb=orb, learned_steps=steps, match_indices=kf.tolist())
                pred_depth, T_pred = pred_depth.float(), T_pred.float()
                methods["model"] = _reprojected(pred_depth, T_pred, kf, key_valid, cur_valid, K, hcfg)
                if refined is not None:
                    extras["refined"] = refined
        extras.update(depth=pred_depth, T_cur_cam=T_pred, encoding=enc)
    return methods, extras


def _reprojected(depth: torch.Tensor, T_cur_cam: torch.Tensor, kf: torch.Tensor, key_valid: torch.Tensor,
                 cur_valid: torch.Tensor, K: torch.Tensor, hcfg: Any) -> InterFrameHeatmaps:
    """Heatmaps of predicted ``depth (N, H, W)`` and ``T_cur_cam (N, 4, 4)`` (keyframes ``kf``,
    current frame last), placing only the pixels the ground truth has depth for."""
    key_depth = torch.where(key_valid, depth[kf], torch.zeros_like(depth[kf]))
    cur_depth = torch.where(cur_valid, depth[-1], torch.zeros_like(depth[-1]))
    return heatmaps_from_config(key_depth, K, T_cur_cam[kf], K, torch.eye(4), depth.shape[-2:], cur_depth,
                                cfg=predicted_depth_config(hcfg))


def _score(methods: dict[str, InterFrameHeatmaps], oracle: InterFrameHeatmaps, acc: dict[str, _Mean]) -> None:
    gt = oracle.heatmap.float()
    overlap = oracle.has_overlap.bool()
    has_depth = oracle.num_valid > 0
    oov = oracle.out_of_view_fraction >= BEARING_MIN_FRACTION
    H, W = gt.shape[-2:]
    uniform = torch.full((H, W), 1.0 / (H * W))
    preds = {name: torch.where(hm.has_overlap.bool()[:, None, None], hm.heatmap.float(), uniform)
             for name, hm in methods.items()}
    # per keyframe with true overlap: NaN where a method gives no map (a uniform map correlates with nothing)
    cc_k = {name: correlation_coefficient(pred[overlap], gt[overlap]) for name, pred in preds.items()}
    classical_answers = torch.isfinite(cc_k["classical"]) if "classical" in cc_k else None
    for name, hm in methods.items():
        pred = preds[name]
        m = acc.setdefault(name, _Mean())
        if overlap.any():
            scores = heatmap_metrics(pred, gt, overlap)
            n = int(overlap.sum())
            for metric in ("kl", "cc", "sim", "nss", "auc_judd", "peak_distance_px"):
                m.add(metric, [scores[metric]] * n)
            m.add("centroid_distance_px", centroid_distance_px(pred[overlap], gt[overlap]))
            answered = torch.isfinite(cc_k[name])
            m.add("answered", answered.double())
            m.add("cc_all", torch.where(answered, cc_k[name], torch.zeros_like(cc_k[name])))
            if classical_answers is not None:
                m.add("cc_where_classical_answers", cc_k[name][classical_answers])
        if has_depth.any():
            m.add("in_view_fraction_error", (hm.in_view_fraction.float() - oracle.in_view_fraction.float())[has_depth].abs())
            m.add("hidden_fraction_error", (hm.occluded_fraction.float() - oracle.occluded_fraction.float())[has_depth].abs())
        if oov.any():
            pb = hm.out_of_view_bearing.float()[oov]
            given = torch.isfinite(pb)
            m.add("bearing_coverage", given.double())
            if given.any():
                m.add("bearing_error_deg", _angle_deg(pb[given], oracle.out_of_view_bearing.float()[oov][given]))


def _panel(sample: dict[str, Any], mode: str, methods: dict[str, InterFrameHeatmaps], path: Path) -> None:
    from vln_core.viz import overlay_mosaic

    def rgb(t: torch.Tensor) -> np.ndarray:
        return (t.permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)

    kf = sample["keyframe_indices"].tolist()
    n = len(kf)
    labels = [f"kf {i - len(sample['frames']) + 1:+d}" for i in kf]
    thumbs = [rgb(sample["frames"][i]) for i in kf]
    current = rgb(sample["frames"][-1])
    rows = []
    for name in ("oracle", "model", "classical"):
        if name not in methods:
            continue
        mosaic = overlay_mosaic(current, methods[name].numpy(), labels, thumbs, columns=n, tile_width=224)
        bar = np.zeros((28, mosaic.shape[1], 3), np.uint8)
        title = {"oracle": "ground truth (true depth + poses)", "model": f"model, {mode}",
                 "classical": f"classical baseline, {mode}"}[name]
        cv2.putText(bar, title, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(np.concatenate([bar, mosaic]))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR))


def _depth_panel(sample: dict[str, Any], depth: torch.Tensor, mode: str, path: Path) -> None:
    """The model's depth ``(N, H, W)`` against the true depth, for the current frame and the oldest
    keyframe (:func:`vln_core.viz.depth_error_panel`)."""
    from vln_core.viz import depth_error_panel

    last = len(sample["frames"]) - 1
    rows = []
    scale = ", no metric scale" if mode == "rgb_only" else ""  # colour only: the odometry's scale
    for i, name in ((last, f"current, {mode}{scale}"), (int(sample["keyframe_indices"][0]), f"kf {int(sample['keyframe_indices'][0]) - last:+d}")):
        rgb = (sample["frames"][i].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        rows.append(depth_error_panel(rgb, sample["depth"][i].numpy(), depth[i].numpy(), name))
    bar = np.zeros((28, rows[0].shape[1], 3), np.uint8)
    cv2.putText(bar, "image | true depth | model depth | model / true (blue: too near, red: too far)", (8, 20),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", cv2.cvtColor(np.concatenate([bar] + rows), cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"could not encode the depth panel {path}")
    atomic_write_bytes(path, png.tobytes())


@torch.no_grad()
def evaluate_windows(model: Optional[torch.nn.Module], dataset: Any, indices: Sequence[int], cfg: VLNConfig,
                     constant_depth_m: float, modes: Sequence[str] = MODES, panel_dir: Optional[Path] = None,
                     num_panels: int = 4, progress: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Score the model and every baseline on ``dataset[i] for i in indices`` in each mode.

    Returns:
        ``{"num_windows", "num_keyframes", "modes": {mode: {"heatmap": {method: {metric: value}},
        "depth": {...}, "pose": {...}}}, "waypoints": {...}, "goal": {...}, "panels": [paths]}``.
    """
    samples_for_prior = [dataset[i] for i in indices[: min(len(indices), 8)]]
    fr_in, fr_hid = [], []
    for s in samples_for_prior:
        kf = s["keyframe_indices"]
        hm = heatmaps_from_config(s["depth"][kf], s["intrinsics"], s["camera_poses"][kf], s["intrinsics"], torch.eye(4),
                                  s["depth"].shape[-2:], s["depth"][-1], cfg=cfg.heatmap)
        valid = hm.num_valid > 0
        fr_in.append((hm.in_view_fraction + hm.occluded_fraction)[valid])
        fr_hid.append(hm.occluded_fraction[valid])
    prior_in = float(torch.cat(fr_in).mean()) if fr_in else 0.5
    prior_hid = float(torch.cat(fr_hid).mean()) if fr_hid else 0.0

    heat = {mode: {} for mode in modes}
    depth_acc = {mode: {"model": _Mean(), "constant_depth": _Mean()} for mode in modes}
    pose_acc = {mode: {"model": _Mean(), "identity": _Mean()} for mode in modes}
    refinement_acc = {mode: _Mean() for mode in modes}
    way = {"model": _Mean(), "constant_velocity": _Mean(), "stand_still": _Mean()}
    goal = {"model": _Mean(), "center": _Mean()}
    panels: list[str] = []
    depth_panels: list[str] = []
    num_keyframes = 0
    if model is not None:
        model.eval()
    for n, index in enumerate(indices):
        sample = dataset[index]
        kf = sample["keyframe_indices"].long()
        num_keyframes += int(kf.numel())
        true_depth = sample["depth"]
        T_true = sample["camera_poses"]
        enc = None
        for mode in modes:
            methods, extras = window_methods(sample, mode, cfg, model, constant_depth_m, prior_in, prior_hid)
            _score(methods, methods["oracle"], heat[mode])
            frames_scored = torch.cat([kf, torch.tensor([len(true_depth) - 1])])
            if "depth" in extras:
                enc = extras["encoding"]
                versions = [("model", "depth", "T_cur_cam")]
                if "model_net" in methods:
                    versions.append(("model_net", "net_depth", "net_T_cur_cam"))
                for name, depth_key, pose_key in versions:
                    absrel, delta = _depth_metrics(extras[depth_key][frames_scored], true_depth[frames_scored])
                    depth_acc[mode].setdefault(name, _Mean()).add("abs_rel", absrel)
                    depth_acc[mode][name].add("delta_1.25", delta)
                    for key, value in _depth_metrics_by_range(extras[depth_key][frames_scored],
                                                              true_depth[frames_scored]).items():
                        depth_acc[mode][name].add(key, value)
                    if mode == "rgb_only":
                        Tp = extras[pose_key][kf]
                        acc = pose_acc[mode].setdefault(name, _Mean())
                        acc.add("rotation_error_deg", _rotation_error_deg(Tp, T_true[kf]))
                        acc.add("translation_error_m", (Tp[:, :3, 3] - T_true[kf][:, :3, 3]).norm(dim=-1))
                if "refined" in extras:
                    refined = extras["refined"]
                    acc = refinement_acc[mode]
                    if mode == "rgb_pose":
                        acc.add("scaled_windows", float(refined.scale_points > 0 and not np.allclose(refined.depth_scale, 1)))
                        acc.add("depth_scale", refined.depth_scale)
                    else:
                        acc.add("pose_from_matches", np.asarray(refined.pose_from_matches, dtype=np.float64))
            if mode == "rgb_only":
                eye = torch.eye(4).expand(len(kf), 4, 4)
                pose_acc[mode]["identity"].add("rotation_error_deg", _rotation_error_deg(eye, T_true[kf]))
                pose_acc[mode]["identity"].add("translation_error_m", T_true[kf][:, :3, 3].norm(dim=-1))
            const = torch.full_like(true_depth[frames_scored], constant_depth_m)
            absrel, delta = _depth_metrics(const, true_depth[frames_scored])
            depth_acc[mode]["constant_depth"].add("abs_rel", absrel)
            depth_acc[mode]["constant_depth"].add("delta_1.25", delta)
            for key, value in _depth_metrics_by_range(const, true_depth[frames_scored]).items():
                depth_acc[mode]["constant_depth"].add(key, value)
            if panel_dir is not None and n < num_panels:
                path = Path(panel_dir) / f"window_{n:03d}_{mode}.png"
                _panel(sample, mode, methods, path)
                panels.append(str(path))
                if "depth" in extras:
                    path = Path(panel_dir) / f"window_{n:03d}_{mode}_depth.png"
                    _depth_panel(sample, extras["depth"], mode, path)
                    depth_panels.append(str(path))
        # waypoints and goal (independent of the mode: the current frame, instruction and past motion)
        full = bool(sample["waypoint_mask"].all())
        past = sample["past_trajectory"][None]
        target = sample["waypoints"][None]
        goal_logits = wp = None
        if model is not None and enc is not None:
            device = next(model.parameters()).device
            ids, mask = model.encode_instructions([sample["instruction"]])
            cur = enc.index(slice(len(true_depth) - 1, len(true_depth)))
            goal_logits, wp = model.goal_and_waypoints(cur, ids.to(device), mask.to(device).bool(), past.to(device),
                                                       sample["intent"][None].to(device), true_depth.shape[-2:])
            goal_logits, wp = goal_logits.float().cpu()[0], wp.float().cpu()
        if full:
            candidates = {"constant_velocity": constant_velocity_waypoints(past, target.shape[1]),
                          "stand_still": torch.zeros_like(target)}
            if wp is not None:
                candidates["model"] = wp
            for name, pred in candidates.items():
                way[name].add("ade_m", ade(pred, target))
                way[name].add("fde_m", fde(pred, target))
        if bool(sample["goal_valid"]):
            H, W = true_depth.shape[-2:]
            g = sample["goal_heatmap"]
            flat = int(g.flatten().argmax())
            goal_uv = torch.tensor([flat % W, flat // W], dtype=torch.float64)
            radius = GOAL_HIT_FRACTION * min(H, W)
            centre = torch.tensor([(W - 1) / 2, (H - 1) / 2], dtype=torch.float64)
            d_centre = float((centre - goal_uv).norm())
            goal["center"].add("peak_distance_px", d_centre)
            goal["center"].add("hit_rate", float(d_centre <= radius))
            if goal_logits is not None:
                flat = int(goal_logits.flatten().argmax())
                d = float((torch.tensor([flat % W, flat // W], dtype=torch.float64) - goal_uv).norm())
                goal["model"].add("peak_distance_px", d)
                goal["model"].add("hit_rate", float(d <= radius))
        if progress is not None:
            progress(1)
    result: dict[str, Any] = {
        "num_windows": len(indices),
        "num_keyframes": num_keyframes,
        "prior_shares": {"in_view_plus_hidden": prior_in, "hidden": prior_hid},
        "constant_depth_m": constant_depth_m,
        "modes": {},
        "waypoints": {k: v.result() for k, v in way.items() if v.result()},
        "goal": {k: {**v.result(), "windows": v.counts.get("hit_rate", 0)} for k, v in goal.items() if v.result()},
        "panels": panels,
        "depth_panels": depth_panels,
    }
    for mode in modes:
        entry = {"heatmap": {name: heat[mode][name].result() for name in MODE_METHODS[mode] if name in heat[mode]},
                 "depth": {k: v.result() for k, v in depth_acc[mode].items() if v.result()}}
        if mode == "rgb_only":
            entry["pose"] = {k: v.result() for k, v in pose_acc[mode].items() if v.result()}
        if refinement_acc[mode].result():
            entry["refinement"] = refinement_acc[mode].result()
        oracle_cc = entry["heatmap"].get("oracle", {}).get("cc")
        model_cc = entry["heatmap"].get("model", {}).get("cc")
        if oracle_cc and model_cc is not None:
            entry["model_cc_fraction_of_oracle"] = model_cc / oracle_cc
        result["modes"][mode] = entry
    return result


def format_report(result: dict[str, Any], title: str = "") -> str:
    """Plain-text tables of :func:`evaluate_windows`' result."""
    lines = [title] if title else []
    cols = ("kl", "cc", "sim", "nss", "peak_distance_px", "centroid_distance_px", "in_view_fraction_error",
            "hidden_fraction_error", "bearing_error_deg", "bearing_coverage")
    short = ("KL", "CC", "SIM", "NSS", "peak px", "centroid px", "in-view err", "hidden err", "bearing deg", "bear cov")
    for mode, entry in result["modes"].items():
        lines.append(f"[{mode}] heatmaps ({result['num_windows']} windows, {result['num_keyframes']} keyframes)")
        lines.append(f"  {'method':<15}" + "".join(f"{c:>12}" for c in short))
        for name, values in entry["heatmap"].items():
            lines.append(f"  {name:<15}" + "".join(f"{values.get(c, float('nan')):>12.3f}" for c in cols))
        answered = {name: v for name, v in entry["heatmap"].items() if "answered" in v and name in ("model", "classical")}
        if len(answered) == 2:
            model, classical = answered["model"], answered["classical"]
            lines.append(f"  keyframes answered: model {model['answered']:.0%}, classical {classical['answered']:.0%} | "
                         f"CC, no answer as 0: model {model['cc_all']:.3f}, classical {classical['cc_all']:.3f} | "
                         f"on the keyframes classical answers: model {model.get('cc_where_classical_answers', float('nan')):.3f}, "
                         f"classical {classical.get('cc_where_classical_answers', float('nan')):.3f}")
        for name, values in entry["depth"].items():
            by_range = "  ".join(
                f"{_range_name(lo, hi)} {values[f'abs_rel@{_range_name(lo, hi)}']:.3f}/"
                f"{values[f'delta_1.25@{_range_name(lo, hi)}']:.2f} ({values.get(f'share@{_range_name(lo, hi)}', 0):.0%})"
                for lo, hi in DEPTH_RANGES if f"abs_rel@{_range_name(lo, hi)}" in values)
            lines.append(f"  depth {name:<15} AbsRel {values.get('abs_rel', float('nan')):.3f}  "
                         f"delta<1.25 {values.get('delta_1.25', float('nan')):.3f}"
                         + (f"  | by range AbsRel/delta (share): {by_range}" if by_range else ""))
        for name, values in entry.get("pose", {}).items():
            lines.append(f"  pose  {name:<15} rotation {values.get('rotation_error_deg', float('nan')):.2f} deg  "
                         f"translation {values.get('translation_error_m', float('nan')):.3f} m")
        refinement = entry.get("refinement", {})
        if "depth_scale" in refinement:
            lines.append(f"  match refinement: depth scaled in {refinement['scaled_windows']:.0%} of windows "
                         f"(mean factor {refinement['depth_scale']:.2f})")
        if "pose_from_matches" in refinement:
            lines.append(f"  match refinement: {refinement['pose_from_matches']:.0%} of keyframe poses from PnP")
        if "model_cc_fraction_of_oracle" in entry:
            lines.append(f"  model CC as a fraction of the oracle: {entry['model_cc_fraction_of_oracle']:.3f}")
    for name, values in result["waypoints"].items():
        lines.append(f"waypoints {name:<18} ADE {values.get('ade_m', float('nan')):.3f} m  FDE {values.get('fde_m', float('nan')):.3f} m")
    for name, values in result["goal"].items():
        lines.append(f"goal {name:<8} hit rate {values.get('hit_rate', float('nan')):.3f}  peak distance "
                     f"{values.get('peak_distance_px', float('nan')):.1f} px  ({int(values['windows'])} windows with the goal in view)")
    return "\n".join(lines)

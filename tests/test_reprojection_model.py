"""The embedded model (heatmaps from predicted geometry) and the checkpoint that ships.

* its heatmaps are exactly the geometry core's reprojection of its own depth (one code path);
* the heatmap loss reaches the depth and pose networks through the reprojection;
* known poses are used as given, the current frame is the identity in RGB-only mode;
* the shipped checkpoint loads without downloads and, on real RGB-D windows that no training
  saw, its RGB + pose heatmaps beat constant depth on CC by a margin (a regression guard).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vln_core.config import load_config
from vln_core.geometry.transforms import invert_pose
from vln_core.heatmaps import heatmaps_from_config
from vln_core.models import ModelInputs, build_model
from vln_core.models.reprojection_model import HEATMAP_LOG_EPS, default_intrinsics
from vln_core.models.shipped import SHIPPED_CHECKPOINT, load_model_checkpoint

REAL_RGBD = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_rgbd_box"
#: RGB + pose CC of the shipped model over constant depth on three real windows, at least (measured: see
#: test_shipped_model_beats_constant_depth_on_real_windows)
MARGIN_OVER_CONSTANT_DEPTH = 0.1
H = W = 64
N_M, N_K = 4, 2


def tiny_model():
    torch.manual_seed(0)
    cfg = load_config(None, [f"video.total_frames={N_M}", f"video.keyframes={N_K}", f"video.frame_size=[{H},{W}]",
                             "training.stage=finetune", "frame_sampling.max_points_per_frame=256"])
    return build_model(cfg), cfg


def inputs(model, poses: bool) -> ModelInputs:
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(1, N_M, 3, H, W, generator=g)
    ids, mask = model.encode_instructions(["go to the red chair"])
    T = torch.eye(4).repeat(1, N_M, 1, 1)
    T[0, :, 0, 3] = torch.linspace(-0.3, 0.0, N_M)  # walking right, current frame last
    return ModelInputs(frames, ids, mask, torch.zeros(1, 16, 4), torch.ones(1, dtype=torch.long),
                       keyframe_indices=torch.tensor([[0, 1]]), intrinsics=default_intrinsics((H, W), 70.0)[None],
                       camera_poses=T if poses else None)


def test_heatmaps_are_the_geometry_core_reprojection_of_the_predicted_depth():
    model, cfg = tiny_model()
    model.eval()
    inp = inputs(model, poses=True)
    with torch.no_grad():
        out = model(inp)
        T = inp.camera_poses[0]
        T_cur = invert_pose(T[-1]) @ T
        kf = inp.keyframe_indices[0]
        ref = heatmaps_from_config(out.depth[0, kf], inp.intrinsics[0], T_cur[kf], inp.intrinsics[0], torch.eye(4),
                                   (H, W), out.depth[0, -1], cfg=cfg.heatmap)
    assert torch.allclose(out.heatmap_logits[0], torch.log(ref.heatmap + HEATMAP_LOG_EPS), atol=1e-5)
    # the poses given are the poses used
    assert torch.allclose(out.pose_enc[0, :, :3], T_cur[:, :3, 3], atol=1e-6)


def test_rgb_only_predicts_poses_with_the_current_frame_as_identity():
    model, _ = tiny_model()
    model.eval()
    with torch.no_grad():
        out = model(inputs(model, poses=False))
        enc, T = model.predict_geometry(inputs(model, poses=False).frames[0])
    assert torch.allclose(out.pose_enc[0, -1, :7], torch.tensor([0, 0, 0, 0, 0, 0, 1.0]), atol=1e-6)
    assert torch.allclose(T[-1], torch.eye(4)) and T.shape == (N_M, 4, 4) and enc.depth.shape == (N_M, H, W)
    assert (enc.depth > 0).all() and (enc.depth_conf > 0).all()


def test_the_heatmap_loss_trains_depth_and_pose_through_the_reprojection():
    model, _ = tiny_model()
    model.train()
    # perturb the zero-initialised output layers so the pose head's input gradient is not zero
    with torch.no_grad():
        model.pose_head.fc[-1].weight.normal_(0, 0.01)
        model.depth_decoder.out.weight.normal_(0, 0.01)
    out = model(inputs(model, poses=False))
    target = torch.zeros(N_K, H, W)
    target[:, H // 4: H // 2, W // 4: W // 2] = 1.0 / (H // 4 * W // 4)
    loss = -(target * torch.log_softmax(out.heatmap_logits[0].flatten(1), -1).reshape(N_K, H, W)).sum()
    loss.backward()
    for name in ("depth_decoder.out.weight", "pose_head.fc.2.weight", "encoder.stem.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_known_poses_per_sample_mix_the_two_modes():
    model, _ = tiny_model()
    model.eval()
    inp = inputs(model, poses=True)
    both = ModelInputs(**{**vars(inp), "frames": inp.frames.repeat(2, 1, 1, 1, 1),
                          "instruction_ids": inp.instruction_ids.repeat(2, 1),
                          "instruction_mask": inp.instruction_mask.repeat(2, 1),
                          "past_trajectory": inp.past_trajectory.repeat(2, 1, 1), "intent": inp.intent.repeat(2),
                          "keyframe_indices": inp.keyframe_indices.repeat(2, 1), "intrinsics": inp.intrinsics.repeat(2, 1, 1),
                          "camera_poses": inp.camera_poses.repeat(2, 1, 1, 1), "pose_known": torch.tensor([True, False])})
    with torch.no_grad():
        out = model(both)
        known = model(inp)
        unknown = model(inputs(model, poses=False))
    assert torch.allclose(out.heatmap_logits[0], known.heatmap_logits[0], atol=1e-5)
    assert torch.allclose(out.heatmap_logits[1], unknown.heatmap_logits[0], atol=1e-5)


def test_shipped_checkpoint_is_small_and_loads_offline():
    assert SHIPPED_CHECKPOINT.is_file(), "models/embedded/checkpoint.pt must ship with the repository"
    assert SHIPPED_CHECKPOINT.stat().st_size < 30e6
    model, meta = load_model_checkpoint()
    assert model.kind == "reprojection" and meta["train_median_depth_m"] > 0 and meta["step"] > 0


@pytest.mark.skipif(not REAL_RGBD.is_dir(), reason=f"real RGB-D sequence not found at {REAL_RGBD}")
def test_shipped_model_beats_constant_depth_on_real_windows():
    """RGB + pose on real windows no training saw: the multi-view depth puts the keyframes' content
    where the depth camera does, far better than one constant depth (the model card has the full
    evaluation; this bar is about half the margin measured at shipping)."""
    from vln_core.train.dataset import EpisodeWindowDataset, find_episodes
    from vln_core.train.evaluation import window_methods
    from vln_core.metrics import correlation_coefficient

    cfg = load_config(None, ["video.total_frames=16", "video.keyframes=8", "training.frame_stride=1"])
    torch.set_num_threads(2)
    model, meta = load_model_checkpoint(None, cfg)
    dataset = EpisodeWindowDataset(find_episodes([REAL_RGBD]), cfg)
    scores = {"model": [], "constant_depth": [], "center": []}
    for index in (0, len(dataset) // 2, len(dataset) - 1):
        methods, _ = window_methods(dataset[index], "rgb_pose", cfg, model, meta["train_median_depth_m"], 0.7, 0.05)
        gt = methods["oracle"]
        valid = gt.has_overlap
        for name in scores:
            scores[name].append(correlation_coefficient(methods[name].heatmap[valid], gt.heatmap[valid]).mean())
    cc = {name: float(torch.stack(values).mean()) for name, values in scores.items()}
    assert cc["model"] > cc["center"], cc
    assert cc["model"] > cc["constant_depth"] + MARGIN_OVER_CONSTANT_DEPTH, cc

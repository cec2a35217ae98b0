"""The multi-view depth network (vln_core.models.multiview) and how the embedded model uses it.

* a textured wall seen from two posed cameras: the untrained network's depth (the raw
  correlation goes straight into the plane logits) already lands on the wall, and so does the
  trained stage's loss target;
* padding sources change nothing; no source (no parallax) keeps the monocular depth;
* the multiview training stage trains only the multi-view network, and its loss reaches it;
* checkpoints from before the network existed still load (monocular depth, reported as such).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vln_core.config import load_config
from vln_core.geometry.plane_sweep import inverse_depth_planes
from vln_core.geometry.transforms import make_pose
from vln_core.models import ModelInputs, build_model
from vln_core.models.multiview import (
    MultiViewArchitecture,
    MultiViewDepth,
    monocular_to_pose_scale,
    plane_targets,
    window_depth,
)
from vln_core.models.reprojection_model import default_intrinsics
from vln_core.train.losses import compute_losses, resolve_loss_weights

H = W = 64


def _wall_views(wall_m: float, baselines: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(frames (N, 3, H, W), K (3, 3), T_wc (N, 4, 4))``: a textured fronto-parallel wall at
    ``wall_m`` seen by cameras translated sideways by ``baselines``."""
    torch.manual_seed(3)
    texture = F.avg_pool2d(torch.rand(1, 3, 96, 96), 3, 1, 1)
    K = default_intrinsics((H, W), 70.0, dtype=torch.float64)
    frames, poses = [], []
    for b in baselines:
        T = make_pose(torch.eye(3, dtype=torch.float64), torch.tensor([b, 0.0, 0.0], dtype=torch.float64))
        v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
        rays = torch.linalg.inv(K) @ torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1)
        X = T[:3, 3:4] + wall_m * rays
        g = torch.stack([X[0] / 1.2, X[1] / 1.2], -1).reshape(1, H, W, 2).float()
        frames.append(F.grid_sample(texture, g, align_corners=True)[0])
        poses.append(T)
    return torch.stack(frames), K.float(), torch.stack(poses)


def _net() -> MultiViewDepth:
    torch.manual_seed(0)
    return MultiViewDepth(MultiViewArchitecture(feature_dim=8, num_planes=32, near_m=0.3, far_m=8.0, width=8,
                                                fusion_width=8)).eval()


def test_plane_targets_put_the_true_inverse_depth_between_two_planes():
    planes = inverse_depth_planes(0.5, 5.0, 16)
    depth = torch.tensor([[[0.7, 2.0], [4.9, 0.0]]])
    target, valid = plane_targets(depth, planes)
    assert torch.equal(valid, torch.tensor([[[True, True], [True, False]]]))
    assert torch.allclose(target.sum(1)[valid], torch.ones(3))
    inv = (target * (1 / planes)[None, :, None, None]).sum(1)
    assert torch.allclose(inv[valid], 1 / depth[valid], atol=1e-5)


def test_cost_volume_and_plane_depth_find_a_textured_wall():
    """The network's own cost volume (features at 1/4, intrinsics scaled inside) peaks at the wall,
    and reading depth off logits peaked there gives the wall's depth; without a prior the output is
    the multi-view depth itself."""
    net = _net()
    frames, K, T = _wall_views(2.0, [0.0, 0.3, -0.25])
    # a plain intensity feature makes the check independent of the random feature weights
    feats = F.normalize(F.avg_pool2d(frames - frames.mean(dim=(1, 2, 3), keepdim=True), 4), dim=1)
    T_src_ref = (torch.linalg.inv(T[1:]) @ T[0]).float()
    with torch.no_grad():
        cost, seen = net.cost_volume(feats[:1], feats[None, 1:], K[None], T_src_ref[None])
        depth, conf = net.plane_depth(F.avg_pool2d(cost, 3, 1, 1) * 20)
        out = net(net.encode(frames[:1]), net.encode(frames[1:])[None], K, T_src_ref[None], (H, W))
    inner = depth[0, 3:-3, 3:-3]
    assert float((inner / 2.0 - 1).abs().median()) < 0.1
    assert float(seen.min()) >= 0 and float(seen.max()) <= 1
    assert out.depth.shape == (1, H, W) and torch.equal(out.depth, out.multiview_depth)
    assert float(out.confidence.min()) >= 0 and float(out.confidence.max()) <= 1 + 1e-6
    assert float(out.multiview_depth.min()) >= 0.3 - 1e-4 and float(out.multiview_depth.max()) <= 8.0 + 1e-3


def test_padding_sources_change_nothing():
    net = _net()
    frames, K, T = _wall_views(1.5, [0.0, 0.2, -0.2])
    with torch.no_grad():
        feats = net.encode(frames)
        T_src_ref = torch.linalg.inv(T[1:]) @ T[0]
        one = net(feats[:1], feats[None, 1:2], K, T_src_ref[None, :1].float(), (H, W))
        padded = net(feats[:1], torch.stack([feats[1], torch.randn_like(feats[1])])[None], K,
                     torch.stack([T_src_ref[0], torch.eye(4, dtype=torch.float64)])[None].float(), (H, W),
                     src_valid=torch.tensor([[True, False]]))
    assert torch.allclose(one.multiview_depth, padded.multiview_depth, rtol=1e-4, atol=1e-5)


def test_window_depth_keeps_the_monocular_depth_without_parallax():
    net = _net()
    frames, K, _ = _wall_views(1.5, [0.0, 0.0, 0.0])
    T = torch.eye(4).repeat(3, 1, 1)  # three frames from one spot: nothing to triangulate
    mono = torch.full((3, H, W), 1.234)
    with torch.no_grad():
        depth, chosen = window_depth(net, mono, torch.ones(3, H, W), net.encode(frames), K, T, [0, 2], "fused", 2)
    assert chosen == [[], []]
    assert torch.equal(depth, mono[[0, 2]])
    # with parallax the sources are used, and "monocular" never uses them
    frames, K, T = _wall_views(1.5, [0.0, 0.2, -0.2])
    with torch.no_grad():
        depth, chosen = window_depth(net, mono, torch.ones(3, H, W), net.encode(frames), K, T, [0], "fused", 2)
        same, none = window_depth(net, mono, torch.ones(3, H, W), net.encode(frames), K, T, [0], "monocular", 2)
    assert sorted(chosen[0]) == [1, 2] and not torch.equal(depth, mono[:1])
    assert none == [[]] and torch.equal(same, mono[:1])


def test_sources_are_chosen_for_parallax_at_the_poses_scale_not_the_monocular_one():
    """A real camera's monocular depth can be 3.5x too far; with metric poses the parallax of a
    source is its baseline over the *true* depth. The wall is at 1.5 m, the monocular depth says
    6 m: at its word the 0.7 m baseline (ratio 0.12 at 6 m, but 0.47 at 1.5 m) looks best; once
    the cost volume's own depth gives the scale, the 0.18 m baseline (0.12 at 1.5 m) is chosen."""
    net = _net()
    frames, K, T = _wall_views(1.5, [0.0, 0.18, 0.7])
    mono = torch.full((3, H, W), 6.0)
    with torch.no_grad():
        feats = net.encode(frames)
        _, wrong = window_depth(net, mono, torch.ones(3, H, W), feats, K, T, [0], "multiview", 1)
        first, _ = window_depth(net, mono, torch.ones(3, H, W), feats, K, T, [0], "multiview", 2)
        scale = monocular_to_pose_scale(first[0], mono[0])
        _, right = window_depth(net, mono, torch.ones(3, H, W), feats, K, T, [0], "multiview", 1, mono_scale=scale)
    assert wrong == [[2]]
    assert 0.15 < scale < 0.4  # the untrained volume finds the wall near 1.5 m: 1.5 / 6 = 0.25
    assert right == [[1]]
    assert monocular_to_pose_scale(torch.zeros(H, W), mono[0]) == 1.0
    # within a factor 1.5 the monocular scale stands (one frame's median is no more precise)
    assert monocular_to_pose_scale(mono[0] * 1.4, mono[0]) == 1.0
    assert monocular_to_pose_scale(mono[0] * 1.6, mono[0]) == pytest.approx(1.6)


def _tiny_cfg(*extra: str):
    return load_config(None, ["video.total_frames=4", "video.keyframes=2", f"video.frame_size=[{H},{W}]",
                              "frame_sampling.max_points_per_frame=256", *extra])


def test_multiview_stage_trains_only_the_multiview_network():
    torch.manual_seed(0)
    cfg = _tiny_cfg("training.stage=multiview")
    model = build_model(cfg)
    params = model.trainable_parameters("multiview")
    assert {id(p) for p in params} == {id(p) for p in model.multiview.parameters()}
    frames, K, T = _wall_views(1.8, [0.0, 0.15, 0.3, 0.45])
    ids, mask = model.encode_instructions(["go to the chair"])
    T_cur = torch.linalg.inv(T[-1]) @ T
    inp = ModelInputs(frames[None], ids, mask, torch.zeros(1, 16, 4), torch.ones(1, dtype=torch.long),
                      keyframe_indices=torch.tensor([[0, 1]]), intrinsics=K[None], camera_poses=T_cur[None].float())
    out = model(inp)
    assert out["multiview_index"].tolist() == [[0, 0], [0, 3]]
    batch = {"depth": torch.full((1, 4, H, W), 1.8)}
    loss = compute_losses(out, batch, resolve_loss_weights({"multiview": 1.0}), "multiview")
    loss.total.backward()
    assert all(p.grad is not None for p in model.multiview.parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.encoder.parameters())
    assert math.isfinite(float(loss.total.detach()))


def test_checkpoint_without_multiview_weights_loads_as_monocular(tmp_path):
    from vln_core.backends.learned import LearnedBackend
    from vln_core.backends.model_backend import TorchEngine

    cfg = _tiny_cfg()
    model = build_model(cfg)
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("multiview.")}
    fresh = build_model(cfg)
    fresh.load_state_dict(old)
    assert fresh.has_multiview is False
    with pytest.raises(RuntimeError, match="missing keys"):
        build_model(cfg).load_state_dict({k: v for k, v in old.items() if not k.startswith("encoder.stem")})
    path = tmp_path / "old.pt"
    from vln_core.config import config_to_dict

    torch.save({"model": old, "config": config_to_dict(cfg), "meta": {}}, path)
    backend = LearnedBackend(cfg, TorchEngine(cfg, str(path)))
    assert backend.depth_source == "monocular"
    assert backend.describe()["depth_source"] == "monocular"

"""Sparse-match geometry (vln_core.geometry.matching) and the refinement of predicted geometry
(vln_core.geometry.refinement), on a simulated episode and on the real RGB-D sequence, where
the true depth and poses are known: a distorted copy of the truth must be brought back to it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vln_core.geometry.matching import orb_features, orb_matches, pose_from_depth_matches, triangulate_matches
from vln_core.geometry.refinement import chain_visual_odometry, refine_learned_geometry, refine_window_geometry


def _rotation_deg(A: np.ndarray, B: np.ndarray) -> float:
    R = A[:3, :3].T @ B[:3, :3]
    return math.degrees(math.acos(np.clip((np.trace(R) - 1) / 2, -1, 1)))


@pytest.fixture(scope="module")
def sim(sim_episode_224):
    return sim_episode_224


def _pair(sim, a: int, b: int):
    colors, depth, T_wc, K = sim
    return colors[a], colors[b], depth[a], depth[b], np.linalg.inv(T_wc[b]) @ T_wc[a], K


def test_pnp_on_true_depth_recovers_the_true_motion(sim):
    img_a, img_b, d_a, _, T_true, K = _pair(sim, 4, 8)
    pk, pc = orb_matches(img_a, img_b)
    assert len(pk) >= 30, len(pk)
    T, inliers = pose_from_depth_matches(pk, pc, d_a, K)
    assert T is not None and len(inliers) >= 20
    assert _rotation_deg(T, T_true) < 1.0
    assert np.linalg.norm(T[:3, 3] - T_true[:3, 3]) < 0.03, (T[:3, 3], T_true[:3, 3])


def test_pnp_refuses_a_frame_without_matches(sim):
    colors, depth, _, K = sim
    blank = np.full_like(colors[0], 128)
    pk, pc = orb_matches(colors[0], blank)
    T, inliers = pose_from_depth_matches(pk, pc, depth[0], K)
    assert T is None and len(inliers) == 0


def test_triangulation_with_the_known_pose_gives_true_depths(sim):
    img_a, img_b, d_a, d_b, T_true, K = _pair(sim, 0, 10)
    pk, pc = orb_matches(img_a, img_b)
    keep, z_k, z_c = triangulate_matches(pk, pc, K, T_true)
    assert keep.sum() >= 10, keep.sum()
    true_k = d_a[np.rint(pk[keep, 1]).astype(int), np.rint(pk[keep, 0]).astype(int)]
    good = true_k > 0
    # ORB corners at 224x224 are good to about a pixel: depths to about 10 % at these baselines
    assert np.median(np.abs(z_k[keep][good] - true_k[good]) / true_k[good]) < 0.15


@pytest.mark.parametrize("wrong_scale", [0.4, 3.0])
def test_known_poses_give_a_wrongly_scaled_depth_its_metric_scale(sim, wrong_scale):
    colors, depth, T_wc, K = sim
    key, cur = [2, 6, 10], 14
    T_cur_key = torch.from_numpy(np.stack([np.linalg.inv(T_wc[cur]) @ T_wc[k] for k in key]))
    refined = refine_learned_geometry([orb_features(colors[k]) for k in key], orb_features(colors[cur]),
                                      torch.from_numpy(depth[key] * wrong_scale), torch.from_numpy(depth[cur] * wrong_scale),
                                      torch.from_numpy(K), T_cur_key, poses_known=True)
    assert refined.scale_points >= 20, refined.scale_points
    assert np.allclose(refined.depth_scale, refined.depth_scale[0])  # one scale for the window
    assert abs(refined.depth_scale[0] * wrong_scale - 1.0) < 0.05, refined.depth_scale
    assert torch.equal(refined.T_cur_key, T_cur_key)  # known poses are kept
    valid = depth[cur] > 0
    assert np.median(np.abs(refined.cur_depth.numpy()[valid] / depth[cur][valid] - 1)) < 0.05


def test_without_poses_pnp_replaces_a_wrong_pose_and_odometry_bridges_the_rest(sim):
    colors, depth, T_wc, K = sim
    frames = list(range(0, 16, 2))
    feats = [orb_features(colors[i]) for i in frames]
    d = torch.from_numpy(depth[frames])
    T_true = np.stack([np.linalg.inv(T_wc[frames[-1]]) @ T_wc[i] for i in frames])
    chained = chain_visual_odometry(feats, d, torch.from_numpy(K)).numpy()
    assert np.allclose(chained[-1], np.eye(4))
    assert max(_rotation_deg(c, t) for c, t in zip(chained, T_true)) < 2.0
    # a window whose network poses are all wrong (identity): the matched keyframes get PnP poses
    depth_out, T_out, refined = refine_window_geometry(feats, d, torch.from_numpy(K),
                                                       torch.eye(4, dtype=torch.float64).repeat(len(frames), 1, 1),
                                                       poses_known=False, match_indices=[3, 5])
    assert refined.pose_from_matches == [True, True]
    for j in (3, 5):
        assert _rotation_deg(T_out[j].numpy(), T_true[j]) < 1.0
        assert np.linalg.norm(T_out[j, :3, 3].numpy() - T_true[j, :3, 3]) < 0.05
    for j in (0, 1, 2, 4, 6):  # not matched directly: chained odometry
        assert np.allclose(T_out[j].numpy(), chained[j])
    assert torch.equal(T_out[-1], torch.eye(4, dtype=T_out.dtype)) and depth_out.shape == d.shape


def test_real_sequence_known_poses_fix_a_depth_three_times_too_far(real_rgbd_dir):
    from vln_core.data.posed_images import load_posed_sequence

    seq = load_posed_sequence(real_rgbd_dir, stride=4, max_frames=5)
    T_wc, K = seq.poses.astype(np.float64), seq.K.astype(np.float64)
    key, cur = [0, 1, 2, 3], 4
    T_cur_key = torch.from_numpy(np.stack([np.linalg.inv(T_wc[cur]) @ T_wc[k] for k in key]))
    depth = torch.from_numpy(seq.depths.astype(np.float64))
    refined = refine_learned_geometry([orb_features(seq.colors[k]) for k in key], orb_features(seq.colors[cur]),
                                      depth[key] * 3.0, depth[cur] * 3.0, torch.from_numpy(K), T_cur_key, poses_known=True)
    assert refined.scale_points >= 20, refined.scale_points
    assert abs(refined.depth_scale[0] * 3.0 - 1.0) < 0.1, refined.depth_scale


def test_scale_search_is_silent_when_a_match_falls_behind_the_camera_at_some_scales(sim):
    """A match whose lifted point is behind the target camera at the scales tried projected to
    inf - inf = NaN and numpy printed a RuntimeWarning on every update of the learned backend;
    such a match says nothing about the scale and must be skipped silently."""
    import warnings

    from vln_core.geometry.refinement import depth_scale_from_matches

    colors, depth, T_wc, K = sim
    # a pair whose keyframe camera centre lies behind the current camera (the robot moved forward)
    key, cur = min(((a, b) for a in range(0, 12) for b in range(a + 6, 24)),
                   key=lambda ab: (np.linalg.inv(T_wc[ab[1]]) @ T_wc[ab[0]])[2, 3])
    T_cur_key = np.linalg.inv(T_wc[cur]) @ T_wc[key]
    assert T_cur_key[2, 3] < -0.05, T_cur_key[2, 3]
    pk, pc = orb_matches(colors[key], colors[cur])
    ok = depth[key][np.rint(pk[:, 1]).astype(int), np.rint(pk[:, 0]).astype(int)] > 0
    pk, pc = pk[ok], pc[ok]
    key_depth = depth[key].copy()
    key_depth[5, 5] = 1e-3  # right at the keyframe camera: behind the current one at every scale
    matches = [(np.concatenate([pk, [[5.0, 5.0]]]), np.concatenate([pc, [[100.0, 100.0]]]))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scale, points = depth_scale_from_matches(matches, key_depth[None], depth[cur], K, T_cur_key[None])
    assert np.isfinite(scale) and abs(scale - 1.0) < 0.05 and points >= 10, (scale, points)

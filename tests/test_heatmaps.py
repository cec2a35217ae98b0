"""Frame-indexed heatmaps on constructed scenes with analytic answers."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from vln_core.config import HeatmapConfig, load_config
from vln_core.errors import InputError
from vln_core.geometry.camera import PinholeCamera
from vln_core.geometry.transforms import invert_pose, make_pose
from vln_core.heatmaps import (
    InterFrameHeatmaps,
    frame_indexed_heatmaps,
    gaussian_blur,
    heatmaps_from_config,
    pool_keyframe_points,
    splat_bilinear,
)
from vln_core.viz import blend_heatmap, colorize_heatmap, overlay_mosaic

H, W = 48, 64
CAM = PinholeCamera.from_hfov(60.0, W, H)  # fx = 32 / tan(30 deg) = 55.4
K64 = torch.as_tensor(CAM.K)  # float64 for analytic comparisons
EYE = torch.eye(4, dtype=torch.float64)


def _yaw(deg: float) -> torch.Tensor:
    """Camera-to-world rotation of a camera turned ``deg`` to the LEFT about the optical y axis."""
    a = math.radians(deg)
    # optical frame: x right, y down, z forward; turning left moves z towards -x
    return torch.tensor([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]], dtype=torch.float64)


def _rot(yaw_deg: float, pitch_deg: float) -> torch.Tensor:
    p = math.radians(pitch_deg)
    pitch = torch.tensor([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]], dtype=torch.float64)
    return _yaw(yaw_deg) @ pitch


def _centroid(m: torch.Tensor) -> torch.Tensor:
    """(..., H, W) maps -> (..., 2) mass centroid (u, v)."""
    v, u = torch.meshgrid(torch.arange(m.shape[-2], dtype=m.dtype), torch.arange(m.shape[-1], dtype=m.dtype), indexing="ij")
    mass = m.sum(dim=(-1, -2))
    return torch.stack([(m * u).sum(dim=(-1, -2)) / mass, (m * v).sum(dim=(-1, -2)) / mass], dim=-1)


def _single_pixel_depths(pixels: list[tuple[int, int]], depths: list[float]) -> torch.Tensor:
    """(K, H, W) keyframes each with exactly one valid depth pixel (u, v)."""
    out = torch.zeros(len(pixels), H, W, dtype=torch.float64)
    for k, ((u, v), d) in enumerate(zip(pixels, depths)):
        out[k, v, u] = d
    return out


def _homography_apply(Hm: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    x = torch.cat([uv, torch.ones(uv.shape[0], 1, dtype=uv.dtype)], dim=-1) @ Hm.T
    return x[:, :2] / x[:, 2:]


# ------------------------------------------------------------------------------- building blocks


def test_gaussian_blur_matches_cv2_and_keeps_mass_inside():
    img = torch.zeros(1, 40, 50, dtype=torch.float64)
    img[0, 20, 25] = 1.0
    img[0, 5, 8] = 0.5
    out = gaussian_blur(img, 2.0)
    ref = cv2.GaussianBlur(img[0].numpy(), (13, 13), 2.0, borderType=cv2.BORDER_CONSTANT)
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-12)
    # large grids take the convolution path instead of banded matrix products: same result
    big = torch.zeros(1, 330, 340, dtype=torch.float64)
    big[0, 100, 7] = 1.0
    big[0, 329, 200] = 2.0
    ref = cv2.GaussianBlur(big[0].numpy(), (19, 19), 3.0, borderType=cv2.BORDER_CONSTANT)
    np.testing.assert_allclose(gaussian_blur(big, 3.0)[0].numpy(), ref, atol=1e-12)
    centre = torch.zeros(1, 40, 50, dtype=torch.float64)
    centre[0, 20, 25] = 1.0
    blurred = gaussian_blur(centre, 2.0)[0]
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-9)
    var_u = float((blurred * (torch.arange(50.0, dtype=torch.float64) - 25) ** 2).sum())
    assert var_u == pytest.approx(4.0, rel=0.03)  # sigma^2, slightly less from truncation at 3 sigma
    assert torch.equal(gaussian_blur(centre, 0.0), centre)


def test_splat_bilinear_preserves_mass_and_centroid():
    uv = torch.tensor([[[10.25, 7.5], [3.0, 4.0], [-0.4, 30.0]]], dtype=torch.float64)
    w = torch.tensor([[1.0, 2.0, 1.0]], dtype=torch.float64)
    m = splat_bilinear(uv, w, (40, 50))
    assert float(m.sum()) == pytest.approx(4.0)
    assert float(m[0, 4, 3]) == pytest.approx(2.0)  # integer position: one pixel
    assert float(m[0, 7, 10]) == pytest.approx(0.75 * 0.5)
    assert float(m[0, 30, 0]) == pytest.approx(1.0)  # outer half pixel: clamped onto the border pixel


# ------------------------------------------------------------------------------- identity


def test_identity_pose_reproduces_own_valid_pixel_distribution():
    """Current == keyframe (same pose, same K): the heatmap is the keyframe's own valid pixels,
    splatted and blurred the same way."""
    g = torch.Generator().manual_seed(0)
    depth = 1.0 + 2.0 * torch.rand(3, H, W, generator=g)
    depth[0, :, :20] = 0.0
    depth[1, 10:30, 10:30] = float("nan")
    depth[2] = torch.where(torch.rand(H, W, generator=g) < 0.5, depth[2], torch.zeros(()))
    pose = make_pose(_rot(30.0, -10.0), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)).float()
    K = CAM.K_tensor()
    valid = torch.isfinite(depth) & (depth > 0)
    for sigma in (0.0, 2.0):
        res = frame_indexed_heatmaps(depth, K, pose.expand(3, 4, 4), K, pose, (H, W), cur_depth=depth[0],
                                     sigma_px=sigma, source_stride=1)
        expected = gaussian_blur(valid.float(), sigma)
        expected = expected / expected.sum(dim=(-1, -2), keepdim=True)
        torch.testing.assert_close(res.heatmap, expected, atol=2e-6, rtol=1e-4)
        # everything lands inside; keyframes 1, 2 have other random depths than c, so part is hidden
        torch.testing.assert_close(res.in_view_fraction + res.occluded_fraction, torch.ones(3))
        assert float(res.in_view_fraction[0]) == 1.0
        assert res.num_valid.tolist() == valid.sum(dim=(-1, -2)).tolist()
        assert bool(res.has_overlap.all()) and bool((res.out_of_view_fraction == 0).all())
        assert bool(torch.isnan(res.out_of_view_bearing).all())
        # keyframe 0 is c's own depth: nothing can be hidden behind itself
        assert float(res.occluded_fraction[0]) == 0.0 and float(res.occluded[0].abs().max()) == 0.0
        assert bool((res.occluded <= res.heatmap).all()) and float(res.occluded[1:].sum()) > 0.1

    # stride 4 on a constant-depth keyframe with holes: each 4x4 cell is one point at the mean of
    # its valid pixels, weighted by their number
    flat = torch.full((1, H, W), 2.0)
    flat[0] = torch.where(torch.rand(H, W, generator=g) < 0.3, torch.zeros(()), flat[0])
    res = frame_indexed_heatmaps(flat, K, pose[None], K, pose, (H, W), sigma_px=2.0, source_stride=4)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    ok = (flat[0] > 0).float()
    cells = lambda x: x.reshape(H // 4, 4, W // 4, 4).sum(dim=(1, 3)).reshape(1, -1)  # noqa: E731
    count = cells(ok)
    mean_uv = torch.stack([cells(u * ok), cells(v * ok)], dim=-1) / count.clamp(min=1)[..., None]
    expected = gaussian_blur(splat_bilinear(mean_uv, count, (H, W)), 2.0)
    torch.testing.assert_close(res.heatmap, expected / expected.sum(), atol=2e-6, rtol=1e-4)
    assert int(res.num_valid[0]) == int(ok.sum())


def test_stride_pooling_does_not_alias_hole_lattices():
    """Real registered depth has invalid rows/columns every few pixels; plain strided sampling
    would beat with that lattice into moire. Pooled cells keep the stride-1 heatmap."""
    depth = torch.full((1, H, W), 2.0)
    depth[0, ::5, :] = 0.0
    depth[0, :, ::4] = 0.0
    K = CAM.K_tensor()
    T = make_pose(_rot(2.0, 1.0).float(), torch.tensor([0.05, 0.0, 0.1]))
    fine = frame_indexed_heatmaps(depth, K, torch.eye(4)[None], K, T, (H, W), sigma_px=2.0, source_stride=1)
    pooled = frame_indexed_heatmaps(depth, K, torch.eye(4)[None], K, T, (H, W), sigma_px=2.0, source_stride=2)
    inner = (slice(None), slice(8, H - 8), slice(8, W - 8))
    rel = (pooled.heatmap - fine.heatmap)[inner].abs().max() / fine.heatmap[inner].mean()
    assert float(rel) < 0.1
    assert float(pooled.in_view_fraction[0]) == pytest.approx(float(fine.in_view_fraction[0]), abs=0.01)
    # what plain strided sampling would give: every 4th column is dropped entirely
    strided = depth.clone()
    keep = torch.zeros(H, W, dtype=torch.bool)
    keep[::2, ::2] = True
    strided[0, ~keep] = 0.0
    naive = frame_indexed_heatmaps(strided, K, torch.eye(4)[None], K, T, (H, W), sigma_px=2.0, source_stride=1)
    rel_naive = (naive.heatmap - fine.heatmap)[inner].abs().max() / fine.heatmap[inner].mean()
    assert float(rel_naive) > 2 * float(rel)


def test_pooling_keeps_depth_edges_sharp():
    """A cell straddling a depth edge becomes its nearest point, not a point floating between."""
    depth = torch.full((1, 4, 4), 5.0, dtype=torch.float64)
    depth[0, :, :1] = 1.0  # the first cell (2x2) holds 1 m and 5 m pixels
    points, weights = pool_keyframe_points(depth, K64[None], 2)
    assert weights.tolist() == [[4.0, 4.0, 4.0, 4.0]]
    assert float(points[0, 0, 2]) == 1.0  # nearest, not the mean 3 m
    assert float(points[0, 1, 2]) == 5.0
    torch.testing.assert_close(points[0, 1, :2], 5.0 * (torch.tensor([2.5, 0.5], dtype=torch.float64)
                                                        - K64[:2, 2]) / torch.diagonal(K64)[:2])


# ------------------------------------------------------------------------------- rotation, plane


def test_pure_rotation_follows_infinite_homography():
    """x_c = K R_ck K^-1 x_k whatever the depth: check single points and a dense patch's centroid."""
    R_wc = _rot(6.0, -4.0)  # current turned left and tilted; keyframe at identity
    T_wc = make_pose(R_wc, torch.zeros(3, dtype=torch.float64))
    Hm = K64 @ R_wc.T @ torch.linalg.inv(K64)  # R_ck = R_cw R_wk = R_wc^T
    pixels = [(20, 20), (32, 24), (40, 30), (25, 12), (44, 18)]
    depths = [0.7, 1.5, 3.0, 9.0, 2.2]
    key = _single_pixel_depths(pixels, depths)
    res = frame_indexed_heatmaps(key, K64, EYE.expand(5, 4, 4), K64, T_wc, (H, W), sigma_px=0.0, source_stride=1)
    expected = _homography_apply(Hm, torch.tensor(pixels, dtype=torch.float64))
    torch.testing.assert_close(_centroid(res.heatmap), expected, atol=1e-6, rtol=0)
    assert res.in_view_fraction.tolist() == [1.0] * 5

    # dense central patch with varying depth, blurred: the centroid is the mean of mapped pixels
    patch = torch.zeros(1, H, W, dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(16, 32), torch.arange(24, 40), indexing="ij")
    patch[0, v, u] = 1.0 + (u + v).double() / 20.0
    res = frame_indexed_heatmaps(patch, K64, EYE[None], K64, T_wc, (H, W), sigma_px=2.0, source_stride=1)
    mapped = _homography_apply(Hm, torch.stack([u.flatten(), v.flatten()], -1).double())
    torch.testing.assert_close(_centroid(res.heatmap[0]), mapped.mean(0), atol=1e-3, rtol=0)


def test_plane_under_translation_follows_plane_homography():
    """A tilted plane n.X = d seen by the keyframe, current camera rotated and translated:
    x_c = K (R + t n^T / d) K^-1 x_k with (R, t) = T_ck. (With the plane written n.X + d' = 0,
    d' = -d, this is the textbook H = K (R - t n^T / d') K^-1.)"""
    n = torch.tensor([0.2, -0.1, 1.0], dtype=torch.float64)
    n = n / n.norm()
    d = 2.5
    T_wk = make_pose(_rot(-3.0, 2.0), torch.tensor([0.1, 0.0, -0.2], dtype=torch.float64))
    T_wc = make_pose(_rot(5.0, 1.0), torch.tensor([0.4, -0.1, 0.3], dtype=torch.float64))
    T_ck = invert_pose(T_wc) @ T_wk
    R, t = T_ck[:3, :3], T_ck[:3, 3]
    Hm = K64 @ (R + torch.outer(t, n) / d) @ torch.linalg.inv(K64)

    pixels = [(10, 10), (32, 24), (50, 35), (15, 40), (55, 8), (30, 5)]
    Kinv = torch.linalg.inv(K64)
    depths = []
    for u, v in pixels:
        ray = Kinv @ torch.tensor([u, v, 1.0], dtype=torch.float64)
        depths.append(float(d / (n @ ray)))  # z of the ray's intersection with the plane
    key = _single_pixel_depths(pixels, depths)
    res = frame_indexed_heatmaps(key, K64, T_wk.expand(6, 4, 4), K64, T_wc, (H, W), sigma_px=0.0, source_stride=1)
    expected = _homography_apply(Hm, torch.tensor(pixels, dtype=torch.float64))
    inside = (expected[:, 0] > 0) & (expected[:, 0] < W - 1) & (expected[:, 1] > 0) & (expected[:, 1] < H - 1)
    assert int(inside.sum()) >= 5
    torch.testing.assert_close(_centroid(res.heatmap[inside]), expected[inside], atol=1e-6, rtol=0)
    # the homography differs from pure rotation by a visible amount: translation matters here
    rot_only = _homography_apply(K64 @ R @ Kinv, torch.tensor(pixels, dtype=torch.float64))
    assert float((rot_only - expected).norm(dim=-1).min()) > 2.0


# ------------------------------------------------------------------------------- out of view


def _wall_band(depth_m: float = 3.0, band: int = 8) -> torch.Tensor:
    """(1, H, W) fronto-parallel wall, valid only in a horizontal band around the centre row."""
    key = torch.zeros(1, H, W, dtype=torch.float64)
    key[0, H // 2 - band:H // 2 + band] = depth_m
    return key


def test_keyframe_looking_left_is_half_out_of_view_on_the_left():
    """Keyframe turned 30 deg left (half the 60 deg hfov): its right half lands in c, its left half
    is outside c's image to the left."""
    T_wk = make_pose(_yaw(30.0), torch.zeros(3, dtype=torch.float64))
    res = frame_indexed_heatmaps(_wall_band(), K64, T_wk[None], K64, EYE, (H, W), sigma_px=1.0, source_stride=1)
    assert float(res.in_view_fraction[0]) == pytest.approx(0.5, abs=1e-9)
    assert float(res.out_of_view_fraction[0]) == pytest.approx(0.5, abs=1e-9)
    assert bool(res.has_overlap[0])
    # expected bearing: circular mean of the out-of-view columns' directions (30 deg + their angle)
    cols = torch.arange(0, W // 2, dtype=torch.float64)
    bearings = math.radians(30.0) + torch.atan((CAM.cx - cols) / CAM.fx)
    expected = math.atan2(float(torch.sin(bearings).sum()), float(torch.cos(bearings).sum()))
    assert float(res.out_of_view_bearing[0]) == pytest.approx(expected, abs=1e-6)
    assert math.radians(30) < expected < math.radians(60)  # positive = left
    # the heatmap mass sits on c's left half
    assert float(res.heatmap[0, :, : W // 2].sum()) > 0.95


def test_keyframe_to_the_right_has_negative_bearing():
    T_wk = make_pose(_yaw(-45.0), torch.zeros(3, dtype=torch.float64))
    res = frame_indexed_heatmaps(_wall_band(), K64, T_wk[None], K64, EYE, (H, W), source_stride=1)
    assert float(res.out_of_view_bearing[0]) < math.radians(-30)
    assert float(res.heatmap[0, :, W // 2:].sum()) > 0.95


def test_content_behind_and_no_overlap():
    """Keyframe looking backwards: everything behind c (bearing ~ pi), no overlap, zero maps.
    Keyframe with no valid depth: no overlap, fractions 0, bearing NaN."""
    T_back = make_pose(_yaw(180.0), torch.zeros(3, dtype=torch.float64))
    T_side = make_pose(_yaw(90.0), torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64))
    key = torch.cat([_wall_band(), _wall_band(), torch.zeros(1, H, W, dtype=torch.float64)])
    res = frame_indexed_heatmaps(key, K64, torch.stack([T_back, T_side, EYE]), K64, EYE, (H, W))
    assert res.has_overlap.tolist() == [False, False, False]
    assert bool((res.heatmap == 0).all()) and bool((res.occluded == 0).all())
    assert res.out_of_view_fraction[:2].tolist() == [1.0, 1.0]
    assert abs(float(res.out_of_view_bearing[0])) > math.radians(175)
    assert float(res.out_of_view_bearing[1]) == pytest.approx(math.pi / 2, abs=math.radians(3))
    assert int(res.num_valid[2]) == 0 and float(res.out_of_view_fraction[2]) == 0.0
    assert math.isnan(float(res.out_of_view_bearing[2]))


def test_few_stray_points_are_not_overlap():
    """A keyframe 10 m to the left sees a wall c cannot see, plus one far point (30 m) that does land
    in c's view: 1 of 1536 points (0.065 %) is below the 1e-3 threshold -> no overlap, zero maps."""
    key = _wall_band(band=12)  # 24 x 64 = 1536 points
    key[0, H // 2, W - 1] = 30.0  # the rightmost ray, far away: lands at bearing ~ -13 deg in c
    T_wk = make_pose(torch.eye(3, dtype=torch.float64), torch.tensor([-10.0, 0.0, 0.0], dtype=torch.float64))
    res = frame_indexed_heatmaps(key, K64, T_wk[None], K64, EYE, (H, W), source_stride=1)
    assert float(res.in_view_fraction[0]) == pytest.approx(1 / 1536)
    assert not bool(res.has_overlap[0]) and bool((res.heatmap == 0).all())
    assert float(res.out_of_view_bearing[0]) > math.radians(60)  # the wall is far to the left
    res_low = frame_indexed_heatmaps(key, K64, T_wk[None], K64, EYE, (H, W), source_stride=1, min_overlap_fraction=0.0)
    assert bool(res_low.has_overlap[0]) and float(res_low.heatmap.sum()) == pytest.approx(1.0)
    u_expected = CAM.cx + CAM.fx * (-10.0 + 30.0 * (W - 1 - CAM.cx) / CAM.fx) / 30.0
    assert float(_centroid(res_low.heatmap[0])[0]) == pytest.approx(u_expected, abs=0.05)


# ------------------------------------------------------------------------------- occlusion


def test_near_wall_in_current_view_hides_keyframe_surface():
    """Same pose; the keyframe saw a wall at 4 m; c now has a box at 1 m covering its left half."""
    key = torch.full((1, H, W), 4.0, dtype=torch.float64)
    cur_depth = torch.full((H, W), 4.0, dtype=torch.float64)
    cur_depth[:, : W // 2] = 1.0
    cur_depth[:4, :4] = 0.0  # no measurement there: nothing counts as hidden
    res = frame_indexed_heatmaps(key, K64, EYE[None], K64, EYE, (H, W), cur_depth=cur_depth, sigma_px=2.0,
                                 source_stride=2)
    n_points = (H // 2) * (W // 2)
    hidden_points = (H // 2) * (W // 4) - 4  # left half of the strided grid minus the 2x2 unmeasured ones
    assert float(res.occluded_fraction[0]) == pytest.approx(hidden_points / n_points, abs=1e-9)
    assert float(res.in_view_fraction[0] + res.occluded_fraction[0]) == pytest.approx(1.0)
    # the heatmap still holds all mass (visible + hidden); the hidden part lies on the left
    no_occ = frame_indexed_heatmaps(key, K64, EYE[None], K64, EYE, (H, W), sigma_px=2.0, source_stride=2)
    torch.testing.assert_close(res.heatmap, no_occ.heatmap)
    assert bool((res.occluded <= res.heatmap + 1e-12).all()) and bool((res.occluded >= 0).all())
    assert float(res.occluded.sum()) == pytest.approx(hidden_points / n_points, abs=0.02)
    assert float(res.occluded[0, :, W // 2 + 6:].sum()) == 0.0  # blur radius 6 px from the last hidden column 30

    # within the margin (0.05 m + 2 % of 4 m = 0.13 m) a surface is not hidden
    near_equal = torch.full((H, W), 3.9, dtype=torch.float64)
    res = frame_indexed_heatmaps(key, K64, EYE[None], K64, EYE, (H, W), cur_depth=near_equal)
    assert float(res.occluded_fraction[0]) == 0.0
    res = frame_indexed_heatmaps(key, K64, EYE[None], K64, EYE, (H, W), cur_depth=near_equal - 0.1)
    assert float(res.occluded_fraction[0]) == 1.0 and bool(res.has_overlap[0])


# ------------------------------------------------------------------------------- API details


def test_config_helper_dtype_device_and_errors():
    cfg = load_config(None, ["heatmap.sigma_px=0", "heatmap.source_stride=1"]).heatmap
    assert isinstance(cfg, HeatmapConfig)
    key = _wall_band().float()
    res = heatmaps_from_config(key, CAM.K_tensor(), torch.eye(4)[None], CAM.K_tensor(), torch.eye(4), (H, W), cfg=cfg)
    assert res.heatmap.dtype == torch.float32 and res.heatmap.shape == (1, H, W)
    assert int(res.num_valid[0]) == 16 * W  # stride 1 from the config
    as_np = res.numpy()
    assert isinstance(as_np, InterFrameHeatmaps) and isinstance(as_np.heatmap, np.ndarray)
    assert as_np.has_overlap.dtype == bool
    moved = res.to("cpu")
    assert torch.equal(moved.heatmap, res.heatmap)
    with pytest.raises(InputError, match="key_depth"):
        frame_indexed_heatmaps(key[0], CAM.K, torch.eye(4)[None], CAM.K, torch.eye(4), (H, W))
    with pytest.raises(InputError, match="cur_depth"):
        frame_indexed_heatmaps(key, CAM.K, torch.eye(4)[None], CAM.K, torch.eye(4), (H, W), cur_depth=torch.ones(3, 3))
    with pytest.raises(InputError, match="key_T_wc"):
        frame_indexed_heatmaps(key, CAM.K, torch.eye(4)[None].expand(2, 4, 4), CAM.K, torch.eye(4), (H, W))


def test_viz_mosaic_draws_each_keyframe():
    T_left = make_pose(_yaw(30.0), torch.zeros(3, dtype=torch.float64))
    T_back = make_pose(_yaw(180.0), torch.zeros(3, dtype=torch.float64))
    key = torch.cat([_wall_band(), _wall_band()])
    cur_depth = torch.full((H, W), 3.0, dtype=torch.float64)
    cur_depth[:, :10] = 1.0
    res = frame_indexed_heatmaps(key, K64, torch.stack([T_left, T_back]), K64, EYE, (H, W), cur_depth=cur_depth)
    rgb = np.full((H, W, 3), 128, np.uint8)
    colored = colorize_heatmap(res.heatmap[0])
    assert colored.shape == (H, W, 3) and colored.dtype == np.uint8
    blended = blend_heatmap(rgb, res.heatmap[0], 0.6)
    assert np.array_equal(blended[:, -5:], rgb[:, -5:])  # nothing lands on the right edge
    assert not np.array_equal(blended[:, :W // 2], rgb[:, :W // 2])
    mosaic = overlay_mosaic(rgb, res, ["kf 3", "kf 9"], [rgb, rgb], columns=2)
    assert mosaic.dtype == np.uint8 and mosaic.ndim == 3
    assert mosaic.shape[1] >= 2 * 400  # tiles upscaled for readable text
    # the hidden colour (magenta hatching) appears in the first tile only
    magenta = np.all(mosaic == np.array([255, 0, 255], np.uint8), axis=-1)
    tile_w = (mosaic.shape[1] - 6) // 2
    tile_h = int(round(H * tile_w / W))
    assert magenta[:tile_h, :tile_w].sum() > 0
    assert magenta[:tile_h, tile_w + 6:].sum() == 0  # the second keyframe is behind: no overlap
    with pytest.raises(InputError, match="labels"):
        overlay_mosaic(rgb, res, ["kf 3"])


def test_adaptive_sigma_fills_sparse_samples_instead_of_drawing_dots():
    """Current camera 4x closer to a wall than the keyframe: samples land ~8 px apart (stride 2).

    A fixed 1 px blur leaves a lattice of dots (strong pixel-to-pixel variation inside the
    footprint); the spacing-aware blur gives a smooth surface, and the mass stays where it lands.
    """
    wall_key, wall_cur = 4.0, 1.0
    key = torch.full((1, H, W), wall_key, dtype=torch.float64)
    T_wc = make_pose(torch.eye(3, dtype=torch.float64), torch.tensor([0.0, 0.0, wall_key - wall_cur], dtype=torch.float64))
    common = dict(sigma_px=1.0, source_stride=2)
    fixed = frame_indexed_heatmaps(key, K64, torch.eye(4, dtype=torch.float64)[None], K64, T_wc, (H, W),
                                   adaptive_sigma=False, **common).heatmap[0]
    adaptive = frame_indexed_heatmaps(key, K64, torch.eye(4, dtype=torch.float64)[None], K64, T_wc, (H, W),
                                      adaptive_sigma=True, **common).heatmap[0]
    centre = (slice(H // 4, 3 * H // 4), slice(W // 4, 3 * W // 4))  # well inside the footprint

    def roughness(m: torch.Tensor) -> float:
        c = m[centre]
        return float(c.std() / c.mean())

    assert roughness(fixed) > 0.3  # the lattice is there without the fix
    assert roughness(adaptive) < 0.1
    torch.testing.assert_close(_centroid(adaptive), _centroid(fixed), atol=0.5, rtol=0)
    assert float(adaptive.sum()) == pytest.approx(1.0, abs=1e-9)


def test_viz_mosaic_of_an_empty_heatmap_with_overlap_draws_without_a_runtime_warning():
    """has_overlap set but nothing to draw (frame_indexed_heatmaps zeroes a map whose splatted
    total is 0; a NaN map): the display peak was 0 and the mosaic divided by it (numpy
    'invalid value encountered in divide')."""
    import warnings
    from types import SimpleNamespace

    heat = np.zeros((3, H, W), np.float32)
    heat[1, 3:6, 4:8] = 1.0
    heat[2] = np.nan
    res = SimpleNamespace(heatmap=heat, occluded=np.zeros_like(heat), in_view_fraction=np.full(3, 0.5),
                          occluded_fraction=np.zeros(3), out_of_view_fraction=np.zeros(3),
                          out_of_view_bearing=np.zeros(3), has_overlap=np.ones(3, bool))
    rgb = np.full((H, W, 3), 128, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mosaic = overlay_mosaic(rgb, res, ["kf 1", "kf 2", "kf 3"], columns=3)
    assert mosaic.dtype == np.uint8 and mosaic.ndim == 3


def test_depth_spread_is_the_expected_landing_over_three_depths():
    """A keyframe 0.4 m to the side of the current camera sees a strip of wall 2 m ahead; its
    points land shifted by fx * 0.4 / z. Spread over log-depth sigma, the map is the 1/6, 2/3, 1/6 mixture of
    the maps at depth * exp(-+sqrt(3) sigma) (splat and blur are linear); the shares are the
    depth's as given."""
    sigma = 0.15
    factor = math.exp(math.sqrt(3.0) * sigma)
    key_T = make_pose(np.eye(3), [0.4, 0.0, 0.0])[None]
    depth = torch.zeros((1, H, W), dtype=torch.float64)
    depth[:, :, 20:24] = 2.0  # a vertical strip: lands 11 px to the right at 2 m, 8-14 px at the spread depths
    common = dict(sigma_px=1.5, adaptive_sigma=False)

    def at(d, spread=0.0):
        return frame_indexed_heatmaps(d, K64, key_T, K64, EYE, (H, W), None, depth_spread=spread, **common)

    spread = at(depth, sigma)
    single = [at(depth), at(depth / factor), at(depth * factor)]
    assert all(float(m.in_view_fraction[0]) == 1.0 for m in single)  # all inside: equal masses
    mixture = 2 / 3 * single[0].heatmap + 1 / 6 * single[1].heatmap + 1 / 6 * single[2].heatmap
    assert torch.allclose(spread.heatmap, mixture, atol=1e-9)
    assert float(spread.heatmap.sum()) == pytest.approx(1.0)
    # the mass moves along the epipolar line (here the image rows), not across it
    cols = torch.arange(W, dtype=torch.float64)
    col_var = lambda m: float((m.sum(dim=-2)[0] * (cols - (m.sum(dim=-2)[0] * cols).sum()) ** 2).sum())
    rows = torch.arange(H, dtype=torch.float64)
    row_var = lambda m: float((m.sum(dim=-1)[0] * (rows - (m.sum(dim=-1)[0] * rows).sum()) ** 2).sum())
    assert col_var(spread.heatmap) > col_var(single[0].heatmap) + 2.0
    assert row_var(spread.heatmap) == pytest.approx(row_var(single[0].heatmap), rel=1e-6)
    for name in ("in_view_fraction", "occluded_fraction", "out_of_view_fraction", "has_overlap", "num_valid"):
        assert torch.equal(getattr(spread, name), getattr(single[0], name))
    # the hidden part is drawn at the depth as given: a wall 1 m ahead in the current view hides it all
    hidden = frame_indexed_heatmaps(depth, K64, key_T, K64, EYE, (H, W), torch.ones((H, W), dtype=torch.float64),
                                    depth_spread=sigma, **common)
    assert float(hidden.occluded_fraction[0]) == pytest.approx(1.0)
    assert torch.allclose(hidden.heatmap, spread.heatmap)
    assert float(hidden.occluded.sum()) == pytest.approx(2 / 3, abs=1e-6)  # the unspread share of the map
    with pytest.raises(InputError, match="depth_spread"):
        at(depth, -0.1)


def test_predicted_depth_config_spreads_only_predicted_depth():
    from vln_core.heatmaps import predicted_depth_config

    cfg = load_config(None, [])
    assert cfg.heatmap.depth_spread == 0.0  # the ground truth is exact
    assert predicted_depth_config(cfg.heatmap).depth_spread == cfg.heatmap.predicted_depth_spread > 0
    with pytest.raises(Exception, match="predicted_depth_spread"):
        load_config(None, ["heatmap.predicted_depth_spread=1.5"])

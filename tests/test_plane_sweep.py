"""Plane sweep geometry (vln_core.geometry.plane_sweep) against closed-form answers."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from vln_core.geometry.plane_sweep import (
    correlation_volume,
    inverse_depth_planes,
    plane_sweep_grid,
    scale_intrinsics,
    select_source_views,
)
from vln_core.geometry.reproject import project_points, unproject_depth
from vln_core.geometry.transforms import make_pose


def _pose(rx: float, ry: float, rz: float, t) -> torch.Tensor:
    """Camera-to-world from XYZ Euler angles (radians) and a translation."""
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    Rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    Rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    return make_pose(Rz @ Ry @ Rx, torch.tensor(t, dtype=torch.float64))


K = torch.tensor([[60.0, 0.0, 31.5], [0.0, 55.0, 23.5], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_inverse_depth_planes_are_uniform_in_inverse_depth():
    d = inverse_depth_planes(0.25, 8.0, 33, dtype=torch.float64)
    assert d[0] == torch.tensor(0.25, dtype=torch.float64) and abs(float(d[-1]) - 8.0) < 1e-9
    steps = torch.diff(1.0 / d)
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-12)


def test_scale_intrinsics_keeps_pixel_centres():
    Ks = scale_intrinsics(K, 4)
    # pixel u = 1.5 at full resolution is the centre of the 4x4 block 0 -> u' = 0 ... block k centre -> k
    for k in range(3):
        u_full = 4 * k + 1.5
        x = (u_full - K[0, 2]) / K[0, 0]
        assert abs(float(Ks[0, 0] * x + Ks[0, 2]) - k) < 1e-9


def test_grid_equals_projection_of_lifted_points():
    """Every plane's grid is where project_points puts the reference pixels lifted to that depth."""
    T_w_ref = _pose(0.05, -0.2, 0.03, [0.1, 0.0, 0.2])
    T_w_src = _pose(-0.04, 0.1, 0.0, [0.35, -0.05, 0.1])
    T_src_ref = torch.linalg.inv(T_w_src) @ T_w_ref
    h, w = 48, 64
    planes = torch.tensor([0.7, 1.5, 4.0], dtype=torch.float64)
    grid, valid = plane_sweep_grid(K, K, T_src_ref[None], planes, (h, w))
    assert grid.shape == (1, 1, 3, h, w, 2) and valid.shape == (1, 1, 3, h, w)
    for p, d in enumerate(planes.tolist()):
        pts, _ = unproject_depth(torch.full((h, w), d, dtype=torch.float64), K, T_w_ref)
        uv, z = project_points(pts.reshape(1, -1, 3), K, T_w_src)
        uv = uv.reshape(h, w, 2)
        expected = torch.stack([2 * uv[..., 0] / (w - 1) - 1, 2 * uv[..., 1] / (h - 1) - 1], -1)
        inside = valid[0, 0, p]
        assert inside.float().mean() > 0.3
        assert torch.allclose(grid[0, 0, p][inside], expected[inside], atol=1e-9)
        # outside pixels are exactly the ones that land outside the source image
        in_img = (uv[..., 0] >= -0.5) & (uv[..., 0] <= w - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] <= h - 0.5)
        assert torch.equal(inside, in_img & (z.reshape(h, w) > 0))


def test_cost_volume_peaks_at_the_true_plane():
    """Two views of a textured fronto-parallel wall: the correlation is highest at the wall's depth."""
    torch.manual_seed(0)
    h, w = 48, 64
    wall = 1.6
    T_w_ref = torch.eye(4, dtype=torch.float64)
    T_w_src = _pose(0.0, 0.04, 0.0, [0.15, 0.02, 0.0])
    T_src_ref = torch.linalg.inv(T_w_src) @ T_w_ref
    # texture on the wall, sampled in wall coordinates (x, y at z = wall) by both cameras
    texture = F.avg_pool2d(torch.rand(1, 4, 128, 128), 3, 1, 1)

    def render(T_w_c: torch.Tensor) -> torch.Tensor:
        v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
        rays = torch.linalg.inv(K) @ torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1)
        rays_w = T_w_c[:3, :3] @ rays
        s = (wall - T_w_c[2, 3]) / rays_w[2]
        X = T_w_c[:3, 3:4] + s * rays_w
        g = torch.stack([X[0] / 1.5, X[1] / 1.5], -1).reshape(1, h, w, 2).float()
        return F.grid_sample(texture, g, align_corners=True)[0]

    ref, src = render(T_w_ref), render(T_w_src)
    ref_f = F.normalize(ref - ref.mean(0, keepdim=True), dim=0)
    src_f = F.normalize(src - src.mean(0, keepdim=True), dim=0)
    planes = inverse_depth_planes(0.5, 6.0, 40, dtype=torch.float64)
    grid, valid = plane_sweep_grid(K, K, T_src_ref[None], planes, (h, w))
    cost, seen = correlation_volume(ref_f[None], src_f[None, None], grid, valid)
    assert cost.shape == (1, 40, h, w) and seen.shape == (1, 40, h, w)
    best = F.avg_pool2d(cost, 5, 1, 2)[0].argmax(0)
    interior = seen[0].amin(0) > 0
    nearest = int((1 / planes - 1 / wall).abs().argmin())
    # adjacent planes are 0.4 px of parallax apart here: the peak is on the wall's plane or its neighbour
    share = float(((best[interior] - nearest).abs() <= 1).double().mean())
    assert share > 0.95, share
    assert float((best[interior] == nearest).double().mean()) > 0.5


def test_the_exportable_gather_sampling_equals_grid_sample_at_borders_and_outside():
    """The ONNX graphs sample by row gathers (onnxruntime's GridSample is slow); both samplings
    must give the same volume, including sources seen only in part (zero padding at the borders,
    points behind or beside a source)."""
    torch.manual_seed(5)
    B, S, C, h, w = 2, 3, 6, 12, 16
    Kf = torch.tensor([[14.0, 0.0, 7.5], [0.0, 14.0, 5.5], [0.0, 0.0, 1.0]])
    T = torch.stack([torch.stack([_pose(0.0, yaw, 0.0, [tx, 0.02, tz]) for yaw, tx, tz in
                                  ((0.05, 0.3, 0.0), (0.6, -0.2, 0.1), (-0.9, 0.5, -0.3))]) for _ in range(B)]).float()
    T[1] = T[1].flip(0)
    grid, valid = plane_sweep_grid(Kf, Kf, T, inverse_depth_planes(0.3, 8.0, 10), (h, w))
    assert 0.2 < float(valid.double().mean()) < 0.9, "the scene must have both seen and unseen points"
    ref = torch.randn(B, C, h, w)
    src = torch.randn(B, S, C, h, w)
    cost_gs, seen_gs = correlation_volume(ref, src, grid, valid, by_gather=False)
    cost_g, seen_g = correlation_volume(ref, src, grid, valid, by_gather=True)
    assert torch.equal(seen_gs, seen_g)
    assert torch.allclose(cost_g, cost_gs, atol=1e-5), float((cost_g - cost_gs).abs().max())
    # the sampled values themselves, not only their mean over sources: one source at a time
    for s in range(S):
        one_gs, _ = correlation_volume(ref, src[:, s:s + 1], grid[:, s:s + 1], valid[:, s:s + 1], by_gather=False)
        one_g, _ = correlation_volume(ref, src[:, s:s + 1], grid[:, s:s + 1], valid[:, s:s + 1], by_gather=True)
        assert torch.allclose(one_g, one_gs, atol=1e-5)
        assert float(one_g.abs().max()) > 0.1


def test_no_source_sees_anything_gives_zero_cost_and_zero_seen():
    h, w = 8, 8
    far_away = make_pose(torch.eye(3, dtype=torch.float64), torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64))
    grid, valid = plane_sweep_grid(K, K, torch.linalg.inv(far_away)[None], torch.tensor([1.0, 2.0]), (h, w))
    assert not bool(valid.any())
    cost, seen = correlation_volume(torch.ones(1, 4, h, w), torch.ones(1, 1, 4, h, w), grid, valid)
    assert torch.count_nonzero(cost) == 0 and torch.count_nonzero(seen) == 0


def test_select_source_views_prefers_parallax_with_overlap():
    ref = torch.eye(4, dtype=torch.float64)
    cands = torch.stack([
        _pose(0.0, 0.3, 0.0, [0.0, 0.0, 0.0]),      # 0: turned on the spot: no parallax
        _pose(0.0, 0.0, 0.0, [0.05, 0.0, 0.0]),     # 1: small baseline
        _pose(0.0, 0.0, 0.0, [0.24, 0.0, 0.0]),     # 2: ideal for 2 m (ratio 0.12)
        _pose(0.0, 1.2, 0.0, [0.24, 0.0, 0.0]),     # 3: ideal baseline but turned 69 degrees away
        _pose(0.0, 0.0, 0.0, [0.25, 0.01, 0.0]),    # 4: almost the same place as 2
        _pose(0.0, 0.0, 0.0, [-0.2, 0.0, 0.05]),    # 5: good, other side
    ])
    picked = select_source_views(ref, cands, 3, scene_depth_m=2.0)
    assert picked[0] in (2, 4)
    assert 0 not in picked and 3 not in picked
    assert 5 in picked[:2], picked  # diversity: the other side beats the twin of the first pick
    assert select_source_views(ref, cands[[0, 3]], 2, 2.0) == []
    assert select_source_views(ref, cands[:0], 2, 2.0) == []
    assert np.all(np.asarray(select_source_views(ref, cands, 10, 2.0)) < len(cands))

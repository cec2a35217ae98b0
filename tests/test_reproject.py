"""Depth decoding, unprojection, projection and depth reprojection between posed views."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vln_core.errors import InputError
from vln_core.geometry.camera import PinholeCamera
from vln_core.geometry.reproject import (
    depth_from_uint16_mm,
    depth_to_uint16_mm,
    project_points,
    reproject_depth,
    unproject_depth,
    valid_depth_mask,
)
from vln_core.geometry.transforms import make_pose

CAM = PinholeCamera.from_hfov(70.0, 64, 48)


def _yaw(deg: float) -> torch.Tensor:
    """Rotation about the optical y axis (down), i.e. turning the camera; +deg turns it to the left."""
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]], dtype=torch.float64)


def test_valid_depth_mask_numpy_and_torch():
    d = np.array([1.0, 0.0, np.nan, np.inf, -np.inf, -1.0, 0.3], dtype=np.float32)
    expected = [True, False, False, False, False, False, True]
    assert valid_depth_mask(d).tolist() == expected
    assert isinstance(valid_depth_mask(d), np.ndarray)
    assert valid_depth_mask(torch.as_tensor(d)).tolist() == expected


def test_uint16_millimetres_both_ways():
    raw = np.array([[0, 1, 1234], [65535, 65534, 500]], dtype=np.uint16)
    d = depth_from_uint16_mm(raw)
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, [[0, 0.001, 1.234], [0, 65.534, 0.5]], rtol=1e-6)
    back = depth_to_uint16_mm(np.array([[np.nan, np.inf, -1.0], [70.0, 1.2344, 0.0]]))
    assert back.dtype == np.uint16
    assert back.tolist() == [[0, 0, 0], [0, 1234, 0]]
    assert depth_to_uint16_mm(torch.as_tensor(d)).tolist() == [[0, 1, 1234], [0, 65534, 500]]
    with pytest.raises(InputError, match="uint16"):
        depth_from_uint16_mm(raw.astype(np.int32))


def test_unproject_masks_invalid_pixels_and_strides():
    depth = torch.full((2, 48, 64), 2.0)
    depth[0, 0, 0] = 0.0
    depth[0, 0, 2] = float("nan")
    depth[1, 2, 0] = float("inf")
    points, valid = unproject_depth(depth, CAM.K_tensor(), stride=2)
    assert points.shape == (2, 24, 32, 3) and valid.shape == (2, 24, 32)
    assert valid.sum() == 2 * 24 * 32 - 3
    assert not valid[0, 0, 0] and not valid[0, 0, 1] and not valid[1, 1, 0]
    assert bool((points[~valid] == 0).all())
    # a valid pixel (u=4, v=6) -> x = (u - cx) z / fx
    torch.testing.assert_close(points[0, 3, 2], torch.tensor([(4 - CAM.cx) * 2 / CAM.fx, (6 - CAM.cy) * 2 / CAM.fy, 2.0]))


def test_unproject_project_round_trip():
    g = torch.Generator().manual_seed(0)
    depth = 1.0 + 3.0 * torch.rand(3, 48, 64, generator=g, dtype=torch.float64)
    T = make_pose(_yaw(20.0).expand(3, 3, 3), torch.tensor([[0.1, -0.2, 0.3], [1.0, 0.0, 0.0], [0.0, 0.5, -1.0]],
                                                           dtype=torch.float64))
    K = CAM.K_tensor(torch.float64)
    points, valid = unproject_depth(depth, K, T)
    uv, z = project_points(points.reshape(3, -1, 3), K, T)
    v, u = torch.meshgrid(torch.arange(48.0, dtype=torch.float64), torch.arange(64.0, dtype=torch.float64), indexing="ij")
    torch.testing.assert_close(uv[0].reshape(48, 64, 2), torch.stack([u, v], -1))
    torch.testing.assert_close(z.reshape(3, 48, 64), depth)


def test_project_behind_camera_is_nan():
    uv, z = project_points(torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, 2.0]]]), CAM.K_tensor()[None], torch.eye(4)[None])
    assert bool(torch.isnan(uv[0, 0]).all()) and z[0, 0] == -1.0
    torch.testing.assert_close(uv[0, 1], torch.tensor([CAM.cx, CAM.cy], dtype=torch.float32))


def test_reproject_depth_identity_and_forward_motion():
    depth = torch.full((48, 64), 3.0)
    depth[10:20, 10:20] = 0.0  # hole stays a hole
    K = CAM.K_tensor()
    same = reproject_depth(depth, K, torch.eye(4), K, torch.eye(4), (48, 64))
    torch.testing.assert_close(same, depth)

    # stepping 1 m back from a fronto-parallel wall: it is 4 m away and its image shrinks by 3/4,
    # so the centre stays covered (no holes) and the border sees nothing of it
    back = make_pose(torch.eye(3), torch.tensor([0.0, 0.0, -1.0]))
    moved = reproject_depth(torch.full((48, 64), 3.0), K, torch.eye(4), K, back, (48, 64))
    inner = moved[8:40, 10:54]
    torch.testing.assert_close(inner, torch.full_like(inner, 4.0))
    assert bool((moved[:, 0] == 0).all()) and bool((moved[0, :] == 0).all())


def test_reproject_depth_z_buffer_keeps_nearest():
    # two surfaces seen side by side from the source, overlapping from a camera moved sideways
    depth = torch.full((48, 64), 4.0)
    depth[:, :32] = 1.0  # near surface on the left
    K = CAM.K_tensor()
    left = make_pose(torch.eye(3), torch.tensor([-0.6, 0.0, 0.0]))  # move left: near surface slides right
    out = reproject_depth(depth, K, torch.eye(4), K, left, (48, 64))
    shift_near = CAM.fx * 0.6 / 1.0  # ~27 px
    shift_far = CAM.fx * 0.6 / 4.0  # ~7 px
    overlap_u = int((32 + shift_far + 31 + shift_near) / 2)  # both surfaces land here; the near one wins
    assert out[24, overlap_u] == pytest.approx(1.0)
    assert out[24, 62] == pytest.approx(4.0)
    assert out[24, 2] == 0.0  # uncovered: nothing lands left of the shifted near surface

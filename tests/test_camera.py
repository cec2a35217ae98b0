"""PinholeCamera: fields of view, resizing and cropping consistent with real image operations."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from vln_core.errors import InputError
from vln_core.geometry.camera import PinholeCamera


def _project(cam: PinholeCamera, p: np.ndarray) -> np.ndarray:
    uvw = p @ cam.K.T
    return uvw[:, :2] / uvw[:, 2:]


def test_K_matrix_and_tensor():
    cam = PinholeCamera(500.0, 510.0, 319.5, 239.5, 640, 480)
    assert cam.K.dtype == np.float64 and cam.K.shape == (3, 3)
    np.testing.assert_array_equal(cam.K, [[500, 0, 319.5], [0, 510, 239.5], [0, 0, 1]])
    Kt = cam.K_tensor()
    assert Kt.dtype == torch.float32 and torch.allclose(Kt, torch.as_tensor(cam.K, dtype=torch.float32))
    assert cam.K_tensor(torch.float64).dtype == torch.float64
    assert PinholeCamera.from_K(cam.K, 640, 480) == cam
    assert PinholeCamera.from_K(torch.as_tensor(cam.K), 640, 480) == cam


def test_from_hfov_round_trip_and_edges():
    cam = PinholeCamera.from_hfov(75.0, 224, 160)
    assert cam.hfov_deg == pytest.approx(75.0, abs=1e-9)
    assert cam.cx == pytest.approx(111.5) and cam.cy == pytest.approx(79.5)
    # a ray at half the field of view lands on the left image edge (-0.5)
    half = math.radians(37.5)
    uv = _project(cam, np.array([[-math.tan(half), 0.0, 1.0]]))
    assert uv[0, 0] == pytest.approx(-0.5, abs=1e-9)
    # square pixels: vertical fov from the same focal length
    assert cam.vfov_deg == pytest.approx(math.degrees(2 * math.atan(80 / cam.fy)), abs=1e-9)


def test_resized_matches_cv2_resize():
    """A ray's pixel in the resized camera shows the same scene point cv2.resize moved there."""
    cam = PinholeCamera(300.0, 290.0, 150.2, 99.7, 320, 200)
    # image whose value is its own column coordinate (and row coordinate in a second image)
    cols = np.tile(np.arange(320, dtype=np.float32), (200, 1))
    rows = np.tile(np.arange(200, dtype=np.float32)[:, None], (1, 320))
    for new_w, new_h in [(160, 100), (480, 300), (224, 224)]:
        small = cam.resized(new_w, new_h)
        cols_r = cv2.resize(cols, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        rows_r = cv2.resize(rows, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        rng = np.random.default_rng(0)
        p = np.c_[rng.uniform(-0.3, 0.3, (50, 2)), rng.uniform(1.0, 3.0, 50)]
        uv_orig = _project(cam, p)
        uv_new = _project(small, p)
        inside = (uv_new[:, 0] > 2) & (uv_new[:, 0] < new_w - 3) & (uv_new[:, 1] > 2) & (uv_new[:, 1] < new_h - 3)
        assert inside.sum() > 20
        # sample the resized coordinate images at the new pixel (bilinear) -> original coordinates
        map_x = uv_new[inside, 0].astype(np.float32)[None]
        map_y = uv_new[inside, 1].astype(np.float32)[None]
        got_u = cv2.remap(cols_r, map_x, map_y, cv2.INTER_LINEAR)[0]
        got_v = cv2.remap(rows_r, map_x, map_y, cv2.INTER_LINEAR)[0]
        # cv2.remap's bilinear weights are fixed point (1/32 px steps in OpenCV 4), so allow
        # 0.05 px; a wrong pixel-centre convention is off by 0.25 px or more at these scales
        np.testing.assert_allclose(got_u, uv_orig[inside, 0], atol=0.05)
        np.testing.assert_allclose(got_v, uv_orig[inside, 1], atol=0.05)
        assert small.hfov_deg == pytest.approx(cam.hfov_deg, abs=1e-9)


def test_cropped_matches_array_slice():
    cam = PinholeCamera(300.0, 300.0, 160.0, 100.0, 320, 200)
    crop = cam.cropped(40, 30, 200, 120)
    p = np.array([[0.1, -0.05, 2.0], [-0.2, 0.1, 1.5]])
    np.testing.assert_allclose(_project(crop, p), _project(cam, p) - [40, 30])
    img = np.zeros((200, 320), np.uint8)
    u, v = np.round(_project(cam, p[:1])[0]).astype(int)
    img[v, u] = 255
    sub = img[30:150, 40:240]
    vv, uu = np.argwhere(sub == 255)[0]
    np.testing.assert_allclose(np.round(_project(crop, p[:1])[0]), [uu, vv])
    with pytest.raises(InputError, match="leaves"):
        cam.cropped(200, 0, 200, 100)


def test_dict_round_trip_and_errors():
    cam = PinholeCamera(615.2, 615.2, 298.4, 247.5, 640, 480)
    assert PinholeCamera.from_dict(cam.to_dict()) == cam
    with pytest.raises(InputError, match="missing"):
        PinholeCamera.from_dict({"fx": 1.0})
    with pytest.raises(InputError, match="focal"):
        PinholeCamera(0.0, 1.0, 0.0, 0.0, 10, 10)
    with pytest.raises(InputError, match="width"):
        PinholeCamera(1.0, 1.0, 0.0, 0.0, 0, 10)
    with pytest.raises(InputError, match="skew"):
        PinholeCamera.from_K([[1.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], 10, 10)
    with pytest.raises(InputError, match="hfov"):
        PinholeCamera.from_hfov(180.0, 10, 10)

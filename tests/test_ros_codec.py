"""vln_core.ros_codec: every encoding both ways, padding, byte order, compression, bad input."""
from __future__ import annotations

import array
import struct

import cv2
import numpy as np
import pytest

from vln_core.errors import InputError
from vln_core.ros_codec import (
    ENCODINGS,
    array_to_compressed,
    array_to_image_fields,
    camera_info_to_K,
    compressed_to_array,
    image_fields_to_array,
    image_msg_to_array,
    image_msg_to_depth_m,
    image_msg_to_rgb,
    matrix_to_pose_fields,
    ns_to_stamp,
    pose_fields_to_matrix,
    stamp_to_ns,
    to_depth_m,
    to_rgb,
)

H, W = 5, 7


def _rgb() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([xx * 30, yy * 50, (xx + yy) * 10 + 3], axis=-1).astype(np.uint8)


def _native(encoding: str, rgb: np.ndarray) -> np.ndarray:
    """The same picture in ``encoding``'s own layout."""
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return rgb[..., ::-1].copy()
    if encoding == "rgba8":
        return np.dstack([rgb, np.full((H, W), 200, np.uint8)])
    if encoding == "bgra8":
        return np.dstack([rgb[..., ::-1], np.full((H, W), 200, np.uint8)])
    if encoding == "mono8":
        return rgb[..., 0].copy()
    raise AssertionError(encoding)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_colour_roundtrip_gives_rgb(encoding):
    rgb = _rgb()
    native = _native(encoding, rgb)
    fields = array_to_image_fields(native, encoding)
    assert fields["step"] == W * ENCODINGS[encoding].channels
    assert len(fields["data"]) == fields["step"] * H
    decoded = image_fields_to_array(**{k: fields[k] for k in ("encoding", "height", "width", "step", "data", "is_bigendian")})
    np.testing.assert_array_equal(decoded, native)
    out = to_rgb(decoded, encoding)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    expected = np.repeat(rgb[..., :1], 3, axis=2) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(out, expected)


def test_bgr8_bytes_are_blue_first():
    """Guards against a decoder that forgets to swap: a pure red RGB pixel is (0, 0, 255) in bgr8."""
    data = bytes([0, 0, 255] * 4)
    rgb = to_rgb(image_fields_to_array("bgr8", 2, 2, 6, data, False), "bgr8")
    np.testing.assert_array_equal(rgb[0, 0], [255, 0, 0])


@pytest.mark.parametrize("big_endian", [False, True])
def test_16uc1_millimetres_to_metres(big_endian):
    mm = np.array([[0, 1000, 1234], [65535, 500, 20000]], dtype=np.uint16)
    fields = array_to_image_fields(mm, "16UC1", is_bigendian=big_endian)
    assert fields["is_bigendian"] == int(big_endian)
    assert fields["data"][2:4] == (struct.pack(">H", 1000) if big_endian else struct.pack("<H", 1000))
    raw = image_fields_to_array("16UC1", 2, 3, fields["step"], fields["data"], big_endian)
    np.testing.assert_array_equal(raw, mm)
    depth = to_depth_m(raw, "16UC1")
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, [[0, 1.0, 1.234], [0, 0.5, 20.0]], rtol=1e-6)


@pytest.mark.parametrize("big_endian", [False, True])
def test_32fc1_metres_keep_nan(big_endian):
    depth = np.array([[0.5, np.nan], [np.inf, 3.25]], dtype=np.float32)
    fields = array_to_image_fields(depth, "32FC1", is_bigendian=big_endian)
    out = to_depth_m(image_fields_to_array("32FC1", 2, 2, 8, fields["data"], big_endian), "32FC1")
    np.testing.assert_array_equal(out, depth)  # assert_array_equal treats NaN == NaN


def test_big_endian_read_differs_from_little_endian():
    data = struct.pack(">2H", 1, 2)
    assert image_fields_to_array("16UC1", 1, 2, 4, data, True).tolist() == [[1, 2]]
    assert image_fields_to_array("16UC1", 1, 2, 4, data, False).tolist() == [[256, 512]]


@pytest.mark.parametrize("encoding", ["rgb8", "mono8", "16UC1", "32FC1"])
def test_row_padding_is_dropped(encoding):
    enc = ENCODINGS[encoding]
    rng = np.random.default_rng(0)
    shape = (H, W, enc.channels) if enc.channels > 1 else (H, W)
    if enc.dtype == np.float32:
        arr = rng.uniform(0, 5, shape).astype(np.float32)
    else:
        arr = rng.integers(0, np.iinfo(enc.dtype).max, shape).astype(enc.dtype)
    row = arr.reshape(H, -1).view(np.uint8).reshape(H, -1)
    pad = 5
    padded = np.concatenate([row, np.full((H, pad), 0xAB, np.uint8)], axis=1)
    out = image_fields_to_array(encoding, H, W, row.shape[1] + pad, padded.tobytes(), False)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(encoding="yuv422"), "unsupported image encoding 'yuv422'"),
        (dict(data=b""), "empty data"),
        (dict(data=bytes(20)), "truncated data"),
        (dict(data=bytes(W * 3 * H + 4)), "size mismatch"),
        (dict(step=W * 3 - 1), "step too small"),
        (dict(height=0, data=b""), "empty image"),
    ],
)
def test_bad_fields_raise_input_error_naming_the_problem(kwargs, message):
    fields = dict(encoding="rgb8", height=H, width=W, step=W * 3, data=bytes(W * 3 * H), is_bigendian=False)
    fields.update(kwargs)
    with pytest.raises(InputError, match=message):
        image_fields_to_array(**fields)


def test_colour_and_depth_are_not_confused():
    with pytest.raises(InputError, match="depth encoding"):
        to_rgb(np.zeros((2, 2), np.uint16), "16UC1")
    with pytest.raises(InputError, match="cannot read 'rgb8' as depth"):
        to_depth_m(np.zeros((2, 2, 3), np.uint8), "rgb8")
    with pytest.raises(InputError, match=r"needs dtype uint16"):
        array_to_image_fields(np.zeros((2, 2), np.float32), "16UC1")
    with pytest.raises(InputError, match=r"shape \(H, W, 3\)"):
        array_to_image_fields(np.zeros((2, 2), np.uint8), "rgb8")


def test_data_as_array_array_and_list():
    """rclpy hands uint8[] fields out as array.array('B'); rosbags as numpy; tests as lists."""
    rgb = _rgb()
    raw = rgb.tobytes()
    for data in (array.array("B", raw), list(raw), np.frombuffer(raw, np.uint8), memoryview(raw)):
        np.testing.assert_array_equal(image_fields_to_array("rgb8", H, W, W * 3, data, 0), rgb)


# ------------------------------------------------------------------ real sensor_msgs messages


def test_real_sensor_msgs_image_roundtrip():
    pytest.importorskip("rclpy", reason="ROS 2 message packages are not installed")
    from sensor_msgs.msg import Image

    rgb = _rgb()
    msg = Image(**array_to_image_fields(rgb[..., ::-1].copy(), "bgr8"))
    msg.header.frame_id = "cam"
    assert isinstance(msg.data, array.array) or hasattr(msg.data, "__len__")
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)
    np.testing.assert_array_equal(image_msg_to_array(msg), rgb[..., ::-1])

    depth_mm = (np.arange(H * W, dtype=np.uint16).reshape(H, W) + 1) * 100
    dmsg = Image(**array_to_image_fields(depth_mm, "16UC1", is_bigendian=True))
    np.testing.assert_allclose(image_msg_to_depth_m(dmsg), depth_mm / 1000.0, rtol=1e-6)

    fmsg = Image(**array_to_image_fields(depth_mm.astype(np.float32) / 1000, "32FC1"))
    np.testing.assert_allclose(image_msg_to_depth_m(fmsg), depth_mm / 1000.0, rtol=1e-6)


def test_real_sensor_msgs_compressed_roundtrip():
    pytest.importorskip("rclpy", reason="ROS 2 message packages are not installed")
    from sensor_msgs.msg import CompressedImage

    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (255, 0, 0)
    rgb[:, 16:32] = (0, 255, 0)
    rgb[:, 32:] = (0, 0, 255)
    png = CompressedImage(**array_to_compressed(rgb, "png"))
    assert png.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(compressed_to_array(png.format, png.data), rgb)
    jpeg = CompressedImage(**array_to_compressed(rgb, "jpeg", jpeg_quality=95))
    out = compressed_to_array(jpeg.format, jpeg.data)
    assert out.shape == rgb.shape
    # lossy, but each stripe keeps its colour (a channel swap would move red to blue)
    assert np.abs(out[:, 2:14].astype(int) - (255, 0, 0)).mean() < 12
    assert np.abs(out[:, 34:46].astype(int) - (0, 0, 255)).mean() < 12


def test_compressed_plain_format_and_mono():
    gray = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    enc = array_to_compressed(gray, "png")
    assert enc["format"].startswith("mono8")
    out = compressed_to_array("png", enc["data"])
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))


def test_compressed_depth_16uc1():
    mm = np.array([[0, 1500], [2500, 65535]], np.uint16)
    ok, png = cv2.imencode(".png", mm)
    assert ok
    payload = struct.pack("<iff", 0, 0.0, 0.0) + png.tobytes()
    depth = compressed_to_array("16UC1; compressedDepth png", payload)
    np.testing.assert_allclose(depth, [[0, 1.5], [2.5, 0]], rtol=1e-6)


def test_compressed_bad_input():
    with pytest.raises(InputError, match="empty data"):
        compressed_to_array("jpeg", b"")
    with pytest.raises(InputError, match="could not decode"):
        compressed_to_array("jpeg", b"\xff\xd8 this is not a jpeg")
    with pytest.raises(InputError, match="unsupported compressed image format"):
        compressed_to_array("theora", b"abc")
    with pytest.raises(InputError, match="truncated"):
        compressed_to_array("16UC1; compressedDepth png", b"\x00" * 8)


# ------------------------------------------------------------------ camera info, poses, stamps


def test_camera_info_to_K():
    K, w, h = camera_info_to_K([615.2, 0, 298.4, 0, 615.2, 247.5, 0, 0, 1], 640, 480)
    assert (w, h) == (640, 480) and K.shape == (3, 3) and K[0, 2] == pytest.approx(298.4)
    with pytest.raises(InputError, match="uncalibrated"):
        camera_info_to_K([0.0] * 9, 640, 480)
    with pytest.raises(InputError, match="9 values"):
        camera_info_to_K([1.0] * 4, 640, 480)
    with pytest.raises(InputError, match="non-finite"):
        camera_info_to_K([np.nan, 0, 1, 0, 1, 1, 0, 0, 1], 640, 480)


def test_pose_roundtrip_and_non_rotation():
    angle = 0.7
    q = (0.0, 0.0, np.sin(angle / 2), np.cos(angle / 2))
    T = pose_fields_to_matrix((1.0, 2.0, 3.0), q)
    np.testing.assert_allclose(T[:3, :3], [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    t, q2 = matrix_to_pose_fields(T)
    np.testing.assert_allclose(t, (1, 2, 3))
    np.testing.assert_allclose(q2, q, atol=1e-9)
    with pytest.raises(InputError, match="not a rotation"):
        pose_fields_to_matrix((0, 0, 0), (0.0, 0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="not a rotation"):
        pose_fields_to_matrix((0, 0, 0), (1.0, 1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="non-finite"):
        pose_fields_to_matrix((np.nan, 0, 0), (0, 0, 0, 1))
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(InputError, match="not a rotation matrix"):
        matrix_to_pose_fields(bad)


def test_stamps():
    class Stamp:
        sec, nanosec = 1_700_000_000, 5

    assert stamp_to_ns(Stamp) == 1_700_000_000_000_000_005
    assert ns_to_stamp(1_700_000_000_000_000_005) == (1_700_000_000, 5)
    with pytest.raises(InputError):
        ns_to_stamp(-1)

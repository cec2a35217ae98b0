"""ROS image / camera-info / pose fields <-> numpy, without importing ROS.

Every function works on plain fields or on any object with the attributes of the ROS message
(``sensor_msgs/Image``: ``encoding, height, width, step, data, is_bigendian``;
``sensor_msgs/CompressedImage``: ``format, data``; ``sensor_msgs/CameraInfo``: ``k, width,
height``), so the same code serves rclpy messages, rosbags-deserialised messages and tests.

Outputs follow ``docs/conventions.md``: colour is ``(H, W, 3)`` uint8 **RGB**; depth is ``(H, W)``
float32 **metres** (invalid pixels 0, or NaN/inf where the source said so). Bad input raises
:class:`vln_core.errors.InputError` with a message naming the problem (unknown encoding, empty or
truncated data, step too small, size mismatch, ...).

Supported raw encodings: ``rgb8, bgr8, rgba8, bgra8, mono8`` (colour), ``16UC1`` / ``mono16``
(depth, millimetres), ``32FC1`` (depth, metres), either byte order, any row padding
(``step >= width * bytes_per_pixel``). Compressed: ``jpeg`` / ``png`` colour as produced by
``compressed_image_transport`` and ``compressedDepth`` PNG depth (``16UC1`` and ``32FC1``).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from vln_core.errors import InputError
from vln_core.geometry.reproject import depth_from_uint16_mm
from vln_core.geometry.transforms import ROTATION_TOLERANCE, matrix_to_quat, nearest_rotation, rotation_error

__all__ = [
    "ImageEncoding",
    "ENCODINGS",
    "COLOR_ENCODINGS",
    "DEPTH_ENCODINGS",
    "image_fields_to_array",
    "image_msg_to_array",
    "array_to_image_fields",
    "to_rgb",
    "to_depth_m",
    "image_msg_to_rgb",
    "image_msg_to_depth_m",
    "compressed_to_array",
    "compressed_msg_to_array",
    "array_to_compressed",
    "camera_info_to_K",
    "pose_fields_to_matrix",
    "matrix_to_pose_fields",
    "stamp_to_ns",
    "ns_to_stamp",
]


@dataclass(frozen=True)
class ImageEncoding:
    """Memory layout of one ``sensor_msgs/Image`` encoding."""

    name: str
    dtype: np.dtype  # element type (native byte order)
    channels: int

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels


ENCODINGS: dict[str, ImageEncoding] = {
    e.name: e
    for e in (
        ImageEncoding("rgb8", np.dtype(np.uint8), 3),
        ImageEncoding("bgr8", np.dtype(np.uint8), 3),
        ImageEncoding("rgba8", np.dtype(np.uint8), 4),
        ImageEncoding("bgra8", np.dtype(np.uint8), 4),
        ImageEncoding("mono8", np.dtype(np.uint8), 1),
        ImageEncoding("16UC1", np.dtype(np.uint16), 1),
        ImageEncoding("mono16", np.dtype(np.uint16), 1),
        ImageEncoding("32FC1", np.dtype(np.float32), 1),
    )
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


def _encoding(name: str) -> ImageEncoding:
    try:
        return ENCODINGS[name]
    except KeyError:
        raise InputError(f"unsupported image encoding {name!r}; supported: {sorted(ENCODINGS)}") from None


def _as_byte_array(data: Any) -> np.ndarray:
    """1-D uint8 view of ``data`` (bytes, bytearray, memoryview, array.array('B'), list, ndarray)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise InputError(f"image data must be bytes (uint8), got an array of {data.dtype}")
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"image data must be a byte sequence, got {type(data).__name__}: {exc}") from None


def image_fields_to_array(
    encoding: str, height: int, width: int, step: int, data: Any, is_bigendian: bool | int = False
) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` into an array in the encoding's own layout.

    Args:
        encoding: one of :data:`ENCODINGS` (``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``,
            ``16UC1``, ``mono16``, ``32FC1``).
        height, width: image size in pixels (> 0).
        step: bytes per row, ``>= width * bytes_per_pixel`` (padding at the row end is dropped).
        data: ``step * height`` bytes.
        is_bigendian: byte order of multi-byte elements in ``data``.

    Returns:
        A new C-contiguous array: ``(H, W, C)`` for multi-channel encodings (channel order as in
        the encoding, e.g. BGR for ``bgr8``), ``(H, W)`` for single-channel ones, dtype uint8,
        uint16 or float32 in native byte order. Use :func:`to_rgb` / :func:`to_depth_m` for the
        project's conventions.
    """
    enc = _encoding(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise InputError(f"empty image: {encoding} {width}x{height}")
    row_bytes = width * enc.bytes_per_pixel
    if step < row_bytes:
        raise InputError(
            f"step too small: {encoding} {width}x{height} needs at least {row_bytes} bytes per row, step is {step}"
        )
    buf = _as_byte_array(data)
    expected = step * height
    if buf.size == 0:
        raise InputError(f"empty data: {encoding} {width}x{height} image carries no bytes")
    if buf.size < expected:
        raise InputError(
            f"truncated data: {encoding} {width}x{height} with step {step} needs {expected} bytes, got {buf.size}"
        )
    if buf.size != expected:
        raise InputError(
            f"size mismatch: {encoding} {width}x{height} with step {step} needs {expected} bytes, got {buf.size}"
        )
    rows = buf.reshape(height, step)[:, :row_bytes]
    dtype = enc.dtype.newbyteorder(">" if is_bigendian else "<") if enc.dtype.itemsize > 1 else enc.dtype
    arr = np.ascontiguousarray(rows).view(dtype)
    arr = arr.astype(enc.dtype, copy=True)  # native order, owns its memory
    shape = (height, width, enc.channels) if enc.channels > 1 else (height, width)
    return arr.reshape(shape)


def image_msg_to_array(msg: Any) -> np.ndarray:
    """:func:`image_fields_to_array` on anything with ``sensor_msgs/Image`` attributes."""
    return image_fields_to_array(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian)


def array_to_image_fields(arr: Any, encoding: str, is_bigendian: bool = False) -> dict[str, Any]:
    """Encode an array as ``sensor_msgs/Image`` fields (no row padding).

    Args:
        arr: ``(H, W, C)`` or ``(H, W)`` array whose dtype and channel count match ``encoding``
            (uint8 for the 8-bit colour encodings in that encoding's channel order, uint16
            millimetres for ``16UC1``/``mono16``, float32 metres for ``32FC1``).
        encoding: one of :data:`ENCODINGS`.
        is_bigendian: write multi-byte elements big-endian.

    Returns:
        ``dict(height, width, encoding, is_bigendian, step, data)`` with ``data`` as ``bytes``;
        ``Image(**fields)`` builds the message.
    """
    enc = _encoding(encoding)
    arr = np.asarray(arr)
    if enc.channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    expected_ndim = 3 if enc.channels > 1 else 2
    if arr.ndim != expected_ndim or (enc.channels > 1 and arr.shape[2] != enc.channels):
        want = f"(H, W, {enc.channels})" if enc.channels > 1 else "(H, W)"
        raise InputError(f"{encoding} needs an array of shape {want}, got {arr.shape}")
    if arr.dtype != enc.dtype:
        raise InputError(f"{encoding} needs dtype {enc.dtype}, got {arr.dtype}")
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise InputError(f"empty image: {encoding} array of shape {arr.shape}")
    out_dtype = enc.dtype.newbyteorder(">" if is_bigendian else "<") if enc.dtype.itemsize > 1 else enc.dtype
    data = np.ascontiguousarray(arr, dtype=out_dtype).tobytes()
    return {
        "height": int(height),
        "width": int(width),
        "encoding": encoding,
        "is_bigendian": int(bool(is_bigendian) and enc.dtype.itemsize > 1),
        "step": int(width * enc.bytes_per_pixel),
        "data": data,
    }


def to_rgb(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Colour array in ``encoding``'s layout -> ``(H, W, 3)`` uint8 RGB (new contiguous array).

    ``mono8`` is replicated to three channels; alpha is dropped.
    """
    if encoding not in COLOR_ENCODINGS:
        kind = "a depth encoding" if encoding in DEPTH_ENCODINGS else "not a supported encoding"
        raise InputError(f"cannot convert {encoding!r} to RGB colour: it is {kind}; colour needs one of {COLOR_ENCODINGS}")
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise InputError(f"{encoding} colour must be uint8, got {arr.dtype}")
    if encoding == "mono8":
        if arr.ndim != 2:
            raise InputError(f"mono8 must be (H, W), got {arr.shape}")
        return np.repeat(arr[:, :, None], 3, axis=2)
    channels = ENCODINGS[encoding].channels
    if arr.ndim != 3 or arr.shape[2] != channels:
        raise InputError(f"{encoding} must be (H, W, {channels}), got {arr.shape}")
    if encoding in ("rgb8", "rgba8"):
        return np.ascontiguousarray(arr[:, :, :3])
    return np.ascontiguousarray(arr[:, :, 2::-1])  # bgr8 / bgra8


def to_depth_m(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Depth array in ``encoding``'s layout -> ``(H, W)`` float32 metres.

    ``16UC1``/``mono16`` are millimetres (0 and 65535 become 0 = invalid, via the geometry core);
    ``32FC1`` is metres and is copied unchanged (NaN/inf stay: they mark invalid pixels too).
    """
    if encoding in ("16UC1", "mono16"):
        return depth_from_uint16_mm(arr)
    if encoding == "32FC1":
        arr = np.asarray(arr)
        if arr.ndim != 2:
            raise InputError(f"32FC1 depth must be (H, W), got {arr.shape}")
        return np.array(arr, dtype=np.float32, copy=True)
    raise InputError(f"cannot read {encoding!r} as depth; depth needs one of {DEPTH_ENCODINGS}")


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """``sensor_msgs/Image``-like colour message -> ``(H, W, 3)`` uint8 RGB."""
    return to_rgb(image_msg_to_array(msg), msg.encoding)


def image_msg_to_depth_m(msg: Any) -> np.ndarray:
    """``sensor_msgs/Image``-like depth message -> ``(H, W)`` float32 metres."""
    return to_depth_m(image_msg_to_array(msg), msg.encoding)


# -------------------------------------------------------------------------------- compressed

_COMPRESSED_DEPTH_HEADER = struct.Struct("<iff")  # format enum, depthQuantA, depthQuantB (12 bytes)


def compressed_to_array(fmt: str, data: Any) -> np.ndarray:
    """Decode ``sensor_msgs/CompressedImage`` payloads.

    Args:
        fmt: the message's ``format`` string: ``"jpeg"``, ``"png"`` or image_transport's
            ``"<encoding>; jpeg compressed bgr8"`` / ``"<encoding>; png compressed bgr8"`` for
            colour; ``"16UC1; compressedDepth png"`` / ``"32FC1; compressedDepth png"`` for depth
            (12-byte header followed by a 16-bit PNG).
        data: the compressed bytes.

    Returns:
        Colour: ``(H, W, 3)`` uint8 RGB. compressedDepth: ``(H, W)`` float32 metres (invalid = 0).
    """
    fmt_l = fmt.strip().lower()
    buf = _as_byte_array(data)
    if buf.size == 0:
        raise InputError(f"empty data: compressed image (format {fmt!r}) carries no bytes")
    if "compresseddepth" in fmt_l:
        return _decode_compressed_depth(fmt, buf)
    codec = fmt_l.split(";")[1].split()[0] if ";" in fmt_l else fmt_l.split()[0] if fmt_l else ""
    if codec not in ("jpeg", "jpg", "png"):
        raise InputError(f"unsupported compressed image format {fmt!r}; supported: jpeg, png, compressedDepth png")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"could not decode {codec} data ({buf.size} bytes, format {fmt!r}): corrupt or truncated")
    if img.dtype != np.uint8:
        raise InputError(f"compressed colour image must be 8-bit, decoded {img.dtype} (format {fmt!r})")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _decode_compressed_depth(fmt: str, buf: np.ndarray) -> np.ndarray:
    header = _COMPRESSED_DEPTH_HEADER.size
    if buf.size <= header:
        raise InputError(f"truncated data: compressedDepth image (format {fmt!r}) has only {buf.size} bytes")
    _, quant_a, quant_b = _COMPRESSED_DEPTH_HEADER.unpack(buf[:header].tobytes())
    raw = cv2.imdecode(buf[header:], cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise InputError(f"could not decode compressedDepth PNG ({buf.size} bytes, format {fmt!r}): corrupt or truncated")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise InputError(f"compressedDepth PNG must be 16-bit single channel, got {raw.dtype} {raw.shape}")
    source_encoding = fmt.split(";")[0].strip()
    if source_encoding in ("16UC1", "mono16"):
        return depth_from_uint16_mm(raw)
    if source_encoding == "32FC1":
        # inverse-depth quantisation of compressed_depth_image_transport: q = A / d + B
        depth = np.zeros(raw.shape, dtype=np.float32)
        valid = raw != 0
        depth[valid] = quant_a / (raw[valid].astype(np.float32) - quant_b)
        return depth
    raise InputError(f"compressedDepth of {source_encoding!r} is not supported (16UC1, 32FC1)")


def compressed_msg_to_array(msg: Any) -> np.ndarray:
    """:func:`compressed_to_array` on anything with ``sensor_msgs/CompressedImage`` attributes."""
    return compressed_to_array(msg.format, msg.data)


def array_to_compressed(rgb: Any, fmt: str = "jpeg", jpeg_quality: int = 90) -> dict[str, Any]:
    """Encode an RGB (or mono) uint8 image as ``sensor_msgs/CompressedImage`` fields.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB or ``(H, W)`` uint8 mono.
        fmt: ``"jpeg"`` or ``"png"``.
        jpeg_quality: 0..100.

    Returns:
        ``dict(format, data)``; ``format`` follows image_transport, e.g.
        ``"rgb8; jpeg compressed bgr8"``, ``data`` is ``bytes``.
    """
    codec = fmt.strip().lower()
    if codec == "jpg":
        codec = "jpeg"
    if codec not in ("jpeg", "png"):
        raise InputError(f"unsupported compression {fmt!r}; use 'jpeg' or 'png'")
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise InputError(f"compressed images need uint8 input, got {arr.dtype}")
    if arr.ndim == 2:
        source, payload, bgr = "mono8", "mono8", arr
    elif arr.ndim == 3 and arr.shape[2] == 3:
        source, payload, bgr = "rgb8", "bgr8", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    else:
        raise InputError(f"compressed images need (H, W, 3) RGB or (H, W) mono, got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"empty image of shape {arr.shape}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if codec == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if codec == "jpeg" else ".png", bgr, params)
    if not ok:
        raise InputError(f"cv2 could not encode a {arr.shape} image as {codec}")
    return {"format": f"{source}; {codec} compressed {payload}", "data": encoded.tobytes()}


# -------------------------------------------------------------------------------- camera info, poses


def camera_info_to_K(k: Any, width: int, height: int) -> tuple[np.ndarray, int, int]:
    """``sensor_msgs/CameraInfo`` ``k`` (row-major 9 values), ``width``, ``height`` -> ``(K (3, 3) float64, W, H)``.

    Raises :class:`InputError` for an uncalibrated camera (all zeros), non-finite values, a
    non-positive focal length or an empty image size.
    """
    K = np.asarray(list(k), dtype=np.float64)
    if K.size != 9:
        raise InputError(f"CameraInfo.k must hold 9 values, got {K.size}")
    K = K.reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise InputError(f"CameraInfo.k has non-finite values: {K.ravel().tolist()}")
    if not np.any(K):
        raise InputError("CameraInfo.k is all zeros: the camera is uncalibrated")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"CameraInfo.k focal lengths must be > 0, got fx={K[0, 0]}, fy={K[1, 1]}")
    if int(width) <= 0 or int(height) <= 0:
        raise InputError(f"CameraInfo image size must be positive, got {width}x{height}")
    return K, int(width), int(height)


def pose_fields_to_matrix(position: Any, orientation: Any, quat_tolerance: float = 1e-2) -> np.ndarray:
    """``geometry_msgs/Pose`` fields -> ``(4, 4)`` float64 homogeneous transform.

    Args:
        position: ``(x, y, z)`` metres, or an object with ``.x .y .z``.
        orientation: quaternion ``(x, y, z, w)``, or an object with ``.x .y .z .w``.
        quat_tolerance: ``| |q| - 1 |`` above this is not a rotation and raises :class:`InputError`
            (slightly unnormalised quaternions are renormalised).

    Returns:
        ``T`` with ``T[:3, :3]`` the rotation and ``T[:3, 3]`` the translation (``p_parent = T @ p_child``).
    """
    t = np.asarray(_xyz(position), dtype=np.float64)
    q = np.asarray(_xyzw(orientation), dtype=np.float64)
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise InputError(f"pose has non-finite values: position {t.tolist()}, orientation {q.tolist()}")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > quat_tolerance:
        raise InputError(f"pose orientation is not a rotation: quaternion {q.tolist()} has norm {norm:.4g}, not 1")
    x, y, z, w = q / norm
    # plain numpy on purpose (same formula as vln_core.geometry.quat_to_matrix): this runs for every
    # odometry message, and each tiny torch op releases and re-takes the GIL, which a busy
    # inference thread turns into milliseconds of waiting per message
    R = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def matrix_to_pose_fields(T: Any) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """``(4, 4)`` rigid transform -> ``((x, y, z), (qx, qy, qz, qw))`` with ``qw >= 0``.

    Raises :class:`InputError` when the upper-left block is not a rotation within
    :data:`~vln_core.geometry.transforms.ROTATION_TOLERANCE`; what passes is re-orthonormalised.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise InputError(f"pose must be (4, 4), got {T.shape}")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0]):
        raise InputError(f"pose bottom row must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    error = rotation_error(R)
    if error > ROTATION_TOLERANCE:
        raise InputError(f"pose rotation block is not a rotation matrix (error {error:.2e} = max(|R R^T - I|, "
                         f"|det R - 1|), tolerance {ROTATION_TOLERANCE:g}): {np.round(R, 6).tolist()}")
    q = matrix_to_quat(nearest_rotation(R)).numpy()
    return tuple(float(v) for v in T[:3, 3]), tuple(float(v) for v in q)  # type: ignore[return-value]


def _xyz(p: Any) -> tuple[float, float, float]:
    return (p.x, p.y, p.z) if hasattr(p, "x") else tuple(p)


def _xyzw(q: Any) -> tuple[float, float, float, float]:
    return (q.x, q.y, q.z, q.w) if hasattr(q, "w") else tuple(q)


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (``sec``, ``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> ``(sec, nanosec)`` for ``builtin_interfaces/Time``."""
    if ns < 0:
        raise InputError(f"timestamps must be >= 0 ns, got {ns}")
    return int(ns // 1_000_000_000), int(ns % 1_000_000_000)

"""Build and parse the ROS messages of the vln_heatmap node (numpy <-> rclpy messages).

The byte-level work (encodings, padding, byte order, compression, quaternions) is
``vln_core.ros_codec``; this module only fills message fields. Frames follow
``docs/conventions.md``: ``T_odom_base`` is base_link -> odom (REP 103 axes), images are OpenCV
optical, heatmaps are ``(K, H, W)`` float32 over the current image grid.

Heatmap message layout (``~/heatmaps``): one ``sensor_msgs/Image``, encoding ``32FC1``, width
``W``, height ``K * H``; rows ``k*H .. (k+1)*H - 1`` are keyframe ``k``'s heatmap, in the order of
``~/keyframe_indices`` / ``~/keyframe_stamps``. Its header carries the stamp and frame_id of the
input colour image the heatmaps were computed for. The two keyframe arrays are published right
after the heatmap image and name that same stamp in ``layout.dim[0].label`` (``"keyframe@<ns>"``)
so a subscriber can pair them exactly.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PoseStamped, Quaternion, Vector3
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import ColorRGBA, Header, Int32MultiArray, Int64MultiArray, MultiArrayDimension
from visualization_msgs.msg import Marker, MarkerArray

from vln_core.errors import InputError
from vln_core.ros_codec import (
    array_to_compressed,
    array_to_image_fields,
    camera_info_to_K,
    compressed_msg_to_array,
    image_msg_to_array,
    image_msg_to_depth_m,
    image_msg_to_rgb,
    matrix_to_pose_fields,
    ns_to_stamp,
    pose_fields_to_matrix,
    stamp_to_ns,
)
from vln_core.geometry.reproject import depth_to_uint16_mm
from vln_core.runtime.diagnostics import LEVEL_BYTES

__all__ = [
    "LEVEL_BYTES",
    "KEYFRAME_LABEL_PREFIX",
    "header",
    "stamp_ns",
    "rgb_to_image_msg",
    "depth_to_image_msg",
    "rgb_to_compressed_msg",
    "color_msg_to_rgb",
    "depth_msg_to_metres",
    "camera_info_msg",
    "camera_info_msg_to_K",
    "odometry_msg",
    "odometry_msg_to_pose",
    "tf_msg",
    "tf_msg_to_transforms",
    "heatmaps_to_image_msg",
    "image_msg_to_heatmaps",
    "keyframe_arrays",
    "keyframe_label_stamp",
    "waypoints_to_path",
    "waypoints_to_markers",
    "diagnostics_to_msg",
    "diagnostic_array_to_dicts",
]

LEVEL_NAMES = {v: k for k, v in LEVEL_BYTES.items()}
KEYFRAME_LABEL_PREFIX = "keyframe@"


def header(stamp_ns_value: int, frame_id: str) -> Header:
    """``std_msgs/Header`` with ``stamp`` from integer nanoseconds."""
    sec, nanosec = ns_to_stamp(int(stamp_ns_value))
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def stamp_ns(msg: Any) -> int:
    """Nanoseconds of ``msg.header.stamp``."""
    return stamp_to_ns(msg.header.stamp)


# ---------------------------------------------------------------------------- camera images


def rgb_to_image_msg(rgb: np.ndarray, stamp: int, frame_id: str, encoding: str = "rgb8") -> Image:
    """``(H, W, 3)`` uint8 RGB -> ``sensor_msgs/Image`` in ``encoding`` (rgb8 or bgr8)."""
    rgb = np.asarray(rgb)
    if encoding == "bgr8":
        rgb = np.ascontiguousarray(rgb[..., ::-1])
    elif encoding != "rgb8":
        raise InputError(f"rgb_to_image_msg writes rgb8 or bgr8, not {encoding!r}")
    return Image(header=header(stamp, frame_id), **array_to_image_fields(rgb, encoding))


def rgb_to_compressed_msg(rgb: np.ndarray, stamp: int, frame_id: str, fmt: str = "jpeg") -> CompressedImage:
    """``(H, W, 3)`` uint8 RGB -> ``sensor_msgs/CompressedImage`` (jpeg or png)."""
    return CompressedImage(header=header(stamp, frame_id), **array_to_compressed(rgb, fmt))


def depth_to_image_msg(depth_m: np.ndarray, stamp: int, frame_id: str, encoding: str = "16UC1") -> Image:
    """``(H, W)`` float32 metres -> ``sensor_msgs/Image``: ``16UC1`` millimetres or ``32FC1`` metres."""
    if encoding == "16UC1":
        arr = depth_to_uint16_mm(depth_m)
    elif encoding == "32FC1":
        arr = np.asarray(depth_m, dtype=np.float32)
    else:
        raise InputError(f"depth images are written as 16UC1 or 32FC1, not {encoding!r}")
    return Image(header=header(stamp, frame_id), **array_to_image_fields(arr, encoding))


def color_msg_to_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """Raw or compressed colour message -> ``(H, W, 3)`` uint8 RGB (raises InputError)."""
    if isinstance(msg, CompressedImage):
        rgb = compressed_msg_to_array(msg)
        if rgb.ndim != 3:
            raise InputError(f"compressed colour topic carries depth data (format {msg.format!r})")
        return rgb
    return image_msg_to_rgb(msg)


def depth_msg_to_metres(msg: Image) -> np.ndarray:
    """``16UC1``/``mono16`` (mm) or ``32FC1`` (m) ``sensor_msgs/Image`` -> ``(H, W)`` float32 metres."""
    return image_msg_to_depth_m(msg)


def camera_info_msg(K: np.ndarray, width: int, height: int, stamp: int, frame_id: str) -> CameraInfo:
    """``sensor_msgs/CameraInfo`` of an undistorted pinhole camera ``K (3, 3)``."""
    K = np.asarray(K, dtype=np.float64)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return CameraInfo(
        header=header(stamp, frame_id), width=int(width), height=int(height),
        distortion_model="plumb_bob", d=[0.0] * 5, k=K.ravel().tolist(),
        r=np.eye(3).ravel().tolist(), p=P.ravel().tolist(),
    )


def camera_info_msg_to_K(msg: CameraInfo) -> tuple[np.ndarray, int, int]:
    """``(K (3, 3), width, height)``; raises InputError for an uncalibrated or broken CameraInfo."""
    return camera_info_to_K(msg.k, msg.width, msg.height)


# ---------------------------------------------------------------------------- odometry


def odometry_msg(
    T_odom_base: np.ndarray, stamp: int, odom_frame: str = "odom", base_frame: str = "base_link",
    velocity: Sequence[float] = (0.0, 0.0),
) -> Odometry:
    """``nav_msgs/Odometry`` of base_link in ``odom_frame``; ``velocity = (vx m/s, wz rad/s)`` in base_link."""
    (x, y, z), (qx, qy, qz, qw) = matrix_to_pose_fields(T_odom_base)
    msg = Odometry(header=header(stamp, odom_frame), child_frame_id=base_frame)
    msg.pose.pose.position = Point(x=x, y=y, z=z)
    msg.pose.pose.orientation = Quaternion(x=qx, y=qy, z=qz, w=qw)
    msg.twist.twist.linear = Vector3(x=float(velocity[0]), y=0.0, z=0.0)
    msg.twist.twist.angular = Vector3(x=0.0, y=0.0, z=float(velocity[1]))
    return msg


def odometry_msg_to_pose(msg: Odometry) -> tuple[int, np.ndarray, tuple[float, float]]:
    """``(stamp_ns, T_odom_base (4, 4), (vx, wz))``; raises InputError for a non-rotation pose."""
    T = pose_fields_to_matrix(msg.pose.pose.position, msg.pose.pose.orientation)
    twist = msg.twist.twist
    velocity = (float(twist.linear.x), float(twist.angular.z))
    if not all(np.isfinite(velocity)):
        raise InputError(f"odometry twist has non-finite values: {velocity}")
    return stamp_ns(msg), T, velocity


# ---------------------------------------------------------------------------- tf


def tf_msg(transforms: Iterable[tuple[str, str, int, np.ndarray]]) -> Any:
    """``(parent, child, stamp_ns, T_parent_child (4, 4))`` tuples -> ``tf2_msgs/TFMessage``.

    ``tf2_msgs`` is imported here, not at module level: it is optional (ROS 2 from PyPI has none;
    ``tools/build_tf2_msgs.sh`` builds it)."""
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    msg = TFMessage()
    for parent, child, stamp, T in transforms:
        (x, y, z), (qx, qy, qz, qw) = matrix_to_pose_fields(T)
        t = TransformStamped(header=header(stamp, parent), child_frame_id=child)
        t.transform.translation = Vector3(x=x, y=y, z=z)
        t.transform.rotation = Quaternion(x=qx, y=qy, z=qz, w=qw)
        msg.transforms.append(t)
    return msg


def tf_msg_to_transforms(msg: Any) -> list[tuple[str, str, int, tuple[float, float, float], tuple[float, float, float, float]]]:
    """``tf2_msgs/TFMessage`` -> ``(parent, child, stamp_ns, (x, y, z), (qx, qy, qz, qw))`` tuples
    for :meth:`vln_core.runtime.NavigationRuntime.add_transforms` (which validates them)."""
    out = []
    for t in msg.transforms:
        tr, q = t.transform.translation, t.transform.rotation
        out.append((t.header.frame_id, t.child_frame_id, stamp_ns(t),
                    (float(tr.x), float(tr.y), float(tr.z)), (float(q.x), float(q.y), float(q.z), float(q.w))))
    return out


# ---------------------------------------------------------------------------- heatmaps


def heatmaps_to_image_msg(heatmaps: np.ndarray, stamp: int, frame_id: str) -> Image:
    """``(K, H, W)`` float -> one ``32FC1`` ``sensor_msgs/Image`` of height ``K * H`` (keyframes stacked)."""
    if hasattr(heatmaps, "detach"):  # torch tensor, possibly on a GPU
        heatmaps = heatmaps.detach().cpu().numpy()
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if heatmaps.ndim != 3 or heatmaps.shape[0] == 0:
        raise InputError(f"heatmaps must be (K, H, W) with K >= 1, got {heatmaps.shape}")
    K, H, W = heatmaps.shape
    return Image(header=header(stamp, frame_id), **array_to_image_fields(heatmaps.reshape(K * H, W), "32FC1"))


def image_msg_to_heatmaps(msg: Image, keyframes: int) -> np.ndarray:
    """Inverse of :func:`heatmaps_to_image_msg`: ``(keyframes, H, W)`` float32."""
    stacked = image_msg_to_array(msg)
    if msg.encoding != "32FC1":
        raise InputError(f"heatmap image must be 32FC1, got {msg.encoding!r}")
    if keyframes < 1 or stacked.shape[0] % keyframes:
        raise InputError(f"heatmap image height {stacked.shape[0]} is not a multiple of {keyframes} keyframes")
    return stacked.reshape(keyframes, stacked.shape[0] // keyframes, stacked.shape[1])


def keyframe_arrays(indices: Iterable[int], stamps_ns: Iterable[int], current_stamp_ns: int) -> tuple[Int32MultiArray, Int64MultiArray]:
    """``(~/keyframe_indices, ~/keyframe_stamps)`` messages; both name the current image stamp in
    ``layout.dim[0].label`` so they can be paired with the heatmap image."""
    indices = [int(i) for i in indices]
    stamps = [int(s) for s in stamps_ns]
    if len(indices) != len(stamps):
        raise InputError(f"{len(indices)} keyframe indices but {len(stamps)} keyframe stamps")
    label = f"{KEYFRAME_LABEL_PREFIX}{int(current_stamp_ns)}"
    idx = Int32MultiArray(data=indices)
    idx.layout.dim = [MultiArrayDimension(label=label, size=len(indices), stride=len(indices))]
    st = Int64MultiArray(data=stamps)
    st.layout.dim = [MultiArrayDimension(label=label, size=len(stamps), stride=len(stamps))]
    return idx, st


def keyframe_label_stamp(msg: Int32MultiArray | Int64MultiArray) -> Optional[int]:
    """The current-image stamp (ns) a keyframe array belongs to, or None if unlabelled."""
    if not msg.layout.dim or not msg.layout.dim[0].label.startswith(KEYFRAME_LABEL_PREFIX):
        return None
    return int(msg.layout.dim[0].label[len(KEYFRAME_LABEL_PREFIX):])


# ---------------------------------------------------------------------------- waypoints


def _waypoints_in_world(waypoints: np.ndarray, T_world_base: Optional[np.ndarray]) -> np.ndarray:
    """``(N, 2)`` base-frame ``(x forward, y left)`` metres -> ``(N, 3)`` in the world (or base) frame."""
    wp = np.asarray(waypoints, dtype=np.float64)
    if wp.ndim != 2 or wp.shape[1] != 2:
        raise InputError(f"waypoints must be (N, 2) base-frame (x, y) metres, got {wp.shape}")
    pts = np.concatenate([wp, np.zeros((len(wp), 1)), np.ones((len(wp), 1))], axis=1)
    if T_world_base is not None:
        pts = pts @ np.asarray(T_world_base, dtype=np.float64).T
    return pts[:, :3]


def waypoints_to_path(
    waypoints: np.ndarray, stamp: int, frame_id: str, T_world_base: Optional[np.ndarray] = None
) -> Path:
    """``nav_msgs/Path`` of ``(N, 2)`` waypoints given in base_link ``(x forward, y left)`` metres.

    With ``T_world_base (4, 4)`` the points are moved into ``frame_id`` (the world/odom frame);
    without it ``frame_id`` should be the base frame. Each pose faces the next waypoint.
    """
    pts = _waypoints_in_world(waypoints, T_world_base)
    path = Path(header=header(stamp, frame_id))
    for i, p in enumerate(pts):
        step = pts[i + 1] - p if i + 1 < len(pts) else (p - pts[i - 1] if i > 0 else np.zeros(3))
        yaw = float(np.arctan2(step[1], step[0])) if np.hypot(step[0], step[1]) > 1e-9 else 0.0
        pose = PoseStamped(header=path.header)
        pose.pose.position = Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
        pose.pose.orientation = Quaternion(x=0.0, y=0.0, z=float(np.sin(yaw / 2)), w=float(np.cos(yaw / 2)))
        path.poses.append(pose)
    return path


def waypoints_to_markers(
    waypoints: np.ndarray, stamp: int, frame_id: str, T_world_base: Optional[np.ndarray] = None,
    namespace: str = "vln_waypoints",
) -> MarkerArray:
    """``MarkerArray``: a line strip through the waypoints and a sphere per waypoint (green ->
    red with distance along the path), replacing the previous set (DELETEALL first)."""
    pts = _waypoints_in_world(waypoints, T_world_base)
    hdr = header(stamp, frame_id)
    clear = Marker(header=hdr, ns=namespace, action=Marker.DELETEALL)
    line = Marker(header=hdr, ns=namespace, id=0, type=Marker.LINE_STRIP, action=Marker.ADD)
    line.scale.x = 0.03
    line.color = ColorRGBA(r=0.1, g=0.9, b=0.2, a=0.9)
    line.pose.orientation.w = 1.0
    line.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in pts]
    spheres = Marker(header=hdr, ns=namespace, id=1, type=Marker.SPHERE_LIST, action=Marker.ADD)
    spheres.scale = Vector3(x=0.08, y=0.08, z=0.08)
    spheres.pose.orientation.w = 1.0
    spheres.points = list(line.points)
    n = max(len(pts) - 1, 1)
    spheres.colors = [ColorRGBA(r=float(i / n), g=float(1 - i / n), b=0.1, a=1.0) for i in range(len(pts))]
    return MarkerArray(markers=[clear, line, spheres])


# ---------------------------------------------------------------------------- diagnostics


def diagnostics_to_msg(statuses: Iterable[Mapping[str, Any]], stamp: int, hardware_id: str = "") -> DiagnosticArray:
    """Runtime ``{"name", "level", "message", "values"}`` dicts -> ``diagnostic_msgs/DiagnosticArray``.

    ``level`` is ``"OK" | "WARN" | "ERROR" | "STALE"`` (or the byte itself).
    """
    out = DiagnosticArray(header=header(stamp, ""))
    for s in statuses:
        level = s.get("level", "OK")
        level_byte = LEVEL_BYTES[level] if isinstance(level, str) else int(level)
        out.status.append(
            DiagnosticStatus(
                level=bytes([level_byte]), name=str(s["name"]), message=str(s.get("message", "")),
                hardware_id=hardware_id,
                values=[KeyValue(key=str(k), value=str(v)) for k, v in (s.get("values") or {}).items()],
            )
        )
    return out


def diagnostic_array_to_dicts(msg: DiagnosticArray) -> list[dict[str, Any]]:
    """Inverse of :func:`diagnostics_to_msg` (levels back to strings) for tests and tools."""
    out = []
    for s in msg.status:
        level = s.level[0] if isinstance(s.level, (bytes, bytearray)) else int(s.level)
        out.append({
            "name": s.name, "level": LEVEL_NAMES.get(level, str(level)), "message": s.message,
            "values": {kv.key: kv.value for kv in s.values},
        })
    return out

"""What one runtime step produces: the :class:`RuntimeOutput` the node publishes, the check of a
backend's result against it, and the overlay mosaic."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from vln_core.backends.base import NUM_WAYPOINTS, BackendResult, CameraFrame, HeatmapBackend
from vln_core.heatmaps import InterFrameHeatmaps

__all__ = ["RuntimeOutput", "check_backend_result", "compose_overlay", "OVERLAY_MAX_WIDTH"]

#: The overlay's current image is shrunk to at most this width before the mosaic is drawn
#: (each tile is upscaled to ``viz``'s minimum tile width anyway).
OVERLAY_MAX_WIDTH = 400


@dataclass
class RuntimeOutput:
    """Everything the node publishes for one processed frame.

    Attributes:
        stamp_ns: the current image's stamp (outputs carry the input's stamp).
        frame_id: the current image's frame id.
        seq: the current image's sequence number.
        heatmaps: :class:`InterFrameHeatmaps`; ``heatmap`` ``(K, H, W)`` over the current view
            on the backend's output grid, one map per keyframe in ``keyframe_indices`` order.
        keyframe_stamps: K image stamps (ns) of the keyframes, oldest first.
        keyframe_indices: K sequence numbers of the keyframes (same order).
        waypoints: ``(20, 2)`` float32 (x forward, y left) metres in base_link, or None.
        goal_heatmap: ``(H, W)`` float32 or None.
        overlay: ``(H', W', 3)`` uint8 RGB mosaic (:func:`vln_core.viz.overlay_mosaic`) or None.
        latency_ms: stage -> milliseconds ("pairing", "memory", "backend", "overlay", "record",
            "total").
        input_to_output_ms: from the image's arrival in ``add_image`` to the end of ``step``.
        T_wc: ``(4, 4)`` the current camera pose used, or None.
        T_odom_base: ``(4, 4)`` the base pose (odometry) at the image stamp, or None (tf poses,
            no pose): with it the waypoints go into ``node.world_frame``.
        backend: name of the backend that produced this output (``auto`` says which it chose).
        depth: ``(h, w)`` float32 metres, the current view's depth as a learned backend predicted
            it, or None (measured depth is the input's); ``depth_K`` ``(3, 3)`` its intrinsics.
        navigation_mode: with ``node.waypoint_source=memory``, what the waypoints do: ``scan``
            (turn in place), ``explore``, ``goal`` (to where the goal was seen) or ``stop``; "" else.
    """

    stamp_ns: int
    frame_id: str
    seq: int
    heatmaps: InterFrameHeatmaps
    keyframe_stamps: list[int]
    keyframe_indices: list[int]
    waypoints: Optional[np.ndarray]
    goal_heatmap: Optional[np.ndarray]
    overlay: Optional[np.ndarray]
    latency_ms: dict[str, float]
    input_to_output_ms: float
    T_wc: Optional[np.ndarray] = None
    T_odom_base: Optional[np.ndarray] = None
    backend: str = ""
    depth: Optional[np.ndarray] = None
    depth_K: Optional[np.ndarray] = None
    navigation_mode: str = ""


def check_backend_result(backend: HeatmapBackend, result: BackendResult, frame: CameraFrame, num_keyframes: int) -> None:
    """A backend's result has the shapes the node publishes, or TypeError / ValueError naming the backend."""
    if not isinstance(result, BackendResult):
        raise TypeError(f"backend {backend.name!r} returned {type(result).__name__}, not BackendResult")
    shape = tuple(result.heatmaps.heatmap.shape)
    expected_size = tuple(backend.output_size(frame))
    if len(shape) != 3 or shape[0] != num_keyframes or shape[1:] != expected_size:
        raise ValueError(
            f"backend {backend.name!r} returned heatmaps of shape {shape}, expected "
            f"({num_keyframes}, {expected_size[0]}, {expected_size[1]})"
        )
    if result.waypoints is not None and tuple(np.shape(result.waypoints)) != (NUM_WAYPOINTS, 2):
        raise ValueError(
            f"backend {backend.name!r} returned waypoints of shape {np.shape(result.waypoints)}, "
            f"expected ({NUM_WAYPOINTS}, 2)"
        )


def compose_overlay(frame: CameraFrame, keyframes: list[CameraFrame], result: BackendResult) -> np.ndarray:
    """The ``~/overlay`` mosaic: the current image (shrunk to :data:`OVERLAY_MAX_WIDTH`) with each
    keyframe's heatmap and a thumbnail labelled by its age. Returns ``(H', W', 3)`` uint8 RGB."""
    from vln_core.viz import overlay_mosaic  # cv2 drawing; imported when overlays are on

    def shrink(rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        if w <= OVERLAY_MAX_WIDTH:
            return rgb
        return cv2.resize(rgb, (OVERLAY_MAX_WIDTH, max(1, round(h * OVERLAY_MAX_WIDTH / w))), interpolation=cv2.INTER_AREA)

    labels = []
    for kf in keyframes:
        age = (frame.stamp_ns - kf.stamp_ns) * 1e-9
        labels.append("current" if kf.seq == frame.seq else f"kf #{kf.seq} ({age:.1f} s ago)")
    thumbs = [kf.rgb for kf in keyframes]
    return overlay_mosaic(shrink(frame.rgb), result.heatmaps, labels, thumbs)

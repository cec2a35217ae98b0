"""The runtime's keyframe memory: which buffered frames the backend compares the current view with.

``frame_sampling.method: space_aware`` keeps a :class:`vln_core.sampling.KeyframeMemory` over the
voxel keys of each frame's world points (greedy maximum coverage); a frame's geometry is its
measured depth and pose, or what the backend predicts for it
(:meth:`~vln_core.backends.base.HeatmapBackend.frame_geometry`). ``uniform`` / ``random`` choose
among the last ``video.total_frames`` processed frames. Owned by the step thread.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Callable, Optional

import numpy as np
import torch

from vln_core.backends.base import CameraFrame
from vln_core.config import VLNConfig
from vln_core.geometry.reproject import unproject_depth
from vln_core.sampling import KeyframeMemory, estimate_voxel_size, frame_voxel_keys, random_sample, uniform_sample

__all__ = ["RuntimeKeyframes"]

#: ``frame_geometry(frame) -> (depth (H, W) m, K (3, 3), T_wc (4, 4)) or None``.
GeometryPredictor = Callable[[CameraFrame], Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]]


class RuntimeKeyframes:
    """The keyframes of a stream (see the module doc).

    Args:
        cfg: ``frame_sampling`` and ``video`` (``keyframes`` = the memory's capacity).
        warn: ``warn(kind, message)`` for the runtime's event log.
    """

    def __init__(self, cfg: VLNConfig, warn: Callable[[str, str], None]) -> None:
        self.cfg = cfg
        self._warn = warn
        self._warned_unavailable = False
        self._memory: Optional[KeyframeMemory] = None
        self._keyframes: dict[int, CameraFrame] = {}
        self._voxel_size: Optional[float] = cfg.frame_sampling.voxel_size
        self._recent: deque[CameraFrame] = deque(maxlen=cfg.video.total_frames)
        self._source = ""  # "measured" (depth + pose) or "predicted" (backend.frame_geometry)

    @property
    def voxel_size(self) -> Optional[float]:
        """Voxel edge (metres), None until the first frame with valid depth fixed it."""
        return self._voxel_size

    @property
    def source(self) -> str:
        """Where the memory's geometry comes from: ``"measured"``, ``"predicted"`` or ``""``."""
        return self._source

    def stats(self) -> dict:
        """The space-aware memory's counters (empty before it exists)."""
        memory = self._memory  # the step thread may replace it meanwhile
        return memory.stats() if memory is not None else {}

    def clear(self) -> None:
        """Forget every keyframe (after a reset of the inputs)."""
        self._memory = None
        self._source = ""
        self._keyframes = {}
        self._recent.clear()
        self._voxel_size = self.cfg.frame_sampling.voxel_size
        # the recorder needs no reset: it starts a new episode by itself when the size, the
        # intrinsics or the stamp order change

    def frame_voxel_keys(self, depth_m: np.ndarray, K: np.ndarray, T_wc: np.ndarray) -> np.ndarray:
        """Voxel keys (int64) of the world points a frame's depth ``(H, W)`` (intrinsics ``K`` of
        that grid, camera-to-world ``T_wc``) sees, at the memory's voxel size.

        Pixels are taken on a regular stride chosen so about ``max_points_per_frame`` remain;
        the first frame after a reset fixes the voxel size when ``frame_sampling.voxel_size`` is
        null (:func:`estimate_voxel_size` of its points).
        """
        fs = self.cfg.frame_sampling
        H, W = depth_m.shape[:2]
        stride = max(1, int(math.ceil(math.sqrt(H * W / max(1, fs.max_points_per_frame)))))
        with torch.no_grad():
            points, valid = unproject_depth(
                torch.from_numpy(np.asarray(depth_m, dtype=np.float32)), torch.from_numpy(np.asarray(K)),
                torch.from_numpy(np.asarray(T_wc)), stride=stride,
            )
        points = points.reshape(1, -1, 3)
        valid = valid.reshape(1, -1)
        if not bool(valid.any()):
            return np.zeros(0, dtype=np.int64)
        if self._voxel_size is None:
            self._voxel_size = estimate_voxel_size(points, valid, fs.voxel_divisions)
        keys, _ = frame_voxel_keys(points, valid, voxel_size=self._voxel_size,
                                   max_points_per_frame=fs.max_points_per_frame, seed=fs.seed)
        return keys[0]

    def update(self, frame: CameraFrame, predict: GeometryPredictor) -> list[CameraFrame]:
        """Offer ``frame`` to the keyframe memory; return the keyframes, oldest first (never empty).

        ``space_aware``: :class:`KeyframeMemory` over voxel keys of the measured depth and pose;
        a frame without measured depth or pose uses the geometry the backend predicts for it
        (``predict``, the backend's :meth:`HeatmapBackend.frame_geometry`: learned backends; the prediction is not stored in
        the frame, so recordings hold measurements only). The memory is cleared when frames
        change from measured to predicted geometry or back (the two do not share a world frame
        or scale). Without either this falls back to ``uniform`` with a warning.
        ``uniform`` / ``random``: chosen from the last ``video.total_frames`` processed frames.
        """
        fs = self.cfg.frame_sampling
        capacity = self.cfg.video.keyframes
        if fs.method == "space_aware":
            geometry, source = None, ""
            if frame.depth_m is not None and frame.K is not None and frame.T_wc is not None:
                geometry, source = (frame.depth_m, frame.K, frame.T_wc), "measured"
            else:
                predicted = predict(frame)
                if predicted is not None:
                    geometry, source = predicted, "predicted"
            if geometry is not None:
                if self._source and source != self._source:
                    self._warn("keyframe_geometry_changed", f"keyframe memory cleared: frames now have {source} "
                               f"geometry, the memory held {self._source} geometry")
                    self.clear()
                self._source = source
                keys = self.frame_voxel_keys(*geometry)
                if self._voxel_size is None:  # no valid point sampled yet to size the voxels
                    return [frame]
                if self._memory is None:
                    self._memory = KeyframeMemory(capacity, self._voxel_size, fs.min_novel_fraction)
                if self._memory.offer(frame.seq, keys):
                    self._keyframes[frame.seq] = frame
                ids = self._memory.frame_ids
                self._keyframes = {i: self._keyframes[i] for i in ids}
                if ids:
                    return [self._keyframes[i] for i in ids]
                return [frame]
            if not self._warned_unavailable:
                self._warned_unavailable = True
                self._warn("space_aware_unavailable", "space-aware sampling needs depth, CameraInfo and a pose (measured, "
                           "or predicted by a learned backend); using uniform sampling")
        self._recent.append(frame)  # only these methods need the recent frames kept
        recent = list(self._recent)
        if fs.method == "random":
            picks = random_sample(len(recent), capacity, seed=fs.seed + frame.seq)
        else:
            picks = uniform_sample(len(recent), capacity)
        return [recent[i] for i in picks]

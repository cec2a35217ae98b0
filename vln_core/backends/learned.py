"""The learned backends: heatmaps from predicted geometry for robots without a depth camera.

:class:`LearnedBackend` is the runtime side of :class:`~vln_core.models.reprojection_model.ReprojectionHeatmapModel`.
It needs only colour and CameraInfo; with poses (odometry or tf) it runs the RGB + pose mode, else
the RGB-only mode (``node.learned_mode``). The networks run through an *engine* with three calls,
so PyTorch (``model``, :mod:`.model_backend`), onnxruntime (``onnx``) and TensorRT (``tensorrt``) share all the
rest -- preprocessing, caching, reprojection, trajectory bookkeeping:

* ``encode(frames (B, 3, H, W) float32) -> FrameEncoding`` (depth, confidence, pose features, f8, f32),
* ``relative_poses(pose_frames (P, C, h, w), pose_current (P, C, h, w)) -> T_cur_cam (P, 4, 4)``,
* ``goal_and_waypoints(f8 (1, ...), f32 (1, ...), ids (1, L), mask (1, L), past (1, 16, 4), intent (1,))
  -> (goal_logits (1, H, W), waypoints (1, 20, 2))``.

Per frame the encoding (and, with ``model.match_refinement``, its ORB features) is computed once
and cached (a keyframe stays in memory for many updates), so an update encodes only the new
current frame. With ``model.match_refinement`` the predicted geometry is refined with ORB matches
between each keyframe and the current frame (:mod:`vln_core.geometry.refinement`): the depth takes
its metric scale from the known poses (RGB + pose), or the poses come from PnP on the predicted
depth (RGB only). The heatmaps come from the geometry
core's own reprojection (:func:`vln_core.heatmaps.heatmaps_from_config`), on the
``video.frame_size`` grid like the geometry backend's.

Frames: ``CameraFrame.T_wc`` camera-to-world (OpenCV optical axes). Without poses the backend
keeps its own camera-to-world estimate per frame by chaining the motion between consecutive
processed frames (visual odometry: PnP on matches, else the network's prediction; it drifts),
used for keyframe selection and the past trajectory; the heatmaps use the poses found directly
between each keyframe and the current frame (PnP), else the chained odometry, else the network's
direct prediction.
"""
from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Any, Optional, Protocol

import numpy as np
import torch

from vln_core.config import VLNConfig
from vln_core.errors import InputError
from vln_core.geometry.transforms import invert_pose, optical_to_body_pose, pose_from_xyz_quat
from vln_core.geometry.matching import OrbFeatures, orb_features
from vln_core.geometry.refinement import odometry_step, refine_learned_geometry
from vln_core.heatmaps import heatmaps_from_config, predicted_depth_config
from vln_core.geometry.plane_sweep import select_source_views
from vln_core.models.multiview import monocular_to_pose_scale, window_depth
from vln_core.models.goal_grounding import goal_heatmap_from_logits
from vln_core.models.reprojection_model import FrameEncoding, default_intrinsics
from vln_core.models.spatial_model import PAST_TRAJECTORY_LENGTH
from vln_core.preprocess import preprocess_frames
from vln_core.backends.base import BackendResult, CameraFrame, HeatmapBackend

__all__ = ["FrameEngine", "MultiViewEngine", "LearnedBackend", "PastTrajectory", "past_trajectory_from_history",
           "TRAJECTORY_STEP_S"]

#: The waypoint head was trained on 10 Hz trajectories: the past is resampled at this step.
TRAJECTORY_STEP_S = 0.1
#: Frames whose encodings are kept (keyframes + recent frames).
ENCODING_CACHE_SIZE = 64
#: Recent frames a frame's multi-view depth may take its sources from.
MULTIVIEW_POOL_SIZE = 24
#: A keyframe's depth is recomputed when a new set of sources scores this much better, unless its
#: sources already score this share of the best possible (each 1: the target parallax). Each
#: refresh needs a gain of 30 %, one keyframe per update at most, and :data:`MAX_REFRESHES` per
#: keyframe (the first frame of a stream: no source, then one, two, three; at most 3 seen on the
#: demo stream), so the streaming update stays within its budget.
REFRESH_GAIN = 1.3
REFRESH_GOOD_ENOUGH = 0.75
MAX_REFRESHES = 3


class FrameEngine(Protocol):
    """What runs the networks (see the module doc)."""

    frame_size: tuple[int, int]
    tokenizer: Any

    def encode(self, frames: torch.Tensor) -> FrameEncoding: ...

    def relative_poses(self, pose_frames: torch.Tensor, pose_current: torch.Tensor) -> torch.Tensor: ...

    def goal_and_waypoints(self, f8: torch.Tensor, f32: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                           past: torch.Tensor, intent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class MultiViewEngine(Protocol):
    """An engine that also runs the multi-view depth network (:mod:`vln_core.models.multiview`);
    ``has_multiview`` False (or no such attributes) means monocular depth only."""

    has_multiview: bool

    def multiview_features(self, frames: torch.Tensor) -> torch.Tensor: ...

    def multiview_depth(self, ref_features: torch.Tensor, src_features: torch.Tensor, K: torch.Tensor,
                        T_src_ref: torch.Tensor, size: tuple[int, int], mono_depth: Optional[torch.Tensor],
                        mono_conf: Optional[torch.Tensor], src_valid: torch.Tensor) -> Any: ...


def past_trajectory_from_history(history: list[tuple[float, np.ndarray]], now_s: float,
                                 steps: int = PAST_TRAJECTORY_LENGTH, dt: float = TRAJECTORY_STEP_S) -> np.ndarray:
    """The waypoint head's ``past_trajectory`` from base poses seen at irregular times.

    Args:
        history: ``[(time_s, T_world_base (4, 4)), ...]`` in time order, the current one last.
        now_s: the current time (the last entry's).

    Returns:
        ``(steps, 4)`` float32 ``[x, y, v, w]`` at ``now - (steps-1) dt ... now`` in the current
        base frame (REP 103: x forward, y left), oldest first; before the history starts the first
        pose is held with zero speed (as in training).
    """
    times = np.array([t for t, _ in history], dtype=np.float64)
    xy = np.array([T[:2, 3] for _, T in history], dtype=np.float64)
    yaw = np.unwrap(np.array([math.atan2(T[1, 0], T[0, 0]) for _, T in history], dtype=np.float64))
    query = now_s - dt * np.arange(steps - 1, -1, -1)
    before = query < times[0]
    qx = np.interp(query, times, xy[:, 0])
    qy = np.interp(query, times, xy[:, 1])
    qyaw = np.interp(query, times, yaw)
    cur_T = history[-1][1]
    c, s = math.cos(yaw[-1]), math.sin(yaw[-1])
    dx, dy = qx - cur_T[0, 3], qy - cur_T[1, 3]
    local = np.stack([c * dx + s * dy, -s * dx + c * dy], axis=1)
    v = np.zeros(steps)
    w = np.zeros(steps)
    for i in range(1, steps):
        ddx, ddy = qx[i] - qx[i - 1], qy[i] - qy[i - 1]
        v[i] = (math.cos(qyaw[i - 1]) * ddx + math.sin(qyaw[i - 1]) * ddy) / dt
        w[i] = (qyaw[i] - qyaw[i - 1]) / dt
    v[before] = 0.0
    w[before] = 0.0
    return np.concatenate([local, v[:, None], w[:, None]], axis=1).astype(np.float32)


class PastTrajectory:
    """The robot's recent base poses, turned into the ``(1, 16, 4)`` past trajectory the waypoint
    head reads (shared by every backend that runs a waypoint head).

    Args:
        camera_mount: ``node.camera_mount`` ``[x, y, z, qx, qy, qz, qw]``, the camera optical frame in base_link.
    """

    def __init__(self, camera_mount) -> None:
        self.T_cam_base = invert_pose(pose_from_xyz_quat(torch.tensor(camera_mount, dtype=torch.float64))).numpy()
        self._history: deque[tuple[float, np.ndarray]] = deque(maxlen=64)  # (time s, T_world_base)

    def base_pose(self, frame: CameraFrame, T_wc: np.ndarray) -> np.ndarray:
        """``T_world_base (4, 4)``: odometry's base pose, else the camera pose through the mount, else
        (an estimated camera pose without a mount) the camera with body axes."""
        if frame.T_odom_base is not None:
            return np.asarray(frame.T_odom_base, dtype=np.float64)
        if frame.T_wc is not None:
            return T_wc @ self.T_cam_base
        return optical_to_body_pose(torch.from_numpy(T_wc)).numpy()

    def update(self, frame: CameraFrame, T_wc: np.ndarray) -> torch.Tensor:
        """Add ``frame`` (camera-to-world ``T_wc``) and return the past trajectory ``(1, 16, 4)`` float32."""
        now_s = frame.stamp_ns * 1e-9
        if self._history and now_s <= self._history[-1][0]:
            self._history.clear()  # time went back (bag loop): start a new trajectory
        self._history.append((now_s, self.base_pose(frame, T_wc)))
        return torch.from_numpy(past_trajectory_from_history(list(self._history), now_s))[None]

    def clear(self) -> None:
        self._history.clear()


class LearnedBackend(HeatmapBackend):
    """Heatmaps, goal heatmap and waypoints from predicted geometry (see the module doc).

    Args:
        cfg: the project config (``video.frame_size``, ``heatmap``, ``node.learned_mode``,
            ``node.camera_mount``, ``model.default_hfov_deg``).
        engine: a :class:`FrameEngine`.
    """

    name = "learned"
    needs_depth = False
    needs_intrinsics = True
    predicts_waypoints = True

    def __init__(self, cfg: VLNConfig, engine: FrameEngine) -> None:
        self.cfg = cfg
        self.engine = engine
        self.goal_activation = str(getattr(engine, "goal_activation", "softmax"))
        self.mode = cfg.node.learned_mode
        self.needs_pose = self.mode == "rgb_pose"
        self.frame_size = tuple(int(s) for s in engine.frame_size)
        self.heatmap_cfg = cfg.heatmap
        self.trajectory = PastTrajectory(cfg.node.camera_mount)
        self.refine = bool(cfg.model.match_refinement)
        self.relative_pose = cfg.model.relative_pose  # RGB only: PnP, or PnP or the essential matrix
        self._cache: OrderedDict[int, tuple[FrameEncoding, np.ndarray]] = OrderedDict()
        self._features: dict[int, OrbFeatures] = {}  # seq -> ORB features on the model grid (refinement)
        self._vo_pose: OrderedDict[int, np.ndarray] = OrderedDict()  # seq -> estimated T_wc (no poses given)
        self._last_vo: Optional[tuple[int, FrameEncoding]] = None
        self.last_mode = ""
        self.last_refinement = ""
        self._depth_scale = 1.0  # the last window's match scale (known poses): keyframe selection uses it too
        # multi-view depth (model.depth_source fused / multiview): each frame's depth is computed once, on
        # arrival, from earlier frames; a keyframe's is recomputed when a newer frame gives it better sources
        self.depth_source = cfg.model.depth_source if getattr(engine, "has_multiview", False) else "monocular"
        self.num_sources = int(cfg.model.multiview_sources)
        self._mv_features: dict[int, torch.Tensor] = {}  # seq -> (1, C, h, w)
        self._mv_pose: OrderedDict[int, tuple[str, np.ndarray]] = OrderedDict()  # seq -> (pose kind, T_wc)
        self._mv_depth: dict[int, tuple[torch.Tensor, tuple[int, ...]]] = {}  # seq -> ((1, H, W), source seqs)
        self._mv_refreshes: dict[int, int] = {}  # seq -> times its depth was recomputed (MAX_REFRESHES)
        # known (metric) poses: the monocular depth's scale against them, from the latest cost volume;
        # sources are chosen by parallax over a depth in the poses' scale
        self._mono_to_pose_scale = 1.0
        self.last_depth = ""

    def output_size(self, current: CameraFrame) -> tuple[int, int]:
        return self.frame_size

    def describe(self) -> dict[str, str]:
        info = super().describe()
        info["learned_mode"] = self.mode
        info["last_update_mode"] = self.last_mode or "none yet"
        info["match_refinement"] = self.last_refinement or ("on" if self.refine else "off")
        info["depth_source"] = self.depth_source + (f" ({self.last_depth})" if self.last_depth else "")
        if self.mode != "rgb_pose":  # colour only: how poses come from matches (model.relative_pose)
            info["relative_pose"] = self.relative_pose
        info["heatmap_grid"] = f"video.frame_size {self.frame_size[0]}x{self.frame_size[1]} (HxW)"
        return info

    # ------------------------------------------------------------------ per-frame cache
    def _intrinsics(self, frame: CameraFrame) -> np.ndarray:
        if frame.K is not None:
            return np.asarray(frame.K, dtype=np.float64)
        H, W = frame.size
        return default_intrinsics((H, W), self.cfg.model.default_hfov_deg, dtype=torch.float64).numpy()

    def encoding(self, frame: CameraFrame) -> tuple[FrameEncoding, np.ndarray]:
        """``(encoding (1 row), K (3, 3) on the model grid)`` of a frame, computed once per ``seq``."""
        hit = self._cache.get(frame.seq)
        if hit is not None:
            self._cache.move_to_end(frame.seq)
            return hit
        pre = preprocess_frames([frame.rgb], None, self._intrinsics(frame), self.frame_size)
        item = (self.engine.encode(pre.frames), pre.K.numpy().astype(np.float64))
        self._cache[frame.seq] = item
        if self.refine:
            self._features[frame.seq] = orb_features(pre.frames[0])
        if self.depth_source != "monocular":
            self._mv_features[frame.seq] = self.engine.multiview_features(pre.frames)
        while len(self._cache) > ENCODING_CACHE_SIZE:
            old, _ = self._cache.popitem(last=False)
            self._features.pop(old, None)
            self._mv_features.pop(old, None)
            self._mv_depth.pop(old, None)
            self._mv_refreshes.pop(old, None)
            self._mv_pose.pop(old, None)
        return item

    def features(self, frame: CameraFrame) -> OrbFeatures:
        """ORB features of a frame on the model grid (cached with its encoding)."""
        self.encoding(frame)
        return self._features[frame.seq]

    def _estimated_pose(self, frame: CameraFrame) -> np.ndarray:
        """Camera-to-world pose: the given one, else visual odometry chained from the previous frame."""
        if frame.T_wc is not None and self.mode != "rgb_only":
            return np.asarray(frame.T_wc, dtype=np.float64)
        known = self._vo_pose.get(frame.seq)
        if known is not None:
            return known
        enc, _ = self.encoding(frame)
        if self._last_vo is None or self._last_vo[0] not in self._vo_pose:
            T = np.eye(4)
        else:
            prev_seq, prev_enc = self._last_vo
            T_cur_prev = None
            if self.refine and prev_seq in self._features:
                _, K = self.encoding(frame)
                T_cur_prev = odometry_step(self._features[prev_seq], self._features[frame.seq],
                                           prev_enc.depth[0].double().numpy(), K, self.relative_pose)
            if T_cur_prev is None:
                T_cur_prev = self.engine.relative_poses(prev_enc.pose_features, enc.pose_features)[0].double().numpy()
            T = self._vo_pose[prev_seq] @ np.linalg.inv(T_cur_prev)
        self._vo_pose[frame.seq] = T
        while len(self._vo_pose) > ENCODING_CACHE_SIZE:
            self._vo_pose.popitem(last=False)
        self._last_vo = (frame.seq, enc)
        return T

    def frame_geometry(self, frame: CameraFrame) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(depth (H, W) metres, K (3, 3), T_wc (4, 4))`` for keyframe selection. Multi-view
        depth where the model has it (metric with known poses, in the odometry's scale without);
        else the monocular depth, with known poses scaled by the last match scale, so that metric
        poses and depth agree."""
        enc, K = self.encoding(frame)
        T_wc = self._estimated_pose(frame)
        if self.depth_source != "monocular":
            return self.frame_depth(frame)[0].numpy().astype(np.float32), K, T_wc
        depth = enc.depth[0].numpy().astype(np.float32)
        if frame.T_wc is not None and self.mode != "rgb_only":
            depth = depth * np.float32(self._depth_scale)
        return depth, K, T_wc

    # ------------------------------------------------------------------ multi-view depth
    def _pose_kind(self, frame: CameraFrame) -> str:
        return "known" if frame.T_wc is not None and self.mode != "rgb_only" else "odometry"

    def _register_pose(self, frame: CameraFrame) -> tuple[str, np.ndarray]:
        entry = self._mv_pose.get(frame.seq)
        if entry is None:
            entry = (self._pose_kind(frame), np.asarray(self._estimated_pose(frame), dtype=np.float64))
            self._mv_pose[frame.seq] = entry
        return entry

    def _multiview(self, ref: int, pool: list[int]) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Depth ``(1, H, W)`` of cached frame ``ref`` from sources among ``pool`` (same pose kind)."""
        kind = self._mv_pose[ref][0]
        seqs = [ref] + [q for q in pool if q != ref and q in self._mv_pose and self._mv_pose[q][0] == kind
                        and q in self._cache and q in self._mv_features]
        encs = [self._cache[q][0] for q in seqs]
        mono = torch.cat([e.depth for e in encs]).float()
        conf = torch.cat([e.depth_conf for e in encs]).float()
        feats = torch.cat([self._mv_features[q] for q in seqs]).float()
        T = torch.from_numpy(np.stack([self._mv_pose[q][1] for q in seqs]))
        K = torch.from_numpy(self._cache[ref][1]).float()
        metric = kind == "known"
        depth, chosen = window_depth(self.engine.multiview_depth, mono, conf, feats, K, T, [0], self.depth_source,
                                     self.num_sources, mono_scale=self._mono_to_pose_scale if metric else 1.0)
        if metric and chosen[0]:
            self._mono_to_pose_scale = monocular_to_pose_scale(depth[0], mono[0])
        return depth, tuple(seqs[i] for i in chosen[0])

    def _pool(self, exclude_newer_than: Optional[int] = None) -> list[int]:
        """Candidate source frames: the most recent frames with a registered pose."""
        seqs = [q for q in self._mv_pose if exclude_newer_than is None or q < exclude_newer_than]
        return seqs[-MULTIVIEW_POOL_SIZE:]

    def frame_depth(self, frame: CameraFrame) -> torch.Tensor:
        """``(1, H, W)`` depth of a frame: multi-view from the frames before it, computed once."""
        hit = self._mv_depth.get(frame.seq)
        if hit is not None:
            return hit[0]
        self.encoding(frame)
        self._register_pose(frame)
        depth, sources = self._multiview(frame.seq, self._pool(exclude_newer_than=frame.seq))
        self._mv_depth[frame.seq] = (depth, sources)
        return depth

    def _refresh_keyframe(self, keyframes: list[CameraFrame], current: CameraFrame) -> Optional[int]:
        """Recompute the depth of (at most) one keyframe whose best sources now include the current
        frame (a neighbour with more parallax arrived); returns its seq."""
        pool = self._pool() + [f.seq for f in keyframes]
        kind = self._mv_pose[current.seq][0]
        for f in keyframes:
            if (f.seq == current.seq or f.seq not in self._mv_depth or self._mv_refreshes.get(f.seq, 0) >= MAX_REFRESHES
                    or self._mv_pose.get(f.seq, ("",))[0] != kind):
                continue
            cands = [q for q in dict.fromkeys(pool) if q != f.seq and self._mv_pose.get(q, ("",))[0] == kind]
            T = torch.from_numpy(np.stack([self._mv_pose[q][1] for q in cands]))
            scene = float(self._mv_depth[f.seq][0].median())
            idx, scores = select_source_views(torch.from_numpy(self._mv_pose[f.seq][1]), T, self.num_sources, scene,
                                              with_scores=True)
            picked = tuple(cands[j] for j in idx)
            old = self._source_score(f.seq, self._mv_depth[f.seq][1], scene)
            if old >= REFRESH_GOOD_ENOUGH * self.num_sources:
                continue  # its views already have parallax enough
            # only a clearly better set of views is worth a new cost volume (the current frame among them)
            if current.seq in picked and sum(scores) > REFRESH_GAIN * old + 1e-9:
                # not once only: a keyframe that entered with one poor source (the start of a
                # stream) must get the views that arrive after it (streaming CC +0.03 to +0.04)
                self._mv_depth[f.seq] = self._multiview(f.seq, list(picked))
                self._mv_refreshes[f.seq] = self._mv_refreshes.get(f.seq, 0) + 1
                return f.seq
        return None

    def _source_score(self, ref: int, sources: tuple[int, ...], scene: float) -> float:
        """Sum of the selection scores of a frame's current sources (0 without any)."""
        if not sources or any(q not in self._mv_pose for q in sources):
            return 0.0
        T = torch.from_numpy(np.stack([self._mv_pose[q][1] for q in sources]))
        _, scores = select_source_views(torch.from_numpy(self._mv_pose[ref][1]), T, len(sources), scene,
                                        with_scores=True)
        return float(sum(scores))

    # ------------------------------------------------------------------ update
    def _unmatched_keyframe_poses(self, keyframes: list[CameraFrame], encs: list, T_wc_cur: np.ndarray) -> torch.Tensor:
        """RGB only: ``T_cur_key (K, 4, 4)`` before (or without) direct matching. With the match
        refinement, the chained odometry where the keyframe is in it, the network's pose head
        only for the others (it is the last resort); without, the pose head for all."""
        chained: list[Optional[np.ndarray]] = [None] * len(keyframes)
        if self.refine:
            chained = [np.linalg.inv(T_wc_cur) @ self._vo_pose[f.seq] if f.seq in self._vo_pose else None
                       for f in keyframes]
        need = [i for i, c in enumerate(chained) if c is None]
        poses = [None if c is None else torch.from_numpy(c).float() for c in chained]
        if need:
            pose_k = torch.cat([encs[i][0].pose_features for i in need])
            predicted = self.engine.relative_poses(pose_k, encs[-1][0].pose_features.expand_as(pose_k)).float()
            for j, i in enumerate(need):
                poses[i] = predicted[j]
        return torch.stack(poses)

    def infer(self, current: CameraFrame, keyframes: list[CameraFrame], instruction: str) -> BackendResult:
        """Heatmaps ``(K, H, W)`` on ``video.frame_size``, goal heatmap ``(H, W)`` (sums to 1) and
        waypoints ``(20, 2)`` (x forward, y left, metres, base frame at the current stamp)."""
        if not keyframes:
            raise InputError(f"{self.name} backend: needs at least one keyframe")
        frames = list(keyframes) + [current]
        encs = [self.encoding(f) for f in frames]
        K = torch.from_numpy(encs[-1][1]).float()
        depth = torch.cat([e.depth for e, _ in encs])  # (K + 1, H, W)
        known = self.mode != "rgb_only" and all(f.T_wc is not None for f in frames)
        if self.mode == "rgb_pose" and not known:
            missing = [f.seq for f in frames if f.T_wc is None]
            raise InputError(f"{self.name} backend (learned_mode rgb_pose): frames {missing} have no pose")
        T_wc_cur = self._estimated_pose(current)
        if known:
            T_wc = torch.from_numpy(np.stack([np.asarray(f.T_wc, dtype=np.float64) for f in frames]))
            T_cur_key = (invert_pose(T_wc[-1]) @ T_wc[:-1]).float()
        else:
            T_cur_key = self._unmatched_keyframe_poses(keyframes, encs, T_wc_cur)
        self.last_mode = "rgb_pose" if known else "rgb_only"
        key_depth, cur_depth = depth[:-1].float(), depth[-1].float()
        multiview = self.depth_source != "monocular"
        if multiview:
            for f in frames:
                self.frame_depth(f)
            refreshed = self._refresh_keyframe(keyframes, current)
            mv = torch.cat([self._mv_depth[f.seq][0] for f in frames]).float()
            key_depth, cur_depth = mv[:-1], mv[-1]
            with_sources = sum(1 for f in frames if self._mv_depth[f.seq][1])
            self.last_depth = (f"{with_sources}/{len(frames)} frames from multi-view"
                               + (f", keyframe {refreshed} refined" if refreshed is not None else ""))
        if self.refine and multiview and known:
            self.last_refinement = "no scale search: multi-view depth is metric with known poses"
        if self.refine and not (multiview and known):  # with known poses the cost volume is metric: no scale search
            refined = refine_learned_geometry([self.features(f) for f in keyframes], self.features(current),
                                              key_depth, cur_depth, K, T_cur_key, known,
                                              relative_pose=self.relative_pose)
            key_depth, cur_depth, T_cur_key = refined.key_depth, refined.cur_depth, refined.T_cur_key.float()
            if known and refined.scale_points > 0 and float(refined.depth_scale[-1]) != 1.0:
                self._depth_scale = float(refined.depth_scale[-1])
            self.last_refinement = (f"depth scale {refined.depth_scale[-1]:.3f} from {refined.scale_points} points"
                                    if known else f"{sum(refined.pose_from_matches)}/{len(keyframes)} keyframe poses "
                                    "from PnP")
        with torch.no_grad():
            heatmaps = heatmaps_from_config(key_depth, K, T_cur_key, K, torch.eye(4), self.frame_size, cur_depth,
                                            cfg=predicted_depth_config(self.heatmap_cfg))
        goal, waypoints = self._goal_and_waypoints(current, encs[-1][0], T_wc_cur, instruction)
        return BackendResult(heatmaps=heatmaps, waypoints=waypoints, goal_heatmap=goal,
                             depth=cur_depth.float().numpy().astype(np.float32), depth_K=K.double().numpy())

    def goal_and_waypoints(self, current: CameraFrame, instruction: str) -> tuple[np.ndarray, np.ndarray]:
        """Only the goal and waypoint heads on ``current`` (``auto`` on the geometry path: the
        heatmaps come from measured depth, the navigation output from here). Returns the goal
        heatmap ``(h, w)`` (sums to 1) and waypoints ``(20, 2)`` (x forward, y left, metres, base frame)."""
        hit = self._cache.get(current.seq)
        if hit is not None:
            enc = hit[0]
        else:  # the heads need the encoder only: no ORB features, no multi-view features, not cached
            pre = preprocess_frames([current.rgb], None, self._intrinsics(current), self.frame_size)
            enc = self.engine.encode(pre.frames)
        return self._goal_and_waypoints(current, enc, self._estimated_pose(current), instruction)

    def _goal_and_waypoints(self, current: CameraFrame, cur: FrameEncoding, T_wc_cur: np.ndarray,
                            instruction: str) -> tuple[np.ndarray, np.ndarray]:
        # past motion at the training rate, then the goal and waypoint heads
        past = self.trajectory.update(current, T_wc_cur)
        ids, mask = self.engine.tokenizer.encode([instruction or ""], self.cfg.model.max_instruction_length)
        goal_logits, waypoints = self.engine.goal_and_waypoints(cur.f8, cur.f32, ids, mask, past,
                                                                torch.ones(1, dtype=torch.long))
        goal = goal_heatmap_from_logits(goal_logits[0], self.goal_activation)
        return goal.numpy().astype(np.float32), waypoints[0].numpy().astype(np.float32)

    def close(self) -> None:
        self._cache.clear()
        self._features.clear()
        self._vo_pose.clear()
        self._mv_features.clear()
        self._mv_pose.clear()
        self._mv_depth.clear()
        self._mv_refreshes.clear()

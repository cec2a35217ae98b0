"""Episodes -> training samples with geometric ground truth.

A sample is a *window* of ``N_m = cfg.video.total_frames`` frames of one episode, the newest
(last) being the current frame, every ``cfg.training.frame_stride``-th episode frame. From the
episode's depth and poses it carries:

* ``frames (N_m, 3, H, W)``, ``depth (N_m, H, W)``, ``intrinsics (3, 3)`` at
  ``cfg.video.frame_size`` via :func:`vln_core.preprocess.preprocess_frames` (the node's
  learned backend uses the same function);
* ``keyframe_indices (N_k,)``: space-aware sampling (:func:`vln_core.sampling.sample_keyframes`)
  on the true geometry, indices into the window, in time order;
* ``heatmap (N_k, H, W)`` and out-of-view fraction / bearing: where each keyframe's content lands
  in the current frame (:func:`vln_core.heatmaps.heatmaps_from_config`);
* ``pose_enc (N_m, 9)``: each frame's camera-to-current pose ``[t, quat xyzw, fov_h, fov_w]``;
* ``camera_poses (N_m, 4, 4)``: the same camera-to-current poses as matrices (the model's
  "known poses" input in RGB + pose mode);
* ``waypoints (20, 2)`` + ``waypoint_mask (20,)``: the next 20 base positions in the current
  base frame (REP 103: x forward, y left; padded with the last pose and masked past the end);
* ``past_trajectory (16, 4)``: the last 16 base poses (oldest first, the current one last, so its
  x, y are 0) as ``[x, y, v, w]`` in the same frame, ``v`` m/s forward, ``w`` rad/s yaw rate;
* ``intent ()``: 0 left / 1 straight / 2 right: the simulator's per-frame intent
  (``extra["intents"]``), else the episode's, else from the future route;
* ``goal_heatmap (H, W)`` + ``goal_valid ()``: a Gaussian at the goal's projection into the
  current frame when the episode has a goal position that is in view and not hidden;
* ``instruction`` (str).

The "base" of an episode is its ``base_poses`` (odometry) when recorded; otherwise the camera
pose with the mount removed (``T_wc @ inv(T_base_cam)``) when the mount is known; otherwise the
camera itself with body axes (x along the view direction) -- the camera projected to its own
ground plane. Waypoints and past trajectory use consecutive episode frames (not the window stride).

Everything is a deterministic function of the episode, the window end and the config.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from vln_core.config import VLNConfig
from vln_core.data.episode import Episode, list_episodes, read_episode
from vln_core.errors import InputError
from vln_core.geometry.transforms import invert_pose, optical_to_body_pose
from vln_core.heatmaps import heatmaps_from_config
from vln_core.models.geometry_encoder import extrinsics_intrinsics_to_pose_encoding
from vln_core.preprocess import preprocess_frames
from vln_core.sampling import sample_keyframes
from vln_core.train.augment import camera_augment, crop_window

__all__ = [
    "NUM_WAYPOINTS",
    "PAST_STEPS",
    "INTENT_IDS",
    "INTENT_TURN_THRESHOLD_RAD",
    "find_episodes",
    "split_episodes",
    "stride_for_window_seconds",
    "base_poses_of",
    "future_waypoints",
    "past_trajectory",
    "intent_from_waypoints",
    "goal_heatmap",
    "EpisodeWindowDataset",
    "collate_samples",
    "SampleStream",
]

NUM_WAYPOINTS = 20
PAST_STEPS = 16
INTENT_IDS = {"left": 0, "straight": 1, "right": 2}
#: Without a recorded intent, the route's end bearing beyond +-this is "left" / "right".
INTENT_TURN_THRESHOLD_RAD = math.radians(20.0)
#: ... and a route shorter than this (metres) is "straight".
INTENT_MIN_TRAVEL_M = 0.2
#: The goal position is an object's centre: it counts as hidden only when the current depth at its
#: pixel is this much (metres) in front of it.
GOAL_OCCLUSION_MARGIN_M = 0.75
#: Goal heatmap sigma as a fraction of min(H, W).
GOAL_SIGMA_FRACTION = 0.04


# --------------------------------------------------------------------------------- episodes
def find_episodes(roots: Sequence[str | Path]) -> list[Path]:
    """Every episode (``episode.json`` folders and plain posed folders) under the given roots.

    Raises:
        InputError: a root does not exist, or no root holds any episode.
    """
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"training data folder {root} does not exist")
        found.extend(list_episodes(root, include_posed_folders=True))
    if not found:
        raise InputError(
            f"no episodes found under {[str(r) for r in roots]}: expected folders with episode.json "
            "(python training/collect.py --out DIR) or posed-image folders (frame-NNNNNN.color.png, "
            ".pose.txt, intrinsics.K.txt)"
        )
    return sorted(set(found))


def stride_for_window_seconds(paths: Sequence[Path], seconds: float, num_frames: int,
                              fps: Optional[float] = None) -> int:
    """The frame stride that makes a window of ``num_frames`` span about ``seconds``: at ``fps``,
    else at the frame rate of the first episode (its median timestamp step)."""
    if seconds <= 0 or num_frames < 2 or (fps is not None and fps <= 0):
        raise InputError(f"--window-seconds and --fps must be > 0 with at least 2 frames, got {seconds} s, "
                         f"{fps} fps, {num_frames} frames")
    if fps is None:
        episode = read_episode(paths[0])
        steps = np.diff(np.asarray(episode.timestamps, dtype=np.float64))
        if steps.size == 0 or not np.all(np.isfinite(steps)) or np.median(steps) <= 0:
            raise InputError(f"{paths[0]}: no frame rate (fewer than 2 frames or bad timestamps); pass --fps")
        fps = 1.0 / float(np.median(steps))
    return max(1, int(round(seconds * fps / (num_frames - 1))))


def split_episodes(paths: Sequence[Path], eval_fraction: float) -> tuple[list[Path], list[Path]]:
    """Deterministic train / eval split by a hash of each episode's folder name.

    At least one episode stays in training; with fewer than 2 episodes or ``eval_fraction == 0``
    the eval list is empty.
    """
    paths = sorted(paths)
    if eval_fraction <= 0 or len(paths) < 2:
        return list(paths), []
    n_eval = min(len(paths) - 1, max(1, int(round(eval_fraction * len(paths)))))
    ranked = sorted(paths, key=lambda p: hashlib.sha1(p.name.encode()).hexdigest())
    held = set(ranked[:n_eval])
    return [p for p in paths if p not in held], [p for p in paths if p in held]


# --------------------------------------------------------------------------------- base motion
def base_poses_of(episode: Episode) -> np.ndarray:
    """``(N, 4, 4)`` base-to-world poses (REP 103 axes) of every frame; see the module doc."""
    if episode.base_poses is not None:
        return np.asarray(episode.base_poses, dtype=np.float64)
    poses = torch.as_tensor(episode.poses, dtype=torch.float64)
    if episode.T_base_cam is not None:
        T_cam_base = invert_pose(torch.as_tensor(episode.T_base_cam, dtype=torch.float64))
        return (poses @ T_cam_base).numpy()
    return optical_to_body_pose(poses).numpy()


def _planar(T_cur_other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x, y and yaw of ``(..., 4, 4)`` poses expressed in a body frame (REP 103)."""
    xy = T_cur_other[..., :2, 3]
    yaw = np.arctan2(T_cur_other[..., 1, 0], T_cur_other[..., 0, 0])
    return xy, yaw


def future_waypoints(base_poses: np.ndarray, t: int, horizon: int = NUM_WAYPOINTS) -> tuple[np.ndarray, np.ndarray]:
    """The next ``horizon`` base positions after frame ``t`` in frame ``t``'s base frame.

    Args:
        base_poses: ``(N, 4, 4)`` base-to-world poses.
        t: current frame index.
        horizon: number of waypoints.

    Returns:
        ``waypoints (horizon, 2)`` float32 metres (x forward, y left) -- past the episode end
        padded with the last position -- and ``mask (horizon,)`` bool (False for padding).
    """
    n = base_poses.shape[0]
    idx = np.arange(t + 1, t + 1 + horizon)
    mask = idx < n
    idx = np.minimum(idx, n - 1)
    T_cur_world = np.linalg.inv(base_poses[t])
    rel = T_cur_world[None] @ base_poses[idx]
    xy, _ = _planar(rel)
    return xy.astype(np.float32), mask


def past_trajectory(base_poses: np.ndarray, timestamps: np.ndarray, t: int,
                    velocities: Optional[np.ndarray] = None, steps: int = PAST_STEPS) -> np.ndarray:
    """The last ``steps`` base states up to frame ``t`` in frame ``t``'s base frame.

    Args:
        base_poses: ``(N, 4, 4)`` base-to-world poses.
        timestamps: ``(N,)`` seconds.
        t: current frame index.
        velocities: ``(N, 2)`` recorded ``[v m/s, w rad/s]``, or None (then finite differences of
            consecutive poses: forward displacement and yaw change over the time step).
        steps: number of states.

    Returns:
        ``(steps, 4)`` float32 ``[x, y, v, w]``, oldest first, the current state last. Before the
        episode start the first state is repeated with zero speeds.
    """
    idx = np.arange(t - steps + 1, t + 1)
    before_start = idx < 0
    idx = np.maximum(idx, 0)
    T_cur_world = np.linalg.inv(base_poses[t])
    xy, _ = _planar(T_cur_world[None] @ base_poses[idx])
    if velocities is not None:
        vw = np.asarray(velocities, dtype=np.float64)[idx]
    else:
        vw = np.zeros((steps, 2))
        for j, i in enumerate(idx):
            if i == 0:
                continue
            step = np.linalg.inv(base_poses[i - 1]) @ base_poses[i]
            dt = max(float(timestamps[i] - timestamps[i - 1]), 1e-6)
            (dx, _), dyaw = _planar(step)
            vw[j] = (dx / dt, dyaw / dt)
    vw[before_start] = 0.0
    return np.concatenate([xy, vw], axis=1).astype(np.float32)


def intent_from_waypoints(waypoints: np.ndarray, mask: np.ndarray) -> int:
    """0 left / 1 straight / 2 right from the bearing of the last valid waypoint."""
    if not mask.any():
        return INTENT_IDS["straight"]
    x, y = waypoints[np.flatnonzero(mask)[-1]]
    if math.hypot(x, y) < INTENT_MIN_TRAVEL_M:
        return INTENT_IDS["straight"]
    bearing = math.atan2(y, x)
    if bearing > INTENT_TURN_THRESHOLD_RAD:
        return INTENT_IDS["left"]
    if bearing < -INTENT_TURN_THRESHOLD_RAD:
        return INTENT_IDS["right"]
    return INTENT_IDS["straight"]


def goal_heatmap(goal_position_w: Optional[Sequence[float]], K: torch.Tensor, T_wc: torch.Tensor,
                 depth: Optional[torch.Tensor], size: Sequence[int]) -> tuple[torch.Tensor, bool]:
    """Target map of where the goal is in the current image.

    Args:
        goal_position_w: ``(3,)`` goal position in the world (odom) frame, metres, or None.
        K: ``(3, 3)`` current intrinsics at ``size``.
        T_wc: ``(4, 4)`` current camera-to-world pose.
        depth: ``(H, W)`` current depth (0 invalid) for the occlusion test, or None.
        size: ``(H, W)``.

    Returns:
        ``(map (H, W) float32 summing to 1, True)`` when the goal projects inside the image in front
        of the camera and is not hidden; ``(zeros, False)`` otherwise.
    """
    H, W = int(size[0]), int(size[1])
    empty = torch.zeros(H, W)
    if goal_position_w is None:
        return empty, False
    p_w = torch.tensor([*map(float, goal_position_w), 1.0], dtype=torch.float64)
    p_c = invert_pose(T_wc.to(torch.float64)) @ p_w
    z = float(p_c[2])
    if z < 0.1:
        return empty, False
    Kd = K.to(torch.float64)
    u = float(Kd[0, 0] * p_c[0] / z + Kd[0, 2])
    v = float(Kd[1, 1] * p_c[1] / z + Kd[1, 2])
    if not (-0.5 <= u < W - 0.5 and -0.5 <= v < H - 0.5):
        return empty, False
    if depth is not None:
        d = float(depth[int(round(v)), int(round(u))])
        if d > 0 and d < z - GOAL_OCCLUSION_MARGIN_M:
            return empty, False
    sigma = GOAL_SIGMA_FRACTION * min(H, W)
    ys = torch.arange(H, dtype=torch.float32)[:, None]
    xs = torch.arange(W, dtype=torch.float32)[None, :]
    g = torch.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * sigma**2))
    return g / g.sum(), True


def _intent_at(episode: Episode, t: int, waypoints: np.ndarray, mask: np.ndarray) -> int:
    per_frame = episode.extra.get("intents") if isinstance(episode.extra, dict) else None
    if isinstance(per_frame, list) and len(per_frame) == len(episode) and per_frame[t] in INTENT_IDS:
        return INTENT_IDS[per_frame[t]]
    if episode.intent is not None:
        return INTENT_IDS[episode.intent]
    return intent_from_waypoints(waypoints, mask)


# --------------------------------------------------------------------------------- dataset
@dataclass
class _EpisodeEntry:
    episode: Episode
    base_poses: np.ndarray


class EpisodeWindowDataset(torch.utils.data.Dataset):
    """Windows of episodes with ground-truth heatmaps, geometry and motion (see the module doc).

    Args:
        episode_dirs: episode folders (see :func:`find_episodes`).
        cfg: the project config (``video``, ``frame_sampling``, ``heatmap``, ``training.frame_stride``).
        temporal_pairs: items are ``(earlier, later)`` windows ending one window step apart and
            sharing their keyframes (same absolute frames, sampled on the frames both windows
            hold), for the ``temporal`` loss; otherwise items are single windows.
        frame_cache_size: preprocessed frames kept in memory (windows overlap heavily).

    Raises:
        InputError: an episode without depth, or no episode long enough for one window.
    """

    def __init__(self, episode_dirs: Sequence[str | Path], cfg: VLNConfig, temporal_pairs: bool = False,
                 frame_cache_size: int = 256, augment: bool = False) -> None:
        self.cfg = cfg
        self.augment = bool(augment)
        self.num_frames = cfg.video.total_frames
        self.num_keyframes = cfg.video.keyframes
        self.frame_size = tuple(cfg.video.frame_size)
        self.stride = cfg.training.frame_stride
        self.temporal_pairs = bool(temporal_pairs)
        if self.temporal_pairs and self.num_keyframes > self.num_frames - 1:
            raise InputError(
                f"temporal pairs need video.keyframes <= total_frames - 1 (shared frames), got "
                f"{self.num_keyframes} keyframes of {self.num_frames} frames"
            )
        span = (self.num_frames - 1) * self.stride + (self.stride if self.temporal_pairs else 0)
        self.episodes: list[_EpisodeEntry] = []
        self.windows: list[tuple[int, int]] = []  # (episode number, current frame index)
        too_short: list[str] = []
        for path in episode_dirs:
            episode = read_episode(path)
            if not episode.has_depth:
                raise InputError(f"episode {episode.path} has no depth images; ground-truth heatmaps need depth")
            if len(episode) <= span:
                too_short.append(f"{episode.path} ({len(episode)} frames)")
                continue
            e = len(self.episodes)
            self.episodes.append(_EpisodeEntry(episode, base_poses_of(episode)))
            self.windows.extend((e, t) for t in range(span, len(episode)))
        if too_short:
            warnings.warn(f"skipping episodes shorter than one window ({span + 1} frames): {too_short}",
                          RuntimeWarning, stacklevel=2)
        if not self.windows:
            raise InputError(
                f"no episode is long enough for a window of {self.num_frames} frames at stride {self.stride}"
                f"{' (pairs: one more step)' if self.temporal_pairs else ''}; episodes: "
                f"{[str(p) for p in episode_dirs]}"
            )
        self._frame_cache: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._frame_cache_size = int(frame_cache_size)

    def __len__(self) -> int:
        return len(self.windows)

    # ------------------------------------------------------------------ frames
    def _frame(self, e: int, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Colour ``(h, w, 3)`` uint8 and depth ``(h, w)`` float32 of episode frame ``i`` (cached)."""
        key = (e, i)
        hit = self._frame_cache.get(key)
        if hit is not None:
            self._frame_cache.move_to_end(key)
            return hit
        episode = self.episodes[e].episode
        item = (episode.color(i), episode.depth(i))
        self._frame_cache[key] = item
        if len(self._frame_cache) > self._frame_cache_size:
            self._frame_cache.popitem(last=False)
        return item

    def _window_frames(self, t: int) -> np.ndarray:
        return np.arange(t - (self.num_frames - 1) * self.stride, t + 1, self.stride)

    # ------------------------------------------------------------------ samples
    def _keyframes(self, depth: torch.Tensor, K: torch.Tensor, T_wc: torch.Tensor) -> np.ndarray:
        result = sample_keyframes(depth, K, T_wc, self.num_keyframes, self.cfg.frame_sampling)
        return np.asarray(result.indices, dtype=np.int64)

    def _sample(self, e: int, t: int, keyframe_frames: Optional[np.ndarray] = None) -> dict[str, Any]:
        """One window ending at episode frame ``t``; ``keyframe_frames`` (absolute episode frame
        indices) overrides the sampler. Shapes in the module doc."""
        entry = self.episodes[e]
        episode = entry.episode
        frame_idx = self._window_frames(t)
        colors, depths = zip(*(self._frame(e, int(i)) for i in frame_idx))
        # one stream per (seed, episode, window end): the same window always gets the same camera
        key = int(hashlib.sha1(f"{episode.path.name}:{t}".encode()).hexdigest()[:8], 16)
        K_src = episode.K
        if self.augment and self.cfg.training.crop_augment:
            colors, depths, K_src = crop_window(colors, depths, np.asarray(episode.K),
                                                np.random.default_rng([self.cfg.training.seed, key, 1]))
        pre = preprocess_frames(colors, depths, K_src, self.frame_size)
        T_wc = torch.as_tensor(episode.poses[frame_idx], dtype=torch.float32)
        if keyframe_frames is None:
            key_idx = self._keyframes(pre.depths, pre.K, T_wc)
        else:
            key_idx = np.searchsorted(frame_idx, keyframe_frames)
            if not np.array_equal(frame_idx[key_idx], keyframe_frames):
                raise InputError(f"keyframes {keyframe_frames} are not all in the window {frame_idx}")
        key_t = torch.as_tensor(key_idx, dtype=torch.long)
        hm = heatmaps_from_config(
            pre.depths[key_t], pre.K, T_wc[key_t], pre.K, T_wc[-1], self.frame_size, pre.depths[-1],
            cfg=self.cfg.heatmap,
        )
        T_cur_cam = invert_pose(T_wc[-1]) @ T_wc
        frames = pre.frames
        if self.augment:
            frames = camera_augment(frames, np.random.default_rng([self.cfg.training.seed, key]))
        pose_enc = extrinsics_intrinsics_to_pose_encoding(T_cur_cam, pre.K.expand(len(frame_idx), 3, 3),
                                                          self.frame_size)
        waypoints, wp_mask = future_waypoints(entry.base_poses, t)
        past = past_trajectory(entry.base_poses, episode.timestamps, t, episode.base_velocities)
        intent = _intent_at(episode, t, waypoints, wp_mask)
        goal_position = (episode.goal or {}).get("position")
        goal_map, goal_valid = goal_heatmap(goal_position, pre.K, T_wc[-1], pre.depths[-1], self.frame_size)
        depth = pre.depths
        lo, hi = self.cfg.training.scene_scale_range
        if self.augment and (lo, hi) != (1.0, 1.0):
            # the same images of a scene s times larger: depth and camera translations scale together
            # (heatmaps do not change); geometry training only (waypoints keep their metres)
            s = float(np.exp(np.random.default_rng([self.cfg.training.seed, key, 2]).uniform(np.log(lo), np.log(hi))))
            depth = depth * s
            T_cur_cam = T_cur_cam.clone()
            T_cur_cam[:, :3, 3] *= s
            pose_enc = pose_enc.clone()
            pose_enc[:, :3] *= s
        return {
            "frames": frames,
            "camera_poses": T_cur_cam.to(torch.float32),
            "depth": depth,
            "intrinsics": pre.K,
            "pose_enc": pose_enc.to(torch.float32),
            "keyframe_indices": key_t,
            "heatmap": hm.heatmap.to(torch.float32),
            "has_overlap": hm.has_overlap.to(torch.bool),
            "key_has_depth": (hm.num_valid > 0),
            "out_of_view_fraction": hm.out_of_view_fraction.to(torch.float32),
            "out_of_view_bearing": hm.out_of_view_bearing.to(torch.float32),
            "waypoints": torch.from_numpy(waypoints),
            "waypoint_mask": torch.from_numpy(wp_mask),
            "past_trajectory": torch.from_numpy(past),
            "intent": torch.tensor(intent, dtype=torch.long),
            "goal_heatmap": goal_map,
            "goal_valid": torch.tensor(goal_valid),
            "instruction": episode.instruction,
            "episode": str(episode.path),
            "frame_index": int(t),
        }

    def __getitem__(self, index: int) -> dict[str, Any] | tuple[dict[str, Any], dict[str, Any]]:
        e, t = self.windows[index]
        if not self.temporal_pairs:
            return self._sample(e, t)
        # keyframes sampled once on the frames both windows hold, then used by both
        episode = self.episodes[e].episode
        shared = self._window_frames(t)[:-1]
        depths = [self._frame(e, int(i))[1] for i in shared]
        colors = [self._frame(e, int(i))[0] for i in shared]
        pre = preprocess_frames(colors, depths, episode.K, self.frame_size)
        T_wc = torch.as_tensor(episode.poses[shared], dtype=torch.float32)
        key_frames = shared[self._keyframes(pre.depths, pre.K, T_wc)]
        return self._sample(e, t - self.stride, key_frames), self._sample(e, t, key_frames)


_TENSOR_KEYS = (
    "frames", "camera_poses", "depth", "intrinsics", "pose_enc", "keyframe_indices", "heatmap", "has_overlap",
    "key_has_depth", "out_of_view_fraction", "out_of_view_bearing", "waypoints", "waypoint_mask",
    "past_trajectory", "intent", "goal_heatmap", "goal_valid",
)


def collate_samples(items: Sequence[Any]) -> dict[str, Any]:
    """Stack samples (or ``(earlier, later)`` pairs) into a batch.

    Pairs are flattened to ``[earlier_0, later_0, earlier_1, later_1, ...]`` and the batch gets
    ``temporal_pairs (P, 2)`` long with the (earlier, later) batch positions. Tensor fields gain a
    leading batch dimension (shapes in the module doc); ``instruction`` and ``episode`` become
    lists, ``frame_index`` a long tensor.
    """
    pairs = None
    if items and isinstance(items[0], tuple):
        flat = [s for pair in items for s in pair]
        pairs = torch.arange(len(flat), dtype=torch.long).reshape(-1, 2)
    else:
        flat = list(items)
    batch: dict[str, Any] = {k: torch.stack([s[k] for s in flat]) for k in _TENSOR_KEYS}
    batch["instruction"] = [s["instruction"] for s in flat]
    batch["episode"] = [s["episode"] for s in flat]
    batch["frame_index"] = torch.tensor([s["frame_index"] for s in flat], dtype=torch.long)
    if pairs is not None:
        batch["temporal_pairs"] = pairs
    return batch


# --------------------------------------------------------------------------------- order
class SampleStream:
    """The seeded data order: an endless concatenation of per-epoch permutations.

    The job consumes the stream front to back, one global micro-batch of ``G`` items (per-rank
    batch x world size) at a time; rank ``r`` takes the ``r``-th slice of ``B`` items of each. The
    data position is therefore one integer, the number of items consumed, which checkpoints store;
    resuming restarts the stream there (also with another batch size or number of processes).

    Args:
        num_items: dataset length.
        seed: permutation seed (epoch ``e`` uses ``seed * 1_000_003 + e``).
    """

    def __init__(self, num_items: int, seed: int) -> None:
        if num_items < 1:
            raise InputError("SampleStream needs at least one item")
        self.num_items = int(num_items)
        self.seed = int(seed)
        self._perm_cache: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        perm = self._perm_cache.get(epoch)
        if perm is None:
            rng = np.random.default_rng(self.seed * 1_000_003 + epoch)
            perm = rng.permutation(self.num_items)
            self._perm_cache = {epoch: perm}
        return perm

    def items(self, start: int, count: int) -> list[int]:
        """Stream positions ``start .. start + count - 1`` as dataset indices."""
        out: list[int] = []
        pos = start
        while len(out) < count:
            epoch, offset = divmod(pos, self.num_items)
            take = min(count - len(out), self.num_items - offset)
            out.extend(int(i) for i in self.permutation(epoch)[offset:offset + take])
            pos += take
        return out

    def position(self, items_consumed: int) -> tuple[int, int]:
        """``(epoch, index in that epoch's permutation)`` after ``items_consumed`` items."""
        return divmod(int(items_consumed), self.num_items)

    def rank_batches(self, start_item: int, batch_size: int, rank: int, world_size: int) -> Iterator[list[int]]:
        """Endless per-rank index lists of the global micro-batches from stream position
        ``start_item`` on (a DataLoader ``batch_sampler``)."""
        G = batch_size * world_size
        pos = int(start_item)
        while True:
            items = self.items(pos, G)
            yield items[rank * batch_size:(rank + 1) * batch_size]
            pos += G


class RankBatchSampler:
    """DataLoader ``batch_sampler`` over :meth:`SampleStream.rank_batches` (endless)."""

    def __init__(self, stream: SampleStream, start_item: int, batch_size: int, rank: int, world_size: int) -> None:
        self.stream, self.start = stream, start_item
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        return self.stream.rank_batches(self.start, self.batch_size, self.rank, self.world_size)

"""Streaming evaluation: an episode through the node's own runtime, scored against the exact heatmaps.

``training/evaluate.py`` scores fixed windows (every frame of a window is known at once). The
node sees a stream: frames arrive one by one, each frame's geometry is computed on arrival from
the frames *before* it, and the keyframe memory keeps old frames for as long as they add
coverage. This module feeds an episode into :class:`vln_core.runtime.NavigationRuntime` exactly
as the node's callbacks do (odometry, then the image, stamped with the episode's timestamps), calls ``step`` every
``update_every`` frames (30 Hz camera, 5 Hz node: 6), and compares each output's keyframe
heatmaps ``(K, H, W)`` with the geometry core's exact heatmaps for the same current frame and the
same keyframes (recorded depth and poses). No ROS middleware: the numbers are deterministic; the
DDS path is what ``tools/demo.py`` adds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from vln_core.config import VLNConfig
from vln_core.errors import InputError
from vln_core.data.episode import odometry_for_mount
from vln_core.metrics import correlation_coefficient

#: what the learned backends are fed in each mode (the node's ``node.learned_mode``)
STREAM_MODES = ("rgb_pose", "rgb_only")


@dataclass
class StreamScore:
    """Per output: the current frame's episode index, the keyframes' indices and their CCs."""

    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cc_mean(self) -> float:
        """Mean over outputs of the mean CC over keyframes (NaN maps skipped); NaN without any."""
        means = [o["cc_mean"] for o in self.outputs if o["cc_mean"] is not None]
        return float(np.mean(means)) if means else float("nan")


class ExactHeatmaps:
    """The geometry core's heatmaps for episode frames (recorded depth and poses), on the node's
    grid: the reference for the node's outputs (here and in ``tools/demo.py``)."""

    def __init__(self, episode: Any, cfg: VLNConfig) -> None:
        from vln_core.backends.geometry_backend import GeometryBackend

        self.episode, self.cfg = episode, cfg
        self.backend = GeometryBackend(cfg)
        self._results: dict[int, tuple] = {}  # output stamp -> (current, keyframes, result)

    def frame(self, index: int, stamp: int, seq: int) -> Any:
        from vln_core.backends import CameraFrame

        ep = self.episode
        return CameraFrame(stamp_ns=stamp, frame_id="camera", rgb=ep.color(index), depth_m=ep.depth(index), K=ep.K,
                           T_wc=ep.poses[index], seq=seq)

    def result(self, output: Any, stamp_to_index: dict[int, int]) -> tuple:
        """``(current frame, keyframes, BackendResult)`` for one output (``stamp_ns``,
        ``keyframe_stamps``, ``keyframe_indices``), computed once per output stamp."""
        if output.stamp_ns not in self._results:
            current = self.frame(stamp_to_index[output.stamp_ns], output.stamp_ns, -1)
            keys = [self.frame(stamp_to_index[s], s, q) for s, q in zip(output.keyframe_stamps, output.keyframe_indices)]
            self._results[output.stamp_ns] = (current, keys, self.backend.infer(current, keys, ""))
        return self._results[output.stamp_ns]


def keyframe_cc(heatmaps: Any, exact: Any) -> dict[str, Any]:
    """Pearson CC of each keyframe heatmap ``(K, H, W)`` with the exact one, and their mean (NaN
    maps, e.g. a keyframe out of view in both, are skipped: ``None``)."""
    cc = correlation_coefficient(torch.as_tensor(heatmaps), torch.as_tensor(exact)).numpy()
    finite = cc[np.isfinite(cc)]
    return {"cc_per_keyframe": [None if not np.isfinite(c) else round(float(c), 4) for c in cc],
            "cc_mean": float(finite.mean()) if finite.size else None}


def stream_episode(episode: Any, cfg: VLNConfig, update_every: int, instruction: str = "",
                   odometry: bool = True, depth: bool = False, runtime_factory: Optional[Callable] = None,
                   progress: Optional[Callable[[int], None]] = None) -> StreamScore:
    """Feed ``episode`` into a fresh runtime and score every output against the exact heatmaps.

    Args:
        episode: :func:`vln_core.data.episode.read_episode` result (colour, depth, poses, K).
        cfg: the node's configuration (``node.backend``, ``node.learned_mode``, ``video``...).
        update_every: frames between two ``step`` calls (camera rate / node rate).
        odometry: feed odometry (the poses); False for a colour-only robot.
        depth: feed the recorded depth too (an RGB-D robot: geometry / auto backends).
        runtime_factory: ``cfg -> NavigationRuntime`` (default: the runtime with ``node.backend``).
        progress: called with the frame index after each frame.
    """
    from vln_core.runtime.runtime import NavigationRuntime

    if update_every < 1:
        raise InputError(f"need update_every >= 1, got {update_every}")
    if episode.poses is None or not episode.has_depth:
        raise InputError("streaming evaluation needs recorded depth and poses (the exact heatmaps come from them)")
    runtime = (runtime_factory or NavigationRuntime)(cfg)
    exact = ExactHeatmaps(episode, cfg)
    T_odom_base, _ = odometry_for_mount(episode, runtime.T_base_cam)
    H, W = episode.color(0).shape[:2]
    runtime.set_camera_info(episode.K, W, H)
    if instruction:
        runtime.set_instruction(instruction)
    t = np.asarray(episode.timestamps, dtype=np.float64)
    stamp = [int(1e9 + round((ti - t[0]) * 1e9)) for ti in t]  # the episode's own clock
    index_of = {s: i for i, s in enumerate(stamp)}
    score = StreamScore()

    try:
        for i in range(len(episode)):
            if odometry:
                runtime.add_odometry(stamp[i], T_odom_base[i])
            runtime.add_image(stamp[i], "camera", episode.color(i))
            if depth:
                runtime.add_depth(stamp[i], episode.depth(i))
            if progress is not None:
                progress(i)
            if i % update_every != update_every - 1:
                continue
            out = runtime.step(overlay=False)
            if out is None:
                continue
            _, _, truth = exact.result(out, index_of)
            score.outputs.append({"frame": i, "keyframe_frames": [index_of[s] for s in out.keyframe_stamps],
                                  "backend": out.backend, **keyframe_cc(out.heatmaps.heatmap, truth.heatmaps.heatmap)})
    finally:
        runtime.close()
    return score

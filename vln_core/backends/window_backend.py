"""``node.backend: model`` for the pipeline models (``small``, ``base``, ``full``): one window per update.

The runtime's keyframe memory and the current frame form the window; the model's geometry stage
gives depth and camera-to-current poses for all of them (known poses where odometry or tf gives
them), the one reprojection (:func:`vln_core.heatmaps.heatmaps_from_config`, with the model's own
``heatmap_cfg``) turns them into the frame-indexed heatmaps, and the reasoning stage reads the
instruction for the goal heatmap and waypoints. The published heatmaps are the model's own
(``softmax(ModelOutputs.heatmap_logits)`` of the same window, to float precision).

The model comes from ``node.model_path`` (a training checkpoint of small/base/full: its own
config names the configuration) or, without one, is built from ``model.name`` with the pretrained
parts from ``model.vggt_path`` / ``model.dinov3_path`` / ``model.llm_path`` (our own parts then
hold random weights: diagnostics say so). ``model.geometry_device`` / ``semantic_device`` /
``llm_device`` place the stages on one or several GPUs, ``model.dtype: bfloat16`` runs the
pretrained parts in bf16 on CUDA. ``full`` on a machine without CUDA is refused with one line
unless ``model.allow_full_on_cpu``. Load time and per-stage times are in diagnostics.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Optional

import numpy as np
import torch

from vln_core.backends.base import BackendResult, BackendUnavailableError, CameraFrame, HeatmapBackend
from vln_core.backends.learned import PastTrajectory
from vln_core.config import ConfigError, VLNConfig
from vln_core.errors import InputError
from vln_core.heatmaps import heatmaps_from_config
from vln_core.models.reprojection_model import default_intrinsics
from vln_core.models.spatial_model import ModelInputs, VLNSpatialModel
from vln_core.preprocess import preprocess_frames

__all__ = ["WindowModelBackend", "PIPELINE_MODELS", "load_pipeline_model"]

#: The configurations served per window (``embedded`` is served per frame by ``LearnedBackend``).
PIPELINE_MODELS = ("small", "base", "full")
#: Frames whose single-frame geometry (keyframe selection) is kept.
GEOMETRY_CACHE_SIZE = 64


def load_pipeline_model(cfg: VLNConfig) -> tuple[VLNSpatialModel, str]:
    """The model ``node.backend: model`` serves for a pipeline configuration, and where it came from.

    Raises:
        BackendUnavailableError: ``full`` without CUDA (unless ``model.allow_full_on_cpu``), a
            missing local weight path, or a checkpoint that does not load (one line each).
    """
    from vln_core.models.registry import build_model
    from vln_core.models.shipped import load_model_checkpoint

    name = cfg.model.name
    if name == "full" and not torch.cuda.is_available() and not cfg.model.allow_full_on_cpu:
        raise BackendUnavailableError(
            "model.name=full needs a CUDA GPU (VGGT-1B + DINOv3 ViT-L + a 3B LLM take minutes per update on a CPU); "
            "use model.name=embedded or base here, or set model.allow_full_on_cpu=true to run it anyway")
    try:
        if cfg.node.model_path:
            model, _ = load_model_checkpoint(cfg.node.model_path, cfg)
            source = f"checkpoint {cfg.node.model_path}"
        else:
            model = build_model(cfg)
            source = ("pretrained parts from model.*_path; our own geometry/fusion/heads are NOT trained "
                      "(set node.model_path to a training checkpoint)")
    except (InputError, ConfigError) as exc:
        raise BackendUnavailableError(f"backend 'model' ({name}): {str(exc).splitlines()[0]}") from None
    if not isinstance(model, VLNSpatialModel):
        raise BackendUnavailableError(f"backend 'model': {cfg.node.model_path} holds model "
                                      f"'{model.cfg.model.name}', not one of {PIPELINE_MODELS}")
    return model.eval(), source


class WindowModelBackend(HeatmapBackend):
    """The pipeline model on the window (keyframes + current frame); see the module doc.

    Args:
        cfg: the node's config (``video.frame_size``, ``node.camera_mount``, ``model``).
        model: a ready model (tests, benchmarks); default :func:`load_pipeline_model`.
    """

    name = "model"
    needs_depth = False
    needs_intrinsics = True
    needs_pose = False  # with poses: RGB + pose; without: the geometry stage's own poses
    predicts_waypoints = True

    def __init__(self, cfg: VLNConfig, model: Optional[VLNSpatialModel] = None) -> None:
        start = time.perf_counter()
        self.cfg = cfg
        self.model, self.source = (model.eval(), "given") if model is not None else load_pipeline_model(cfg)
        self.load_seconds = time.perf_counter() - start
        self.frame_size = tuple(int(s) for s in cfg.video.frame_size)
        self.trajectory = PastTrajectory(cfg.node.camera_mount)
        self.stage_ms: dict[str, float] = {}
        self.last_mode = ""
        self._geometry: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def output_size(self, current: CameraFrame) -> tuple[int, int]:
        return self.frame_size

    def describe(self) -> dict[str, str]:
        info = super().describe()
        info["model"] = f"{self.model.cfg.model.name} ({self.source})"
        info["model_devices"] = ", ".join(f"{k} {v}" for k, v in self.model.device_map.items())
        info["load_time"] = f"{self.load_seconds:.1f} s"
        info["stage_times"] = (", ".join(f"{k} {v:.0f} ms" for k, v in self.stage_ms.items()) or "no update yet")
        info["last_update_mode"] = self.last_mode or "none yet"
        info["heatmap_grid"] = f"video.frame_size {self.frame_size[0]}x{self.frame_size[1]} (HxW)"
        return info

    # ------------------------------------------------------------------ inputs
    def _intrinsics(self, frame: CameraFrame) -> np.ndarray:
        if frame.K is not None:
            return np.asarray(frame.K, dtype=np.float64)
        return default_intrinsics(frame.size, self.cfg.model.default_hfov_deg, dtype=torch.float64).numpy()

    def window_inputs(self, current: CameraFrame, keyframes: list[CameraFrame], instruction: str,
                      past: Optional[torch.Tensor] = None) -> ModelInputs:
        """The model's inputs for one update: frames ``(1, K + 1, 3, H, W)`` (keyframes oldest first,
        the current frame last), the keyframes given as indices ``0..K-1``, the current frame's
        intrinsics on the model grid, camera-to-world poses when every frame has one."""
        frames = list(keyframes) + [current]
        sizes = {f.size for f in frames}
        if len(sizes) != 1:
            raise InputError(f"{self.name} backend: the window's frames differ in size {sorted(sizes)}")
        pre = preprocess_frames([f.rgb for f in frames], None, self._intrinsics(current), self.frame_size)
        ids, mask = self.model.tokenizer.encode([instruction or ""], self.cfg.model.max_instruction_length)
        poses = None
        if all(f.T_wc is not None for f in frames):
            poses = torch.from_numpy(np.stack([np.asarray(f.T_wc, dtype=np.float64) for f in frames])).float()[None]
        if past is None:
            past = torch.zeros(1, 16, 4)
        return ModelInputs(frames=pre.frames[None], instruction_ids=ids, instruction_mask=mask, past_trajectory=past,
                           intent=torch.ones(1, dtype=torch.long),
                           keyframe_indices=torch.arange(len(keyframes), dtype=torch.long)[None],
                           intrinsics=torch.as_tensor(pre.K, dtype=torch.float32)[None], camera_poses=poses)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def infer(self, current: CameraFrame, keyframes: list[CameraFrame], instruction: str) -> BackendResult:
        """Heatmaps ``(K, H, W)`` on ``video.frame_size``, goal heatmap ``(H, W)`` (sums to 1) and
        waypoints ``(20, 2)`` (x forward, y left, metres, base frame at the current stamp)."""
        if not keyframes:
            raise InputError(f"{self.name} backend: needs at least one keyframe")
        if len(keyframes) > self.model.num_keyframes:
            keyframes = keyframes[-self.model.num_keyframes:]
        T_wc_cur = np.asarray(current.T_wc, dtype=np.float64) if current.T_wc is not None else np.eye(4)
        inputs = self.window_inputs(current, keyframes, instruction, self.trajectory.update(current, T_wc_cur))
        self.last_mode = "rgb_pose" if inputs.camera_poses is not None else "rgb_only"
        t0 = time.perf_counter()
        stage = self.model.geometry_stage(inputs)
        t1 = time.perf_counter()
        depth, K, T = stage.geometry.depth[0].float().cpu(), stage.K[0].float().cpu(), stage.T_cur_cam[0].float().cpu()
        kf = stage.keyframes[0].cpu()
        heatmaps = heatmaps_from_config(depth[kf], K[kf], T[kf], K[-1], torch.eye(4), self.frame_size, depth[-1],
                                        cfg=self.model.heatmap_cfg)
        t2 = time.perf_counter()
        goal_logits, waypoints = self.model.reasoning_stage(inputs, stage)
        t3 = time.perf_counter()
        self.stage_ms = {"geometry": 1e3 * (t1 - t0), "reprojection": 1e3 * (t2 - t1), "reasoning": 1e3 * (t3 - t2)}
        goal = torch.softmax(goal_logits[0].float().flatten().cpu(), 0).reshape(goal_logits.shape[-2:])
        return BackendResult(heatmaps=heatmaps, waypoints=waypoints[0].float().cpu().numpy().astype(np.float32),
                             goal_heatmap=goal.numpy().astype(np.float32))

    @torch.no_grad()
    def frame_geometry(self, frame: CameraFrame) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Keyframe selection: the geometry stage's depth of ``frame`` alone (computed once per frame)
        with its known pose; None without a pose (the runtime then samples uniformly)."""
        if frame.T_wc is None:
            return None
        hit = self._geometry.get(frame.seq)
        if hit is None:
            pre = preprocess_frames([frame.rgb], None, self._intrinsics(frame), self.frame_size)
            geo = self.model.geometry(pre.frames[None].to(self.model.geometry_device))
            hit = (geo.depth[0, 0].float().cpu().numpy().astype(np.float32), np.asarray(pre.K, dtype=np.float64))
            self._geometry[frame.seq] = hit
            while len(self._geometry) > GEOMETRY_CACHE_SIZE:
                self._geometry.popitem(last=False)
        return hit[0], hit[1], np.asarray(frame.T_wc, dtype=np.float64)

    def close(self) -> None:
        self._geometry.clear()
        self.trajectory.clear()


"""``node.backend: model``: the PyTorch model, whichever configuration it is.

* ``embedded`` (the shipped ``models/embedded/checkpoint.pt``, or ``node.model_path``):
  :class:`TorchEngine` is the engine of :class:`~vln_core.backends.learned.LearnedBackend`,
  per-frame encodings cached as frames enter the keyframe memory;
* ``small`` / ``base`` / ``full``: :class:`~vln_core.backends.window_backend.WindowModelBackend`,
  the two-stage pipeline on the window of keyframes + current frame.

Either way the heatmaps come from the one reprojection. Which one serves: the configuration that
``node.model_path``'s checkpoint records, else ``model.name``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from vln_core.backends.base import HeatmapBackend, register_backend
from vln_core.backends.learned import LearnedBackend
from vln_core.config import VLNConfig
from vln_core.errors import InputError
from vln_core.models.reprojection_model import FrameEncoding

__all__ = ["TorchEngine", "ModelBackend", "create_model_backend", "served_model_name"]


class TorchEngine:
    """The PyTorch model as an engine (``node.backend: model``)."""

    def __init__(self, cfg: VLNConfig, checkpoint: Optional[str] = None, device: str = "cpu") -> None:
        from vln_core.models.shipped import load_model_checkpoint

        self.model, self.meta = load_model_checkpoint(checkpoint or None, cfg, device=device)
        if getattr(self.model, "kind", "") != "reprojection":
            raise InputError(f"checkpoint {checkpoint} holds model '{self.model.cfg.model.name}', not a reprojection "
                             "model (model.name=embedded); the learned backends serve the embedded model")
        self.device = torch.device(device)
        self.frame_size = self.model.frame_size
        self.tokenizer = self.model.tokenizer
        self.has_multiview = bool(self.model.has_multiview)
        self.goal_activation = str(getattr(self.model, "goal_activation", "softmax"))

    @torch.no_grad()
    def multiview_features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.multiview_features(frames.to(self.device)).cpu()

    @torch.no_grad()
    def multiview_depth(self, ref_features, src_features, K, T_src_ref, size, mono_depth, mono_conf, src_valid):
        out = self.model.multiview(ref_features.to(self.device), src_features.to(self.device), K.to(self.device),
                                   T_src_ref.to(self.device), size,
                                   None if mono_depth is None else mono_depth.to(self.device),
                                   None if mono_conf is None else mono_conf.to(self.device), src_valid.to(self.device))
        out.depth = out.depth.cpu()
        return out

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> FrameEncoding:
        enc = self.model.encode_frames(frames.to(self.device))
        return FrameEncoding(*(getattr(enc, n).cpu() for n in ("depth", "depth_conf", "pose_features", "f8", "f32")))

    @torch.no_grad()
    def relative_poses(self, pose_frames: torch.Tensor, pose_current: torch.Tensor) -> torch.Tensor:
        return self.model.pose_head(pose_frames.to(self.device), pose_current.to(self.device))[0].cpu()

    @torch.no_grad()
    def goal_and_waypoints(self, f8, f32, ids, mask, past, intent):
        enc = FrameEncoding(f8.new_zeros(0), f8.new_zeros(0), f8.new_zeros(0), f8.to(self.device), f32.to(self.device))
        goal, wp = self.model.goal_and_waypoints(enc, ids.to(self.device), mask.to(self.device).bool(),
                                                 past.to(self.device), intent.to(self.device), self.frame_size)
        return goal.cpu(), wp.cpu()


class ModelBackend(LearnedBackend):
    """``node.backend: model``: the PyTorch checkpoint ``node.model_path`` (default: the shipped
    ``models/embedded/checkpoint.pt``) on the CPU (or ``model.geometry_device``)."""

    name = "model"

    def __init__(self, cfg: VLNConfig) -> None:
        from vln_core.models.spatial_model import resolve_device

        device = resolve_device(cfg.model.geometry_device)
        super().__init__(cfg, TorchEngine(cfg, cfg.node.model_path or None, device=str(device)))


def served_model_name(cfg: VLNConfig) -> str:
    """The configuration ``node.backend: model`` serves: the one ``node.model_path``'s checkpoint
    records (``embedded`` for the shipped default), else ``model.name``."""
    if cfg.node.model_path:
        from vln_core.train.checkpoint import load_checkpoint

        path = Path(cfg.node.model_path)
        if path.is_file():
            try:
                saved = load_checkpoint(path).get("config") or {}
            except InputError:  # unreadable: the embedded model's loader names the problem at start-up
                return "embedded"
            return str((saved.get("model") or {}).get("name") or "embedded")
        return "embedded"
    return cfg.model.name


@register_backend("model")
def create_model_backend(cfg: VLNConfig) -> HeatmapBackend:
    """``node.backend: model``: :class:`ModelBackend` for ``embedded``, the window backend for the pipeline models."""
    from vln_core.backends.window_backend import PIPELINE_MODELS, WindowModelBackend

    if served_model_name(cfg) in PIPELINE_MODELS:
        return WindowModelBackend(cfg)
    return ModelBackend(cfg)

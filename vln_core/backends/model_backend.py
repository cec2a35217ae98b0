"""``node.backend: model``: the PyTorch model behind the learned backend.

:class:`TorchEngine` runs the ``embedded`` checkpoint (``node.model_path``, default the shipped
``models/embedded/checkpoint.pt``) as the engine of :class:`~vln_core.backends.learned.LearnedBackend`:
per-frame encodings cached as frames enter the keyframe memory, the heatmaps from the one
reprojection.
"""
from __future__ import annotations

from typing import Optional

import torch

from vln_core.backends.base import register_backend
from vln_core.backends.learned import LearnedBackend
from vln_core.config import VLNConfig
from vln_core.errors import InputError
from vln_core.models.reprojection_model import FrameEncoding

__all__ = ["TorchEngine", "ModelBackend"]


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


@register_backend("model")
class ModelBackend(LearnedBackend):
    """``node.backend: model``: the PyTorch checkpoint ``node.model_path`` (default: the shipped
    ``models/embedded/checkpoint.pt``) on the CPU (or ``model.geometry_device``)."""

    name = "model"

    def __init__(self, cfg: VLNConfig) -> None:
        from vln_core.models.spatial_model import resolve_device

        device = resolve_device(cfg.model.geometry_device)
        super().__init__(cfg, TorchEngine(cfg, cfg.node.model_path or None, device=str(device)))

"""Heatmaps from predicted geometry: the ``embedded`` model.

A frame-indexed inter-frame heatmap is a geometric fact: where keyframe ``k``'s surfaces land in
the current camera. With depth and poses it is exact (:func:`vln_core.heatmaps.frame_indexed_heatmaps`,
the ground truth). This model predicts only what a robot lacks and hands the prediction to that
same function, so the learned modes and the ground truth share one reprojection path:

* **mode 2, RGB + pose** (``ModelInputs.camera_poses`` given): a per-frame CNN predicts metric depth
  (and a confidence) for the keyframes and the current frame; the known poses place it.
* **mode 3, RGB only** (no poses): a relative-pose head on the current frame and each other frame
  (feature concatenation + a global correlation volume) predicts camera-to-current poses too.

Everything per frame (:meth:`ReprojectionHeatmapModel.encode_frames`: depth, confidence, pose
features, pooled context) is computed once and can be cached when a frame enters the keyframe
memory; what depends on the current frame (relative poses, reprojection, goal, waypoints) runs
per update. The reprojection is bilinear splatting, differentiable in depth and pose, so the
heatmap loss trains the depth and pose heads directly.

Frames and shapes: OpenCV optical cameras, poses camera-to-world ``T_wc`` or camera-to-current
``T_cur_cam`` as named, depth metres along the optical axis, images ``(3, H, W)`` RGB in [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vln_core.config import HeatmapConfig, VLNConfig
from vln_core.errors import InputError
from vln_core.geometry.transforms import invert_pose, make_pose, quat_to_matrix
from vln_core.heatmaps import InterFrameHeatmaps, heatmaps_from_config
from vln_core.models.geometry_encoder import extrinsics_intrinsics_to_pose_encoding, normalize_images
from vln_core.geometry.plane_sweep import select_source_views
from vln_core.models.multiview import MultiViewArchitecture, MultiViewDepth, window_depth
from vln_core.models.goal_grounding import GOAL_ACTIVATION, GOAL_HEADS, GoalMaskHead, GoalPhraseEncoder
from vln_core.models.reprojected_heatmaps import HEATMAP_LOG_EPS, reprojected_heatmap_outputs
from vln_core.models.spatial_model import (
    NUM_INTENTS,
    NUM_WAYPOINTS,
    PAST_TRAJECTORY_LENGTH,
    STAGES,
    ModelInputs,
    ModelOutputs,
)
from vln_core.sampling import sample_keyframes

__all__ = [
    "ReprojectionArchitecture",
    "FrameEncoding",
    "FrameEncoder",
    "ReprojectionHeatmapModel",
    "default_intrinsics",
    "HEATMAP_LOG_EPS",
]

#: Depth range the depth head can express (metres).
MIN_DEPTH_M = 0.05
MAX_DEPTH_M = 30.0


@dataclass
class ReprojectionArchitecture:
    """Sizes of the reprojection model (see :mod:`vln_core.models.registry`)."""

    widths: tuple[int, int, int, int] = (32, 48, 80, 128)  # channels at strides 4, 8, 16, 32
    decoder_width: int = 48
    pose_feature_dim: int = 48  # per-frame 1/16 features kept for the pose head
    pose_hidden: int = 128
    instruction_dim: int = 64
    waypoint_hidden: int = 256
    vocab_size: int = 4096
    # "cv_residual": a residual on constant-velocity extrapolation of the past trajectory (the
    # shipped head, trained on driven trajectories); "visual": no past trajectory, the current
    # view's 1/32 features pooled to a 2x4 grid + the instruction (imitation of the planner,
    # vln_core/train/nav_imitation.py)
    waypoint_head: str = "cv_residual"
    # "film": the shipped goal head (bag-of-words instruction, softmax map); "mask": the goal
    # phrase encoder + per-pixel goal probability (vln_core/models/goal_grounding.py)
    goal_head: str = "film"


def default_intrinsics(size: tuple[int, int], hfov_deg: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """``(3, 3)`` pinhole intrinsics for an ``(H, W)`` image with horizontal field of view
    ``hfov_deg``, square pixels, principal point at the centre (pixel-centre convention)."""
    H, W = size
    f = (W / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return torch.tensor([[f, 0.0, (W - 1) / 2.0], [0.0, f, (H - 1) / 2.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


# ------------------------------------------------------------------------------------------ blocks
class ConvBNAct(nn.Sequential):
    """3x3 (or ``k``) convolution, batch norm, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, k: int = 3, act: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut (ResNet basic block)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBNAct(c, c), ConvBNAct(c, c, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


def down_stage(c_in: int, c_out: int) -> nn.Sequential:
    """One encoder stage: a stride-2 3x3 convolution to ``c_out`` channels and a residual block
    (``(B, c_in, H, W) -> (B, c_out, H/2, W/2)``)."""
    return nn.Sequential(ConvBNAct(c_in, c_out, stride=2), ResidualBlock(c_out))


@dataclass
class FrameFeatures:
    """Encoder features of ``B`` frames at strides 4, 8, 16, 32 (``(B, C_s, H/s, W/s)``)."""

    f4: torch.Tensor
    f8: torch.Tensor
    f16: torch.Tensor
    f32: torch.Tensor


class FrameEncoder(nn.Module):
    """A small ResNet-style CNN: ``(B, 3, H, W)`` RGB in [0, 1] -> :class:`FrameFeatures`.

    The stem is a 4x4 stride-4 patch convolution and the first residual stage works at 1/8: at
    224x224 the encoder costs about 0.2 GFLOP per frame (a stride-2 stem with a 1/4 stage cost
    2.5x more for the same depth accuracy budget; see ``benchmarks/model_size.py``).
    """

    def __init__(self, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        c1, c2, c3, c4 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, c1, 4, stride=4, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True))
        self.down8 = down_stage(c1, c2)
        self.down16 = down_stage(c2, c3)
        self.down32 = down_stage(c3, c4)

    def forward(self, images: torch.Tensor) -> FrameFeatures:
        f4 = self.stem(normalize_images(images))
        f8 = self.down8(f4)
        f16 = self.down16(f8)
        f32 = self.down32(f16)
        return FrameFeatures(f4, f8, f16, f32)


class DepthDecoder(nn.Module):
    """U-Net decoder: features -> log-depth and log-confidence at 1/4 resolution, plus a global
    log-scale from pooled 1/32 features (the scene's size is a global property)."""

    def __init__(self, widths: tuple[int, int, int, int], width: int) -> None:
        super().__init__()
        c1, c2, c3, c4 = widths
        self.lateral32 = ConvBNAct(c4, width, k=1)
        self.lateral16 = ConvBNAct(c3, width, k=1)
        self.lateral8 = ConvBNAct(c2, width, k=1)
        self.smooth16 = ConvBNAct(width, width)
        self.smooth8 = ConvBNAct(width, width)
        # 1/4: only 1x1 mixing with the stem's features (cheap detail), then the output conv
        self.reduce8 = ConvBNAct(width, c1, k=1)
        self.lateral4 = ConvBNAct(c1, c1, k=1)
        self.out = nn.Conv2d(c1, 2, 3, padding=1)
        self.scale = nn.Sequential(nn.Linear(c4, 64), nn.ReLU(inplace=True), nn.Linear(64, 1))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, feats: FrameFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(log_depth, log_conf)``, each ``(B, 1, H/4, W/4)``."""
        x = self.lateral32(feats.f32)
        x = self.smooth16(self._up(x, feats.f16) + self.lateral16(feats.f16))
        x = self.smooth8(self._up(x, feats.f8) + self.lateral8(feats.f8))
        x = F.relu(self._up(self.reduce8(x), feats.f4) + self.lateral4(feats.f4))
        out = self.out(x)
        log_scale = self.scale(feats.f32.mean(dim=(2, 3)))[:, :, None, None]  # (B, 1, 1, 1)
        # 1.0 m at initialisation (log 1 = 0) plus a learned global scale
        return out[:, :1] + log_scale, out[:, 1:2]


class RelativePoseHead(nn.Module):
    """Camera-to-current pose of a frame from its and the current frame's 1/16 features.

    Input per pair: both feature maps and the global correlation volume (every position of the
    frame against every position of the current frame, cosine similarity), which carries the
    image motion explicitly. Output: translation (metres) and a rotation quaternion
    ``normalise([x, y, z, 1])`` (identity at initialisation; smooth everywhere, unlike a
    matrix -> quaternion conversion, whose gradient is NaN at the identity).
    """

    def __init__(self, feature_dim: int, grid_cells: int, hidden: int) -> None:
        super().__init__()
        self.grid_cells = grid_cells
        self.reduce = nn.Sequential(ConvBNAct(2 * feature_dim + grid_cells, hidden, k=1), ConvBNAct(hidden, hidden, stride=2),
                                    ConvBNAct(hidden, hidden))
        self.fc = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 6))
        nn.init.zeros_(self.fc[-1].weight)
        nn.init.zeros_(self.fc[-1].bias)

    def forward(self, frame_feat: torch.Tensor, current_feat: torch.Tensor) -> torch.Tensor:
        """Args:
            frame_feat: ``(P, C, h, w)`` pose features of the frames.
            current_feat: ``(P, C, h, w)`` pose features of their current frame.

        Returns:
            ``(T_cur_cam (P, 4, 4), t (P, 3), quat xyzw (P, 4))``.
        """
        P, C, h, w = frame_feat.shape
        if h * w != self.grid_cells:  # another input size: resample to the trained grid
            side = int(round(math.sqrt(self.grid_cells)))
            frame_feat = F.interpolate(frame_feat, size=(side, side), mode="bilinear", align_corners=False)
            current_feat = F.interpolate(current_feat, size=(side, side), mode="bilinear", align_corners=False)
            h = w = side
        a = F.normalize(frame_feat.flatten(2), dim=1)  # (P, C, hw)
        b = F.normalize(current_feat.flatten(2), dim=1)
        corr = torch.einsum("pci,pcj->pji", a, b).reshape(P, h * w, h, w)  # channels: current positions
        x = self.reduce(torch.cat([frame_feat, current_feat, corr], dim=1))
        out = self.fc(x.mean(dim=(2, 3)))
        quat = F.normalize(torch.cat([out[:, 3:] * 0.5, torch.ones_like(out[:, :1])], dim=-1), dim=-1)
        return make_pose(quat_to_matrix(quat), out[:, :3]), out[:, :3], quat


class GoalHead(nn.Module):
    """Goal heatmap logits: current 1/8 features modulated by the instruction (FiLM)."""

    def __init__(self, c8: int, c32: int, instruction_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.inp = ConvBNAct(c8, hidden, k=1)
        self.context = nn.Linear(c32, hidden)
        self.film = nn.Linear(instruction_dim, 2 * hidden)
        self.body = nn.Sequential(ConvBNAct(hidden, hidden), nn.Conv2d(hidden, 1, 1))

    def forward(self, f8: torch.Tensor, f32: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        """``(B, c8, h8, w8)``, ``(B, c32, h32, w32)``, ``(B, I)`` -> logits ``(B, h8, w8)``."""
        gamma, beta = self.film(instruction).chunk(2, dim=-1)
        x = self.inp(f8) + self.context(f32.mean(dim=(2, 3)))[:, :, None, None]
        x = F.relu(x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None])
        return self.body(x)[:, 0]


WAYPOINT_HEADS = ("cv_residual", "visual")
#: The "visual" waypoint head pools the current view's 1/32 features to this (rows, cols) grid.
VISUAL_POOL = (2, 4)


class WaypointHead(nn.Module):
    """20 future base positions (see :attr:`ReprojectionArchitecture.waypoint_head`).

    ``cv_residual``: a residual on constant-velocity extrapolation of the past trajectory, from the
    past, the intent, the instruction and the mean 1/32 feature. ``visual``: from the intent, the
    instruction and the 1/32 features pooled to :data:`VISUAL_POOL` (where things are in the view
    counts), ignoring the past trajectory.
    """

    def __init__(self, c32: int, instruction_dim: int, hidden: int, kind: str = "cv_residual") -> None:
        super().__init__()
        if kind not in WAYPOINT_HEADS:
            raise InputError(f"waypoint_head must be one of {WAYPOINT_HEADS}, got {kind!r}")
        self.kind = kind
        self.intent_embed = nn.Embedding(NUM_INTENTS, 16)
        visual = c32 * VISUAL_POOL[0] * VISUAL_POOL[1]
        inputs = 16 + instruction_dim + (visual if kind == "visual" else PAST_TRAJECTORY_LENGTH * 4 + c32)
        self.mlp = nn.Sequential(
            nn.Linear(inputs, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, NUM_WAYPOINTS * 2))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, past: torch.Tensor, intent: torch.Tensor, instruction: torch.Tensor, f32: torch.Tensor) -> torch.Tensor:
        """``past (B, 16, 4)`` [x, y, v, w] current base frame, ``intent (B,)``, ``instruction (B, I)``,
        ``f32 (B, C, h, w)`` -> ``(B, 20, 2)`` metres."""
        B = past.shape[0]
        if self.kind == "visual":
            pooled = F.adaptive_avg_pool2d(f32, VISUAL_POOL).flatten(1)
            x = torch.cat([self.intent_embed(intent), instruction, pooled], dim=-1)
            return self.mlp(x).view(B, NUM_WAYPOINTS, 2)
        step = past[:, -1, :2] - past[:, -2, :2]
        k = torch.arange(1, NUM_WAYPOINTS + 1, dtype=past.dtype, device=past.device)[None, :, None]
        constant_velocity = step[:, None, :] * k
        x = torch.cat([past.reshape(B, -1), self.intent_embed(intent), instruction, f32.mean(dim=(2, 3))], dim=-1)
        return constant_velocity + self.mlp(x).view(B, NUM_WAYPOINTS, 2)


@dataclass
class FrameEncoding:
    """What the model keeps per frame (cacheable: it depends on that frame alone).

    Attributes:
        depth: ``(B, H, W)`` metres at the input size.
        depth_conf: ``(B, H, W)`` > 0 (higher = more certain).
        pose_features: ``(B, C, h16, w16)`` for the relative-pose head.
        f8: ``(B, C8, h8, w8)`` (goal head; only the current frame's is used).
        f32: ``(B, C32, h32, w32)`` (global context).
    """

    depth: torch.Tensor
    depth_conf: torch.Tensor
    pose_features: torch.Tensor
    f8: torch.Tensor
    f32: torch.Tensor

    def index(self, idx: Any) -> "FrameEncoding":
        return FrameEncoding(self.depth[idx], self.depth_conf[idx], self.pose_features[idx], self.f8[idx], self.f32[idx])

    @staticmethod
    def cat(items: Iterable["FrameEncoding"]) -> "FrameEncoding":
        items = list(items)
        return FrameEncoding(*(torch.cat([getattr(e, n) for e in items]) for n in
                               ("depth", "depth_conf", "pose_features", "f8", "f32")))


# ------------------------------------------------------------------------------------------ model
class ReprojectionHeatmapModel(nn.Module):
    """Depth (+ relative pose) networks whose predictions are reprojected into heatmaps.

    Same calling convention as :class:`vln_core.models.VLNSpatialModel` (``model(ModelInputs)
    -> ModelOutputs``, ``tokenizer``, ``trainable_parameters(stage)``), so the trainer, the
    evaluation and the export treat both alike. See the module doc for the two modes.

    Args:
        cfg: root config (``video``, ``frame_sampling``, ``heatmap``, ``model.default_hfov_deg``).
        arch: sizes.
        tokenizer: ``encode(list[str], max_length) -> (ids, mask)`` with ``vocab_size``.
    """

    kind = "reprojection"

    def __init__(self, cfg: VLNConfig, arch: ReprojectionArchitecture, tokenizer: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.arch = arch
        self.tokenizer = tokenizer
        self.num_frames = cfg.video.total_frames
        self.num_keyframes = cfg.video.keyframes
        self.frame_size = tuple(int(s) for s in cfg.video.frame_size)
        self.heatmap_cfg: HeatmapConfig = cfg.heatmap
        H, W = self.frame_size
        if H % 32 or W % 32:
            raise InputError(f"the embedded model needs video.frame_size divisible by 32, got {self.frame_size}")
        self.encoder = FrameEncoder(arch.widths)
        self.depth_decoder = DepthDecoder(arch.widths, arch.decoder_width)
        self.pose_proj = ConvBNAct(arch.widths[2], arch.pose_feature_dim, k=1)
        self.pose_head = RelativePoseHead(arch.pose_feature_dim, (H // 16) * (W // 16), arch.pose_hidden)
        self.instruction_embed = nn.Embedding(tokenizer.vocab_size, arch.instruction_dim)
        if arch.goal_head not in GOAL_HEADS:
            raise InputError(f"goal_head must be one of {GOAL_HEADS}, got {arch.goal_head!r}")
        #: how the goal logits become the goal heatmap (softmax over the view, or per-pixel sigmoid)
        self.goal_activation = GOAL_ACTIVATION[arch.goal_head]
        if arch.goal_head == "mask":
            self.goal_phrase: Optional[GoalPhraseEncoder] = GoalPhraseEncoder(tokenizer.vocab_size, arch.instruction_dim,
                                                                              arch.instruction_dim)
            c8, c16, c32 = arch.widths[1:]
            # the head's own copy of the encoder's down16 / down32 (GoalMaskHead.start_from)
            self.goal_head = GoalMaskHead(c8, arch.instruction_dim, nn.ModuleList([down_stage(c8, c16),
                                                                                   down_stage(c16, c32)]), c16, c32)
        else:
            self.goal_phrase = None
            self.goal_head = GoalHead(arch.widths[1], arch.widths[3], arch.instruction_dim)
        self.waypoint_head = WaypointHead(arch.widths[3], arch.instruction_dim, arch.waypoint_hidden, arch.waypoint_head)
        self.multiview = MultiViewDepth(MultiViewArchitecture())
        #: False when the weights came from a checkpoint without the multi-view network (older
        #: checkpoints): the depth is then the monocular network's whatever ``model.depth_source`` says
        self.has_multiview = True
        self.stage: Optional[str] = None

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """As :meth:`torch.nn.Module.load_state_dict`, but weights saved before the multi-view
        depth network existed load too: the network keeps its initial weights and
        :attr:`has_multiview` turns False (the depth is then monocular)."""
        keys = set(state_dict.keys())
        has_mv = any(k.startswith("multiview.") for k in keys)
        if not has_mv:
            result = super().load_state_dict(state_dict, strict=False, assign=assign)
            missing = [k for k in result.missing_keys if not k.startswith("multiview.")]
            if strict and (missing or result.unexpected_keys):
                raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}: missing keys {missing}, "
                                   f"unexpected keys {result.unexpected_keys}")
            self.has_multiview = False
            return result
        self.has_multiview = True
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------------ parameter groups
    def _groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "geometry": list(self.encoder.parameters()) + list(self.depth_decoder.parameters()),
            "pose": list(self.pose_proj.parameters()) + list(self.pose_head.parameters()),
            "goal": (list(self.instruction_embed.parameters()) + list(self.goal_head.parameters())
                     + (list(self.goal_phrase.parameters()) if self.goal_phrase is not None else [])),
            "waypoint_head": list(self.waypoint_head.parameters()),
            "multiview": list(self.multiview.parameters()),
        }

    def stage_groups(self, stage: str) -> list[str]:
        """``geometry``: depth and pose networks; ``heatmap`` adds the goal head (not the ``mask``
        one, which ``training/train_goal.py`` trains); ``finetune`` trains everything (waypoints
        too) but the multi-view depth; ``multiview`` trains only the
        multi-view depth network (the monocular prior it fuses stays frozen)."""
        if stage == "multiview":
            return ["multiview"]
        if stage not in STAGES:
            raise InputError(f"stage must be one of {list(STAGES) + ['multiview']}, got {stage!r}")
        names = ["geometry", "pose"]
        if stage in ("heatmap", "finetune") and self.goal_phrase is None:  # the mask head: train_goal.py
            names.append("goal")
        if stage == "finetune":
            names.append("waypoint_head")
        return names

    def trainable_parameters(self, stage: str) -> list[nn.Parameter]:
        active = set(self.stage_groups(stage))
        for name, params in self._groups().items():
            for p in params:
                p.requires_grad_(name in active)
        self.stage = stage
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"name": n, "params": [p for p in ps if p.requires_grad]} for n, ps in self._groups().items()
                if any(p.requires_grad for p in ps)]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ per-frame parts
    def encode_frames(self, frames: torch.Tensor) -> FrameEncoding:
        """Per-frame work: ``frames (B, 3, H, W)`` RGB in [0, 1] at ``video.frame_size`` ->
        :class:`FrameEncoding` (depth and confidence at ``(H, W)``)."""
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise InputError(f"frames must have shape (B, 3, H, W), got {tuple(frames.shape)}")
        H, W = frames.shape[-2:]
        if H % 32 or W % 32:
            raise InputError(f"frame size must be divisible by 32, got {H}x{W}")
        feats = self.encoder(frames)
        log_depth, log_conf = self.depth_decoder(feats)
        log_depth = F.interpolate(log_depth, size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        log_conf = F.interpolate(log_conf, size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        depth = torch.exp(log_depth.clamp(math.log(MIN_DEPTH_M), math.log(MAX_DEPTH_M)))
        conf = torch.exp(log_conf.clamp(-6.0, 6.0))
        return FrameEncoding(depth, conf, self.pose_proj(feats.f16), feats.f8, feats.f32)

    def multiview_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame (cacheable) matching features of the multi-view depth network:
        ``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, C, H/4, W/4)``."""
        return self.multiview.encode(frames)

    def window_depth(self, mono_depth: torch.Tensor, mono_conf: torch.Tensor, features: torch.Tensor,
                     K: torch.Tensor, T_wc: torch.Tensor, refs: list[int], source: Optional[str] = None,
                     candidates: Optional[list[list[int]]] = None) -> tuple[torch.Tensor, list[list[int]]]:
        """Depth of the ``refs`` frames of a window from their neighbours in it:
        :func:`vln_core.models.multiview.window_depth` with this model's multi-view network
        (``model.depth_source``, ``model.multiview_sources``); a model without multi-view weights
        gives the monocular depth."""
        source = source or self.cfg.model.depth_source
        if not self.has_multiview:
            source = "monocular"
        return window_depth(self.multiview, mono_depth, mono_conf, features, K, T_wc, refs, source,
                            int(self.cfg.model.multiview_sources), candidates)

    def relative_poses(self, frames: FrameEncoding, current: FrameEncoding) -> torch.Tensor:
        """``T_cur_cam (P, 4, 4)`` of ``P`` frames against their current frame (``current`` has
        ``P`` rows or one, broadcast)."""
        cur = current.pose_features
        if cur.shape[0] == 1 and frames.pose_features.shape[0] != 1:
            cur = cur.expand(frames.pose_features.shape[0], -1, -1, -1)
        return self.pose_head(frames.pose_features, cur)[0]

    def predict_geometry(self, frames: torch.Tensor, T_cur_cam: Optional[torch.Tensor] = None,
                         encoding: Optional[FrameEncoding] = None) -> tuple[FrameEncoding, torch.Tensor]:
        """Depth of every frame and, without known poses, their camera-to-current poses.

        Args:
            frames: ``(N, 3, H, W)`` RGB in [0, 1], the current frame last (unused when
                ``encoding`` is given).
            T_cur_cam: ``(N, 4, 4)`` known camera-to-current poses (RGB + pose), or None (RGB
                only: predicted, the current frame is the identity).
            encoding: :meth:`encode_frames` of the same frames, when already computed (cached).

        Returns:
            ``(encoding with N rows, T_cur_cam (N, 4, 4))``.
        """
        enc = encoding if encoding is not None else self.encode_frames(frames)
        if T_cur_cam is None:
            n = enc.depth.shape[0]
            eye = torch.eye(4, dtype=enc.depth.dtype, device=enc.depth.device)[None]
            if n > 1:
                T_cur_cam = torch.cat([self.relative_poses(enc.index(slice(0, n - 1)), enc.index(slice(n - 1, n))), eye])
            else:
                T_cur_cam = eye
        return enc, T_cur_cam

    def goal_and_waypoints(self, current: FrameEncoding, instruction_ids: torch.Tensor, instruction_mask: torch.Tensor,
                           past_trajectory: torch.Tensor, intent: torch.Tensor, size: tuple[int, int]
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Goal heatmap logits ``(B, H, W)`` over the current view and waypoints ``(B, 20, 2)``
        (metres, current base frame, x forward, y left) from the current frame's encoding
        (``B`` rows), the instruction ``(B, L)``, ``past_trajectory (B, 16, 4)`` and ``intent (B,)``."""
        instruction = self.instruction_vector(instruction_ids, instruction_mask)
        goal = self.goal_logits(current, instruction_ids, instruction_mask, instruction)
        goal = F.interpolate(goal[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        waypoints = self.waypoint_head(past_trajectory, intent, instruction, current.f32)
        return goal, waypoints

    def goal_logits(self, current: FrameEncoding, instruction_ids: torch.Tensor, instruction_mask: torch.Tensor,
                    instruction: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Goal logits ``(B, H/8, W/8)`` of the current view (:attr:`goal_activation` turns them
        into the heatmap); ``instruction`` is :meth:`instruction_vector`'s, when already computed."""
        if self.goal_phrase is not None:
            return self.goal_head(current.f8, self.goal_phrase(instruction_ids, instruction_mask))
        if instruction is None:
            instruction = self.instruction_vector(instruction_ids, instruction_mask)
        return self.goal_head(current.f8, current.f32, instruction)

    def instruction_vector(self, instruction_ids: torch.Tensor, instruction_mask: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` ids and mask -> ``(B, I)`` mean word embedding (padding excluded)."""
        weights = instruction_mask.float()
        weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        return (self.instruction_embed(instruction_ids) * weights[..., None]).sum(dim=1)

    def reproject(self, key_depth: torch.Tensor, key_K: torch.Tensor, key_T_cur_cam: torch.Tensor,
                  cur_K: torch.Tensor, cur_depth: Optional[torch.Tensor]) -> InterFrameHeatmaps:
        """Heatmaps of keyframes over the current view from (predicted) geometry, through the
        ground truth's own function.

        Args:
            key_depth: ``(K, H, W)`` keyframe depth, metres.
            key_K: ``(K, 3, 3)`` or ``(3, 3)`` intrinsics at ``(H, W)``.
            key_T_cur_cam: ``(K, 4, 4)`` keyframe camera-to-current poses.
            cur_K: ``(3, 3)`` current intrinsics.
            cur_depth: ``(H, W)`` current depth for the hidden/visible split, or None.
        """
        eye = torch.eye(4, dtype=key_depth.dtype, device=key_depth.device)
        return heatmaps_from_config(key_depth, key_K, key_T_cur_cam, cur_K, eye, key_depth.shape[-2:], cur_depth,
                                    cfg=self.heatmap_cfg)

    # ------------------------------------------------------------------ forward
    def _intrinsics(self, inputs: ModelInputs, B: int, H: int, W: int, device: torch.device) -> torch.Tensor:
        if inputs.intrinsics is not None:
            return inputs.intrinsics.to(device).float()
        K = default_intrinsics((H, W), self.cfg.model.default_hfov_deg, device=device)
        return K[None].expand(B, 3, 3)

    def forward(self, inputs: ModelInputs) -> ModelOutputs:
        """Mode 2 where ``inputs.camera_poses`` is given (per sample, ``inputs.pose_known``), else
        mode 3. Shapes in :class:`ModelInputs` / :class:`ModelOutputs`; ``heatmap_logits`` are
        ``log(heatmap + 1e-7)`` of the reprojected maps, ``out_of_view_logit`` the logit of the
        reprojected out-of-view fraction."""
        if self.stage == "multiview":
            return self.forward_multiview(inputs)
        frames = inputs.frames
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise InputError(f"frames must have shape (B, N_m, 3, H, W), got {tuple(frames.shape)}")
        out_device = frames.device
        device = self.device
        frames = frames.to(device).float()
        B, N, _, H, W = frames.shape
        Nk = self.num_keyframes
        if N < Nk + 1:
            raise InputError(f"frames hold N_m={N} frames but the model needs at least N_k + 1 = {Nk + 1}")
        K = self._intrinsics(inputs, B, H, W, device)  # (B, 3, 3)

        enc = self.encode_frames(frames.reshape(B * N, 3, H, W))
        depth = enc.depth.view(B, N, H, W)
        conf = enc.depth_conf.view(B, N, H, W)
        cur_rows = torch.arange(B, device=device) * N + (N - 1)
        current = enc.index(cur_rows)
        pose_cur = current.pose_features[:, None].expand(B, N, *current.pose_features.shape[1:])
        T_pred, t_pred, q_pred = self.pose_head(enc.pose_features[:, None].view(B, N, *enc.pose_features.shape[1:])[:, :-1]
                                                .reshape(B * (N - 1), *enc.pose_features.shape[1:]),
                                                pose_cur[:, :-1].reshape(B * (N - 1), *current.pose_features.shape[1:]))
        # the current frame is the reference: identity, not predicted
        eye = torch.eye(4, dtype=T_pred.dtype, device=device)
        T_pred = torch.cat([T_pred.view(B, N - 1, 4, 4), eye.expand(B, 1, 4, 4)], dim=1)
        t_pred = torch.cat([t_pred.view(B, N - 1, 3), t_pred.new_zeros(B, 1, 3)], dim=1)
        q_ident = q_pred.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(B, 1, 4)
        q_pred = torch.cat([q_pred.view(B, N - 1, 4), q_ident], dim=1)

        T_cur_cam = T_pred
        if inputs.camera_poses is not None:
            T_wc = inputs.camera_poses.to(device).float()
            T_known = invert_pose(T_wc[:, -1:]) @ T_wc
            known = inputs.pose_known.to(device) if inputs.pose_known is not None else torch.ones(B, dtype=torch.bool, device=device)
            T_cur_cam = torch.where(known[:, None, None, None], T_known, T_pred)

        if inputs.keyframe_indices is not None:
            keyframes = inputs.keyframe_indices.to(device).long()
        else:
            with torch.no_grad():
                rows = [sample_keyframes(depth[b, :-1].detach().cpu(), K[b].cpu(), T_cur_cam[b, :-1].detach().cpu(),
                                         Nk, self.cfg.frame_sampling).indices for b in range(B)]
            keyframes = torch.as_tensor(np.asarray(rows), dtype=torch.long, device=device).reshape(B, Nk)

        logits, oov_logit, bearing = reprojected_heatmap_outputs(depth, K, T_cur_cam, keyframes, self.heatmap_cfg)

        goal, waypoints = self.goal_and_waypoints(current, inputs.instruction_ids.to(device),
                                                  inputs.instruction_mask.to(device).bool(),
                                                  inputs.past_trajectory.to(device).float(), inputs.intent.to(device).long(),
                                                  (H, W))
        if self.goal_phrase is not None:
            # the mask goal head learns the goal's pixels (training/train_goal.py), not the
            # finetuning's Gaussian at the goal's projection: that loss reaches neither it nor the encoder
            goal = goal.detach()
        # reported poses (detached: the matrix -> quaternion conversion has NaN gradients at the identity)
        pose_enc = extrinsics_intrinsics_to_pose_encoding(T_cur_cam.detach(), K[:, None].expand(B, N, 3, 3), (H, W))
        outputs = ModelOutputs(
            depth=depth, depth_conf=conf, pose_enc=pose_enc, keyframe_indices=keyframes,
            heatmap_logits=logits, out_of_view_logit=oov_logit,
            out_of_view_bearing=bearing, goal_logits=goal, waypoints=waypoints,
            pose_enc_predicted=torch.cat([t_pred, q_pred, pose_enc[..., 7:]], dim=-1),
        )
        return outputs.to(out_device)

    def forward_multiview(self, inputs: ModelInputs) -> dict[str, Any]:
        """Training stage ``multiview``: depth of each window's oldest keyframe and current frame
        from the other frames of the window, with the known poses, fused with the frozen
        monocular network's depth.

        Returns:
            ``{"multiview": MultiViewOutput for B x 2 references, "multiview_index": (B * 2, 2)
            long [window, frame]}`` (the loss reads the true depth there).
        """
        if inputs.camera_poses is None:
            raise InputError("training.stage=multiview needs the true poses (training.pose_known_fraction > 0)")
        device = self.device
        frames = inputs.frames.to(device).float()
        B, N, _, H, W = frames.shape
        K = self._intrinsics(inputs, B, H, W, device)
        flat = frames.reshape(B * N, 3, H, W)
        refs_of = [[int(inputs.keyframe_indices[b, 0]) if inputs.keyframe_indices is not None else 0, N - 1]
                   for b in range(B)]
        with torch.no_grad():  # the frozen monocular prior, on the reference frames only
            mono = self.encode_frames(flat[torch.as_tensor([b * N + r for b in range(B) for r in refs_of[b]])])
        fl = self.multiview_features(flat)  # (B * N, C, h, w)
        mono_depth = mono.depth.view(B, 2, H, W)
        mono_conf = mono.depth_conf.view(B, 2, H, W)
        T = inputs.camera_poses.to(device).float()
        S = int(self.cfg.model.multiview_sources)
        ref_rows, src_rows, valid_rows, T_rows, index = [], [], [], [], []
        for b in range(B):
            for r, ref in enumerate(refs_of[b]):
                cands = [i for i in range(N) if i != ref]
                picked = [cands[j] for j in select_source_views(T[b, ref].cpu(), T[b, cands].cpu(), S,
                                                                 float(mono_depth[b, r].median()))]
                if not picked:  # no parallax anywhere: the nearest frames, so the loss still sees the case
                    picked = sorted(cands, key=lambda i: abs(i - ref))[:S]
                idx = picked + [picked[0]] * (S - len(picked))
                ref_rows.append(b * N + ref)
                src_rows.append([b * N + i for i in idx])
                valid_rows.append([True] * len(picked) + [False] * (S - len(picked)))
                T_rows.append(torch.linalg.inv(T[b, idx].double()) @ T[b, ref].double())
                index.append((b, ref))
        ref_rows_t = torch.as_tensor(ref_rows, device=device)
        out = self.multiview(fl[ref_rows_t], fl[torch.as_tensor(src_rows, device=device)], K[ref_rows_t // N],
                             torch.stack(T_rows).float(), (H, W), mono_depth.reshape(B * 2, H, W),
                             mono_conf.reshape(B * 2, H, W), torch.as_tensor(valid_rows, device=device))
        return {"multiview": out, "multiview_index": torch.as_tensor(index, dtype=torch.long)}

    def encode_instructions(self, texts: Iterable[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokenizer.encode(list(texts), self.cfg.model.max_instruction_length)

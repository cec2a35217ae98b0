"""The design's two-stage pipeline (``base``, ``full``): geometry stage -> keyframes -> the one
reprojection for the heatmaps; semantics -> fusion -> reasoning for the goal heatmap and waypoints.

One update sees the ``N_m`` buffered frames (the newest, last, is the current view), the
instruction, the robot's past trajectory and an intent::

    out = model(ModelInputs(frames, instruction_ids, instruction_mask, past_trajectory, intent))

*Geometry stage*

1. :class:`~vln_core.models.geometry_encoder.GeometryEncoder` (or VGGT-1B for ``full``) on all
   ``N_m`` frames: depth, confidence, 9-d poses relative to the current camera, patch tokens.
   Known poses (``ModelInputs.camera_poses``, RGB + pose) replace the predicted ones.
2. Keyframes: given (teacher forcing) or chosen by the space-aware sampler
   (:func:`vln_core.sampling.sample_keyframes`) on that geometry, without gradients.
3. Frame-indexed heatmaps: the keyframes' depth reprojected into the current camera by the one
   reprojection (:func:`vln_core.models.reprojected_heatmaps.reprojected_heatmap_outputs`, the
   ground truth's own function), as for ``embedded``. No network decodes them.

*Reasoning stage*

4. :class:`~vln_core.models.semantic_encoder.SemanticEncoder` (own small ViT or DINOv3) on the
   keyframes and the current view.
5. :class:`~vln_core.models.fusion.TokenFusion` with 3D positional encodings of the patches'
   positions from the geometry stage and frame-slot embeddings.
6. A reasoner (small transformer or LLM) over the instruction and pooled fused tokens.
7. :class:`~vln_core.models.heads.GoalHeatmapDecoder` (the instruction's goal query against the
   current view's tokens) and :class:`~vln_core.models.heads.WaypointHead`.

Stages run on their own devices (``model.geometry_device`` etc.); tensors are moved between
them explicitly and the outputs come back on the device of ``inputs.frames``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vln_core.config import FrameSamplingConfig, VLNConfig
from vln_core.errors import InputError
from vln_core.models.fusion import TokenFusion, patch_world_coordinates, resample_token_grid
from vln_core.models.geometry_encoder import (
    GeometryEncoder,
    extrinsics_intrinsics_to_pose_encoding,
    pose_encoding_to_extrinsics_intrinsics,
)
from vln_core.models.heads import GoalHeatmapDecoder, WaypointHead
from vln_core.geometry.transforms import invert_pose
from vln_core.models.reasoning import LLMReasoner
from vln_core.models.reprojected_heatmaps import reprojected_heatmap_outputs
from vln_core.models.semantic_encoder import SemanticEncoder
from vln_core.sampling import sample_keyframes, sample_keyframes_from_points

__all__ = [
    "ModelInputs",
    "ModelOutputs",
    "ModelArchitecture",
    "VLNSpatialModel",
    "GeometryStageOutput",
    "resolve_device",
    "STAGES",
    "PAST_TRAJECTORY_LENGTH",
    "NUM_WAYPOINTS",
]

log = logging.getLogger(__name__)

STAGES = ("geometry", "heatmap", "finetune")
PAST_TRAJECTORY_LENGTH = 16
NUM_WAYPOINTS = 20
NUM_INTENTS = 3


@dataclass
class ModelInputs:
    """One batch of model inputs (see the field comments for shapes and frames)."""

    frames: torch.Tensor  # (B, N_m, 3, H, W) float in [0,1], newest frame last (= current view)
    instruction_ids: torch.Tensor  # (B, L) long
    instruction_mask: torch.Tensor  # (B, L) bool
    past_trajectory: torch.Tensor  # (B, 16, 4) [x, y, v, w] past base poses (m) and speeds, current base frame
    intent: torch.Tensor  # (B,) long: 0 left, 1 straight, 2 right
    keyframe_indices: torch.Tensor | None = None  # (B, N_k) long into N_m; None -> sample from predicted geometry
    intrinsics: torch.Tensor | None = None  # (B, 3, 3) of frames at (H, W) if known (else predicted fov is used)
    camera_poses: torch.Tensor | None = None  # (B, N_m, 4, 4) camera-to-world (any fixed world) if known (RGB + pose)
    pose_known: torch.Tensor | None = None  # (B,) bool: use camera_poses for this sample (default: all, when given)


@dataclass
class ModelOutputs:
    """Everything the model predicts for one batch."""

    depth: torch.Tensor  # (B, N_m, H, W) metres (predicted)
    depth_conf: torch.Tensor  # (B, N_m, H, W)
    pose_enc: torch.Tensor  # (B, N_m, 9) [t(3), quat xyzw(4), fov_h, fov_w], camera-to-current
    keyframe_indices: torch.Tensor  # (B, N_k)
    heatmap_logits: torch.Tensor  # (B, N_k, H, W) log(heatmap + 1e-7) of the reprojected maps (softmax gives them back)
    out_of_view_logit: torch.Tensor  # (B, N_k) logit of the reprojected out-of-view fraction
    out_of_view_bearing: torch.Tensor  # (B, N_k, 2) (cos, sin) of the out-of-view bearing
    goal_logits: torch.Tensor  # (B, H, W)
    waypoints: torch.Tensor  # (B, 20, 2) metres in the current base frame
    pose_enc_predicted: torch.Tensor | None = None  # (B, N_m, 9) the model's own pose estimate where pose_enc was given

    def to(self, device: torch.device | str) -> "ModelOutputs":
        """Copy with every tensor on ``device``."""
        return ModelOutputs(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                               for f in fields(self)})


@dataclass
class GeometryStageOutput:
    """What the geometry stage hands to the reprojection and the reasoning stage."""

    geometry: Any  # GeometryOutput / VGGTGeometryOutput: depth (B, N, H, W) m, depth_conf, pose_enc, patch_tokens, grid
    K: torch.Tensor  # (B, N, 3, 3) intrinsics at (H, W): given, else from the predicted field of view
    T_cur_cam: torch.Tensor  # (B, N, 4, 4) camera-to-current: known poses where given, else predicted
    keyframes: torch.Tensor  # (B, K) long into N: given, else the space-aware sampler's N_k


@dataclass
class ModelArchitecture:
    """Sizes of one registered configuration (see :mod:`vln_core.models.registry`)."""

    geometry_patch_size: int = 14
    geometry_dim: int = 128
    geometry_depth: int = 3  # (frame, global) block pairs
    geometry_heads: int = 4
    geometry_registers: int = 2
    semantic: str = "small_vit"  # "small_vit" (own, from scratch) or "dinov3" (transformers, from a path)
    semantic_patch_size: int = 16  # small_vit only
    semantic_dim: int = 128  # small_vit only
    semantic_depth: int = 3  # small_vit only
    semantic_heads: int = 4  # small_vit only
    fusion_dim: int = 128
    reasoner: str = "embedded"  # "embedded" or "llm"
    reasoning_depth: int = 2  # embedded only
    reasoning_heads: int = 4  # embedded only
    reasoning_pool: int = 2  # fused grid is average-pooled by this factor before reasoning
    decoder_heads: int = 4  # goal heatmap decoder
    decoder_layers: int = 2
    waypoint_hidden: int = 256
    vocab_size: int = 4096  # embedded tokenizer buckets
    # GPU index each stage takes for device "auto" (clamped to the GPUs present)
    device_indices: dict[str, int] = field(default_factory=lambda: {"geometry": 0, "semantic": 0, "llm": 0})


def resolve_device(name: str, auto_index: int = 0) -> torch.device:
    """A stage's device from its config string.

    ``"auto"`` -> ``cuda:<auto_index>`` (clamped to the GPUs present) when CUDA is available, else
    CPU. An explicit ``"cuda..."`` without CUDA falls back to CPU with a warning, so a config made
    for a GPU machine still runs on a CPU robot. Anything else goes to ``torch.device``.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{min(auto_index, torch.cuda.device_count() - 1)}")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {name!r}: {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            log.warning("device %s requested but CUDA is not available; using cpu", name)
            return torch.device("cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    return device


class VLNSpatialModel(nn.Module):
    """The full network. Build it with :func:`vln_core.models.registry.build_model`.

    Args:
        cfg: the root config (``cfg.model``, ``cfg.video``, ``cfg.frame_sampling`` are read).
        arch: sizes.
        semantic_backbone: a :class:`SmallViT` or ``DINOv3ViTModel``.
        semantic_pretrained: whether that backbone came from a checkpoint (then
            ``model.freeze_semantic`` applies; a from-scratch backbone always trains).
        reasoner: :class:`EmbeddedReasoner` or :class:`LLMReasoner`.
        tokenizer: object with ``encode(list[str], max_length) -> (ids, mask)``.
        geometry: the geometry stage if not our own :class:`GeometryEncoder` (``full``: a
            :class:`~vln_core.models.vggt.VGGTGeometryEncoder`, frozen, keyframes from its points).
    """

    def __init__(self, cfg: VLNConfig, arch: ModelArchitecture, semantic_backbone: nn.Module,
                 semantic_pretrained: bool, reasoner: nn.Module, tokenizer: Any,
                 geometry: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.arch = arch
        self.tokenizer = tokenizer
        self.num_frames = cfg.video.total_frames
        self.num_keyframes = cfg.video.keyframes
        self.frame_size = tuple(cfg.video.frame_size)
        self.sampling_cfg: FrameSamplingConfig = cfg.frame_sampling
        self.heatmap_cfg = cfg.heatmap  # the one reprojection's settings (sigma, stride, occlusion margins)
        self.semantic_pretrained = semantic_pretrained
        mcfg = cfg.model

        self.geometry = geometry if geometry is not None else GeometryEncoder(
            self.frame_size, arch.geometry_patch_size, arch.geometry_dim, arch.geometry_depth,
            arch.geometry_heads, arch.geometry_registers)
        self.semantic = SemanticEncoder(semantic_backbone, frozen=semantic_pretrained and mcfg.freeze_semantic)
        D = arch.fusion_dim
        self.fusion = TokenFusion(arch.geometry_dim, self.semantic.hidden_size, D, self.num_keyframes + 1,
                                  mcfg.pos_encoding_3d)
        self.reasoner = reasoner
        self.goal_query = nn.Parameter(torch.zeros(D))
        self.goal_decoder = GoalHeatmapDecoder(D, arch.decoder_heads, arch.geometry_patch_size, arch.decoder_layers)
        self.waypoint_head = WaypointHead(D, PAST_TRAJECTORY_LENGTH, 4, NUM_WAYPOINTS, NUM_INTENTS, arch.waypoint_hidden)

        self.place_on_devices({
            "geometry": resolve_device(mcfg.geometry_device, arch.device_indices.get("geometry", 0)),
            "semantic": resolve_device(mcfg.semantic_device, arch.device_indices.get("semantic", 0)),
            "llm": resolve_device(mcfg.llm_device, arch.device_indices.get("llm", 0)),
        })
        self.stage: str | None = None

    # ------------------------------------------------------------------ devices
    # Stage devices are read from where the parameters are, so ``model.to(device)`` (a trainer
    # putting everything on one GPU) and :meth:`place_on_devices` (one GPU per stage) both work.
    @property
    def geometry_device(self) -> torch.device:
        """Device of the geometry encoder, the fusion and the heads."""
        return self.goal_query.device

    @property
    def semantic_device(self) -> torch.device:
        return next(self.semantic.parameters()).device

    @property
    def llm_device(self) -> torch.device:
        return next(self.reasoner.parameters()).device

    @property
    def device_map(self) -> dict[str, torch.device]:
        """Where each stage runs: ``{"geometry", "semantic", "llm"} -> torch.device``."""
        return {"geometry": self.geometry_device, "semantic": self.semantic_device, "llm": self.llm_device}

    def _head_modules(self) -> list[nn.Module]:
        return [self.geometry, self.fusion, self.goal_decoder, self.waypoint_head]

    def place_on_devices(self, devices: dict[str, torch.device | str]) -> "VLNSpatialModel":
        """Move each stage to its device (``{"geometry", "semantic", "llm"} -> device``);
        pretrained backbones on CUDA take ``model.dtype`` (LoRA adapters, projectors and our own
        modules stay float32)."""
        unknown = set(devices) - {"geometry", "semantic", "llm"}
        if unknown:
            raise InputError(f"unknown stage(s) {sorted(unknown)}; stages are geometry, semantic, llm")
        if "geometry" in devices:
            for module in self._head_modules():
                module.to(devices["geometry"])
            self.goal_query.data = self.goal_query.data.to(devices["geometry"])
        if "semantic" in devices:
            self.semantic.to(devices["semantic"])
        if "llm" in devices:
            self.reasoner.to(devices["llm"])
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.cfg.model.dtype]
        if dtype != torch.float32:
            if hasattr(self.geometry, "set_compute_dtype") and self.geometry_device.type == "cuda":
                self.geometry.set_compute_dtype(dtype)  # VGGT: aggregator in dtype, heads float32
            if self.semantic_pretrained and self.semantic_device.type == "cuda":
                self.semantic.backbone.to(dtype)
            if isinstance(self.reasoner, LLMReasoner) and self.llm_device.type == "cuda":
                for p in self.reasoner.base_parameters():  # LoRA adapters stay float32 for training
                    p.data = p.data.to(dtype)
        return self

    # ------------------------------------------------------------------ parameter groups
    def _groups(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter in exactly one named group."""
        frozen = {id(p) for p in getattr(self.geometry, "frozen_parameters", list)()}
        groups: dict[str, list[nn.Parameter]] = {
            "geometry": [p for p in self.geometry.parameters() if id(p) not in frozen],
            "geometry_pretrained": [p for p in self.geometry.parameters() if id(p) in frozen],  # no stage trains it
            "semantic_backbone": list(self.semantic.backbone.parameters()),
            "fusion": list(self.fusion.parameters()),
            "goal_head": list(self.goal_decoder.parameters()) + [self.goal_query],
            "waypoint_head": list(self.waypoint_head.parameters()),
        }
        if isinstance(self.reasoner, LLMReasoner):
            groups["reasoner"] = self.reasoner.adapter_parameters()
            groups["llm"] = self.reasoner.base_parameters()
            groups["lora"] = self.reasoner.lora_parameters()
        else:
            groups["reasoner"] = list(self.reasoner.parameters())
        return groups

    def stage_groups(self, stage: str) -> list[str]:
        """Names of the parameter groups that train in ``stage``.

        * ``geometry``: the geometry encoder only.
        * ``heatmap``: everything except a pretrained LLM (and a pretrained semantic backbone
          while ``model.freeze_semantic``) and the waypoint head: the heatmap loss reaches the
          geometry through the reprojection, the goal loss the goal head and what feeds it.
        * ``finetune``: the heatmap set plus LoRA adapters (``model.lora_rank > 0``) or the
          whole LLM (``model.freeze_llm = false``), plus the waypoint head.
        """
        if stage not in STAGES:
            raise InputError(f"stage must be one of {list(STAGES)}, got {stage!r}")
        if stage == "geometry":
            return ["geometry"]
        names = ["geometry", "fusion", "reasoner", "goal_head"]
        if not (self.semantic_pretrained and self.cfg.model.freeze_semantic):
            names.append("semantic_backbone")
        if stage == "finetune":
            names.append("waypoint_head")
            if isinstance(self.reasoner, LLMReasoner):
                if self.reasoner.lora_rank > 0:
                    names.append("lora")
                elif not self.cfg.model.freeze_llm:
                    names.append("llm")
        return names

    def trainable_parameters(self, stage: str) -> list[nn.Parameter]:
        """Set ``requires_grad`` for ``stage`` (see :meth:`stage_groups`) and return the trainable
        parameters. A frozen semantic backbone then also runs without autograd."""
        active = set(self.stage_groups(stage))
        for name, params in self._groups().items():
            for p in params:
                p.requires_grad_(name in active)
        self.semantic.frozen = "semantic_backbone" not in active
        self.stage = stage
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups ``[{"name": str, "params": [...]}, ...]`` of the currently
        trainable parameters (call :meth:`trainable_parameters` first), empty groups left out."""
        out = []
        for name, params in self._groups().items():
            trainable = [p for p in params if p.requires_grad]
            if trainable:
                out.append({"name": name, "params": trainable})
        return out

    # ------------------------------------------------------------------ keyframes
    @torch.no_grad()
    def sample_keyframes(self, depth: torch.Tensor, K: torch.Tensor, T_cur_cam: torch.Tensor) -> torch.Tensor:
        """Space-aware keyframes from predicted geometry (no gradients).

        Args:
            depth: ``(B, N_m, H, W)`` predicted depth, metres.
            K: ``(B, N_m, 3, 3)`` intrinsics at ``(H, W)``.
            T_cur_cam: ``(B, N_m, 4, 4)`` camera-to-current poses (the current camera is the world).

        Returns:
            ``(B, N_k)`` long, sorted ascending per row, on ``depth``'s device.
        """
        B, N = depth.shape[:2]
        k = self.num_keyframes
        rows = []
        for b in range(B):
            result = sample_keyframes(depth[b].float().cpu(), K[b].float().cpu(), T_cur_cam[b].float().cpu(), k,
                                      self.sampling_cfg)
            rows.append(torch.as_tensor(result.indices, dtype=torch.long))
        return torch.stack(rows).to(depth.device)

    @torch.no_grad()
    def sample_keyframes_from_points(self, points: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
        """Space-aware keyframes from a predicted point map (VGGT), as the design samples them
        (:func:`vln_core.sampling.sample_keyframes_from_points`: confidence above the clip median
        and 0.1, voxel = shortest bounding-box side / ``frame_sampling.voxel_divisions``).

        Args:
            points: ``(B, N_m, H, W, 3)`` in the current camera frame; conf: ``(B, N_m, H, W)``.

        Returns:
            ``(B, N_k)`` long, sorted ascending per row, on ``points``' device.
        """
        rows = [torch.as_tensor(sample_keyframes_from_points(points[b].float().cpu(), conf[b].float().cpu(),
                                                             self.num_keyframes, self.sampling_cfg).indices,
                                dtype=torch.long) for b in range(points.shape[0])]
        return torch.stack(rows).to(points.device)

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, inputs: ModelInputs) -> None:
        frames = inputs.frames
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise InputError(f"frames must have shape (B, N_m, 3, H, W), got {tuple(frames.shape)}")
        B, N = frames.shape[:2]
        if inputs.keyframe_indices is None and N < self.num_keyframes:
            raise InputError(f"frames hold N_m={N} frames but the model needs at least N_k={self.num_keyframes}")
        if not frames.is_floating_point():
            raise InputError(f"frames must be float in [0, 1], got dtype {frames.dtype}")
        if inputs.instruction_ids.dim() != 2 or inputs.instruction_ids.shape[0] != B:
            raise InputError(f"instruction_ids must have shape (B={B}, L), got {tuple(inputs.instruction_ids.shape)}")
        if inputs.instruction_mask.shape != inputs.instruction_ids.shape:
            raise InputError(
                f"instruction_mask {tuple(inputs.instruction_mask.shape)} must match instruction_ids "
                f"{tuple(inputs.instruction_ids.shape)}"
            )
        if inputs.past_trajectory.shape != (B, PAST_TRAJECTORY_LENGTH, 4):
            raise InputError(
                f"past_trajectory must have shape (B={B}, {PAST_TRAJECTORY_LENGTH}, 4), got "
                f"{tuple(inputs.past_trajectory.shape)}"
            )
        if inputs.intent.shape != (B,):
            raise InputError(f"intent must have shape (B={B},), got {tuple(inputs.intent.shape)}")
        if inputs.keyframe_indices is not None:
            kf = inputs.keyframe_indices
            if kf.dim() != 2 or kf.shape[0] != B or not 1 <= kf.shape[1] <= self.num_keyframes:
                raise InputError(f"keyframe_indices must have shape (B={B}, K) with 1 <= K <= N_k={self.num_keyframes}, "
                                 f"got {tuple(kf.shape)}")
            if bool(((kf < 0) | (kf >= N)).any()):
                raise InputError(f"keyframe_indices must lie in [0, N_m={N}), got {kf.tolist()}")
        if inputs.intrinsics is not None and inputs.intrinsics.shape != (B, 3, 3):
            raise InputError(f"intrinsics must have shape (B={B}, 3, 3), got {tuple(inputs.intrinsics.shape)}")

    def geometry_stage(self, inputs: ModelInputs) -> GeometryStageOutput:
        """Steps 1-2: depth and poses of every frame, and the keyframes (see :class:`GeometryStageOutput`)."""
        self._check_inputs(inputs)
        gdev = self.geometry_device
        frames = inputs.frames.to(gdev).float()
        B, N, _, H, W = frames.shape

        # 1. geometry over all frames
        geo = self.geometry(frames)
        T_cur_cam, K_pred = pose_encoding_to_extrinsics_intrinsics(geo.pose_enc, (H, W))
        if inputs.intrinsics is not None:
            K = inputs.intrinsics.to(gdev).float()[:, None].expand(B, N, 3, 3)
        else:
            K = K_pred

        # known poses (RGB + pose) replace the predicted ones, per sample
        if inputs.camera_poses is not None:
            T_wc = inputs.camera_poses.to(gdev).float()
            T_known = invert_pose(T_wc[:, -1:]) @ T_wc
            known = (inputs.pose_known.to(gdev).bool() if inputs.pose_known is not None
                     else torch.ones(B, dtype=torch.bool, device=gdev))
            T_cur_cam = torch.where(known[:, None, None, None], T_known, T_cur_cam)

        # 2. keyframes
        if inputs.keyframe_indices is not None:
            keyframes = inputs.keyframe_indices.to(gdev).long()
        elif getattr(geo, "points_cur", None) is not None and inputs.camera_poses is None:
            keyframes = self.sample_keyframes_from_points(geo.points_cur.detach(), geo.points_conf.detach())  # VGGT
        else:
            keyframes = self.sample_keyframes(geo.depth.detach(), K.detach(), T_cur_cam.detach())

        return GeometryStageOutput(geo, K, T_cur_cam, keyframes)

    def reasoning_stage(self, inputs: ModelInputs, stage: GeometryStageOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 4-7 on the geometry stage's output: ``(goal_logits (B, H, W), waypoints (B, 20, 2))``
        on the geometry device."""
        gdev = self.geometry_device
        frames = inputs.frames.to(gdev).float()
        B, N, _, H, W = frames.shape
        geo, K, T_cur_cam, keyframes = stage.geometry, stage.K, stage.T_cur_cam, stage.keyframes
        Nk = keyframes.shape[1]

        # 4. semantics of the chosen frames
        current = torch.full((B, 1), N - 1, dtype=torch.long, device=gdev)
        selected = torch.cat([keyframes, current], dim=1)  # (B, F = N_k + 1)
        Fr = Nk + 1
        batch_index = torch.arange(B, device=gdev)[:, None]
        chosen_frames = frames[batch_index, selected]  # (B, F, 3, H, W)
        sem_tokens, sem_grid = self.semantic(chosen_frames.reshape(B * Fr, 3, H, W).to(self.semantic_device))
        sem_tokens = sem_tokens.to(gdev).view(B, Fr, sem_tokens.shape[1], sem_tokens.shape[2])

        # 5. fusion with 3D positions from the geometry stage
        grid = geo.grid
        h, w = grid
        with torch.no_grad():
            xyz, xyz_valid = patch_world_coordinates(
                geo.depth.detach()[batch_index, selected].reshape(B * Fr, H, W),
                K.detach()[batch_index, selected].reshape(B * Fr, 3, 3),
                T_cur_cam.detach()[batch_index, selected].reshape(B * Fr, 4, 4),
                grid,
            )
        # frame slots: keyframes 0..K-1, the current view always the last slot (N_k), also when K < N_k
        slots = torch.cat([torch.arange(Nk, device=gdev), torch.full((1,), self.num_keyframes, device=gdev)])
        fused = self.fusion(geo.patch_tokens[batch_index, selected], grid, sem_tokens, sem_grid,
                            xyz.view(B, Fr, h, w, 3), xyz_valid.view(B, Fr, h, w), slots, grid)  # (B, F, h*w, D)
        D = fused.shape[-1]

        # 6. reasoning over instruction + pooled visual tokens
        pool = max(1, min(self.arch.reasoning_pool, h, w))
        pooled = F.avg_pool2d(fused.view(B * Fr, h, w, D).permute(0, 3, 1, 2), pool, ceil_mode=True)
        ph, pw = pooled.shape[-2:]
        pooled = pooled.flatten(2).transpose(1, 2).reshape(B, Fr * ph * pw, D)
        instruction_ids = inputs.instruction_ids.to(self.llm_device)
        instruction_mask = inputs.instruction_mask.to(self.llm_device).bool()
        instr_out, visual_out = self.reasoner(instruction_ids, instruction_mask, pooled.to(self.llm_device))
        instr_out = instr_out.to(gdev).float()
        visual_out = visual_out.to(gdev).float().view(B, Fr, ph * pw, D)
        mask = instruction_mask.to(gdev).float()[..., None]
        instruction_pooled = (instr_out * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)

        # 7. goal heatmap (the instruction's query against the current view) and waypoints
        current_tokens = fused[:, -1] + resample_token_grid(visual_out[:, -1], (ph, pw), grid)
        goal_logits = self.goal_decoder(instruction_pooled + self.goal_query, current_tokens, grid, (H, W))
        waypoints = self.waypoint_head(fused.mean(dim=(1, 2)), instruction_pooled,
                                       inputs.past_trajectory.to(gdev).float(), inputs.intent.to(gdev).long())

        return goal_logits, waypoints

    def keyframe_heatmaps(self, stage: GeometryStageOutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step 3: ``(heatmap_logits (B, K, H, W), out_of_view_logit (B, K), out_of_view_bearing (B, K, 2))``
        from the one reprojection of the geometry stage's depth and poses (``heatmap_cfg`` settings)."""
        return reprojected_heatmap_outputs(stage.geometry.depth.float(), stage.K.float(), stage.T_cur_cam.float(),
                                           stage.keyframes, self.heatmap_cfg)

    def forward(self, inputs: ModelInputs) -> ModelOutputs:
        """Run every stage; see :class:`ModelInputs` / :class:`ModelOutputs` for shapes and frames."""
        out_device = inputs.frames.device
        stage = self.geometry_stage(inputs)
        geo, K, T_cur_cam, keyframes = stage.geometry, stage.K, stage.T_cur_cam, stage.keyframes
        H, W = inputs.frames.shape[-2:]
        logits, oov_logit, oov_bearing = self.keyframe_heatmaps(stage)
        goal_logits, waypoints = self.reasoning_stage(inputs, stage)
        result = ModelOutputs(
            depth=geo.depth,
            depth_conf=geo.depth_conf,
            # the poses the heatmaps used: known where given, else the geometry stage's (with gradients)
            pose_enc=(geo.pose_enc if inputs.camera_poses is None
                      else extrinsics_intrinsics_to_pose_encoding(T_cur_cam.detach(), K.detach(), (H, W))),
            keyframe_indices=keyframes,
            heatmap_logits=logits,
            out_of_view_logit=oov_logit,
            out_of_view_bearing=oov_bearing,
            goal_logits=goal_logits,
            waypoints=waypoints,
            pose_enc_predicted=geo.pose_enc,  # the geometry stage's own estimate (the pose loss)
        )
        return _outputs_to(result, out_device)

    def encode_instructions(self, texts: Iterable[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize instructions with the model's tokenizer at ``model.max_instruction_length``."""
        return self.tokenizer.encode(list(texts), self.cfg.model.max_instruction_length)


def _outputs_to(outputs: ModelOutputs, device: torch.device) -> ModelOutputs:
    return outputs.to(device)

"""Output heads: camera and depth heads of the geometry encoder, the goal heatmap decoder with
RAFT-style convex upsampling, and the waypoint head.

Pose encoding (9-d, VGGT style): ``[t (3), quaternion xyzw (4), fov_h, fov_w]`` of each frame's
camera relative to the current frame's camera, i.e. the camera-to-current pose ``T_cur_cam``
(OpenCV optical axes, metres); ``fov_h`` is the vertical and ``fov_w`` the horizontal field of
view in radians.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vln_core.errors import InputError

__all__ = [
    "POSE_ENCODING_DIM",
    "CameraHead",
    "DepthHead",
    "ConvexUpSample",
    "convex_upsample",
    "GoalHeatmapDecoder",
    "WaypointHead",
]

POSE_ENCODING_DIM = 9
_MIN_FOV = math.radians(10.0)
_MAX_FOV = math.radians(170.0)


class CameraHead(nn.Module):
    """Camera tokens -> 9-d pose encodings.

    The translation is unconstrained (metres), the quaternion is normalised, and both fields of
    view are squashed into [10 deg, 170 deg]. The current frame's pose relative to itself is the
    identity by definition, so its translation and rotation are set exactly (its fov is predicted).
    """

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, POSE_ENCODING_DIM))
        # start near identity rotation, zero translation and a ~70 deg field of view
        nn.init.zeros_(self.mlp[-1].weight)
        with torch.no_grad():
            self.mlp[-1].bias.copy_(torch.tensor([0, 0, 0, 0, 0, 0, 1.0, 0, 0]))

    def forward(self, camera_tokens: torch.Tensor, current_index: int = -1) -> torch.Tensor:
        """Args:
            camera_tokens: ``(B, N, D)`` one token per frame.
            current_index: which frame is the reference (identity pose).

        Returns:
            ``(B, N, 9)`` pose encodings (camera-to-current).
        """
        raw = self.mlp(camera_tokens)
        t, q, fov_raw = raw[..., :3], raw[..., 3:7], raw[..., 7:9]
        q = F.normalize(q, dim=-1, eps=1e-6)
        fov = _MIN_FOV + (_MAX_FOV - _MIN_FOV) * torch.sigmoid(fov_raw + 0.0)
        B, N = raw.shape[:2]
        is_current = torch.zeros(N, dtype=torch.bool, device=raw.device)
        is_current[current_index] = True
        identity_q = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=raw.dtype, device=raw.device)
        t = torch.where(is_current[None, :, None], torch.zeros_like(t), t)
        q = torch.where(is_current[None, :, None], identity_q.expand_as(q), q)
        return torch.cat([t, q, fov], dim=-1)


class DepthHead(nn.Module):
    """DPT-lite: patch tokens from a few encoder layers -> full-resolution depth and confidence.

    Each selected layer's tokens are projected and summed, then upsampled in x2 steps with
    convolutions up to half the patch size (the last x2 and any non-power-of-two remainder are
    a bilinear resize of the two output channels, which keeps the costly full-resolution
    convolutions off a CPU). Depth = softplus (metres, > 0); confidence = 1 + softplus (>= 1, as
    in VGGT's aleatoric loss).
    """

    def __init__(self, dim: int, num_layers_in: int, patch_size: int, hidden: int = 64) -> None:
        super().__init__()
        self.layer_proj = nn.ModuleList([nn.Linear(dim, hidden) for _ in range(num_layers_in)])
        steps = max(1, int(math.ceil(math.log2(patch_size))) - 1)
        self.up = nn.ModuleList()
        ch = hidden
        for i in range(steps):
            out_ch = max(16, ch // 2) if i >= 1 else ch
            self.up.append(nn.Sequential(nn.Conv2d(ch, out_ch, 3, padding=1), nn.GELU()))
            ch = out_ch
        self.refine = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.GELU(), nn.Conv2d(ch, 2, 1))
        with torch.no_grad():  # start around 2 m depth, confidence ~ 1.7
            self.refine[-1].bias.copy_(torch.tensor([1.8, 0.0]))

    def forward(self, layer_tokens: list[torch.Tensor], grid: tuple[int, int], out_size: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            layer_tokens: list of ``(M, h*w, D)`` patch tokens (M = frames), one per selected layer.
            grid: ``(h, w)`` patch grid.
            out_size: ``(H, W)`` output resolution.

        Returns:
            ``(depth (M, H, W) metres, confidence (M, H, W))``.
        """
        if len(layer_tokens) != len(self.layer_proj):
            raise InputError(f"DepthHead expects {len(self.layer_proj)} layers of tokens, got {len(layer_tokens)}")
        h, w = grid
        x = sum(proj(tok) for proj, tok in zip(self.layer_proj, layer_tokens))
        M = x.shape[0]
        x = x.transpose(1, 2).reshape(M, -1, h, w)
        for block in self.up:
            x = block(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        raw = F.interpolate(self.refine(x), size=out_size, mode="bilinear", align_corners=False)
        depth = F.softplus(raw[:, 0])
        conf = 1.0 + F.softplus(raw[:, 1])
        return depth, conf


def convex_upsample(coarse: torch.Tensor, mask_logits: torch.Tensor, factor: int) -> torch.Tensor:
    """RAFT convex upsampling: each fine pixel is a convex combination of its coarse pixel's 3x3
    neighbourhood.

    Args:
        coarse: ``(B, C, h, w)`` coarse map.
        mask_logits: ``(B, 9 * factor**2, h, w)`` unnormalised weights; softmax over the 9
            neighbours gives the convex weights.
        factor: upsampling factor.

    Returns:
        ``(B, C, h * factor, w * factor)``.
    """
    B, C, h, w = coarse.shape
    if mask_logits.shape != (B, 9 * factor * factor, h, w):
        raise InputError(
            f"mask_logits must have shape {(B, 9 * factor * factor, h, w)}, got {tuple(mask_logits.shape)}"
        )
    weights = torch.softmax(mask_logits.view(B, 1, 9, factor, factor, h, w), dim=2)
    # replicate padding: a constant map stays constant at the borders too
    padded = F.pad(coarse, (1, 1, 1, 1), mode="replicate")
    neigh = F.unfold(padded, kernel_size=3).view(B, C, 9, 1, 1, h, w)
    fine = (weights * neigh).sum(dim=2)  # (B, C, f, f, h, w)
    fine = fine.permute(0, 1, 4, 2, 5, 3)  # (B, C, h, f, w, f)
    return fine.reshape(B, C, h * factor, w * factor)


class ConvexUpSample(nn.Module):
    """Learned convex upsampling of coarse logits guided by features of the same grid.

    The mask (9 weights per fine pixel) is predicted from ``features``; ``factor`` is typically
    the patch size so that patch-grid logits reach full image resolution.
    """

    def __init__(self, feature_dim: int, factor: int, hidden: int = 128) -> None:
        super().__init__()
        if factor < 1:
            raise InputError(f"upsampling factor must be >= 1, got {factor}")
        self.factor = int(factor)
        self.mask_net = nn.Sequential(
            nn.Conv2d(feature_dim, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 9 * self.factor * self.factor, 1),
        )

    def mask_logits(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, D, h, w)`` features -> ``(B, 9 * factor**2, h, w)`` mask logits."""
        return 0.25 * self.mask_net(features)  # RAFT scales the mask to balance gradients

    def convex_weights(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, D, h, w)`` -> ``(B, 9, factor, factor, h, w)`` convex weights (sum to 1 over dim 2)."""
        B, _, h, w = features.shape
        logits = self.mask_logits(features)
        return torch.softmax(logits.view(B, 9, self.factor, self.factor, h, w), dim=1)

    def forward(self, coarse: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Args:
            coarse: ``(B, C, h, w)`` coarse maps (e.g. one heatmap-logit channel per keyframe).
            features: ``(B, D, h, w)`` guidance features on the same grid.

        Returns:
            ``(B, C, h * factor, w * factor)``.
        """
        if coarse.shape[0] != features.shape[0] or coarse.shape[-2:] != features.shape[-2:]:
            raise InputError(
                f"coarse {tuple(coarse.shape)} and features {tuple(features.shape)} must share batch and grid"
            )
        return convex_upsample(coarse, self.mask_logits(features), self.factor)


class GoalHeatmapDecoder(nn.Module):
    """The goal heatmap over the current view, decoded from tokens.

    The instruction's goal query cross-attends to the current view's fused tokens; its logits on
    the patch grid are scaled dot products with those tokens, brought to full resolution by
    :class:`ConvexUpSample`. Only the goal is decoded: where the *keyframes'* content lies in the
    current view is geometry and comes from the one reprojection
    (:func:`vln_core.heatmaps.heatmaps_from_config`) of the geometry stage's depth and poses. A
    decoder that predicted those maps from tokens lost to the reprojection and was retired.
    """

    def __init__(self, dim: int, num_heads: int, upsample_factor: int, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(num_layers):
            self.layers.append(nn.ModuleDict({
                "norm_q": nn.LayerNorm(dim),
                "norm_kv": nn.LayerNorm(dim),
                "attn": nn.MultiheadAttention(dim, num_heads, batch_first=True),
                "norm_ff": nn.LayerNorm(dim),
                "ff": nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)),
            }))
        self.query_proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.key_proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.upsample = ConvexUpSample(dim, upsample_factor)
        self.scale = dim ** -0.5

    def forward(self, goal_query: torch.Tensor, current_tokens: torch.Tensor, grid: tuple[int, int],
                out_size: tuple[int, int]) -> torch.Tensor:
        """Args:
            goal_query: ``(B, D)`` from the instruction.
            current_tokens: ``(B, h*w, D)`` tokens of the current view, row-major on ``grid``.
            grid: ``(h, w)``.
            out_size: ``(H, W)`` full image resolution.

        Returns:
            ``goal_logits (B, H, W)`` (softmax over H*W = the goal heatmap).
        """
        B, T, D = current_tokens.shape
        h, w = grid
        if T != h * w:
            raise InputError(f"current_tokens has {T} tokens but grid {grid} needs {h * w}")
        if goal_query.shape != (B, D):
            raise InputError(f"goal_query must have shape (B={B}, D={D}), got {tuple(goal_query.shape)}")
        q = goal_query[:, None]
        for layer in self.layers:
            kv = layer["norm_kv"](current_tokens)
            attended, _ = layer["attn"](layer["norm_q"](q), kv, kv, need_weights=False)
            q = q + attended
            q = q + layer["ff"](layer["norm_ff"](q))
        coarse = torch.einsum("bqd,btd->bqt", self.query_proj(q), self.key_proj(current_tokens)) * self.scale
        features = current_tokens.transpose(1, 2).reshape(B, D, h, w)
        logits = self.upsample(coarse.view(B, 1, h, w), features)
        if logits.shape[-2:] != tuple(out_size):
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits[:, 0]


class WaypointHead(nn.Module):
    """MLP: pooled fused features + past trajectory + intent + instruction -> future waypoints.

    Waypoints are predicted as per-step displacements and summed, so the path starts at the
    robot and stays continuous.
    """

    def __init__(self, dim: int, past_len: int = 16, past_dim: int = 4, num_waypoints: int = 20,
                 num_intents: int = 3, hidden: int = 256) -> None:
        super().__init__()
        self.past_len, self.past_dim, self.num_waypoints, self.num_intents = past_len, past_dim, num_waypoints, num_intents
        self.intent_embed = nn.Embedding(num_intents, 32)
        self.past_proj = nn.Sequential(nn.Linear(past_len * past_dim, hidden), nn.GELU())
        self.mlp = nn.Sequential(
            nn.Linear(2 * dim + hidden + 32, hidden), nn.GELU(),
            nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, num_waypoints * 2),
        )

    def forward(self, visual: torch.Tensor, instruction: torch.Tensor, past_trajectory: torch.Tensor,
                intent: torch.Tensor) -> torch.Tensor:
        """Args:
            visual: ``(B, D)`` pooled fused visual features.
            instruction: ``(B, D)`` pooled instruction features.
            past_trajectory: ``(B, past_len, 4)`` ``[x, y, v, w]`` in the current base frame.
            intent: ``(B,)`` long in ``[0, num_intents)`` (0 left, 1 straight, 2 right).

        Returns:
            ``(B, num_waypoints, 2)`` future ``(x, y)`` in metres, current base frame (REP 103).
        """
        B = visual.shape[0]
        if past_trajectory.shape != (B, self.past_len, self.past_dim):
            raise InputError(
                f"past_trajectory must have shape {(B, self.past_len, self.past_dim)}, got {tuple(past_trajectory.shape)}"
            )
        if intent.shape != (B,):
            raise InputError(f"intent must have shape ({B},), got {tuple(intent.shape)}")
        if bool(((intent < 0) | (intent >= self.num_intents)).any()):
            raise InputError(f"intent values must be in [0, {self.num_intents}), got {intent.tolist()}")
        past = self.past_proj(past_trajectory.reshape(B, -1).to(visual.dtype))
        x = torch.cat([visual, instruction, past, self.intent_embed(intent)], dim=-1)
        steps = self.mlp(x).view(B, self.num_waypoints, 2)
        return torch.cumsum(steps, dim=1)

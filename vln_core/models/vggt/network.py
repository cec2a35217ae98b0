"""The VGGT network (aggregator, camera head, DPT depth / point heads), our implementation of
"VGGT: Visual Geometry Grounded Transformer" (Wang et al., CVPR 2025) with the official
checkpoint's module layout, so ``facebook/VGGT-1B``'s ``model.safetensors`` loads strictly.

Shapes: ``B`` clips, ``S`` frames per clip (the first is VGGT's reference frame), ``H x W``
input pixels (multiples of the patch size ``p``), ``h x w = H/p x W/p`` patch grid,
``P = 1 + R + h*w`` tokens per frame (camera, ``R`` registers, patches), ``C`` the aggregator
width (``2C`` after concatenating frame- and global-attention outputs).

Outputs are VGGT's own conventions; :mod:`vln_core.models.vggt.convert` turns them into ours.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vln_core.models.vggt.layers import DinoPatchEmbed, Mlp, RoPE2D, ViTBlock, check_grid, patch_positions

__all__ = ["VGGTConfig", "VGGT_1B", "VGGTOutput", "Aggregator", "CameraHead", "DPTHead", "VGGT"]

_RESNET_MEAN = (0.485, 0.456, 0.406)
_RESNET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VGGTConfig:
    """Sizes of a VGGT network. The defaults are VGGT-1B (1.26 B parameters with the track head,
    which we do not build)."""

    img_size: int = 518  # square side the patch embedding's position table is laid out for
    patch_size: int = 14
    embed_dim: int = 1024  # C
    depth: int = 24  # frame/global block pairs
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    patch_embed_depth: int = 24  # DINOv2 ViT-L/14-reg (its width is embed_dim)
    patch_embed_heads: int = 16
    rope_frequency: float = 100.0
    camera_trunk_depth: int = 4
    camera_heads: int = 16
    camera_iterations: int = 4
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, int, int, int] = (4, 11, 17, 23)  # aggregator outputs the DPT heads read
    point_head: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VGGTConfig":
        data = dict(data)
        for key in ("dpt_out_channels", "dpt_layers"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


VGGT_1B = VGGTConfig()


@dataclass
class VGGTOutput:
    """Raw VGGT predictions (VGGT conventions: OpenCV axes, world = the first frame's camera,
    scale normalised by the network, not metric)."""

    pose_enc: torch.Tensor  # (B, S, 9) [t(3), quat xyzw(4), fov_h, fov_w] of the world-to-camera pose
    depth: torch.Tensor  # (B, S, H, W) along the optical axis
    depth_conf: torch.Tensor  # (B, S, H, W) >= 1
    world_points: torch.Tensor | None = None  # (B, S, H, W, 3) in the first frame's camera
    world_points_conf: torch.Tensor | None = None  # (B, S, H, W) >= 1
    pose_enc_iterations: list[torch.Tensor] = field(default_factory=list)  # each (B, S, 9)
    tokens: torch.Tensor | None = None  # (B, S, P, 2C) last aggregator output (with_tokens=True)
    patch_start: int = 0  # index of the first patch token in P (1 + registers)


class Aggregator(nn.Module):
    """Patch embedding, then alternating frame attention (tokens of one frame) and global
    attention (tokens of all frames of a clip), both with QK norm, 2D RoPE and layer scale.

    The first frame of each clip gets camera/register tokens of set 0, the others of set 1.
    """

    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        C = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.patch_embed = DinoPatchEmbed(cfg.img_size, cfg.patch_size, C, cfg.patch_embed_depth,
                                          cfg.patch_embed_heads, cfg.num_register_tokens, cfg.mlp_ratio)
        self.rope = RoPE2D(cfg.rope_frequency)

        def block() -> ViTBlock:
            return ViTBlock(C, cfg.num_heads, cfg.mlp_ratio, layer_scale=0.01, qk_norm=True, rope=self.rope)

        self.frame_blocks = nn.ModuleList(block() for _ in range(cfg.depth))
        self.global_blocks = nn.ModuleList(block() for _ in range(cfg.depth))
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, C))  # [reference frame, other frames]
        self.register_token = nn.Parameter(torch.zeros(1, 2, cfg.num_register_tokens, C))
        self.num_prefix = 1 + cfg.num_register_tokens

    def _prefix(self, B: int, S: int) -> torch.Tensor:
        """``(B*S, 1+R, C)`` camera + register tokens, set 0 for frame 0 and set 1 for the rest."""
        tokens = torch.cat([self.camera_token, self.register_token], dim=2)[0]  # (2, 1+R, C)
        which = torch.ones(S, dtype=torch.long, device=tokens.device)
        which[0] = 0
        return tokens[which][None].expand(B, -1, -1, -1).reshape(B * S, self.num_prefix, -1)

    def forward(self, images: torch.Tensor, keep: set[int]) -> dict[int, torch.Tensor]:
        """Args:
            images: ``(B, S, 3, H, W)`` RGB in [0, 1].
            keep: indices of the block pairs whose outputs the heads need.

        Returns:
            ``{i: (B, S, P, 2C)}`` for ``i`` in ``keep``: frame-attention output of pair ``i``
            concatenated with its global-attention output.
        """
        B, S, _, H, W = images.shape
        check_grid(H, W, self.patch_size)
        mean = torch.tensor(_RESNET_MEAN, dtype=images.dtype, device=images.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(_RESNET_STD, dtype=images.dtype, device=images.device).view(1, 1, 3, 1, 1)
        x = ((images - mean) / std).reshape(B * S, 3, H, W)
        dtype = self.camera_token.dtype
        patches = self.patch_embed(x.to(dtype))  # (B*S, h*w, C)
        tokens = torch.cat([self._prefix(B, S), patches], dim=1)  # (B*S, P, C)
        _, P, C = tokens.shape
        grid = (H // self.patch_size, W // self.patch_size)
        pos_frame = patch_positions(B * S, grid, self.num_prefix, images.device)  # (B*S, P, 2)
        pos_global = pos_frame.reshape(B, S * P, 2)

        kept: dict[int, torch.Tensor] = {}
        for i, (frame_block, global_block) in enumerate(zip(self.frame_blocks, self.global_blocks)):
            tokens = frame_block(tokens, pos_frame)
            after_frame = tokens
            tokens = global_block(tokens.reshape(B, S * P, C), pos_global).reshape(B * S, P, C)
            if i in keep:
                kept[i] = torch.cat([after_frame, tokens], dim=-1).view(B, S, P, 2 * C)
            if i >= max(keep):
                break
        return kept


class CameraHead(nn.Module):
    """Camera tokens -> pose encodings by iterative refinement.

    Each iteration embeds the previous (detached) estimate (a learned empty pose at first),
    modulates the normalised camera tokens with it (adaLN: shift, scale, gate), runs the trunk
    (attention across the ``S`` frames' camera tokens) and adds a predicted delta.
    The fov part goes through ReLU; translation and quaternion are linear.
    """

    def __init__(self, dim: int, trunk_depth: int = 4, num_heads: int = 16, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*[ViTBlock(dim, num_heads, mlp_ratio, layer_scale=0.01)
                                     for _ in range(trunk_depth)])
        self.token_norm = nn.LayerNorm(dim)
        self.trunk_norm = nn.LayerNorm(dim)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, 9))
        self.embed_pose = nn.Linear(9, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim, dim // 2, 9)

    def forward(self, camera_tokens: torch.Tensor, iterations: int = 4) -> list[torch.Tensor]:
        """Args:
            camera_tokens: ``(B, S, 2C)`` the camera token of each frame after the last block.

        Returns:
            ``iterations`` pose encodings ``(B, S, 9)``, the last is the final estimate.
        """
        tokens = self.token_norm(camera_tokens)
        B, S, _ = tokens.shape
        raw: torch.Tensor | None = None
        out = []
        for _ in range(iterations):
            prev = self.empty_pose_tokens.expand(B, S, -1) if raw is None else raw.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(prev)).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            raw = delta if raw is None else raw + delta
            out.append(torch.cat([raw[..., :7], F.relu(raw[..., 7:])], dim=-1))
        return out


class _ResidualConv(nn.Module):
    """``relu(x) + conv2(relu(conv1(relu(x))))`` (the residual is taken after the first ReLU)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class _Fusion(nn.Module):
    """DPT fusion: ``(x [+ unit1(skip)]) -> unit2 -> bilinear resize (align_corners) -> 1x1 conv``."""

    def __init__(self, ch: int, has_skip: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(ch, ch, 1)
        if has_skip:
            self.resConfUnit1 = _ResidualConv(ch)
        self.resConfUnit2 = _ResidualConv(ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size or (x.shape[-2] * 2, x.shape[-1] * 2)
        return self.out_conv(F.interpolate(x, size=size, mode="bilinear", align_corners=True))


def _uv_grid(w: int, h: int, aspect: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(h, w, 2)`` (x, y) pixel-centre coordinates spanning the image, normalised by its diagonal."""
    diag = (aspect ** 2 + 1.0) ** 0.5
    sx, sy = aspect / diag, 1.0 / diag
    xs = torch.linspace(-sx * (w - 1) / w, sx * (w - 1) / w, w, dtype=dtype, device=device)
    ys = torch.linspace(-sy * (h - 1) / h, sy * (h - 1) / h, h, dtype=dtype, device=device)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack([gx, gy], dim=-1)


def _sincos(values: torch.Tensor, dim: int, omega0: float = 100.0) -> torch.Tensor:
    """``(M,)`` -> ``(M, dim)`` ``[sin(v w_k), cos(v w_k)]`` with ``w_k = omega0^(-2k/dim)`` (float64 inside)."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=values.device) / (dim / 2.0)
    angles = values.reshape(-1, 1).double() * (1.0 / omega0 ** omega)[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def _add_uv_embedding(x: torch.Tensor, image_hw: tuple[int, int], ratio: float = 0.1) -> torch.Tensor:
    """``x (N, ch, h, w)`` + ``ratio`` x a sin/cos embedding of the normalised pixel grid."""
    N, ch, h, w = x.shape
    uv = _uv_grid(w, h, image_hw[1] / image_hw[0], x.dtype, x.device).reshape(-1, 2)
    emb = torch.cat([_sincos(uv[:, 0], ch // 2), _sincos(uv[:, 1], ch // 2)], dim=-1)  # (h*w, ch)
    return x + (emb.view(h, w, ch) * ratio).permute(2, 0, 1)[None].to(x.dtype)


class DPTHead(nn.Module):
    """Dense head (DPT): four aggregator outputs -> per-pixel values and confidence.

    Per level: LayerNorm, 1x1 projection to ``out_channels[l]``, pixel-grid embedding, resize to
    4x / 2x / 1x / 0.5x the patch grid; a 3x3 conv to ``features``; fusion from the coarsest level
    up; two output convs at full resolution.

    Args:
        dim_in: ``2C``.
        output_dim: values + 1 confidence channel (2 for depth, 4 for world points).
        activation: ``"exp"`` (depth) or ``"inv_log"`` (points: ``sign(y) (e^|y| - 1)``);
            confidence is ``1 + exp``.
    """

    def __init__(self, dim_in: int, patch_size: int, output_dim: int, activation: str, features: int = 256,
                 out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024),
                 layers: tuple[int, int, int, int] = (4, 11, 17, 23)) -> None:
        super().__init__()
        if activation not in ("exp", "inv_log"):
            raise ValueError(f"unknown DPT activation {activation!r}")
        self.patch_size = patch_size
        self.activation = activation
        self.layers = tuple(layers)
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, 1) for oc in out_channels)
        c = out_channels
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(c[0], c[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(c[1], c[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(c[3], c[3], kernel_size=3, stride=2, padding=1),
        ])
        scratch = nn.Module()
        for i, ch in enumerate(out_channels, start=1):
            setattr(scratch, f"layer{i}_rn", nn.Conv2d(ch, features, 3, padding=1, bias=False))
        scratch.refinenet1 = _Fusion(features)
        scratch.refinenet2 = _Fusion(features)
        scratch.refinenet3 = _Fusion(features)
        scratch.refinenet4 = _Fusion(features, has_skip=False)
        scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        scratch.output_conv2 = nn.Sequential(nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(),
                                             nn.Conv2d(32, output_dim, 1))
        self.scratch = scratch

    def _frames(self, tokens: dict[int, torch.Tensor], prefix: int, lo: int, hi: int, image_hw: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        H, W = image_hw
        h, w = H // self.patch_size, W // self.patch_size
        levels = []
        for level, layer in enumerate(self.layers):
            x = tokens[layer][:, lo:hi, prefix:]  # (B, s, h*w, 2C)
            x = self.norm(x.reshape(-1, h * w, x.shape[-1]))
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
            x = _add_uv_embedding(self.projects[level](x), image_hw)
            levels.append(self.resize_layers[level](x))
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i}_rn")(x) for i, x in enumerate(levels, start=1))
        out = s.refinenet4(l4, size=l3.shape[-2:])
        out = s.refinenet3(out, l3, size=l2.shape[-2:])
        out = s.refinenet2(out, l2, size=l1.shape[-2:])
        out = s.output_conv1(s.refinenet1(out, l1))
        out = F.interpolate(out, size=(h * self.patch_size, w * self.patch_size), mode="bilinear", align_corners=True)
        out = s.output_conv2(_add_uv_embedding(out, image_hw))  # (n, output_dim, H, W)
        values, conf = out[:, :-1], out[:, -1]
        if self.activation == "exp":
            values = values.exp()
        else:
            values = values.sign() * values.abs().expm1()
        return values.permute(0, 2, 3, 1), 1.0 + conf.exp()

    def forward(self, tokens: dict[int, torch.Tensor], prefix: int, image_hw: tuple[int, int],
                frames_per_chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            tokens: aggregator outputs ``{layer: (B, S, P, 2C)}`` containing ``self.layers``.
            prefix: camera + register tokens before the patches (``1 + R``).
            image_hw: ``(H, W)``.
            frames_per_chunk: frames decoded at once (bounds memory at full resolution).

        Returns:
            values ``(B, S, H, W, output_dim - 1)`` and confidence ``(B, S, H, W)``.
        """
        B, S = tokens[self.layers[0]].shape[:2]
        vals, confs = [], []
        for lo in range(0, S, frames_per_chunk):
            hi = min(S, lo + frames_per_chunk)
            v, c = self._frames(tokens, prefix, lo, hi, image_hw)
            vals.append(v.view(B, hi - lo, *v.shape[1:]))
            confs.append(c.view(B, hi - lo, *c.shape[1:]))
        return torch.cat(vals, dim=1), torch.cat(confs, dim=1)


class VGGT(nn.Module):
    """Aggregator + camera head + DPT depth head (+ DPT point head); no track head.

    Parameter names equal the official checkpoint's (``aggregator.*``, ``camera_head.*``,
    ``depth_head.*``, ``point_head.*``); see :func:`vln_core.models.vggt.loading.load_vggt_state_dict`.
    """

    def __init__(self, cfg: VGGTConfig = VGGT_1B) -> None:
        super().__init__()
        if max(cfg.dpt_layers) >= cfg.depth:
            raise ValueError(f"dpt_layers {cfg.dpt_layers} must be < depth {cfg.depth}")
        self.cfg = cfg
        dim = 2 * cfg.embed_dim
        self.aggregator = Aggregator(cfg)
        self.camera_head = CameraHead(dim, cfg.camera_trunk_depth, cfg.camera_heads, cfg.mlp_ratio)
        dpt = dict(features=cfg.dpt_features, out_channels=cfg.dpt_out_channels, layers=cfg.dpt_layers)
        self.depth_head = DPTHead(dim, cfg.patch_size, 2, "exp", **dpt)
        self.point_head = DPTHead(dim, cfg.patch_size, 4, "inv_log", **dpt) if cfg.point_head else None

    def forward(self, images: torch.Tensor, with_points: bool = True, with_tokens: bool = False) -> VGGTOutput:
        """Args:
            images: ``(B, S, 3, H, W)`` or ``(S, 3, H, W)`` RGB in [0, 1], ``H, W`` multiples of
                the patch size; frame 0 is the reference (world) frame.
            with_points: also run the point head (when built).
            with_tokens: also return the last aggregator output (``tokens``).

        Returns:
            :class:`VGGTOutput` in float32 (the heads run in float32 whatever the aggregator's dtype).
        """
        if images.dim() == 4:
            images = images[None]
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must have shape (B, S, 3, H, W), got {tuple(images.shape)}")
        H, W = images.shape[-2:]
        last = self.cfg.depth - 1
        tokens = self.aggregator(images, set(self.cfg.dpt_layers) | {last})
        head_dtype = self.camera_head.embed_pose.weight.dtype
        tokens = {k: v.to(head_dtype) for k, v in tokens.items()}
        poses = self.camera_head(tokens[last][:, :, 0], self.cfg.camera_iterations)
        prefix = self.aggregator.num_prefix
        depth, depth_conf = self.depth_head(tokens, prefix, (H, W))
        out = VGGTOutput(pose_enc=poses[-1], depth=depth[..., 0], depth_conf=depth_conf, pose_enc_iterations=poses,
                         tokens=tokens[last] if with_tokens else None, patch_start=prefix)
        if with_points and self.point_head is not None:
            out.world_points, out.world_points_conf = self.point_head(tokens, prefix, (H, W))
        return out

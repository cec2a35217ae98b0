"""Geometry encoder (3D path): a VGGT-style transformer over all buffered frames.

Each frame becomes ``[camera token, register tokens..., patch tokens]``. Blocks alternate
frame-wise attention (tokens of one frame) and global attention (tokens of all frames), so each
frame's camera token can learn its pose relative to the current frame. A camera head turns the
camera tokens into 9-d pose encodings and a DPT-lite head turns patch tokens into dense depth.

The current frame is the newest, i.e. the last of the N_m frames; it gets its own learned camera
token (VGGT gives the reference frame a distinct token the same way).

Pose encoding (see :mod:`vln_core.models.heads`): ``[t(3), quat xyzw(4), fov_h, fov_w]`` of the
camera-to-current pose ``T_cur_cam``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vln_core.errors import InputError
from vln_core.geometry.transforms import make_pose, matrix_to_quat, quat_to_matrix
from vln_core.models.heads import CameraHead, DepthHead

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "normalize_images",
    "TransformerBlock",
    "GeometryOutput",
    "GeometryEncoder",
    "pose_encoding_to_extrinsics_intrinsics",
    "extrinsics_intrinsics_to_pose_encoding",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` RGB in [0, 1] -> ImageNet-normalised, same shape."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images - mean) / std


class TransformerBlock(nn.Module):
    """Pre-norm self-attention block (``scaled_dot_product_attention``) with an MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise InputError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            x: ``(B, T, D)``.
            key_padding_mask: optional ``(B, T)`` bool, True = real token (attended to).

        Returns:
            ``(B, T, D)``.
        """
        B, T, D = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, T, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        attn_mask = None
        if key_padding_mask is not None:
            attn_mask = key_padding_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.norm2(x))


@dataclass
class GeometryOutput:
    """What the geometry encoder returns for ``B`` clips of ``N`` frames."""

    depth: torch.Tensor  # (B, N, H, W) metres
    depth_conf: torch.Tensor  # (B, N, H, W) >= 1
    pose_enc: torch.Tensor  # (B, N, 9) camera-to-current
    patch_tokens: torch.Tensor  # (B, N, h*w, D) final-layer patch tokens
    camera_tokens: torch.Tensor  # (B, N, D)
    grid: tuple[int, int]  # (h, w) patch grid


class GeometryEncoder(nn.Module):
    """VGGT-style alternating-attention transformer with camera and depth heads.

    Args:
        image_size: ``(H, W)`` the positional embedding is laid out for (other sizes interpolate it).
        patch_size: pixels per patch side.
        dim: token width.
        depth: number of (frame-attention, global-attention) block pairs.
        num_heads: attention heads.
        num_register_tokens: extra learned tokens per frame.
        depth_head_layers: how many of the last block pairs feed the DPT-lite depth head.
        depth_head_hidden: channels of the depth head's first upsampling stage.
    """

    def __init__(self, image_size: tuple[int, int], patch_size: int = 14, dim: int = 192, depth: int = 4,
                 num_heads: int = 4, num_register_tokens: int = 2, depth_head_layers: int = 2,
                 depth_head_hidden: int = 64) -> None:
        super().__init__()
        self.patch_size = int(patch_size)
        self.dim = dim
        self.grid = (image_size[0] // patch_size, image_size[1] // patch_size)
        if min(self.grid) < 1:
            raise InputError(f"image_size {image_size} is smaller than one patch of {patch_size}")
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, dim, *self.grid) * 0.02)
        # camera tokens: index 0 for the current (reference) frame, 1 for every other frame
        self.camera_token = nn.Parameter(torch.randn(2, dim) * 0.02)
        self.num_register_tokens = num_register_tokens
        self.register_tokens = nn.Parameter(torch.randn(2, num_register_tokens, dim) * 0.02)
        self.frame_blocks = nn.ModuleList([TransformerBlock(dim, num_heads) for _ in range(depth)])
        self.global_blocks = nn.ModuleList([TransformerBlock(dim, num_heads) for _ in range(depth)])
        self.depth_head_layers = max(1, min(depth_head_layers, depth))
        self.norm = nn.LayerNorm(dim)
        self.camera_head = CameraHead(dim)
        self.depth_head = DepthHead(dim, self.depth_head_layers, self.patch_size, depth_head_hidden)

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_register_tokens

    def forward(self, frames: torch.Tensor) -> GeometryOutput:
        """Args:
            frames: ``(B, N, 3, H, W)`` RGB in [0, 1], newest (current) frame last.

        Returns:
            :class:`GeometryOutput` (depth and confidence at the input's ``(H, W)``).
        """
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise InputError(f"frames must have shape (B, N, 3, H, W), got {tuple(frames.shape)}")
        B, N, _, H, W = frames.shape
        p = self.patch_size
        h, w = max(1, H // p), max(1, W // p)
        x = normalize_images(frames.reshape(B * N, 3, H, W))
        if (h * p, w * p) != (H, W):
            x = F.interpolate(x, size=(h * p, w * p), mode="bilinear", align_corners=False)
        x = self.patch_embed(x)  # (B*N, D, h, w)
        pos = self.pos_embed if (h, w) == self.grid else F.interpolate(
            self.pos_embed, size=(h, w), mode="bicubic", align_corners=False)
        x = (x + pos).flatten(2).transpose(1, 2)  # (B*N, h*w, D)

        is_current = torch.zeros(N, dtype=torch.long, device=frames.device)
        is_current[:-1] = 1  # 0 -> current frame's token set, 1 -> others
        cam = self.camera_token[is_current]  # (N, D)
        reg = self.register_tokens[is_current]  # (N, R, D)
        prefix = torch.cat([cam[:, None], reg], dim=1)  # (N, 1+R, D)
        prefix = prefix[None].expand(B, -1, -1, -1).reshape(B * N, self.num_prefix_tokens, self.dim)
        tokens = torch.cat([prefix, x], dim=1)  # (B*N, P, D)
        P = tokens.shape[1]

        depth_features = []
        n_blocks = len(self.frame_blocks)
        for i, (frame_block, global_block) in enumerate(zip(self.frame_blocks, self.global_blocks)):
            tokens = frame_block(tokens)
            tokens = global_block(tokens.view(B, N * P, self.dim)).view(B * N, P, self.dim)
            if i >= n_blocks - self.depth_head_layers:
                depth_features.append(tokens[:, self.num_prefix_tokens:])
        tokens = self.norm(tokens)
        depth_features[-1] = tokens[:, self.num_prefix_tokens:]

        camera_tokens = tokens[:, 0].view(B, N, self.dim)
        pose_enc = self.camera_head(camera_tokens, current_index=N - 1)
        depth, conf = self.depth_head(depth_features, (h, w), (H, W))
        return GeometryOutput(
            depth=depth.view(B, N, H, W),
            depth_conf=conf.view(B, N, H, W),
            pose_enc=pose_enc,
            patch_tokens=tokens[:, self.num_prefix_tokens:].reshape(B, N, h * w, self.dim),
            camera_tokens=camera_tokens,
            grid=(h, w),
        )


def pose_encoding_to_extrinsics_intrinsics(pose_enc: torch.Tensor, image_size: tuple[int, int]
                                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode 9-d pose encodings.

    Args:
        pose_enc: ``(..., 9)`` ``[t(3), quat xyzw(4), fov_h, fov_w]`` (camera-to-current).
        image_size: ``(H, W)`` of the image grid the intrinsics are for.

    Returns:
        ``T_cur_cam (..., 4, 4)`` camera-to-current poses and ``K (..., 3, 3)`` pinhole
        intrinsics with the principal point at the image centre ``((W-1)/2, (H-1)/2)``.
    """
    if pose_enc.shape[-1] != 9:
        raise InputError(f"pose_enc must end in 9 values, got shape {tuple(pose_enc.shape)}")
    H, W = image_size
    R = quat_to_matrix(pose_enc[..., 3:7])
    T = make_pose(R, pose_enc[..., :3])
    fy = (H / 2.0) / torch.tan(pose_enc[..., 7] / 2.0)
    fx = (W / 2.0) / torch.tan(pose_enc[..., 8] / 2.0)
    K = torch.zeros(pose_enc.shape[:-1] + (3, 3), dtype=pose_enc.dtype, device=pose_enc.device)
    K[..., 0, 0] = fx
    K[..., 1, 1] = fy
    K[..., 0, 2] = (W - 1) / 2.0
    K[..., 1, 2] = (H - 1) / 2.0
    K[..., 2, 2] = 1.0
    return T, K


def extrinsics_intrinsics_to_pose_encoding(T_cur_cam: torch.Tensor, K: torch.Tensor, image_size: tuple[int, int]
                                           ) -> torch.Tensor:
    """Encode ground truth as 9-d pose encodings (the inverse of the decoder above).

    Args:
        T_cur_cam: ``(..., 4, 4)`` camera-to-current poses (e.g. ``inv(T_w_cur) @ T_w_cam``).
        K: ``(..., 3, 3)`` intrinsics at ``image_size``.
        image_size: ``(H, W)``.

    Returns:
        ``(..., 9)`` ``[t, quat xyzw, fov_h, fov_w]`` with fov = ``2 atan(size / (2 f))``.
    """
    H, W = image_size
    quat = matrix_to_quat(T_cur_cam[..., :3, :3])
    t = T_cur_cam[..., :3, 3]
    fov_h = 2.0 * torch.atan((H / 2.0) / K[..., 1, 1])
    fov_w = 2.0 * torch.atan((W / 2.0) / K[..., 0, 0])
    return torch.cat([t, quat.to(t.dtype), fov_h[..., None], fov_w[..., None]], dim=-1)


"""Semantic encoder (2D path): per-image patch tokens from a ViT.

Two backbones fit behind :class:`SemanticEncoder`:

* :class:`SmallViT`, our own small ViT trained from scratch (the embedded model; no download);
* ``transformers.DINOv3ViTModel`` loaded from a local checkpoint (base/full), frozen by default.

Both see ImageNet-normalised RGB and give row-major patch tokens on a ``(H/p, W/p)`` grid; the
prefix tokens (CLS, registers) are dropped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vln_core.errors import InputError
from vln_core.models.geometry_encoder import TransformerBlock, normalize_images

__all__ = ["SmallViT", "SemanticEncoder"]


class SmallViT(nn.Module):
    """A plain ViT (patch embedding, learned positions, pre-norm blocks) for the embedded model.

    Args:
        image_size: ``(H, W)`` the positional embedding is laid out for (others interpolate).
        patch_size, dim, depth, num_heads: the usual ViT sizes.
    """

    def __init__(self, image_size: tuple[int, int], patch_size: int = 16, dim: int = 128, depth: int = 3,
                 num_heads: int = 4) -> None:
        super().__init__()
        self.patch_size = int(patch_size)
        self.hidden_size = dim
        self.grid = (image_size[0] // patch_size, image_size[1] // patch_size)
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, dim, *self.grid) * 0.02)
        self.blocks = nn.ModuleList([TransformerBlock(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(M, 3, h*p, w*p)`` normalised images -> ``(M, h*w, D)`` patch tokens."""
        x = self.patch_embed(pixel_values)
        h, w = x.shape[-2:]
        pos = self.pos_embed if (h, w) == self.grid else F.interpolate(
            self.pos_embed, size=(h, w), mode="bicubic", align_corners=False)
        x = (x + pos).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def _is_hf_dinov3(backbone: nn.Module) -> bool:
    config = getattr(backbone, "config", None)
    return config is not None and getattr(config, "model_type", "") == "dinov3_vit"


class SemanticEncoder(nn.Module):
    """Patch tokens of RGB images from a :class:`SmallViT` or a ``DINOv3ViTModel``.

    Args:
        backbone: the ViT.
        frozen: run the backbone without gradients and in eval mode (its parameters get
            ``requires_grad=False`` from the stage settings in :class:`VLNSpatialModel`).
    """

    def __init__(self, backbone: nn.Module, frozen: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.frozen = frozen
        self.is_hf = _is_hf_dinov3(backbone)
        if self.is_hf:
            cfg = backbone.config
            patch = cfg.patch_size
            self.patch_size = int(patch if isinstance(patch, int) else patch[0])
            self.hidden_size = int(cfg.hidden_size)
            self.num_prefix_tokens = 1 + int(getattr(cfg, "num_register_tokens", 0))
        elif isinstance(backbone, SmallViT):
            self.patch_size = backbone.patch_size
            self.hidden_size = backbone.hidden_size
            self.num_prefix_tokens = 0
        else:
            raise InputError(
                f"semantic backbone must be a SmallViT or transformers DINOv3ViTModel, got {type(backbone).__name__}"
            )

    def train(self, mode: bool = True) -> "SemanticEncoder":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # frozen backbones never switch on dropout / drop-path
        return self

    def _backbone_dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Args:
            images: ``(M, 3, H, W)`` RGB in [0, 1].

        Returns:
            ``(tokens (M, h*w, D) float32, (h, w))`` with ``h = H // patch``, ``w = W // patch``
            (the image is resized to ``(h*patch, w*patch)`` when H or W is not a multiple).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"images must have shape (M, 3, H, W), got {tuple(images.shape)}")
        M, _, H, W = images.shape
        p = self.patch_size
        h, w = max(1, H // p), max(1, W // p)
        x = normalize_images(images)
        if (h * p, w * p) != (H, W):
            x = F.interpolate(x, size=(h * p, w * p), mode="bilinear", align_corners=False)
        x = x.to(self._backbone_dtype())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            if self.is_hf:
                hidden = self.backbone(pixel_values=x).last_hidden_state
                tokens = hidden[:, self.num_prefix_tokens:]
            else:
                tokens = self.backbone(x)
        if tokens.shape[1] != h * w:
            raise InputError(f"backbone gave {tokens.shape[1]} patch tokens, expected {h}x{w}={h * w}")
        return tokens.float(), (h, w)


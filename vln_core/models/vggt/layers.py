"""Transformer pieces of the VGGT geometry network, laid out so that the official VGGT-1B
checkpoint's parameter names load unchanged.

Names that must not change (they are checkpoint keys): ``norm1``, ``attn.qkv``, ``attn.q_norm``,
``attn.k_norm``, ``attn.proj``, ``ls1.gamma``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``, ``ls2.gamma``;
the DINOv2 patch embedding's ``cls_token``, ``pos_embed``, ``register_tokens``, ``mask_token``,
``patch_embed.proj``, ``blocks.<i>``, ``norm``.

Shapes: ``B`` batch (frames for frame attention, clips for global attention), ``T`` tokens,
``D`` width, ``h`` heads, ``d = D / h``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RoPE2D", "LayerScale", "Mlp", "SelfAttention", "ViTBlock", "DinoPatchEmbed", "patch_positions", "check_grid"]


class RoPE2D(nn.Module):
    """2D rotary position embedding: the first half of each head's channels rotates with the
    token's row, the second half with its column (rotate-half form, base ``frequency``).

    Holds no parameters; cos/sin tables are cached per (channels, length, device, dtype).
    """

    def __init__(self, frequency: float = 100.0) -> None:
        super().__init__()
        self.frequency = float(frequency)
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _table(self, dim: int, length: int, device: torch.device, dtype: torch.dtype
               ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dim, length, device, dtype)
        if key not in self._tables:
            inv_freq = self.frequency ** -(torch.arange(0, dim, 2, device=device).float() / dim)  # (dim/2,)
            angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq[None]
            angles = torch.cat([angles, angles], dim=-1).to(dtype)  # (length, dim)
            self._tables[key] = (angles.cos(), angles.sin())
        return self._tables[key]

    @staticmethod
    def _rotate(x: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x ``(B, h, T, c)``, pos ``(B, T)`` long -> rotated ``(B, h, T, c)``."""
        c, s = cos[pos][:, None], sin[pos][:, None]  # (B, 1, T, c)
        x1, x2 = x.chunk(2, dim=-1)
        return x * c + torch.cat([-x2, x1], dim=-1) * s

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Args:
            x: ``(B, h, T, d)`` queries or keys, ``d`` divisible by 4.
            pos: ``(B, T, 2)`` long ``(row, col)`` per token.

        Returns:
            ``(B, h, T, d)``.
        """
        half = x.shape[-1] // 2
        cos, sin = self._table(half, int(pos.max()) + 1, x.device, x.dtype)
        rows, cols = x.chunk(2, dim=-1)
        return torch.cat([self._rotate(rows, pos[..., 0], cos, sin), self._rotate(cols, pos[..., 1], cos, sin)], dim=-1)


def patch_positions(batch: int, grid: tuple[int, int], num_prefix: int, device: torch.device) -> torch.Tensor:
    """RoPE positions of ``[prefix tokens..., patch tokens (row-major)]``.

    Patches get ``(row + 1, col + 1)``; camera/register prefix tokens get ``(0, 0)``.

    Returns:
        ``(batch, num_prefix + h*w, 2)`` long.
    """
    h, w = grid
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    pos = torch.stack([rows, cols], dim=-1) + 1  # (h*w, 2)
    pos = torch.cat([torch.zeros(num_prefix, 2, dtype=pos.dtype, device=device), pos], dim=0)
    return pos[None].expand(batch, -1, -1)


class LayerScale(nn.Module):
    """Per-channel residual scale ``x * gamma``."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))``."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out or dim_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention with optional per-head LayerNorm on q and k (QK norm) and 2D RoPE.

    Args:
        dim: token width ``D``.
        num_heads: ``h``.
        qk_norm: LayerNorm (eps 1e-5) over each head's ``d`` channels of q and k.
        rope: shared :class:`RoPE2D` or None.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, rope: RoPE2D | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """x ``(B, T, D)``, pos ``(B, T, 2)`` (needed with RoPE) -> ``(B, T, D)``."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, d)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class ViTBlock(nn.Module):
    """Pre-norm block with layer scale: ``x + ls1(attn(norm1 x)); x + ls2(mlp(norm2 x))``.

    Args:
        dim, num_heads: width and heads.
        mlp_ratio: MLP hidden width / ``dim``.
        layer_scale: initial ``gamma`` (the checkpoint overwrites it).
        norm_eps: LayerNorm epsilon (1e-5 in VGGT's own blocks, 1e-6 in the DINOv2 patch embed).
        qk_norm, rope: see :class:`SelfAttention`.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, layer_scale: float = 0.01,
                 norm_eps: float = 1e-5, qk_norm: bool = False, rope: RoPE2D | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SelfAttention(dim, num_heads, qk_norm, rope)
        self.ls1 = LayerScale(dim, layer_scale)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, D)`` -> ``(B, T, D)``."""
        x = x + self.ls1(self.attn(self.norm1(x), pos))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _Patchify(nn.Module):
    """``(B, 3, H, W)`` -> ``(B, (H/p)*(W/p), D)`` by a stride-``p`` convolution (key ``proj``)."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoPatchEmbed(nn.Module):
    """DINOv2 ViT with register tokens used as VGGT's patch embedding (ViT-L/14-reg in VGGT-1B).

    ``[cls, registers, patches] + learned position embedding`` (laid out for a square
    ``img_size``; other grids interpolate it bicubically with antialiasing), ``depth`` blocks
    (layer scale, no QK norm, no RoPE), final LayerNorm. Returns the normalised patch tokens only.

    Args:
        img_size: side of the square image the position embedding was trained for (518).
        patch_size: ``p`` (14).
        dim, depth, num_heads: ViT size (1024, 24, 16 for ViT-L).
        num_register_tokens: registers (4).
    """

    def __init__(self, img_size: int, patch_size: int, dim: int, depth: int, num_heads: int,
                 num_register_tokens: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.base_grid = img_size // patch_size
        self.num_register_tokens = num_register_tokens
        self.patch_embed = _Patchify(patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.base_grid ** 2 + 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim), requires_grad=False)  # in the checkpoint, unused
        self.blocks = nn.ModuleList(ViTBlock(dim, num_heads, mlp_ratio, layer_scale=1.0, norm_eps=1e-6)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _position_embedding(self, grid: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """``(1, 1 + h*w, D)``: the cls embedding and the patch embeddings resized to ``grid``."""
        if grid == (self.base_grid, self.base_grid):
            return self.pos_embed
        pos = self.pos_embed.float()
        n, D = self.base_grid, pos.shape[-1]
        patches = F.interpolate(pos[:, 1:].reshape(1, n, n, D).permute(0, 3, 1, 2), size=grid, mode="bicubic",
                                antialias=True)
        patches = patches.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], D)
        return torch.cat([pos[:, :1], patches], dim=1).to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args:
            images: ``(B, 3, H, W)`` normalised, ``H`` and ``W`` multiples of ``p``.

        Returns:
            ``(B, h*w, D)`` patch tokens after the final norm.
        """
        B, _, H, W = images.shape
        grid = (H // self.patch_size, W // self.patch_size)
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1) + self._position_embedding(grid, x.dtype)
        x = torch.cat([x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens:]


def check_grid(H: int, W: int, patch_size: int) -> None:
    if H % patch_size or W % patch_size:
        raise ValueError(f"image size {H}x{W} must be a multiple of the patch size {patch_size}")


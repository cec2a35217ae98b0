"""Goal grounding: which pixels of the current view show the object the instruction names.

The shipped goal head (:class:`vln_core.models.reprojection_model.GoalHead`, kind ``film``) reads
the instruction as a bag of words: "walk past the green plant and go to the counter" and "walk
past the counter and go to the green plant" are the same vector to it, and its softmax map only
says where in the view the goal would be *if* it were there. On simulated navigation states its
peak falls on the goal in 11 % of the views that show it, as often as the goal's share of the
image (``training/train_goal.py`` measures this).

The ``mask`` kind (``model.arch_overrides.goal_head: mask``) fixes both:

* :class:`GoalPhraseEncoder` reads the instruction in order (token + position embeddings, two
  masked self-attention blocks) and pools it with a learned query into one goal vector, so the
  words after "go to the" can count and the landmarks passed on the way do not;
* :class:`GoalMaskHead` scores every 1/8 cell of the current view (through its own copy of the
  encoder's deeper stages) with a per-pixel probability
  that it shows the goal (sigmoid, trained on the goal object's pixels, zero where it is not in
  view): the navigation memory (:mod:`vln_core.nav`) adds these up in the world, and the map's
  maximum says whether the goal is in view at all.

Shapes: instruction ``ids (B, L)`` long, ``mask (B, L)`` bool (True on tokens); features ``f8
(B, C8, H/8, W/8)``; logits ``(B, H/8, W/8)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GOAL_HEADS", "GOAL_ACTIVATION", "GoalPhraseEncoder", "GoalMaskHead", "goal_heatmap_from_logits"]

#: ``film``: the shipped head (softmax over the view, Gaussian target at the goal's projection);
#: ``mask``: :class:`GoalMaskHead` with :class:`GoalPhraseEncoder` (per-pixel sigmoid).
GOAL_HEADS = ("film", "mask")
#: How each kind's logits become the published goal heatmap.
GOAL_ACTIVATION = {"film": "softmax", "mask": "sigmoid"}
#: Instructions longer than this many tokens are cut (the position table's size).
MAX_TOKENS = 64


def goal_heatmap_from_logits(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Goal heatmap ``(H, W)`` from logits ``(H, W)``: ``softmax`` over the view (sums to 1) or
    ``sigmoid`` per pixel (the probability that the pixel shows the goal)."""
    logits = logits.float()
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    if activation == "softmax":
        return torch.softmax(logits.flatten(), 0).reshape(logits.shape)
    raise ValueError(f"goal activation must be softmax or sigmoid, got {activation!r}")


class _AttentionBlock(nn.Module):
    """Pre-norm multi-head self-attention over the tokens (padding masked out) + MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) / (D // self.heads) ** 0.5  # (B, heads, L, L)
        att = att.masked_fill(~keep[:, None, None, :], -1e4).softmax(dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, L, D))
        return x + self.mlp(self.norm2(x))


class GoalPhraseEncoder(nn.Module):
    """Instruction ``ids (B, L)``, ``mask (B, L)`` -> goal vector ``(B, out_dim)``: which object,
    of which colour, in which room the instruction ends at (see the module doc)."""

    def __init__(self, vocab_size: int, dim: int = 64, out_dim: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Parameter(torch.zeros(MAX_TOKENS, dim))
        nn.init.normal_(self.positions, std=0.02)
        self.blocks = nn.ModuleList(_AttentionBlock(dim, heads) for _ in range(layers))
        self.query = nn.Parameter(torch.zeros(dim))
        self.score = nn.Linear(dim, dim)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids, keep = ids[:, :MAX_TOKENS], mask[:, :MAX_TOKENS].bool()
        x = self.tokens(ids) + self.positions[: ids.shape[1]][None]
        for block in self.blocks:
            x = block(x, keep)
        weights = (self.score(x) @ self.query).masked_fill(~keep, -1e4).softmax(dim=-1)  # (B, L)
        return self.out((weights[..., None] * x).sum(dim=1))


class GoalMaskHead(nn.Module):
    """Per-cell goal logits ``(B, H/8, W/8)`` from the current view's 1/8 features, modulated
    (FiLM) by the goal vector, then matched against it (a dot product per cell).

    The 1/8 features are shallow (a patch stem and one residual stage: colour and texture, about
    20 pixels around a cell). What object a cell belongs to (a bookshelf or a desk of the same
    grey) needs deeper features, and the encoder's own 1/16 and 1/32 features were trained for
    depth, not for naming objects. So the head has its own copy of the encoder's deeper stages
    (``stages``: 1/8 -> 1/16 -> 1/32, started from the encoder's weights by :meth:`start_from`
    and trained with the head); their outputs enter per cell (upsampled) and the 1/32 one also
    as the view's mean, before the body's dilated convolution (about 90 pixels around a cell).

    Args:
        c8: channels of the encoder's 1/8 features.
        goal_dim: the goal vector's size.
        stages: two modules, ``(B, c8, H/8, W/8) -> (B, c16, H/16, W/16) -> (B, c32, H/32,
            W/32)``, shaped like the encoder's ``down16`` and ``down32``.
        c16, c32: their output channels.
    """

    def __init__(self, c8: int, goal_dim: int, stages: nn.ModuleList, c16: int, c32: int, hidden: int = 64) -> None:
        super().__init__()
        self.stages = stages
        self.inp = nn.Sequential(nn.Conv2d(c8, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True))
        self.context = nn.Linear(c32, hidden)
        self.context_map = nn.Conv2d(c32, hidden, 1)
        self.context_map16 = nn.Conv2d(c16, hidden, 1)
        self.film = nn.Linear(goal_dim, 2 * hidden)
        self.body = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=3, dilation=3, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True))
        self.key = nn.Linear(goal_dim, hidden)
        self.bias = nn.Conv2d(hidden, 1, 1)
        nn.init.constant_(self.bias.bias, -4.0)  # most cells are not the goal

    def start_from(self, down16: nn.Module, down32: nn.Module) -> None:
        """Copy the encoder's deeper stages into :attr:`stages` (a new head's starting point)."""
        self.stages[0].load_state_dict(down16.state_dict())
        self.stages[1].load_state_dict(down32.state_dict())

    def forward(self, f8: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        f16 = self.stages[0](f8)
        f32 = self.stages[1](f16)
        size = f8.shape[-2:]
        gamma, beta = self.film(goal).chunk(2, dim=-1)
        local = (F.interpolate(self.context_map(f32), size=size, mode="bilinear", align_corners=False)
                 + F.interpolate(self.context_map16(f16), size=size, mode="bilinear", align_corners=False))
        x = self.inp(f8) + local + self.context(f32.mean(dim=(2, 3)))[:, :, None, None]
        x = self.body(F.relu(x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]))
        match = (x * self.key(goal)[:, :, None, None]).sum(dim=1) / x.shape[1] ** 0.5
        return match + self.bias(x)[:, 0]

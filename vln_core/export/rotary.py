"""Rotary position tables as constants, for export at one fixed input size.

Two rotary embeddings compute their tables at run time:

* transformers' ``DINOv3ViTRopePositionEmbedding`` (DINOv3) builds its patch-centre coordinates
  from the image's height and width on every call, with random shift / jitter / rescale
  augmentation in training mode;
* our VGGT's :class:`~vln_core.models.vggt.layers.RoPE2D` sizes its cos/sin tables from
  ``int(pos.max()) + 1``, a data-dependent length (and caches them in a Python dict keyed by
  device and dtype).

An exported graph that recomputes these from the input's shape or values carries shape- and
data-dependent nodes (``Shape``/``Range``/``Cos``/``Sin`` chains, ``If`` nodes with some
exporters) that TensorRT handles badly, in fp16 especially. :func:`freeze_rotary_tables` replaces
them, in place, by modules whose tables are registered buffers precomputed for one input size::

    model = freeze_rotary_tables(model.eval(), (518, 518))  # then torch.onnx.export(model, ...)

* a DINOv3 rope module becomes :class:`FrozenDinoV3Rope`: its ``(cos, sin)`` outputs, computed
  once by the original module in eval mode for that size (so they are equal by construction);
* a :class:`RoPE2D` becomes :class:`FixedRoPE2D`: cos/sin tables covering every position of the
  patch grid of that size (``max(h, w) + 1`` rows, positions as :func:`patch_positions` gives them),
  gathered by position; no ``pos.max()``.

Eval-mode outputs are unchanged (bit-equal in float32; in lower precision too, see
:class:`FixedRoPE2D`). Buffers are non-persistent, so ``state_dict()`` keys and values are the
same before and after: checkpoints load either way. The frozen modules are for inference and
export only: they do not apply DINOv3's training-time coordinate augmentation, and they refuse
inputs of another size (:class:`~vln_core.errors.InputError`).

``image_size`` is the ``(H, W)`` the rope-bearing network itself sees. A model whose networks
see different sizes (the ``full`` model resizes 518x518 frames to 512x512 for DINOv3's patch 16)
is frozen one network at a time: ``freeze_rotary_tables(model.semantic.backbone, (512, 512))``.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from vln_core.errors import InputError
from vln_core.models.vggt.layers import RoPE2D

__all__ = ["freeze_rotary_tables", "FrozenDinoV3Rope", "FixedRoPE2D", "rope_modules"]


def _dinov3_rope_class() -> type | None:
    try:
        from transformers.models.dinov3_vit.modeling_dinov3_vit import DINOv3ViTRopePositionEmbedding
    except ImportError:  # transformers absent or too old: there is no DINOv3 rope to freeze
        return None
    return DINOv3ViTRopePositionEmbedding


def _pair(value: int | Iterable[int], what: str) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, Iterable) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise InputError(f"{what} must be a positive int or a pair (H, W) of positive ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _grid(image_size: tuple[int, int], patch: tuple[int, int], where: str) -> tuple[int, int]:
    (H, W), (ph, pw) = image_size, patch
    if H % ph or W % pw:
        raise InputError(
            f"image size {H}x{W} does not fit the patch size {ph}x{pw} of {where}: both sides must be multiples "
            f"of the patch size (e.g. {max(1, round(H / ph)) * ph}x{max(1, round(W / pw)) * pw})"
        )
    return H // ph, W // pw


def _exporting() -> bool:
    """True while tracing, exporting or compiling: input checks that read shapes stay out of the graph."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def _reference_tensor(module: nn.Module) -> torch.Tensor | None:
    """A parameter (else a buffer) of ``module``: where its tables should live."""
    for tensor in module.parameters():
        return tensor
    for tensor in module.buffers():
        return tensor
    return None


class FrozenDinoV3Rope(nn.Module):
    """DINOv3's rope module for one image size: returns precomputed ``(cos, sin)``.

    Args:
        cos, sin: ``(h*w, head_dim)`` float32, what the original returns (in eval mode) for the size.
        image_size: ``(H, W)`` the tables were computed for.
        patch_size: ``(ph, pw)``.

    ``forward(pixel_values)`` takes ``(B, 3, H, W)`` (only its shape and dtype are used) and
    returns ``(cos, sin)`` cast to ``pixel_values.dtype``, as the original does.
    """

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor, image_size: tuple[int, int],
                 patch_size: tuple[int, int]) -> None:
        super().__init__()
        self.image_size = tuple(image_size)
        self.patch_size = tuple(patch_size)
        self.grid = _grid(self.image_size, self.patch_size, "the DINOv3 rope")
        self.register_buffer("cos", cos.detach().float().clone(), persistent=False)
        self.register_buffer("sin", sin.detach().float().clone(), persistent=False)

    @classmethod
    def from_module(cls, rope: nn.Module, image_size: tuple[int, int]) -> "FrozenDinoV3Rope":
        """Tables from ``rope`` (a ``DINOv3ViTRopePositionEmbedding``) run in eval mode at ``image_size``."""
        patch = _pair(rope.config.patch_size, "DINOv3 patch_size")
        _grid(image_size, patch, "the DINOv3 rope")
        ref = _reference_tensor(rope)
        device = ref.device if ref is not None else torch.device("cpu")
        was_training = rope.training
        rope.eval()
        try:
            with torch.no_grad():
                cos, sin = rope(torch.zeros(1, 3, *image_size, device=device, dtype=torch.float32))
        finally:
            rope.train(was_training)
        return cls(cos, sin, image_size, patch)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not _exporting():
            grid = (pixel_values.shape[-2] // self.patch_size[0], pixel_values.shape[-1] // self.patch_size[1])
            if grid != self.grid:
                raise InputError(
                    f"rotary tables were frozen for {self.image_size[0]}x{self.image_size[1]} images "
                    f"(grid {self.grid[0]}x{self.grid[1]}), got {tuple(pixel_values.shape[-2:])}"
                )
        dtype = pixel_values.dtype
        return self.cos.to(dtype), self.sin.to(dtype)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, patch_size={self.patch_size}, tables={tuple(self.cos.shape)}"


class FixedRoPE2D(nn.Module):
    """:class:`RoPE2D` with its tables precomputed for one patch grid (drop-in: same
    ``forward(x, pos)``, same result).

    Positions are :func:`~vln_core.models.vggt.layers.patch_positions`' ``(row + 1, col + 1)`` for
    patches and ``(0, 0)`` for prefix tokens, so a ``h x w`` grid needs table rows
    ``0 .. max(h, w)``. ``pos`` is gathered from the tables; positions beyond the grid fail the
    gather (IndexError on the CPU).

    Float32 uses the precomputed ``cos`` / ``sin`` buffers. Other dtypes take cos/sin of the
    angle table cast to that dtype, which is what :class:`RoPE2D` computes (it rounds the angles
    first), so bf16/fp16 results stay equal to the original too.

    Args:
        frequency: the rope base (RoPE2D's ``frequency``).
        head_dim: channels per head ``d`` of the attention using it (each axis rotates ``d / 2``).
        grid: ``(h, w)`` patch grid.
        device: where the tables live.
    """

    def __init__(self, frequency: float, head_dim: int, grid: tuple[int, int],
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if head_dim % 4:
            raise InputError(f"RoPE2D needs a head dim divisible by 4, got {head_dim}")
        self.frequency = float(frequency)
        self.head_dim = int(head_dim)
        self.grid = tuple(grid)
        self.length = max(self.grid) + 1
        dim = self.head_dim // 2  # channels per axis (RoPE2D's `half`)
        # the same float32 arithmetic as RoPE2D._table
        inv_freq = self.frequency ** -(torch.arange(0, dim, 2, device=device).float() / dim)
        angles = torch.arange(self.length, device=device, dtype=torch.float32)[:, None] * inv_freq[None]
        angles = torch.cat([angles, angles], dim=-1)  # (length, dim)
        self.register_buffer("angles", angles, persistent=False)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def _tables(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if dtype == torch.float32 and self.cos.dtype == torch.float32:
            return self.cos, self.sin
        angles = self.angles.to(dtype)
        return angles.cos(), angles.sin()

    @staticmethod
    def _rotate(x: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, half: int) -> torch.Tensor:
        """:meth:`RoPE2D._rotate` with the split point ``half`` a constant (``chunk`` reads the
        width from the traced shape and exports ``Shape`` nodes)."""
        c, s = cos[pos][:, None], sin[pos][:, None]  # (B, 1, T, c)
        return x * c + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * s

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x ``(B, h, T, d)`` queries or keys, pos ``(B, T, 2)`` long -> ``(B, h, T, d)``."""
        if not _exporting() and x.shape[-1] != self.head_dim:
            raise InputError(f"rotary tables were frozen for head dim {self.head_dim}, got {x.shape[-1]}")
        cos, sin = self._tables(x.dtype)
        d2, d4 = self.head_dim // 2, self.head_dim // 4
        return torch.cat([self._rotate(x[..., :d2], pos[..., 0], cos, sin, d4),
                          self._rotate(x[..., d2:], pos[..., 1], cos, sin, d4)], dim=-1)

    def extra_repr(self) -> str:
        return f"frequency={self.frequency}, head_dim={self.head_dim}, grid={self.grid}"


def rope_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every run-time rope module (DINOv3 rope, :class:`RoPE2D`)
    in ``module``, shared ones listed once (under their first name)."""
    dino = _dinov3_rope_class()
    kinds = (RoPE2D,) + ((dino,) if dino is not None else ())
    return [(name, m) for name, m in module.named_modules() if isinstance(m, kinds)]


def _owner_patch_size(owners: list[nn.Module]) -> tuple[int, int] | None:
    """The patch size of the nearest owner (innermost first) with an int ``patch_size`` attribute."""
    for owner in reversed(owners):
        patch = getattr(owner, "patch_size", None)
        if isinstance(patch, int) and not isinstance(patch, bool):
            return patch, patch
    return None


def _rope2d_users(module: nn.Module, rope: RoPE2D) -> set[int]:
    """Head dims of the attention modules (``.rope is rope`` and ``.num_heads``) that use ``rope``."""
    dims = set()
    for m in module.modules():
        if getattr(m, "rope", None) is rope and isinstance(getattr(m, "num_heads", None), int):
            qkv = getattr(m, "qkv", None)
            if isinstance(qkv, nn.Linear):
                dims.add(qkv.out_features // 3 // m.num_heads)
    return dims


def freeze_rotary_tables(module: nn.Module, image_size: int | tuple[int, int]) -> nn.Module:
    """Replace, in place, every run-time rope module in ``module`` by a constant-table one for
    input images of ``image_size`` (see the module docstring).

    * DINOv3 rope (``DINOv3ViTRopePositionEmbedding``) -> :class:`FrozenDinoV3Rope`, tables taken
      from the original in eval mode; its patch size comes from its config.
    * :class:`RoPE2D` -> :class:`FixedRoPE2D` for the patch grid of ``image_size``; the patch size
      comes from the nearest enclosing module with an int ``patch_size`` (VGGT's aggregator), the
      head dim from the attention modules that use it. A RoPE2D shared by many blocks is replaced
      by one shared FixedRoPE2D.

    Modules without rope are returned unchanged; calling it again on a frozen model does nothing.

    Args:
        module: a model (or a rope module itself: then its replacement is returned).
        image_size: ``(H, W)`` (or one int for a square) the rope-bearing network sees.

    Returns:
        ``module`` (modified in place), or the replacement when ``module`` is itself a rope module.

    Raises:
        InputError: ``image_size`` is not a positive pair, not a multiple of a rope network's
            patch size, or a RoPE2D's patch size / head dim cannot be found.
    """
    size = _pair(image_size, "image_size")
    dino = _dinov3_rope_class()
    replacements: dict[int, nn.Module] = {}

    def replacement(rope: nn.Module, owners: list[nn.Module]) -> nn.Module:
        if id(rope) in replacements:
            return replacements[id(rope)]
        if isinstance(rope, RoPE2D):
            patch = _owner_patch_size(owners)
            if patch is None:
                raise InputError("RoPE2D is not inside a module with an int patch_size (VGGT's aggregator); "
                                 "freeze the enclosing network instead")
            dims = _rope2d_users(owners[0] if owners else rope, rope)
            if len(dims) != 1:
                raise InputError(f"RoPE2D: cannot tell its head dim (attention modules using it have {sorted(dims)})")
            ref = _reference_tensor(owners[-1]) if owners else None
            new: nn.Module = FixedRoPE2D(rope.frequency, dims.pop(), _grid(size, patch, "the VGGT aggregator"),
                                         device=ref.device if ref is not None else None)
        else:
            new = FrozenDinoV3Rope.from_module(rope, size)
        new.train(rope.training)
        replacements[id(rope)] = new
        return new

    def is_rope(m: nn.Module) -> bool:
        return isinstance(m, RoPE2D) or (dino is not None and isinstance(m, dino))

    if is_rope(module):
        return replacement(module, [])

    def visit(parent: nn.Module, owners: list[nn.Module]) -> None:
        for name, child in list(parent.named_children()):
            if is_rope(child):
                setattr(parent, name, replacement(child, owners + [parent]))
            else:
                visit(child, owners + [parent])

    visit(module, [])
    return module

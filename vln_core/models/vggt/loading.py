"""Reading a VGGT checkpoint and matching it strictly against our network.

The published ``facebook/VGGT-1B`` ships ``model.safetensors`` (and ``model.pt``) with the
aggregator, camera, depth, point and track heads. We build no track head, so ``track_head.*``
keys are dropped explicitly (and reported); any other missing, unexpected or mis-shaped key is
an error that names the keys.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from vln_core.config import ConfigError

__all__ = ["VGGTCheckpointError", "DROPPED_PREFIXES", "resolve_checkpoint", "read_state_dict", "match_state_dict"]

log = logging.getLogger(__name__)

#: Checkpoint parts we do not build and drop on purpose (nothing else is ever dropped).
DROPPED_PREFIXES = ("track_head.",)
#: File names looked for, in this order, when the path is a directory.
CHECKPOINT_NAMES = ("model.safetensors", "model.pt", "model.pth", "pytorch_model.bin")


class VGGTCheckpointError(ConfigError):
    """The VGGT checkpoint path is missing or its contents do not fit the network."""


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file for ``path`` (a file, or a directory holding one of ``CHECKPOINT_NAMES``).

    Raises:
        VGGTCheckpointError: nothing there, or a directory without a checkpoint file.
    """
    if not str(path):
        raise VGGTCheckpointError("no VGGT checkpoint given: set model.vggt_path (or --model-path) to the directory "
                                  "of facebook/VGGT-1B (model.safetensors) or to the file itself")
    p = Path(path).expanduser()
    if not p.exists():
        raise VGGTCheckpointError(f"VGGT checkpoint {str(path)!r}: no such file or directory (expected the directory "
                                  "of facebook/VGGT-1B with model.safetensors, or the .safetensors/.pt file)")
    if p.is_file():
        return p
    for name in CHECKPOINT_NAMES:
        if (p / name).is_file():
            return p / name
    candidates = sorted(x for x in p.iterdir() if x.suffix in (".safetensors", ".pt", ".pth"))
    if len(candidates) == 1:
        return candidates[0]
    raise VGGTCheckpointError(f"VGGT checkpoint directory {str(p)!r} holds none of {list(CHECKPOINT_NAMES)}"
                              + (f" and several candidates {[c.name for c in candidates]}: pass the file" if candidates
                                 else f"; it contains {sorted(x.name for x in p.iterdir())[:10]}"))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` or ``torch.save`` checkpoint, on the CPU.

    A ``.pt`` holding ``{"model": state_dict}`` or ``{"state_dict": ...}`` is unwrapped.
    """
    file = resolve_checkpoint(path)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file), device="cpu")
        else:
            state = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / truncated / not a checkpoint
        raise VGGTCheckpointError(f"VGGT checkpoint {str(file)!r} could not be read: {exc}") from exc
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict) and len(state) <= 3:
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VGGTCheckpointError(f"VGGT checkpoint {str(file)!r} is not a state dict of tensors")
    return state


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def match_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint",
                     drop_prefixes: tuple[str, ...] = DROPPED_PREFIXES) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Check ``state`` against ``model``'s parameter names and shapes (works on a meta-device model).

    Args:
        model: the network to load into.
        state: checkpoint tensors.
        source: the checkpoint's name for messages.
        drop_prefixes: key prefixes removed before matching (``track_head.`` by default).

    Returns:
        ``(state without the dropped keys, dropped keys)``.

    Raises:
        VGGTCheckpointError: naming the missing keys, the unexpected keys and the shape mismatches.
    """
    dropped = sorted(k for k in state if k.startswith(drop_prefixes))
    kept = {k: v for k, v in state.items() if not k.startswith(drop_prefixes)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(kept))
    unexpected = sorted(set(kept) - set(expected))
    shapes = sorted(f"{k} {tuple(kept[k].shape)} vs network {tuple(expected[k].shape)}"
                    for k in set(kept) & set(expected) if tuple(kept[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {_listing(shapes, 6)}")
        cfg = getattr(model, "cfg", None)
        raise VGGTCheckpointError(
            f"VGGT {source} does not match the network"
            + (f" (embed_dim={cfg.embed_dim}, depth={cfg.depth}, point_head={cfg.point_head})" if cfg else "")
            + ": " + "; ".join(parts)
            + f". Only keys under {list(drop_prefixes)} are dropped on purpose; is this the VGGT-1B checkpoint?")
    if dropped:
        log.info("VGGT %s: dropped %d keys under %s (not built)", source, len(dropped), list(drop_prefixes))
    return kept, dropped

"""The trained model that ships in the repository, and loading any model checkpoint.

``models/embedded/checkpoint.pt`` holds ``{"model": state_dict, "config": config tree, "meta":
{...}}`` (no optimiser state; see ``models/embedded/MODEL_CARD.md``). Training checkpoints
(``runs/.../best.pt``) have the same ``model`` and ``config`` entries plus the optimiser and
RNG state, so :func:`load_model_checkpoint` reads both. Nothing is downloaded.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Optional

import torch

from vln_core.atomic import atomic_open
from vln_core.config import VLNConfig
from vln_core.errors import InputError
from vln_core.train.checkpoint import load_checkpoint

__all__ = ["SHIPPED_CHECKPOINT", "load_model_checkpoint", "write_shipped_checkpoint", "embedded_with_new_head"]

#: The embedded model trained by ``configs/train_embedded.yaml`` (see its model card).
SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "embedded" / "checkpoint.pt"


def load_model_checkpoint(path: str | os.PathLike | None = None, cfg: Optional[VLNConfig] = None,
                          device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the model a checkpoint was trained as and load its weights (eval mode).

    Args:
        path: checkpoint file; None -> :data:`SHIPPED_CHECKPOINT`.
        cfg: the run's config; its ``video`` sizes (N_m, N_k, frame size) and ``heatmap`` settings
            are used. ``model.name`` comes from the checkpoint (a checkpoint of one configuration
            cannot load into another). None -> the checkpoint's own config.
        device: where the model goes.

    Returns:
        ``(model, meta)``; ``meta`` is the checkpoint's ``meta`` dict (empty for training checkpoints).

    Raises:
        InputError: missing/unreadable file, or weights that do not fit (names the file).
    """
    from vln_core.models.registry import build_model

    path = Path(path) if path is not None else SHIPPED_CHECKPOINT
    if not path.is_file():
        hint = " (the shipped model: see models/embedded/MODEL_CARD.md to reproduce it)" if path == SHIPPED_CHECKPOINT else ""
        raise InputError(f"checkpoint {path} does not exist{hint}")
    state = load_checkpoint(path)
    if cfg is None:
        from vln_core.config import config_from_dict  # noqa: PLC0415

        if "config" not in state:
            raise InputError(f"checkpoint {path} records no config; pass the config it was trained with")
        cfg = config_from_dict(state["config"])
    cfg = copy.deepcopy(cfg)
    saved_model = (state.get("config") or {}).get("model", {})
    if saved_model.get("name"):
        cfg.model.name = saved_model["name"]
    if "arch_overrides" in saved_model:  # the sizes the weights were trained at
        cfg.model.arch_overrides = dict(saved_model["arch_overrides"] or {})
    cfg.model.checkpoint = ""
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as exc:
        raise InputError(f"checkpoint {path} does not fit model '{cfg.model.name}' at video.frame_size "
                         f"{tuple(cfg.video.frame_size)}: {str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    return model, dict(state.get("meta") or {})


def write_shipped_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Copy a training checkpoint's weights and config (float32, no optimiser) atomically to ``dst``."""
    state = load_checkpoint(src)
    weights = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
               for k, v in state["model"].items()}
    config = state.get("config")
    if config is None:
        raise InputError(f"checkpoint {src} records no config")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(dst, "wb") as fh:
        torch.save({"model": weights, "config": config, "meta": dict(meta)}, fh)
    return dst



def embedded_with_new_head(init_path: str | os.PathLike | None, field: str, kind: str,
                           prefixes: tuple[str, ...]) -> tuple[Any, Any, dict[str, Any]]:
    """The embedded checkpoint ``init_path`` (None: the shipped one) rebuilt with the head
    ``arch_overrides[field] = kind`` (e.g. ``goal_head: mask``): every weight but those under
    ``prefixes`` is the checkpoint's, the new head starts fresh, unless the checkpoint already
    has that kind (an earlier run of the same trainer: its head is kept and trained on).

    Returns ``(model, init, meta)``: both models in eval mode, and the meta a checkpoint of the
    new model carries over from ``init_path`` (``train_median_depth_m``, the constant-depth
    baseline's value, which evaluation needs, and the init's own meta as ``base``);
    InputError / ConfigError with one line when the file is no embedded checkpoint or lacks weights.
    """
    from vln_core.models.registry import build_model

    init, init_meta = load_model_checkpoint(init_path)
    if getattr(init, "kind", "") != "reprojection":
        raise InputError(f"{init_path} is not an embedded checkpoint")
    init.eval()
    cfg = copy.deepcopy(init.cfg)
    cfg.model.arch_overrides = {**cfg.model.arch_overrides, field: kind}
    model = build_model(cfg)
    own = model.state_dict()
    continuing = getattr(init.arch, field) == kind
    kept = {k: v for k, v in init.state_dict().items() if continuing or not k.startswith(prefixes)}
    missing = [k for k in own if k not in kept and not k.startswith(prefixes)]
    if missing:
        raise InputError(f"{init_path} lacks {missing[:3]}")
    model.load_state_dict({**own, **kept})
    head = getattr(model, field, None)
    if not continuing and hasattr(head, "start_from"):  # a head with its own copy of encoder stages
        head.start_from(model.encoder.down16, model.encoder.down32)
    model.eval()
    meta = {"base": init_meta}
    if init_meta.get("train_median_depth_m"):
        meta["train_median_depth_m"] = init_meta["train_median_depth_m"]
    return model, init, meta

"""Checkpoints that survive crashes, and the RNG state that makes resumed runs exact.

:func:`save_checkpoint` writes to a temporary file in the target folder, flushes and fsyncs it
and only then renames it over the target (``os.replace`` is atomic on POSIX), so a crash or an
exception while saving leaves the previous checkpoint intact and no partial file behind.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from vln_core.atomic import atomic_open
from vln_core.errors import InputError

__all__ = ["save_checkpoint", "load_checkpoint", "capture_rng_state", "restore_rng_state", "load_model_weights"]


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` (anything ``torch.save`` takes) to ``path`` atomically.

    Returns:
        The path written.
    """
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        torch.save(dict(state), fh)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        InputError: the file is missing, unreadable, fails the archive's CRC check or holds
            non-finite model weights (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    _check_archive(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"checkpoint {path} is not a readable torch checkpoint: {first}") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise InputError(f"checkpoint {path} has no 'model' entry; not a vln_heatmap training checkpoint")
    _check_finite(path, state["model"])
    return state


def _check_archive(path: Path) -> None:
    """torch.save writes a zip archive whose members carry CRC-32s that ``torch.load`` never
    checks: bytes damaged in the middle of a tensor load as wrong weights without a word. Test
    every member's CRC (a legacy non-zip file is left to ``torch.load``)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise InputError(f"checkpoint {path} is damaged (not a readable archive: {exc})") from None
    except Exception as exc:  # zlib.error and the like from a damaged member header
        raise InputError(f"checkpoint {path} is damaged ({type(exc).__name__}: {exc})") from None
    if bad is not None:
        raise InputError(f"checkpoint {path} is damaged: member {bad!r} fails its CRC check (bytes changed on disk)")


def _check_finite(path: Path, weights: Any) -> None:
    """Reject NaN / inf weights (a diverged run or a damaged file), naming the first tensor."""
    if not isinstance(weights, Mapping):
        return
    bad = []
    for name, value in weights.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            n = int((~torch.isfinite(value)).sum())
            if n:
                bad.append((name, n))
    if bad:
        name, n = bad[0]
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise InputError(f"checkpoint {path} has non-finite weights: {name!r} holds {n} NaN/inf values{more}")


def load_model_weights(model: torch.nn.Module, path: str | os.PathLike, strict: bool = True) -> dict[str, Any]:
    """Load only the model weights of a checkpoint into ``model``; returns the checkpoint dict."""
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"], strict=strict)
    except RuntimeError as exc:
        raise InputError(f"checkpoint {path} does not fit this model (model.name / sizes differ?): {exc}") from exc
    return state


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy (global), torch CPU and (if present) CUDA generator states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

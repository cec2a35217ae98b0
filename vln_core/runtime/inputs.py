"""Checks of the values the node's callbacks hand to the runtime: stamps and pose matrices."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vln_core.errors import InputError
from vln_core.geometry.transforms import ROTATION_TOLERANCE, nearest_rotation, rotation_error

__all__ = ["checked_stamp", "format_stamp", "checked_pose_matrix"]


def checked_stamp(stamp_ns: Any, what: str) -> int:
    """A message stamp as integer nanoseconds ``>= 0``, or InputError naming ``what``."""
    if isinstance(stamp_ns, (bool, np.bool_)) or not isinstance(stamp_ns, (int, np.integer)):
        raise InputError(f"{what} stamp must be integer nanoseconds, got {stamp_ns!r}")
    if stamp_ns < 0:
        raise InputError(f"{what} stamp must be >= 0 ns, got {stamp_ns}")
    return int(stamp_ns)


def format_stamp(stamp_ns: int) -> str:
    """``"12.345 s"`` for messages."""
    return f"{stamp_ns * 1e-9:.3f} s"


def checked_pose_matrix(T: Any, what: str) -> np.ndarray:
    """``(4, 4)`` float64 rigid pose or InputError naming what is wrong."""
    arr = np.asarray(T.detach().cpu().numpy() if isinstance(T, torch.Tensor) else T)
    if arr.shape != (4, 4):
        raise InputError(f"{what} must be a (4, 4) matrix, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{what} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InputError(f"{what} contains NaN or inf")
    if not np.allclose(arr[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise InputError(f"{what} must have last row [0, 0, 0, 1], got {arr[3].tolist()}")
    error = rotation_error(arr[:3, :3])
    if error > ROTATION_TOLERANCE:
        R = arr[:3, :3]
        raise InputError(
            f"{what}: the 3x3 block is not a rotation (error {error:.3g} = max(|R R^T - I|, |det R - 1|), "
            f"det = {np.linalg.det(R):.4f}, tolerance {ROTATION_TOLERANCE:g})"
        )
    arr[:3, :3] = nearest_rotation(arr[:3, :3])
    return arr

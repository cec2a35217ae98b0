"""Pinhole camera intrinsics that stay right under resizing and cropping.

Convention (see ``docs/conventions.md``): OpenCV pinhole model, pixel centres at integer
coordinates, so the top-left pixel's centre is ``(0, 0)`` and the image covers
``[-0.5, width - 0.5] x [-0.5, height - 0.5]`` in pixel coordinates. A point ``p_cam`` in the
OpenCV optical frame (x right, y down, z forward) lands at ``u = fx * x / z + cx``,
``v = fy * y / z + cy``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import torch

from vln_core.errors import InputError


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics of one image grid: focal lengths and principal point in pixels, image size.

    Attributes:
        fx, fy: focal lengths in pixels.
        cx, cy: principal point in pixels (pixel-centre convention: top-left centre is 0, 0).
        width, height: image size in pixels.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("fx", "fy", "cx", "cy"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise InputError(f"PinholeCamera.{name} must be finite, got {value}")
            object.__setattr__(self, name, value)
        if self.fx <= 0 or self.fy <= 0:
            raise InputError(f"PinholeCamera focal lengths must be > 0, got fx={self.fx}, fy={self.fy}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise InputError(f"PinholeCamera.{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    # ---------------------------------------------------------------- matrix views
    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 numpy intrinsic matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    def K_tensor(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        """(3, 3) torch intrinsic matrix of ``dtype`` on ``device``."""
        return torch.as_tensor(self.K, dtype=dtype, device=device)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``, the order image arrays use."""
        return (self.height, self.width)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_K(cls, K: Any, width: int, height: int) -> "PinholeCamera":
        """Build from a (3, 3) pinhole matrix (numpy or torch). Skew must be zero."""
        K_np = np.asarray(K.detach().cpu() if isinstance(K, torch.Tensor) else K, dtype=np.float64)
        if K_np.shape != (3, 3):
            raise InputError(f"K must have shape (3, 3), got {K_np.shape}")
        if abs(K_np[0, 1]) > 1e-9 or abs(K_np[1, 0]) > 1e-9 or not np.allclose(K_np[2], [0.0, 0.0, 1.0]):
            raise InputError(f"K must be a zero-skew pinhole matrix with last row [0, 0, 1], got\n{K_np}")
        return cls(K_np[0, 0], K_np[1, 1], K_np[0, 2], K_np[1, 2], width, height)

    @classmethod
    def from_hfov(cls, hfov_deg: float, width: int, height: int) -> "PinholeCamera":
        """Square pixels, centred principal point, horizontal field of view ``hfov_deg`` across the
        full image width (edge to edge of the outer pixels)."""
        if not 0.0 < hfov_deg < 180.0:
            raise InputError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
        f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(f, f, (width - 1) / 2.0, (height - 1) / 2.0, width, height)

    # ---------------------------------------------------------------- fields of view
    @property
    def hfov_deg(self) -> float:
        """Horizontal field of view in degrees from the left image edge (-0.5) to the right (W-0.5)."""
        left = math.atan((self.cx + 0.5) / self.fx)
        right = math.atan((self.width - 0.5 - self.cx) / self.fx)
        return math.degrees(left + right)

    @property
    def vfov_deg(self) -> float:
        """Vertical field of view in degrees from the top image edge (-0.5) to the bottom (H-0.5)."""
        top = math.atan((self.cy + 0.5) / self.fy)
        bottom = math.atan((self.height - 0.5 - self.cy) / self.fy)
        return math.degrees(top + bottom)

    # ---------------------------------------------------------------- derived grids
    def resized(self, width: int, height: int) -> "PinholeCamera":
        """Intrinsics of the image after ``cv2.resize(img, (width, height))``.

        Resampling maps pixel areas, so a pixel-centre coordinate ``u`` moves to
        ``(u + 0.5) * sx - 0.5`` with ``sx = width / self.width`` (same for v).
        """
        if width < 1 or height < 1:
            raise InputError(f"resized size must be positive, got width={width}, height={height}")
        sx = width / self.width
        sy = height / self.height
        return PinholeCamera(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, width, height
        )

    def cropped(self, x0: int, y0: int, width: int, height: int) -> "PinholeCamera":
        """Intrinsics of ``img[y0:y0 + height, x0:x0 + width]`` (crop must lie inside the image)."""
        if width < 1 or height < 1:
            raise InputError(f"crop size must be positive, got width={width}, height={height}")
        if x0 < 0 or y0 < 0 or x0 + width > self.width or y0 + height > self.height:
            raise InputError(
                f"crop x0={x0}, y0={y0}, width={width}, height={height} leaves the "
                f"{self.width}x{self.height} image"
            )
        return PinholeCamera(self.fx, self.fy, self.cx - x0, self.cy - y0, width, height)

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, float | int]:
        """Plain dict of the six fields (JSON/YAML ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PinholeCamera":
        """Inverse of :meth:`to_dict`; raises :class:`InputError` naming missing or unknown keys."""
        expected = {"fx", "fy", "cx", "cy", "width", "height"}
        missing = expected - set(data)
        unknown = set(data) - expected
        if missing or unknown:
            raise InputError(
                f"PinholeCamera dict needs keys {sorted(expected)}; missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        return cls(**{k: data[k] for k in expected})

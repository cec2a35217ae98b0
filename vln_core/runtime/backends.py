"""Heatmap backends: what the runtime runs for the current frame against the keyframe memory.

A backend turns ``(current frame, keyframes, instruction)`` into frame-indexed inter-frame
heatmaps over the current view, plus optional waypoints and a goal heatmap. Backends are picked
by name (``node.backend`` in the config) through a registry, so the learned-model and exported
(ONNX / TensorRT) backends plug in without touching the node or the runtime::

    @register_backend("onnx")
    class OnnxBackend(HeatmapBackend):
        name = "onnx"
        needs_depth = False
        predicts_waypoints = True
        def __init__(self, cfg: VLNConfig): ...
        def infer(self, current, keyframes, instruction) -> BackendResult: ...

Registering happens when the defining module is imported. :func:`create_backend` imports the
module listed for a name in :data:`BACKEND_PROVIDERS` on first use, so a provider only has to
live at that path (or be added with :func:`register_backend_provider`).

:class:`GeometryBackend` ("geometry") computes the exact heatmaps from depth and poses with
:func:`vln_core.heatmaps.frame_indexed_heatmaps`; it predicts no waypoints and no goal.
"""
from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from vln_core.config import ConfigError, VLNConfig
from vln_core.errors import InputError
from vln_core.geometry.camera import PinholeCamera
from vln_core.heatmaps import InterFrameHeatmaps, heatmaps_from_config
from vln_core.runtime.buffer import CameraFrame

__all__ = [
    "BackendResult",
    "HeatmapBackend",
    "BackendUnavailableError",
    "BACKEND_PROVIDERS",
    "register_backend",
    "register_backend_provider",
    "registered_backends",
    "create_backend",
    "GeometryBackend",
    "NUM_WAYPOINTS",
]

#: Waypoints a backend predicts: ``(NUM_WAYPOINTS, 2)`` (x forward, y left) metres in base_link.
NUM_WAYPOINTS = 20


@dataclass
class BackendResult:
    """What a backend returns for one current frame.

    Attributes:
        heatmaps: :class:`InterFrameHeatmaps` with ``heatmap`` ``(K, H, W)`` over the current
            frame's image (``K`` = number of keyframes given, same order); ``(H, W)`` is the
            backend's output grid (:meth:`HeatmapBackend.output_size`).
        waypoints: ``(NUM_WAYPOINTS, 2)`` float32 ``(x forward, y left)`` metres in the base
            frame at the current stamp, or None when the backend predicts none.
        goal_heatmap: ``(H, W)`` float32 over the current image, or None.
    """

    heatmaps: InterFrameHeatmaps
    waypoints: Optional[np.ndarray] = None
    goal_heatmap: Optional[np.ndarray] = None


class HeatmapBackend(abc.ABC):
    """Interface of every backend (geometry, learned model, ONNX, TensorRT).

    Class attributes say what the runtime must pair to a frame before the backend can use it:
    ``needs_depth`` (a depth image), ``needs_intrinsics`` (CameraInfo), ``needs_pose`` (odometry
    or tf). ``predicts_waypoints`` is reported in diagnostics.
    """

    name: str = ""
    needs_depth: bool = True
    needs_intrinsics: bool = True
    needs_pose: bool = True
    predicts_waypoints: bool = False

    @abc.abstractmethod
    def infer(self, current: CameraFrame, keyframes: list[CameraFrame], instruction: str) -> BackendResult:
        """Heatmaps of each keyframe over the current view (see :class:`BackendResult`).

        Args:
            current: the current frame (fields filled as the ``needs_*`` attributes request).
            keyframes: the keyframe memory, oldest first (at least one frame).
            instruction: the navigation instruction ("" when none was given).
        """

    def output_size(self, current: CameraFrame) -> tuple[int, int]:
        """``(H, W)`` of the heatmaps for this current frame (default: the image's own size)."""
        return current.size

    def frame_geometry(self, frame: CameraFrame) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Geometry for keyframe selection when a frame lacks measured depth or a pose.

        Learned backends predict it (and cache it per frame: a frame entering the keyframe memory
        is encoded once). Returns ``(depth (h, w) float32 metres, K (3, 3) of that grid,
        T_wc (4, 4) camera-to-world)`` or None (default: the backend predicts no geometry).
        """
        return None

    def describe(self) -> dict[str, str]:
        """Facts for diagnostics (name, needs, what it predicts)."""
        return {
            "backend": self.name,
            "needs_depth": str(self.needs_depth),
            "needs_intrinsics": str(self.needs_intrinsics),
            "needs_pose": str(self.needs_pose),
            "predicts_waypoints": str(self.predicts_waypoints),
        }

    def close(self) -> None:
        """Release resources (sessions, GPU memory). Default: nothing to release."""


class BackendUnavailableError(ConfigError):
    """``node.backend`` names a backend that is not registered or whose module cannot load."""


BackendFactory = Callable[[VLNConfig], HeatmapBackend]
_REGISTRY: dict[str, BackendFactory] = {}

#: Module that registers each backend not defined here; imported by :func:`create_backend` the
#: first time the name is asked for.
BACKEND_PROVIDERS: dict[str, str] = {
    "model": "vln_core.models.runtime_backend",
    "onnx": "vln_core.models.onnx_backend",
    "tensorrt": "vln_core.models.tensorrt_backend",
}


def register_backend(name: str, factory: Optional[BackendFactory] = None, *, replace: bool = False):
    """Register a backend factory (a class or function taking the :class:`VLNConfig`).

    Usable as a decorator (``@register_backend("onnx")``) or a call
    (``register_backend("onnx", make_onnx_backend)``). Registering a different factory under a
    taken name raises ``ValueError`` unless ``replace=True``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"backend name must be a non-empty string, got {name!r}")

    def decorate(fn: BackendFactory) -> BackendFactory:
        if not callable(fn):
            raise TypeError(f"backend factory for {name!r} must be callable, got {fn!r}")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not fn and not replace:
            raise ValueError(f"backend {name!r} is already registered by {existing!r}; pass replace=True to override")
        _REGISTRY[name] = fn
        return fn

    return decorate(factory) if factory is not None else decorate


def register_backend_provider(name: str, module: str) -> None:
    """Say which module registers backend ``name`` (imported lazily by :func:`create_backend`)."""
    BACKEND_PROVIDERS[name] = module


def registered_backends() -> list[str]:
    """Names registered so far (providers not yet imported are not listed)."""
    return sorted(_REGISTRY)


def _import_provider(name: str) -> None:
    module = BACKEND_PROVIDERS.get(name)
    if module is None:
        raise BackendUnavailableError(
            f"backend {name!r} is not registered (registered: {registered_backends()}) and no provider "
            f"module is known for it; define it with @register_backend({name!r}) and list its module in "
            f"vln_core.runtime.backends.BACKEND_PROVIDERS"
        )
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            raise BackendUnavailableError(
                f"backend {name!r} is not available: its provider module {module} does not exist "
                f"(registered backends: {registered_backends()})"
            ) from None
        raise BackendUnavailableError(
            f"backend {name!r} is not available: importing its provider module {module} failed because "
            f"module {missing!r} is missing (install it)"
        ) from exc
    if name not in _REGISTRY:
        raise BackendUnavailableError(
            f"backend {name!r} is not available: module {module} was imported but did not call "
            f"register_backend({name!r})"
        )


def create_backend(name: str, cfg: VLNConfig) -> HeatmapBackend:
    """Build the backend registered as ``name`` for ``cfg``.

    Raises:
        BackendUnavailableError: the name is unknown, its provider module is missing, one of the
            provider's own imports is missing (named in the message), or it did not register.
    """
    if name not in _REGISTRY:
        _import_provider(name)
    backend = _REGISTRY[name](cfg)
    if not isinstance(backend, HeatmapBackend):
        raise BackendUnavailableError(
            f"backend factory for {name!r} returned {type(backend).__name__}, not a HeatmapBackend"
        )
    return backend


# ------------------------------------------------------------------------------------------
# Geometry backend
# ------------------------------------------------------------------------------------------


def frame_on_grid(frame: CameraFrame, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """A frame's depth and intrinsics resampled to another ``(H, W)`` grid.

    Depth is resampled by nearest neighbour at pixel centres (``cv2.INTER_NEAREST_EXACT``: no
    blending across depth edges, invalid pixels stay invalid); ``K`` follows with
    :meth:`PinholeCamera.resized` (pixel-area mapping, consistent with that sampling).

    Args:
        frame: needs ``depth_m`` ``(h, w)`` metres and ``K`` ``(3, 3)`` of the ``(h, w)`` grid.
        size: target ``(H, W)``.

    Returns:
        ``(depth (H, W) float32 metres, K (3, 3) float64)``; unchanged arrays when the size matches.
    """
    if frame.depth_m is None or frame.K is None:
        raise InputError(f"frame seq {frame.seq}: resampling needs depth and K")
    H, W = (int(s) for s in size)
    h, w = frame.depth_m.shape
    if (h, w) == (H, W):
        return frame.depth_m, np.asarray(frame.K, dtype=np.float64)
    depth = cv2.resize(frame.depth_m, (W, H), interpolation=cv2.INTER_NEAREST_EXACT)
    K = PinholeCamera.from_K(frame.K, width=w, height=h).resized(W, H).K
    return depth, K


@register_backend("geometry")
class GeometryBackend(HeatmapBackend):
    """Exact frame-indexed heatmaps from depth and poses (no learning, no instruction use).

    Grid: with ``node.geometry_resolution == "frame_size"`` (default) every frame's depth and
    intrinsics are resampled to ``video.frame_size`` and the heatmaps come out on that grid, the
    same grid the learned model predicts on and is trained against, so both backends publish
    interchangeable maps and the CPU cost does not grow with the camera resolution. With
    ``"input"`` the heatmaps are on the current image's own grid. ``heatmap.sigma_px`` is in
    pixels of the output grid. Waypoints and goal heatmap: None (not predicted).
    """

    name = "geometry"
    needs_depth = True
    needs_intrinsics = True
    needs_pose = True
    predicts_waypoints = False

    def __init__(self, cfg: VLNConfig) -> None:
        self.heatmap_cfg = cfg.heatmap
        self.resolution = cfg.node.geometry_resolution
        self.frame_size = tuple(int(s) for s in cfg.video.frame_size)

    def output_size(self, current: CameraFrame) -> tuple[int, int]:
        return self.frame_size if self.resolution == "frame_size" else current.size

    @staticmethod
    def _check(frame: CameraFrame, role: str) -> None:
        missing = [n for n in ("depth_m", "K", "T_wc") if getattr(frame, n) is None]
        if missing:
            raise InputError(f"geometry backend: {role} frame seq {frame.seq} has no {', '.join(missing)}")

    def infer(self, current: CameraFrame, keyframes: list[CameraFrame], instruction: str) -> BackendResult:
        """Heatmaps ``(K, H, W)`` over the current view on :meth:`output_size`; see the class doc.

        Args:
            current: needs ``depth_m`` ``(h, w)``, ``K`` ``(3, 3)``, ``T_wc`` ``(4, 4)``.
            keyframes: each needs the same fields (any resolution); at least one.
            instruction: unused (geometry does not read language).
        """
        if not keyframes:
            raise InputError("geometry backend: needs at least one keyframe")
        self._check(current, "current")
        for kf in keyframes:
            self._check(kf, "key")
        size = self.output_size(current)
        cur_depth, cur_K = frame_on_grid(current, size)
        key_grid = self.frame_size if self.resolution == "frame_size" else None
        key_depths, key_Ks = [], []
        for kf in keyframes:
            d, K = frame_on_grid(kf, key_grid) if key_grid is not None else (kf.depth_m, kf.K)
            key_depths.append(d)
            key_Ks.append(K)
        shapes = {d.shape for d in key_depths}
        if len(shapes) != 1:  # "input" mode across a resolution change: bring keyframes to the current grid
            resampled = [frame_on_grid(kf, size) for kf in keyframes]
            key_depths, key_Ks = [d for d, _ in resampled], [K for _, K in resampled]
        with torch.no_grad():
            heatmaps = heatmaps_from_config(
                torch.from_numpy(np.stack(key_depths).astype(np.float32, copy=False)),
                torch.from_numpy(np.stack(key_Ks)).float(),
                torch.from_numpy(np.stack([kf.T_wc for kf in keyframes])).float(),
                torch.from_numpy(np.asarray(cur_K)).float(),
                torch.from_numpy(np.asarray(current.T_wc)).float(),
                size,
                torch.from_numpy(np.asarray(cur_depth, dtype=np.float32)),
                cfg=self.heatmap_cfg,
            )
        return BackendResult(heatmaps=heatmaps, waypoints=None, goal_heatmap=None)

    def describe(self) -> dict[str, str]:
        info = super().describe()
        info["heatmap_grid"] = (
            f"video.frame_size {self.frame_size[0]}x{self.frame_size[1]} (HxW)"
            if self.resolution == "frame_size" else "current image resolution"
        )
        info["waypoints"] = "none: the geometry backend predicts no waypoints and no goal heatmap"
        return info


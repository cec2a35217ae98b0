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

The backends of this package: ``geometry`` (:mod:`.geometry_backend`, exact, from depth and
poses), ``model`` (:mod:`.model_backend`, the PyTorch model: ``embedded`` per frame through
:mod:`.learned`, ``base`` / ``full`` per window), ``onnx`` and ``tensorrt`` (the exported embedded
model, :mod:`.onnx_backend`, :mod:`.tensorrt_backend`) and ``auto`` (:mod:`.auto_backend`:
geometry while depth arrives, the learned backend when it stops). All of them make their
frame-indexed heatmaps with :func:`vln_core.heatmaps.heatmaps_from_config`.
"""
from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from vln_core.config import ConfigError, VLNConfig
from vln_core.heatmaps import InterFrameHeatmaps

__all__ = [
    "CameraFrame",
    "BackendResult",
    "HeatmapBackend",
    "BackendUnavailableError",
    "BACKEND_PROVIDERS",
    "register_backend",
    "register_backend_provider",
    "registered_backends",
    "create_backend",
    "NUM_WAYPOINTS",
]

#: Waypoints a backend predicts: ``(NUM_WAYPOINTS, 2)`` (x forward, y left) metres in base_link.
NUM_WAYPOINTS = 20


@dataclass(eq=False)
class CameraFrame:
    """One camera frame with everything paired to it (what backends and the recorder consume).

    Attributes:
        stamp_ns: image stamp, integer nanoseconds.
        frame_id: the image's frame id (the camera optical frame name in ROS).
        rgb: ``(H, W, 3)`` uint8 RGB.
        depth_m: ``(H, W)`` float32 metres on the same grid (0 = no measurement), or None.
        K: ``(3, 3)`` float64 intrinsics of the ``(H, W)`` grid, or None.
        T_wc: ``(4, 4)`` float64 camera-optical-to-world (odom) pose, or None.
        T_odom_base: ``(4, 4)`` float64 base_link-to-odom pose at the image stamp, or None (e.g.
            when the pose came from tf as a camera pose).
        seq: the runtime's sequence number of the image (0, 1, 2, ... in arrival order).
        base_velocity: ``(2,)`` float64 ``(vx m/s, wz rad/s)`` of the base near the stamp, or None.
    """

    stamp_ns: int
    frame_id: str
    rgb: np.ndarray
    depth_m: Optional[np.ndarray] = None
    K: Optional[np.ndarray] = None
    T_wc: Optional[np.ndarray] = None
    T_odom_base: Optional[np.ndarray] = None
    seq: int = -1
    base_velocity: Optional[np.ndarray] = None

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return (int(self.rgb.shape[0]), int(self.rgb.shape[1]))

    @property
    def stamp_s(self) -> float:
        return self.stamp_ns * 1e-9


@dataclass
class BackendResult:
    """What a backend returns for one current frame.

    Attributes:
        heatmaps: :class:`InterFrameHeatmaps` with ``heatmap`` ``(K, H, W)`` over the current
            frame's image (``K`` = number of keyframes given, same order); ``(H, W)`` is the
            backend's output grid (:meth:`HeatmapBackend.output_size`).
        waypoints: ``(NUM_WAYPOINTS, 2)`` float32 ``(x forward, y left)`` metres in the base
            frame at the current stamp, or None when the backend predicts none.
        goal_heatmap: ``(H, W)`` float32 over the current image, or None; read it as the
            backend's :attr:`HeatmapBackend.goal_activation` says.
        depth: ``(h, w)`` float32 metres, the current view's depth as the backend predicted it
            (learned backends), or None.
        depth_K: ``(3, 3)`` intrinsics of ``depth``'s pixels, with ``depth``.
    """

    heatmaps: InterFrameHeatmaps
    waypoints: Optional[np.ndarray] = None
    goal_heatmap: Optional[np.ndarray] = None
    depth: Optional[np.ndarray] = None
    depth_K: Optional[np.ndarray] = None


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
    #: how to read the goal heatmap: ``softmax`` (a distribution over the view: where the goal
    #: would be) or ``sigmoid`` (per pixel, the probability that it shows the goal)
    goal_activation: str = "softmax"

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
            "goal_heatmap": "probability per pixel" if self.goal_activation == "sigmoid" else "distribution over the view",
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
    "geometry": "vln_core.backends.geometry_backend",
    "auto": "vln_core.backends.auto_backend",
    "model": "vln_core.backends.model_backend",
    "onnx": "vln_core.backends.onnx_backend",
    "tensorrt": "vln_core.backends.tensorrt_backend",
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
            f"vln_core.backends.BACKEND_PROVIDERS"
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

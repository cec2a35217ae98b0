"""The heatmap backends and their engines: what the runtime runs on the current frame against
the keyframe memory (see :mod:`vln_core.backends.base` for the interface and the registry).

* ``geometry`` (:mod:`.geometry_backend`): exact heatmaps from measured depth and poses;
* ``model`` (:mod:`.model_backend`): the PyTorch model, ``embedded`` through the per-frame
  :class:`~vln_core.backends.learned.LearnedBackend`, ``base`` / ``full`` per window
  (:mod:`.window_backend`);
* ``onnx`` / ``tensorrt`` (:mod:`.onnx_backend`, :mod:`.tensorrt_backend`): the exported
  embedded model through the same :class:`~vln_core.backends.learned.LearnedBackend`;
* ``auto`` (:mod:`.auto_backend`): geometry while depth arrives, the learned backend when it stops.

Every backend makes its frame-indexed heatmaps with the one reprojection,
:func:`vln_core.heatmaps.heatmaps_from_config`. The networks live in :mod:`vln_core.models`,
which imports nothing from here or from :mod:`vln_core.runtime`.
"""
from vln_core.backends.base import (
    BACKEND_PROVIDERS,
    NUM_WAYPOINTS,
    BackendResult,
    BackendUnavailableError,
    CameraFrame,
    HeatmapBackend,
    create_backend,
    register_backend,
    register_backend_provider,
    registered_backends,
)
from vln_core.backends.geometry_backend import GeometryBackend  # registers node.backend "geometry"
from vln_core.backends.auto_backend import AutoBackend  # registers node.backend "auto"

__all__ = [
    "AutoBackend",
    "BACKEND_PROVIDERS",
    "NUM_WAYPOINTS",
    "BackendResult",
    "BackendUnavailableError",
    "CameraFrame",
    "GeometryBackend",
    "HeatmapBackend",
    "create_backend",
    "register_backend",
    "register_backend_provider",
    "registered_backends",
]

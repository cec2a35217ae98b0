"""ROS-free runtime core of the navigation node (see ``runtime.py`` for the data flow).

The ROS 2 node converts messages to arrays and calls :class:`NavigationRuntime`; everything
else (buffering, stamp pairing, pose interpolation, keyframe memory, backends, overlay,
recording, diagnostics) lives here and is tested without ROS.
"""
from vln_core.runtime.backends import (
    BACKEND_PROVIDERS,
    BackendResult,
    BackendUnavailableError,
    GeometryBackend,
    HeatmapBackend,
    create_backend,
    register_backend,
    register_backend_provider,
    registered_backends,
)
from vln_core.runtime.auto_backend import AutoBackend  # registers node.backend "auto"
from vln_core.runtime.buffer import CameraFrame, FrameRing, StampedHistory, interpolate_pose, pose_at
from vln_core.runtime.diagnostics import LEVEL_BYTES
from vln_core.runtime.recorder import EpisodeRecorder
from vln_core.runtime.runtime import NavigationRuntime, RuntimeOutput

__all__ = [
    "AutoBackend",
    "BACKEND_PROVIDERS",
    "BackendResult",
    "BackendUnavailableError",
    "CameraFrame",
    "EpisodeRecorder",
    "FrameRing",
    "GeometryBackend",
    "HeatmapBackend",
    "LEVEL_BYTES",
    "NavigationRuntime",
    "RuntimeOutput",
    "StampedHistory",
    "create_backend",
    "interpolate_pose",
    "pose_at",
    "register_backend",
    "register_backend_provider",
    "registered_backends",
]

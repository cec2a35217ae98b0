"""ROS-free runtime core of the navigation node (see ``runtime.py`` for the data flow).

The ROS 2 node converts messages to arrays and calls :class:`NavigationRuntime`; everything
else (buffering, stamp pairing, pose interpolation, keyframe memory, output, overlay,
recording, diagnostics) lives here and is tested without ROS. The backends it runs are in
:mod:`vln_core.backends`.
"""
from vln_core.runtime.buffer import FrameRing, StampedHistory, interpolate_pose, pose_at
from vln_core.runtime.diagnostics import LEVEL_BYTES
from vln_core.runtime.recorder import EpisodeRecorder
from vln_core.runtime.runtime import NavigationRuntime, RuntimeOutput

__all__ = [
    "EpisodeRecorder",
    "FrameRing",
    "LEVEL_BYTES",
    "NavigationRuntime",
    "RuntimeOutput",
    "StampedHistory",
    "interpolate_pose",
    "pose_at",
]

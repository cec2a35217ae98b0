"""Data loading: posed-image folders, the episode format, rosbag2 import.

- :mod:`vln_core.data.posed_images`: ScanNet / 7-Scenes style folders (``frame-N.color.png``,
  ``.depth.png``, ``.pose.txt``, ``intrinsics.K.txt``).
- :mod:`vln_core.data.episode`: the one episode format (posed folder + ``episode.json``), its
  crash-safe writer and its reader; reference in ``docs/episode_format.md``.
- :mod:`vln_core.data.rosbag_import`: ROS 2 bag (sqlite3 / MCAP) -> episode.
"""
from vln_core.data.episode import (
    Episode,
    EpisodeWriter,
    is_complete_episode,
    list_episodes,
    read_episode,
)
from vln_core.data.posed_images import (
    PosedSequence,
    frame_path,
    list_frame_ids,
    load_posed_sequence,
    read_color,
    read_depth,
    read_intrinsics,
    read_pose,
)

__all__ = [
    "Episode",
    "EpisodeWriter",
    "PosedSequence",
    "frame_path",
    "is_complete_episode",
    "list_episodes",
    "list_frame_ids",
    "load_posed_sequence",
    "read_color",
    "read_depth",
    "read_episode",
    "read_intrinsics",
    "read_pose",
]

"""The Fast DDS transport profile of the node and the replay (``fastdds_profile.xml``).

Fast DDS's default shared-memory transport gives each participant a 512 kB segment. A process
that publishes 640x480 images and odometry at 30 Hz fills its segment with image fragments while
a busy subscriber has not taken them yet, and a best-effort message that finds the segment full
is dropped: measured with ``benchmarks/node_latency.py --backend model``, the node received 69-75 %
of the replay's 30 Hz odometry. Larger buffers on the node's side alone (a 4096-message port
queue, a 4 MB UDP receive buffer) did not help (74-75 %): the loss is in the publishing process.
With 16 MB segments in the publisher the node received 100 %.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, MutableMapping

#: Fast DDS participant profile shipped with the package.
TRANSPORT_PROFILE = Path(__file__).resolve().parent / "fastdds_profile.xml"
#: Environment variables Fast DDS reads its default XML profile from (3.x, then 2.x).
PROFILE_ENV = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FAST_DDS_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")


def use_transport_profile(environ: MutableMapping[str, Any] = os.environ) -> str:
    """Point Fast DDS at :data:`TRANSPORT_PROFILE` unless the user chose a profile or another
    middleware; call before ``rclpy.init``. Returns one sentence for the log."""
    for name in PROFILE_ENV:
        if environ.get(name):
            return f"Fast DDS profile from {name}={environ[name]} (set by the user, kept)"
    rmw = environ.get("RMW_IMPLEMENTATION") or FAST_DDS_RMWS[0]
    if rmw not in FAST_DDS_RMWS:
        return f"no Fast DDS profile: RMW_IMPLEMENTATION={rmw}"
    if not TRANSPORT_PROFILE.is_file():
        return f"no Fast DDS profile: {TRANSPORT_PROFILE} is missing (Fast DDS defaults: camera-rate odometry may be lost)"
    environ[PROFILE_ENV[0]] = str(TRANSPORT_PROFILE)
    return f"Fast DDS profile {TRANSPORT_PROFILE.name}: 16 MB shared-memory segments for camera-rate images"

#!/usr/bin/env python3
"""Import a ROS 2 bag (sqlite3 or MCAP) as one episode (docs/episode_format.md).

Examples::

    # camera pose from odometry and a fixed mount (camera optical frame in base_link)
    python training/import_bag.py run1/ --out data/real/run1 \
        --color-topic /camera/color/image_raw/compressed \
        --depth-topic /camera/aligned_depth_to_color/image_raw \
        --odom-topic /odom --mount 0.2,0,1.1,-0.5,0.5,-0.5,0.5 \
        --instruction "go to the red chair"

    # camera pose from the tf tree (odom -> ... -> camera optical frame)
    python training/import_bag.py run1/ --out data/real/run1 --color-topic /camera/color/image_raw --tf

Exit status 0 on success, 2 on bad input (the message names the problem). A bag whose data file
is damaged in the middle is imported from what can be read, with exit status 0 and a line
"warning: N of M messages listed in metadata.yaml could not be read (topic: n of m, ...)".
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vln_core.data.rosbag_import import import_rosbag  # noqa: E402
from vln_core.errors import InputError  # noqa: E402


def _mount(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mount needs 7 numbers x,y,z,qx,qy,qz,qw, got {text!r}") from None
    if len(values) != 7:
        raise argparse.ArgumentTypeError(f"--mount needs 7 numbers x,y,z,qx,qy,qz,qw, got {len(values)}")
    return values


def add_import_arguments(p: argparse.ArgumentParser, color_required: bool = True) -> None:
    """The bag import flags (topics, poses, tolerances): shared with ``training/adapt.py``."""
    p.add_argument("--color-topic", required=color_required, help="sensor_msgs/Image or CompressedImage colour topic")
    p.add_argument("--depth-topic", default=None, help="registered depth topic (16UC1 mm or 32FC1 m)")
    p.add_argument("--camera-info-topic", default=None,
                   help="CameraInfo topic (default: the camera_info sibling of the colour topic)")
    p.add_argument("--odom-topic", default=None, help="nav_msgs/Odometry topic (poses and base velocities)")
    pose = p.add_mutually_exclusive_group()
    pose.add_argument("--mount", type=_mount, default=None, metavar="x,y,z,qx,qy,qz,qw",
                      help="camera optical frame in base_link (default: looked up on /tf_static)")
    pose.add_argument("--tf", action="store_true", help="camera poses from /tf + /tf_static instead of odometry")
    p.add_argument("--world-frame", default="odom")
    p.add_argument("--base-frame", default="base_link")
    p.add_argument("--camera-frame", default=None, help="camera optical frame (default: the images' frame_id)")
    p.add_argument("--max-pair-dt", type=float, default=0.05, help="seconds, depth/pose stamp tolerance")
    p.add_argument("--max-pose-gap", type=float, default=0.5, help="seconds, longest pose gap to interpolate over")
    p.add_argument("--color-format", choices=("png", "jpg"), default="png")
    p.add_argument("--instruction", default="")


def import_keywords(args: argparse.Namespace) -> dict:
    """``import_rosbag`` keyword arguments from the flags of :func:`add_import_arguments`."""
    return dict(depth_topic=args.depth_topic, camera_info_topic=args.camera_info_topic, odom_topic=args.odom_topic,
                T_base_cam=args.mount, use_tf=args.tf, world_frame=args.world_frame, base_frame=args.base_frame,
                camera_frame=args.camera_frame, max_pair_dt=args.max_pair_dt, max_pose_gap=args.max_pose_gap,
                instruction=args.instruction, color_format=args.color_format)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", type=Path, help="rosbag2 folder (sqlite3 or mcap)")
    p.add_argument("--out", type=Path, required=True, help="episode folder to create (must not exist)")
    add_import_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bar = None
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(unit="frame", desc="import")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        path = import_rosbag(args.bag, args.out, args.color_topic, progress=progress, **import_keywords(args))
    except InputError as exc:
        print(f"import_bag: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    from vln_core.data.episode import read_episode
    from vln_core.data.rosbag_import import ImportStats

    episode = read_episode(path)
    stats = ImportStats(**episode.extra["import"])
    print(f"wrote {path}: {stats.summary()}")
    for note in stats.notes:
        print(f"note: {note}")
    if stats.read_warning:  # a bag damaged in the middle: what could be read was imported, exit 0
        print(f"warning: {stats.read_warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

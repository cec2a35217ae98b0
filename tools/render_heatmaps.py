#!/usr/bin/env python3
"""Render ground-truth frame-indexed heatmaps of a real posed RGB-D sequence as one PNG mosaic.

Example::

    .venv/bin/python tools/render_heatmaps.py --data /work/shared/data/real_rgbd_box \\
        --current 65 --keyframes 15,41,89,113 --out docs/images/real_rgbd_heatmaps.png \\
        heatmap.sigma_px=3

``--current`` and ``--keyframes`` are frame numbers as in the file names (``frame-000065``).
The heatmaps are computed on a ``--heatmap-width`` grid of the current frame (same aspect) and
drawn over the full-resolution current image; every tile is one keyframe.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vln_core.config import add_config_arguments, config_from_args  # noqa: E402
from vln_core.data.posed_images import list_frame_ids, load_posed_sequence  # noqa: E402
from vln_core.errors import InputError  # noqa: E402
from vln_core.geometry.camera import PinholeCamera  # noqa: E402
from vln_core.heatmaps import heatmaps_from_config  # noqa: E402
from vln_core.viz import overlay_mosaic  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="posed-image folder (frame-N.color/depth.png, pose.txt, intrinsics)")
    parser.add_argument("--current", type=int, required=True, help="frame number of the current frame")
    parser.add_argument("--keyframes", required=True, help="comma-separated keyframe numbers, e.g. 15,41,89,113")
    parser.add_argument("--out", required=True, help="output PNG path")
    parser.add_argument("--heatmap-width", type=int, default=320, help="width of the heatmap grid (default 320)")
    parser.add_argument("--columns", type=int, default=None, help="tiles per row (default: square-ish)")
    parser.add_argument("--tile-width", type=int, default=480, help="width of each mosaic tile in pixels (default 480)")
    add_config_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    try:
        key_ids = [int(x) for x in args.keyframes.split(",") if x.strip()]
    except ValueError:
        print(f"--keyframes must be comma-separated integers, got {args.keyframes!r}", file=sys.stderr)
        return 2
    try:
        all_ids = list_frame_ids(args.data)
        missing = [f for f in [args.current, *key_ids] if f not in set(all_ids)]
        if missing:
            have = f"{all_ids[0]}..{all_ids[-1]}" if all_ids else "no frames"
            print(f"frames {missing} not in {args.data} (have {have})", file=sys.stderr)
            return 2
        # only the frames drawn: a long sequence is not loaded whole
        seq = load_posed_sequence(args.data, frame_ids=[args.current, *key_ids])
    except InputError as exc:
        print(f"cannot load {args.data}: {exc}", file=sys.stderr)
        return 2
    if seq.depths is None:
        print(f"{args.data} has no depth images; heatmaps need keyframe depth", file=sys.stderr)
        return 2
    position = {fid: i for i, fid in enumerate(seq.frame_ids)}

    H0, W0 = seq.image_size
    cam_full = PinholeCamera.from_K(seq.K, W0, H0)
    grid_w = args.heatmap_width
    grid_h = int(round(H0 * grid_w / W0))
    cam_grid = cam_full.resized(grid_w, grid_h)

    c = position[args.current]
    ks = [position[f] for f in key_ids]
    cur_depth = cv2.resize(seq.depths[c], (grid_w, grid_h), interpolation=cv2.INTER_NEAREST)
    result = heatmaps_from_config(
        torch.as_tensor(seq.depths[ks]),
        torch.as_tensor(seq.K, dtype=torch.float32),
        torch.as_tensor(seq.poses[ks], dtype=torch.float32),
        cam_grid.K_tensor(),
        torch.as_tensor(seq.poses[c], dtype=torch.float32),
        (grid_h, grid_w),
        torch.as_tensor(cur_depth),
        cfg=cfg.heatmap,
    ).numpy()

    for i, fid in enumerate(key_ids):
        bearing = result.out_of_view_bearing[i]
        bearing_text = "none" if np.isnan(bearing) else f"{np.degrees(bearing):+.0f} deg"
        print(
            f"kf {fid:4d} -> current {args.current}: in view {result.in_view_fraction[i]:.3f}  "
            f"hidden {result.occluded_fraction[i]:.3f}  out of view {result.out_of_view_fraction[i]:.3f}  "
            f"bearing {bearing_text}  overlap {bool(result.has_overlap[i])}  points {int(result.num_valid[i])}"
        )

    mosaic = overlay_mosaic(
        seq.colors[c],
        result,
        [f"kf {fid}" for fid in key_ids],
        [seq.colors[k] for k in ks],
        columns=args.columns,
        tile_width=args.tile_width,
    )
    title_h = 36
    title = np.full((title_h, mosaic.shape[1], 3), 20, np.uint8)
    cv2.putText(
        title,
        f"current frame {args.current}: where each keyframe's content lands ({Path(args.data).name}, "
        f"sigma {cfg.heatmap.sigma_px:g} px on a {grid_w}x{grid_h} grid)",
        (8, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA,
    )
    image = np.concatenate([title, mosaic], axis=0)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".png")
    os.close(fd)
    try:
        if not cv2.imwrite(tmp, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OSError(f"cv2 could not write {tmp}")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    print(f"wrote {out} ({image.shape[1]}x{image.shape[0]}, {out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

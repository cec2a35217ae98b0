#!/usr/bin/env python3
"""Run the pipeline on a video: keyframes by space-aware sampling and frame-indexed heatmaps.

    python tools/infer_video.py VIDEO_OR_FOLDER --out DIR [--instruction TEXT] \\
        [--backend model|onnx|geometry|vggt] [--frames N_m] [--keyframes N_k] [--model-path PATH] [--hfov DEG]

VIDEO_OR_FOLDER: an mp4 (or any video OpenCV reads), a folder of images, or a posed RGB-D folder
(frame-N.color.png / .depth.png / .pose.txt + intrinsics, where ``--backend geometry`` applies
and the learned model uses the known poses). N_m frames are taken evenly over the source, the
last one is the current view. Backends: ``model`` (the shipped embedded model, or
``--model-path CHECKPOINT``; with ``model.name`` small / base / full the design's pipeline: its
geometry stage on all N_m frames, its own keyframes, the one reprojection, and its reasoning stage
for the goal heatmap and waypoints; ``--random-init`` builds it with random weights, a plumbing
check that predicts nothing: ``--config configs/tiny_base.yaml --random-init``), ``onnx (``--model-path`` = the export folder, default
exports/embedded), ``geometry`` (measured depth and poses), ``vggt`` (``--model-path`` = a local
VGGT-1B checkpoint; nothing is downloaded).

Writes to DIR: ``<name>_heatmaps.png`` (all keyframes' maps over the last frame),
``<name>_heatmap_<k>.png`` per keyframe, ``<name>_selected_indices.npy`` (source frame numbers),
``<name>_geometry_info.npz`` (depth, poses, intrinsics), ``<name>_summary.json`` (settings,
keyframes, in-view / hidden / out-of-view shares and bearings, timings; the pipeline models add
``waypoints_xy_m`` and ``goal_peak_rc`` and write ``<name>_goal_heatmap.png``). ``<name>`` is the
source's file or folder name. Bad input exits with status 2 and one line.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# FFmpeg's own log lines ("moov atom not found") would add to our one-line error on a bad video
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vln_core.config import ConfigError, add_config_arguments, config_from_args  # noqa: E402
from vln_core.errors import InputError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default="ros2_ws/src/vln_heatmap/config/vln_heatmap.yaml")
    parser.add_argument("source", help="video file, image folder or posed RGB-D folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--instruction", default="", help="navigation instruction (recorded in the summary)")
    parser.add_argument("--backend", default="model", choices=("model", "onnx", "geometry", "vggt"))
    parser.add_argument("--frames", type=int, default=None, help="N_m frames taken from the source (default video.total_frames)")
    parser.add_argument("--keyframes", type=int, default=None, help="N_k keyframes (default video.keyframes)")
    parser.add_argument("--model-path", default=None, help="checkpoint (model), export folder (onnx) or VGGT checkpoint (vggt)")
    parser.add_argument("--hfov", type=float, default=None, help="horizontal field of view (deg) when the source has no intrinsics")
    parser.add_argument("--random-init", action="store_true",
                        help="--backend model with model.name small/base/full: random weights, a plumbing check of "
                             "every stage that predicts nothing (e.g. --config configs/tiny_base.yaml)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from vln_core.video_inference import infer_video, read_video_source, write_video_outputs

    try:
        cfg = config_from_args(args)
        if args.frames is not None:
            cfg.video.total_frames = args.frames
        if args.keyframes is not None:
            cfg.video.keyframes = args.keyframes
        N, Nk = cfg.video.total_frames, cfg.video.keyframes
        if N < 2 or not 1 <= Nk < N:
            raise InputError(f"need --frames >= 2 and 1 <= --keyframes < --frames, got {N} and {Nk}")
        stages = ["read", "geometry", "keyframes", "heatmaps", "write"]
        with tqdm(total=len(stages), desc="infer_video", disable=args.no_progress) as bar:
            def stage(name: str) -> None:
                bar.set_postfix_str(name)
                bar.update(1)

            bar.set_postfix_str("read")
            source = read_video_source(args.source, N)
            result = infer_video(source, cfg, args.backend, args.model_path, args.hfov, progress=stage,
                                 instruction=args.instruction, random_init=args.random_init)
            stage("write")
            name = Path(args.source).stem if Path(args.source).is_file() else Path(args.source).resolve().name
            settings = {"source": str(args.source), "instruction": args.instruction, "frames": N, "keyframes": Nk,
                        "frame_size": list(cfg.video.frame_size), "model_path": args.model_path,
                        "random_init": bool(args.random_init),
                        "match_refinement": bool(cfg.model.match_refinement) and args.backend in ("model", "onnx")}
            written = write_video_outputs(source, result, args.out, name, settings)
    except (ConfigError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kf = ", ".join(str(int(source.frame_numbers[k])) for k in result.keyframes)
    label = f"{args.backend} {result.model_name}".strip() + (" (RANDOM WEIGHTS: plumbing check)" if args.random_init else "")
    print(f"{label} ({result.mode}): keyframes {kf}; {result.timings_ms['total']:.0f} ms; wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

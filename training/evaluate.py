#!/usr/bin/env python3
"""Evaluate the learned model per mode next to model-free baselines and the oracle.

    python training/evaluate.py --checkpoint models/embedded/checkpoint.pt --data data/sim_eval \\
        --out outputs/eval/sim [--frames 16 --keyframes 8 --frame-stride 2] [--max-windows 96]
    python training/evaluate.py --checkpoint models/embedded/checkpoint.pt \\
        --data ../shared/data/real_rgbd_box --frame-stride 1 --out outputs/eval/real

Modes: ``rgb_pose`` (colour + known poses) and ``rgb_only`` (colour only). Methods: the model,
constant depth (known poses), a classical ORB baseline (triangulation with known poses /
RANSAC homography), uniform, centre Gaussian, identity and the oracle (true depth and poses =
the ground truth). Writes ``eval.json``, ``report.txt`` and PNG panels (current frame, each
keyframe, true and predicted heatmaps; and the model's depth against the true depth, to see where
depth goes wrong) to ``--out``; prints the tables. Without ``--checkpoint``
only the baselines are scored. See ``vln_core/train/evaluation.py`` for the protocol.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vln_core.atomic import atomic_write_text  # noqa: E402
from vln_core.config import ConfigError, add_config_arguments, config_from_args  # noqa: E402
from vln_core.errors import InputError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default="configs/train_embedded.yaml")
    parser.add_argument("--checkpoint", help="model checkpoint (models/embedded/checkpoint.pt, runs/.../best.pt); "
                        "omit for baselines only")
    parser.add_argument("--data", action="append", required=True, metavar="DIR",
                        help="episode folder(s) or posed-image folder(s) to evaluate on (repeatable)")
    parser.add_argument("--out", required=True, help="output folder for eval.json, report.txt and panels/")
    parser.add_argument("--frames", type=int, default=16, help="N_m frames per window (default 16)")
    parser.add_argument("--keyframes", type=int, default=8, help="N_k keyframes per window (default 8)")
    parser.add_argument("--frame-stride", type=int, default=2, help="episode frames between window frames (default 2)")
    parser.add_argument("--window-seconds", type=float, default=None,
                        help="span of a window in seconds: sets --frame-stride from the data's frame rate "
                             "(--fps, else the episode's timestamps; plain posed folders count as 30 Hz)")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of the data for --window-seconds (e.g. 15 for a folder of every other "
                             "frame of a 30 Hz camera)")
    parser.add_argument("--max-windows", type=int, default=96, help="windows scored, evenly spread (default 96)")
    parser.add_argument("--modes", default="rgb_pose,rgb_only", help="comma-separated: rgb_pose, rgb_only")
    parser.add_argument("--panels", type=int, default=4, help="PNG panels written per mode (default 4)")
    parser.add_argument("--constant-depth", type=float, default=None,
                        help="depth (m) of the constant-depth baseline (default: the checkpoint's training median)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from tqdm import tqdm

    from vln_core.models.shipped import load_model_checkpoint
    from vln_core.train.dataset import EpisodeWindowDataset, find_episodes, stride_for_window_seconds
    from vln_core.train.evaluation import MODES, evaluate_windows, format_report

    try:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        unknown = [m for m in modes if m not in MODES]
        if unknown or not modes:
            raise InputError(f"--modes: unknown mode(s) {unknown or args.modes!r}; choose from {list(MODES)}")
        if args.frames < 2 or not 1 <= args.keyframes < args.frames or args.frame_stride < 1 or args.max_windows < 1:
            raise InputError("need --frames >= 2, 1 <= --keyframes < --frames, --frame-stride >= 1, --max-windows >= 1")
        cfg = config_from_args(args)
        model = None
        constant_depth = args.constant_depth
        if args.checkpoint:
            model, meta = load_model_checkpoint(args.checkpoint, cfg)
            if constant_depth is None:
                constant_depth = meta.get("train_median_depth_m")
        if constant_depth is None:
            raise InputError("--constant-depth is needed when the checkpoint does not record its training median "
                             "depth (or without --checkpoint)")
        cfg.video.total_frames = args.frames
        cfg.video.keyframes = args.keyframes
        episodes = find_episodes(args.data)
        if args.window_seconds is not None:
            args.frame_stride = stride_for_window_seconds(episodes, args.window_seconds, args.frames, args.fps)
        cfg.training.frame_stride = args.frame_stride
        dataset = EpisodeWindowDataset(episodes, cfg)
        if len(dataset) == 0:
            raise InputError(f"no window of {args.frames} frames at stride {args.frame_stride} fits the data "
                             f"(a window spans {(args.frames - 1) * args.frame_stride + 1} frames)")
        n = len(dataset)
        count = min(n, args.max_windows)
        indices = sorted({int(i) for i in torch.linspace(0, n - 1, count).round().tolist()})
        out = Path(args.out)
        start = time.perf_counter()
        with tqdm(total=len(indices), desc="evaluate", unit="window", disable=args.no_progress) as bar:
            result = evaluate_windows(model, dataset, indices, cfg, float(constant_depth), modes,
                                      panel_dir=out / "panels", num_panels=args.panels, progress=bar.update)
    except (ConfigError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result.update(
        checkpoint=args.checkpoint, data=args.data, seconds=round(time.perf_counter() - start, 1),
        video={"total_frames": args.frames, "keyframes": args.keyframes, "frame_stride": args.frame_stride,
               "window_seconds": args.window_seconds,
               "frame_size": list(cfg.video.frame_size)},
        torch_threads=torch.get_num_threads(),
    )
    report = format_report(result, title=f"evaluation on {', '.join(args.data)}")
    print(report)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "eval.json", json.dumps(result, indent=2))
    atomic_write_text(out / "report.txt", report + "\n")
    print(f"wrote {out / 'eval.json'}, {out / 'report.txt'}, {len(result['panels'])} heatmap panels and "
          f"{len(result['depth_panels'])} depth-error panels")
    return 0


if __name__ == "__main__":
    sys.exit(main())

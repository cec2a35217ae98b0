#!/usr/bin/env python3
"""Score the node's streaming path: episodes through the node's runtime, against the exact heatmaps.

    python training/evaluate_stream.py --data data/sim_eval --every 2 --out outputs/stream/sim
    python training/evaluate_stream.py --data ../shared/data/real_rgbd_box --every 1 \\
        --out outputs/stream/box model.depth_source=monocular

Each episode is fed frame by frame into a fresh ``NavigationRuntime`` (the node's own code,
without the middleware), ``step`` runs every ``--every`` frames (a 30 Hz camera and a 5 Hz node:
6; a 10 Hz simulated episode: 2), and every output's keyframe heatmaps are compared (Pearson CC)
with the geometry core's exact heatmaps for the same current frame and keyframes. Unlike
``training/evaluate.py`` (fixed windows), each frame's depth here comes only from the frames
before it and keyframes stay as long as the memory keeps them: what a robot gets.

Writes ``--out/stream_eval.json`` (per episode and per output) and prints one line per episode
and the mean. Settings are the node's (``--config``, default the node's parameter file, plus
``key=value`` overrides); ``--checkpoint`` sets ``node.model_path``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vln_core.atomic import atomic_write_text  # noqa: E402
from vln_core.config import ConfigError, add_config_arguments, config_from_args  # noqa: E402
from vln_core.errors import InputError  # noqa: E402

NODE_PARAMS = REPO / "ros2_ws" / "src" / "vln_heatmap" / "config" / "vln_heatmap.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default=str(NODE_PARAMS))
    parser.add_argument("--data", action="append", required=True, metavar="DIR",
                        help="episode folder(s), posed-image folder(s) or folders of episodes (repeatable)")
    parser.add_argument("--out", required=True, help="output folder for stream_eval.json")
    parser.add_argument("--every", type=int, default=6, help="frames between node updates (default 6: 30 Hz in, 5 Hz out)")
    parser.add_argument("--backend", default="model", help="node.backend (default model)")
    parser.add_argument("--checkpoint", default=None, help="node.model_path (default: the shipped model)")
    parser.add_argument("--mode", choices=["rgb_pose", "rgb_only"], default="rgb_pose",
                        help="rgb_pose: colour + odometry; rgb_only: colour alone (default rgb_pose)")
    parser.add_argument("--depth", action="store_true", help="feed the recorded depth too (geometry / auto backends)")
    parser.add_argument("--instruction", default="go to the chair")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np
    from tqdm import tqdm

    from vln_core.data.episode import read_episode
    from vln_core.train.dataset import find_episodes
    from vln_core.train.streaming_eval import stream_episode

    try:
        if args.every < 1:
            raise InputError(f"--every must be >= 1, got {args.every}")
        args.overrides = [f"node.backend={args.backend}", f"node.learned_mode={args.mode}", "node.publish_overlay=false",
                          *([f"node.model_path={args.checkpoint}"] if args.checkpoint else []), *args.overrides]
        cfg = config_from_args(args)
        folders = find_episodes(args.data)
        episodes = [read_episode(p) for p in folders]
    except (InputError, ConfigError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"evaluate_stream: {exc}", file=sys.stderr)
        return 2

    results, t0 = [], time.monotonic()
    bar = tqdm(total=sum(len(e) for e in episodes), unit="frame", disable=args.no_progress, desc="streaming")
    for path, episode in zip(folders, episodes):
        try:
            score = stream_episode(episode, cfg, args.every, args.instruction, odometry=args.mode == "rgb_pose",
                                   depth=args.depth, progress=lambda i: bar.update(1))
        except InputError as exc:
            bar.close()
            print(f"evaluate_stream: {path}: {exc}", file=sys.stderr)
            return 2
        results.append({"episode": str(path), "outputs": len(score.outputs), "cc_mean": score.cc_mean,
                        "per_output": score.outputs})
        tqdm.write(f"{path}: {len(score.outputs)} outputs, learned vs exact CC {score.cc_mean:.3f}")
    bar.close()
    means = [r["cc_mean"] for r in results if np.isfinite(r["cc_mean"])]
    summary = {
        "metric": "Pearson CC per keyframe heatmap, node runtime output vs exact (recorded depth + poses), "
                  "mean over outputs, then over episodes",
        "backend": cfg.node.backend, "mode": args.mode, "depth_source": cfg.model.depth_source, "every": args.every,
        "model_path": cfg.node.model_path or "(shipped)", "episodes": len(results),
        "cc_mean": float(np.mean(means)) if means else float("nan"), "seconds": round(time.monotonic() - t0, 1),
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "stream_eval.json", json.dumps(summary, indent=1))
    print(f"{len(results)} episode(s), {args.mode}, backend {cfg.node.backend} (depth_source {cfg.model.depth_source}): "
          f"learned vs exact CC {summary['cc_mean']:.3f} -> {out / 'stream_eval.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Turn a training checkpoint into the shipped model file (weights + config + facts, no optimiser).

    python tools/ship_model.py runs/embedded/best.pt --data data/sim_train \\
        [--out models/embedded/checkpoint.pt]

Records in the file's ``meta``: the training step, the number of training episodes and the median
valid depth of their frames (``train_median_depth_m``: the constant-depth baseline of
``training/evaluate.py`` uses it), so evaluation needs nothing but the file. Written atomically.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vln_core.errors import InputError  # noqa: E402


def median_depth(episode_dirs: list[Path], frames_per_episode: int = 5) -> float:
    """Median of the valid depth pixels of a few evenly spaced frames per episode (metres)."""
    import numpy as np

    from vln_core.data.episode import read_episode

    values = []
    for path in episode_dirs:
        episode = read_episode(path)
        for i in np.linspace(0, len(episode) - 1, frames_per_episode).round().astype(int):
            d = episode.depth(int(i))
            values.append(d[d > 0][::7])
    if not values:
        raise InputError("no depth found to take the median of")
    return float(np.median(np.concatenate(values)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="training checkpoint (runs/embedded/best.pt)")
    parser.add_argument("--data", action="append", required=True, metavar="DIR", help="the training episodes")
    parser.add_argument("--out", default="models/embedded/checkpoint.pt")
    parser.add_argument("--meta-from", default=None, metavar="CHECKPOINT",
                        help="keep this shipped checkpoint's meta (e.g. the monocular network's training facts "
                             "when a later stage trains on top of it) under 'base'; its train_median_depth_m "
                             "stays the constant-depth baseline")
    args = parser.parse_args()
    try:
        from vln_core.models.shipped import write_shipped_checkpoint
        from vln_core.train.checkpoint import load_checkpoint
        from vln_core.train.dataset import find_episodes

        state = load_checkpoint(args.checkpoint)
        episodes = find_episodes(args.data)
        meta = {
            "source_checkpoint": str(args.checkpoint),
            "step": int(state.get("step", -1)),
            "best_eval": state.get("best_eval"),
            "training_episodes": len(episodes),
            "train_median_depth_m": round(median_depth(episodes), 4),
        }
        if args.meta_from:
            base = dict(load_checkpoint(args.meta_from).get("meta") or {})
            meta["base"] = base
            if "train_median_depth_m" in base:  # the baseline stays comparable with earlier evaluations
                meta["train_median_depth_m"] = base["train_median_depth_m"]
        out = write_shipped_checkpoint(args.checkpoint, args.out, meta)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size_mb = out.stat().st_size / 1e6
    print(f"wrote {out} ({size_mb:.1f} MB): {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Evaluate a trained checkpoint on episodes, next to model-free baselines.

    python training/evaluate.py --config configs/train_embedded.yaml \\
        --checkpoint runs/embedded/best.pt --data data/sim_eval [--max-samples 200] [--out FILE.json]

Prints a table of heatmap metrics (KL lower is better; CC, NSS, SIM, AUC-Judd higher; peak
distance in pixels lower) for the model, a uniform map and a centre Gaussian, waypoint ADE / FDE
(metres) for the model, constant velocity and standing still, and the out-of-view fraction error;
writes the same as JSON (default: next to the checkpoint, ``eval_<data folder name>.json``).
Without ``--checkpoint`` only the baselines are scored.
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


def _table(result: dict) -> str:
    lines = []
    metrics = ("kl", "cc", "nss", "sim", "auc_judd", "peak_distance_px")
    lines.append(f"heatmaps ({result['num_keyframes']} keyframes with overlap in {result['num_windows']} windows)")
    lines.append(f"  {'method':<16}" + "".join(f"{m:>17}" for m in metrics))
    for name, values in result["heatmap"].items():
        lines.append(f"  {name:<16}" + "".join(f"{values.get(m, float('nan')):>17.4f}" for m in metrics))
    lines.append(f"waypoints ({result['num_full_routes']} windows with a full 20-step future)")
    for name, values in result["waypoints"].items():
        lines.append(f"  {name:<18} ADE {values.get('ade_m', float('nan')):.3f} m   FDE {values.get('fde_m', float('nan')):.3f} m")
    for name, values in result["out_of_view"].items():
        lines.append(f"out-of-view fraction MAE  {name:<14} {values['fraction_mae']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default="configs/train_embedded.yaml")
    parser.add_argument("--checkpoint", help="model checkpoint (last.pt / best.pt); omit for baselines only")
    parser.add_argument("--data", action="append", required=True, metavar="DIR",
                        help="episode folder(s) to evaluate on (repeatable)")
    parser.add_argument("--max-samples", type=int, default=200, help="windows scored, evenly spread")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", help="JSON output path")
    args = parser.parse_args(argv)

    import torch

    from vln_core.train.checkpoint import load_model_weights
    from vln_core.train.dataset import EpisodeWindowDataset, find_episodes
    from vln_core.train.evaluation import evaluate_model
    from vln_core.train.trainer import resolve_device

    try:
        cfg = config_from_args(args)
        dataset = EpisodeWindowDataset(find_episodes(args.data), cfg)
        device = resolve_device(cfg.training.device)
        model = None
        if args.checkpoint:
            from vln_core.models import build_model

            model = build_model(cfg)
            load_model_weights(model, args.checkpoint)
            model.to(device)
        start = time.perf_counter()
        result = evaluate_model(model, dataset, args.max_samples, args.batch_size, device,
                                cfg.model.max_instruction_length)
    except (ConfigError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result.update(
        checkpoint=args.checkpoint, data=args.data, seconds=round(time.perf_counter() - start, 2),
        video={"total_frames": cfg.video.total_frames, "keyframes": cfg.video.keyframes,
               "frame_size": list(cfg.video.frame_size)},
        model_name=cfg.model.name, torch_threads=torch.get_num_threads(),
    )
    print(_table(result))
    if args.out:
        out = Path(args.out)
    elif args.checkpoint:
        out = Path(args.checkpoint).parent / f"eval_{Path(args.data[0]).resolve().name}.json"
    else:
        out = Path(f"eval_baselines_{Path(args.data[0]).resolve().name}.json")
    atomic_write_text(out, json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

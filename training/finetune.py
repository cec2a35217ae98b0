#!/usr/bin/env python3
"""Train the VLN spatial model (one stage) from episodes.

    python training/finetune.py --config configs/train_embedded.yaml training.max_steps=500
    python training/finetune.py --config configs/train_embedded.yaml training.stage=finetune \\
        model.checkpoint=runs/embedded/best.pt training.output_dir=runs/embedded_ft
    torchrun --nproc_per_node=2 training/finetune.py --config configs/train_base.yaml

A run resumes from ``<training.output_dir>/last.pt`` when it exists (``--fresh`` ignores it and
moves the earlier run's checkpoints, logs and config into ``<output_dir>/previous_<UTC time>/``,
printing which; nothing is deleted. Without ``last.pt`` a run starts at step 0 and moves an earlier
run's files (e.g. a lone ``best.pt``, or the log of a run killed before its first save) aside the same
way. ``--resume FILE`` names another checkpoint). Progress: a tqdm bar, TensorBoard logs under
``<output_dir>/tb``, ``train_log.jsonl`` / ``eval_log.jsonl``, the config as ``config.yaml``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vln_core.config import ConfigError, add_config_arguments, config_from_args  # noqa: E402
from vln_core.errors import InputError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default="configs/train_embedded.yaml")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", metavar="FILE", help="resume from this checkpoint (default: output_dir/last.pt if present)")
    group.add_argument("--fresh", action="store_true", help="start from scratch; an earlier run's files in output_dir are "
                       "moved to output_dir/previous_<time>/, never deleted")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    args = parser.parse_args(argv)

    import torch

    from vln_core.train.trainer import run_training

    try:
        cfg = config_from_args(args)
        resume = None if args.fresh else (args.resume or "auto")
        start = time.perf_counter()
        trainer = run_training(cfg, resume=resume, progress=not args.no_progress)
    except (ConfigError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if trainer.is_main:
        history = trainer.history
        wall = time.perf_counter() - start
        if history:
            head = statistics.fmean(r.loss for r in history[: max(1, len(history) // 10)])
            tail = statistics.fmean(r.loss for r in history[-max(1, len(history) // 10):])
            per_step = statistics.median(r.seconds for r in history)
            print(f"stage {cfg.training.stage}: steps {history[0].step}..{history[-1].step}, "
                  f"loss first 10% {head:.4f} -> last 10% {tail:.4f}, median {per_step:.3f} s/step "
                  f"({torch.get_num_threads()} threads, device {trainer.device}), wall {wall:.1f} s")
        else:
            print(f"nothing to do: already at step {trainer.step} >= training.max_steps={cfg.training.max_steps}")
        best = f"{trainer.best_eval:.4f}" if trainer.best_eval != float("inf") else "n/a (no eval set)"
        print(f"best eval loss {best}; checkpoints in {trainer.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

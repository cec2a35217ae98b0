#!/usr/bin/env python3
"""Train the embedded model's waypoint head to imitate the planner (``vln_core/train/nav_imitation.py``).

    python training/imitate_nav.py --out runs/nav_head [--init models/embedded/checkpoint.pt] \\
        [--homes 150] [--val-homes 20] [--states-per-home 20] [--epochs 60]
    python training/evaluate_nav.py --episodes 50 --checkpoint runs/nav_head/checkpoint.pt --out outputs/nav_head

Training homes come from seeds 1000 on, validation homes from 2000 on (the collector's training
range; the closed-loop evaluation uses 900000 on). Everything but the waypoint head is the
``--init`` checkpoint's, unchanged (heatmaps, depth, poses and the goal head stay as they were);
the head becomes the ``visual`` one (``model.arch_overrides.waypoint_head: visual``, recorded in
the checkpoint). Writes ``--out/checkpoint.pt`` and ``--out/imitation.json`` (data, epochs,
train / validation L1 of the waypoints before and after). Bad input exits 2 with one line.
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
from vln_core.config import ConfigError  # noqa: E402
from vln_core.errors import InputError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder for checkpoint.pt and imitation.json")
    parser.add_argument("--init", default=None, help="starting checkpoint (default: the shipped model)")
    parser.add_argument("--homes", type=int, default=150, help="training homes (seeds 1000 on; default 150)")
    parser.add_argument("--val-homes", type=int, default=20, help="validation homes (seeds 2000 on; default 20)")
    parser.add_argument("--states-per-home", type=int, default=20, help="robot poses per home (default 20)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--dagger-homes", type=int, default=0,
                        help="then drive the trained head in this many more training homes (seeds 3000 on), label the "
                             "states it visits with the planner's waypoints and train again on everything (default 0)")
    parser.add_argument("--dagger-steps", type=int, default=30, help="decisions per DAgger rollout (default 30)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if (args.homes < 1 or args.val_homes < 1 or args.states_per_home < 1 or args.epochs < 1 or args.threads < 1
            or args.dagger_homes < 0 or args.dagger_steps < 1):
        print("imitate_nav: --homes, --val-homes, --states-per-home, --epochs, --threads and --dagger-steps must be >= 1, "
              "--dagger-homes >= 0", file=sys.stderr)
        return 2

    import numpy as np
    import torch
    from tqdm import tqdm

    from vln_core.config import config_to_dict
    from vln_core.models.shipped import SHIPPED_CHECKPOINT, embedded_with_new_head
    from vln_core.train.checkpoint import save_checkpoint
    from vln_core.train.nav_imitation import collect_rollout_states, collect_states, merge_states, subset, train_head

    torch.set_num_threads(args.threads)
    try:
        model, _, inherited = embedded_with_new_head(args.init, "waypoint_head", "visual", ("waypoint_head.",))
    except (InputError, ConfigError) as exc:
        print(f"imitate_nav: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    cfg = model.cfg

    sim_cfg = cfg.sim
    bar = tqdm(total=args.homes + args.val_homes, unit="home", desc="states", disable=args.no_progress)
    train = collect_states(1000, args.homes, sim_cfg, model, args.states_per_home, np.random.default_rng(1),
                           progress=bar.update)
    val = collect_states(2000, args.val_homes, sim_cfg, model, args.states_per_home, np.random.default_rng(2),
                         progress=bar.update)
    bar.close()
    t_states = time.monotonic() - t0
    epochs = tqdm(total=args.epochs, unit="epoch", desc="head", disable=args.no_progress)

    def report(epoch: int, train_l1: float, val_l1: float) -> None:
        epochs.update(1)
        epochs.set_postfix_str(f"train {train_l1:.3f} m, val {val_l1:.3f} m")

    model.waypoint_head.train()
    stats = train_head(model.waypoint_head, train, val, epochs=args.epochs, progress=report)
    epochs.close()
    dagger_states = 0
    if args.dagger_homes:
        bar = tqdm(total=args.dagger_homes, unit="home", desc="dagger rollouts", disable=args.no_progress)
        rollouts = collect_rollout_states(3000, args.dagger_homes, sim_cfg, model, args.dagger_steps, progress=bar.update)
        bar.close()
        dagger_states = len(rollouts.f32)
        # the homes of the last sixth of the rollouts validate (states like the ones the policy visits)
        cut = np.unique(rollouts.seeds)[-max(1, len(np.unique(rollouts.seeds)) // 6):]
        held = np.isin(rollouts.seeds, cut)
        if held.all():  # a single rollout home: it trains, and validation stays the planner states
            held[:] = False
        roll_train, roll_val = subset(rollouts, ~held), subset(rollouts, held)
        val = merge_states(val, roll_val) if len(roll_val.f32) else val
        first = stats
        epochs = tqdm(total=args.epochs, unit="epoch", desc="head (dagger)", disable=args.no_progress)
        stats = train_head(model.waypoint_head, merge_states(train, roll_train), val, epochs=args.epochs,
                           progress=report)
        epochs.close()
        stats = {**stats, "val_l1_before": first["val_l1_before"], "val_l1_before_dagger": first["val_l1"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "checkpoint.pt", {"model": model.state_dict(), "config": config_to_dict(cfg),
                                            "meta": {**inherited, "init": str(args.init or SHIPPED_CHECKPOINT),
                                                     "trained": "waypoint_head (visual) by planner imitation"}})
    summary = {"init": str(args.init or SHIPPED_CHECKPOINT), "train_states": len(train.f32), "val_states": len(val.f32),
               "train_homes": int(len(set(train.seeds.tolist()))), "val_homes": int(len(set(val.seeds.tolist()))),
               "epochs": args.epochs, "dagger_homes": args.dagger_homes, "dagger_states": dagger_states,
               **{k: round(float(v), 4) for k, v in stats.items()},
               "seconds_states": round(t_states, 1), "seconds_total": round(time.monotonic() - t0, 1)}
    atomic_write_text(out / "imitation.json", json.dumps(summary, indent=1))
    print(f"waypoint L1 on validation states: {stats['val_l1_before']:.3f} m (head untrained) -> {stats['val_l1']:.3f} m; "
          f"{len(train.f32)} training states; wrote {out / 'checkpoint.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Train the ``mask`` goal head: which pixels of the view show the object the instruction names.

    python training/train_goal.py --out runs/goal_mask [--init models/embedded/checkpoint.pt] \\
        [--homes 200] [--val-homes 30] [--views-per-home 16] [--steps 3000]

Training homes come from seeds 1000 on, validation homes from 2000 on; the training homes skip
the validation homes' seeds (more than about 250 training homes run past 2000). The closed-loop
evaluation uses seeds 900000 on. Everything but the goal head is the ``--init`` checkpoint's,
unchanged; the head becomes ``model.arch_overrides.goal_head: mask`` (recorded in the
checkpoint; :mod:`vln_core.models.goal_grounding`, :mod:`vln_core.train.goal_grounding`). The
shipped ``film`` head is scored on the same validation views first, for comparison (its peak
only; its softmax map has no absolute probability).

Writes ``--out/checkpoint.pt`` and ``--out/goal.json`` (data, steps, validation scores of both
heads: peak hit rate, detection, false alarms, per goal category and on held-out colour +
category + room combinations). Bad input exits 2 with one line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vln_core.atomic import atomic_open, atomic_write_text  # noqa: E402
from vln_core.config import ConfigError  # noqa: E402
from vln_core.errors import InputError  # noqa: E402

#: First seeds of the training and validation homes (training skips the validation homes' seeds).
TRAIN_SEED, VAL_SEED = 1000, 2000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder for checkpoint.pt and goal.json")
    parser.add_argument("--init", default=None, help="starting checkpoint (default: the shipped model)")
    parser.add_argument("--homes", type=int, default=200, help="training homes (seeds 1000 on; default 200)")
    parser.add_argument("--val-homes", type=int, default=30, help="validation homes (seeds 2000 on; default 30)")
    parser.add_argument("--views-per-home", type=int, default=16, help="rendered views per home (default 16)")
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps (default 3000)")
    parser.add_argument("--text-steps", type=int, default=1500,
                        help="steps on instructions alone before the pixels (the goal-name probe; default 1500)")
    parser.add_argument("--views-cache", default=None,
                        help="folder that keeps the rendered, encoded views (train.pt, val.pt): a later run with the "
                             "same encoder weights, --homes, --val-homes and --views-per-home reuses them")
    parser.add_argument("--hard-negatives", type=float, default=0.0,
                        help="share of samples naming a goal out of view that shares a category or colour with "
                             "an object in view (default 0)")
    parser.add_argument("--pos-weight", type=float, default=3.0,
                        help="weight of goal pixels in the loss; above 1 trades false alarms for detections (default 3)")
    parser.add_argument("--in-view-share", type=float, default=2 / 3,
                        help="share of samples naming a goal in view; the rest name any goal of the home (default 2/3)")
    parser.add_argument("--false-alarm-weight", type=float, default=0.0,
                        help="keep the weights with the best validation peak hit minus this times the false "
                             "alarms (default 0: peak hit alone)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if (min(args.homes, args.val_homes, args.views_per_home, args.steps, args.threads) < 1 or args.text_steps < 0
            or not 0.0 <= args.hard_negatives <= 1.0 or not 0.0 <= args.in_view_share <= 1.0
            or not args.pos_weight > 0 or args.false_alarm_weight < 0):
        print("train_goal: --homes, --val-homes, --views-per-home, --steps and --threads must be >= 1, --text-steps >= 0, "
              "--hard-negatives and --in-view-share in [0, 1], --pos-weight > 0, --false-alarm-weight >= 0",
              file=sys.stderr)
        return 2

    import hashlib

    import torch
    from tqdm import tqdm

    from vln_core.config import config_to_dict
    from vln_core.models.shipped import SHIPPED_CHECKPOINT, embedded_with_new_head
    from vln_core.train.checkpoint import save_checkpoint
    from vln_core.train.goal_grounding import collect_views, grounding_scores, train_goal_head

    torch.set_num_threads(args.threads)
    try:
        model, init, inherited = embedded_with_new_head(args.init, "goal_head", "mask", ("goal_head.", "goal_phrase."))
    except (InputError, ConfigError) as exc:
        print(f"train_goal: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    cfg = model.cfg

    # the views depend on the frozen encoder's weights (not on the goal head an --init may carry)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.encoder.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    key = {"encoder": digest.hexdigest()[:16], "homes": args.homes, "val_homes": args.val_homes,
           "views_per_home": args.views_per_home, "homes_disjoint": True}
    cache = Path(args.views_cache) if args.views_cache else None
    cached = None
    if cache is not None and (cache / "views.pt").is_file():
        cached = torch.load(cache / "views.pt", weights_only=False)
        if cached.get("key") != key:
            print(f"train_goal: {cache / 'views.pt'} holds views of other settings ({cached.get('key')}); "
                  "not reused", file=sys.stderr)
            cached = None
    if cached is not None:
        train, val = cached["train"], cached["val"]
    else:
        bar = tqdm(total=args.homes + args.val_homes, unit="home", desc="views", disable=args.no_progress)
        val = collect_views(VAL_SEED, args.val_homes, cfg.sim, model, args.views_per_home, view_seed=2,
                            progress=bar.update)
        # training seeds run on past 2000 when many homes are asked for: never the validation homes
        train = collect_views(TRAIN_SEED, args.homes, cfg.sim, model, args.views_per_home, view_seed=1,
                              skip=tuple(val.seeds), progress=bar.update)
        bar.close()
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            with atomic_open(cache / "views.pt", "wb") as fh:
                torch.save({"key": key, "train": train, "val": val}, fh)
    t_views = time.monotonic() - t0
    film_peak = grounding_scores(init, val)["peak_hit"] if init.arch.goal_head == "film" else None
    steps = tqdm(total=args.steps, unit="step", desc="goal head", disable=args.no_progress)
    last = [0]

    def report(step: int, loss: float, peak: float) -> None:
        steps.update(step - last[0])
        last[0] = step
        steps.set_postfix_str(f"loss {loss:.3f}, val peak hit {peak:.2f}")

    stats = train_goal_head(model, train, val, steps=args.steps, text_steps=args.text_steps, progress=report,
                            hard_negatives=args.hard_negatives, pos_weight=args.pos_weight,
                            in_view_share=args.in_view_share, false_alarm_weight=args.false_alarm_weight)
    steps.close()
    val_scores = grounding_scores(model, val, seen=stats["seen_combinations"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "checkpoint.pt", {"model": model.state_dict(), "config": config_to_dict(cfg),
                                            "meta": {**inherited, "init": str(args.init or SHIPPED_CHECKPOINT),
                                                     "trained": "goal head (mask) on rendered views"}})
    summary = {"init": str(args.init or SHIPPED_CHECKPOINT), "train_views": len(train), "val_views": len(val),
               "train_homes": len(train.scenes), "val_homes": len(val.scenes),
               "homes_in_both": len(set(train.seeds) & set(val.seeds)), "steps": args.steps,
               "text_steps": args.text_steps, "hard_negatives": args.hard_negatives, "pos_weight": args.pos_weight,
               "in_view_share": round(args.in_view_share, 4), "false_alarm_weight": args.false_alarm_weight,
               "train_loss": round(stats["train_loss"], 4), "film_head_val_peak_hit": film_peak,
               "val": val_scores, "seconds_views": round(t_views, 1),
               "seconds_total": round(time.monotonic() - t0, 1)}
    atomic_write_text(out / "goal.json", json.dumps(summary, indent=1))
    held = val_scores.get("held_out_combinations", {})
    print(f"goal peak on the goal, validation views: {val_scores['peak_hit']:.2f} (shipped film head "
          f"{film_peak if film_peak is None else round(film_peak, 2)}, chance {val_scores['chance']:.2f}); detected "
          f"{val_scores['detected']:.2f}, false alarms {val_scores['false_alarm']:.2f}; held-out combinations "
          f"{held.get('peak_hit')} ({held.get('goals')}); wrote {out / 'checkpoint.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

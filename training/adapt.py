#!/usr/bin/env python3
"""Adapt the model to a robot's own building from its RGB-D recordings, within a time budget.

    python training/adapt.py RECORDING... --out DIR [--minutes 15] [--init models/embedded/checkpoint.pt]
        [--threads 1] [--nice 10] [--no-idle] [--val-fraction 0.3] [--modes rgb_pose,rgb_only]
        [--relative-pose auto|pnp|pnp_or_essential] [key=value ...]
    python training/adapt.py run1/ --out adapted --color-topic /camera/color/image_raw \\
        --depth-topic /camera/depth/image_raw --odom-topic /odom          # a rosbag2 folder

RECORDING: an episode folder (the node's recorder, ``training/collect.py``, ``training/import_bag.py``),
a posed-image folder (``frame-NNNNNN.{color.png,depth.png,pose.txt}`` + ``intrinsics.K.txt``), or a
rosbag2 folder (imported with ``import_bag.py``'s flags). Depth and poses are required: they are
the supervision.

1. Each recording is split by time: the last ``--val-fraction`` (30 %) is validation and is never
   trained on (``DIR/data/{train,val}/``).
2. The starting model (``--init``) is scored on the validation part in both modes with
   ``training/evaluate.py``'s protocol and baselines.
3. Colour only: the way frame poses come from matches (``model.relative_pose``: PnP on the
   predicted depth, or PnP or the essential matrix) is chosen on the *training* part, by the
   starting model's RGB-only CC (``--relative-pose auto``); the adapted model is scored with it,
   and the report says to set it in the node's parameters when it differs.
4. It is fine-tuned on the training part until ``--minutes`` of training time are used (a
   progress bar; ``DIR/run/last.pt`` every ``training.save_every`` steps: run the same command
   again after a kill and it resumes with the time it has left).
5. The adapted model is scored the same way. Only if its CC beats the starting model's (mean over
   the modes, no mode worse) does it write ``DIR/checkpoint.pt``, ``DIR/adaptation.json`` and
   ``DIR/ADAPTATION.md``; otherwise it says so, writes no checkpoint, and exits 0.

The node takes the new checkpoint without a restart when ``node.model_path`` names it (see the
package README: record -> adapt -> the node picks it up). Bad input: exit 2 and one line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from import_bag import add_import_arguments, import_keywords  # noqa: E402 (training/ is this script's folder)

from vln_core.config import ConfigError, with_overrides  # noqa: E402
from vln_core.errors import InputError  # noqa: E402
from vln_core.geometry.two_view import RELATIVE_POSE_METHODS  # noqa: E402

DEFAULT_STAGE = "multiview"
DEFAULT_LEARNING_RATE = 1e-3
#: the real evaluation sequence: evaluation only, but for the one split the adaptation test uses
EVALUATION_SET = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_rgbd_box"
EVALUATION_SET_VAL_FRACTION = 0.4


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recordings", nargs="+", metavar="RECORDING",
                   help="recording folders, then optional key=value config overrides on top of the starting "
                        "checkpoint's own config (training.batch_size=1, ...)")
    p.add_argument("--out", type=Path, required=True, help="output folder (data/, run/, and the results if it wins)")
    p.add_argument("--minutes", type=float, default=15.0, help="training time budget in minutes (default 15)")
    p.add_argument("--init", type=Path, default=None, help="starting checkpoint (default: the shipped model)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: all cores; 1 leaves a core to a node on the same machine)")
    p.add_argument("--nice", type=int, default=10,
                   help="raise this process's niceness by N (default 10: a node on the same machine wins every "
                        "contended core; 0 keeps the shell's priority)")
    p.add_argument("--no-idle", dest="idle", action="store_false",
                   help="keep the normal scheduling policy (default on Linux: SCHED_IDLE, so a node thread that "
                        "wakes takes the core at once)")
    p.add_argument("--val-fraction", type=float, default=0.3, help="last share of each recording kept for validation")
    p.add_argument("--modes", default="rgb_pose,rgb_only", help="modes scored: rgb_pose, rgb_only")
    p.add_argument("--stage", default=DEFAULT_STAGE, choices=("finetune", "multiview", "heatmap", "geometry"),
                   help="what is trained (default multiview: the multi-view depth network, whose depth the node serves; "
                        "finetune: the monocular network and the heads)")
    p.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE,
                   help=f"peak learning rate (default {DEFAULT_LEARNING_RATE:g}, the multi-view network's own training "
                        f"rate: at 1e-4 a few hundred steps hardly move it)")
    p.add_argument("--relative-pose", default="auto", choices=("auto",) + RELATIVE_POSE_METHODS,
                   help="colour only: how frame poses come from matches (model.relative_pose); auto (default): the "
                        "method with the better RGB-only CC of the starting model on the training part")
    p.add_argument("--no-progress", action="store_true")
    add_import_arguments(p, color_required=False)
    return p


def _overrides_and_recordings(args: argparse.Namespace) -> None:
    """Split the positionals: ``key=value`` words (not existing paths) are config overrides."""
    words = list(args.recordings)
    args.overrides = [w for w in words if "=" in w and not Path(w).exists()]
    args.recordings = [Path(w) for w in words if not ("=" in w and not Path(w).exists())]


def prepare_recordings(args: argparse.Namespace, data_dir: Path) -> list[Path]:
    """Episode or posed folders for every recording (rosbag2 folders imported once)."""
    from vln_core.data.episode import read_episode
    from vln_core.data.rosbag_import import import_rosbag

    if not args.recordings:
        raise InputError("no recording given (key=value words are config overrides)")
    folders = []
    for rec in args.recordings:
        if not rec.exists():
            raise InputError(f"recording {rec} does not exist")
        if rec.resolve() == EVALUATION_SET.resolve() and args.val_fraction != EVALUATION_SET_VAL_FRACTION:
            raise InputError(f"{rec} is the project's real evaluation set: it is never trained on, except its first "
                             f"60 % for the adaptation test (--val-fraction {EVALUATION_SET_VAL_FRACTION})")
        if rec.is_dir() and (rec / "metadata.yaml").is_file():
            if not args.color_topic:
                raise InputError(f"{rec} is a rosbag2 folder: pass --color-topic (and --depth-topic, --odom-topic or --tf)")
            target = data_dir / "imported" / rec.name
            if not (target / "episode.json").is_file():
                print(f"importing {rec} -> {target}", flush=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                import_rosbag(rec, target, args.color_topic, **import_keywords(args))
            rec = target
        read_episode(rec)  # a clear error now rather than in the middle of training
        folders.append(rec)
    names = [f.name for f in folders]
    if len(set(names)) != len(names):
        raise InputError(f"recordings must have different folder names (they name the split folders): {names}")
    return folders


def choose_relative_pose(model, requested: str, start: str, train_dirs: list[Path], cfg, constant_depth: float,
                         modes: list[str]) -> dict:
    """``model.relative_pose`` for the adapted model: ``requested``, or with ``auto`` the method with
    the better RGB-only CC of the starting ``model`` on the training part (``start`` on a tie or
    without ``rgb_only``). Returns ``{"start", "chosen", "training_part_cc": {method: CC}}``."""
    from vln_core.train.adaptation import heatmap_cc, score_on_validation

    if requested != "auto":
        return {"start": start, "chosen": requested, "training_part_cc": {}}
    if "rgb_only" not in modes:
        return {"start": start, "chosen": start, "training_part_cc": {}}
    print("choosing the colour-only pose method on the training part ...", flush=True)
    cc = {method: heatmap_cc(score_on_validation(model, train_dirs, with_overrides(cfg, {"model.relative_pose": method}),
                                                 constant_depth, ["rgb_only"]), "rgb_only")
          for method in RELATIVE_POSE_METHODS}
    best = max(cc, key=lambda m: (cc[m], m == start))
    return {"start": start, "chosen": best, "training_part_cc": cc}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # options and recordings in any order
    _overrides_and_recordings(args)
    import numpy as np
    import torch

    from vln_core.models.shipped import SHIPPED_CHECKPOINT, load_model_checkpoint
    from vln_core.train.adaptation import (
        describe_table,
        heatmap_cc,
        peak_rss_mb,
        score_on_validation,
        split_by_time,
        train_within_budget,
    )
    from vln_core.atomic import atomic_write_text
    from vln_core.models.shipped import write_shipped_checkpoint
    from vln_core.process import give_way_to_foreground
    from vln_core.train.evaluation import MODES

    wall_start = time.monotonic()
    out: Path = args.out
    try:
        if args.minutes <= 0 or (args.threads is not None and args.threads < 1) or not 0 <= args.nice <= 19:
            raise InputError("need --minutes > 0, --threads >= 1 and --nice in [0, 19]")
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if not modes or any(m not in MODES for m in modes):
            raise InputError(f"--modes: choose from {list(MODES)}, got {args.modes!r}")
        if args.threads:
            torch.set_num_threads(args.threads)
        scheduler = give_way_to_foreground(args.nice, args.idle)  # the robot's node comes first
        init = args.init or SHIPPED_CHECKPOINT
        model, meta = load_model_checkpoint(init)
        constant_depth = float(meta.get("train_median_depth_m") or 0.0)
        if constant_depth <= 0:
            raise InputError(f"{init}: the checkpoint records no training median depth (ship it with tools/ship_model.py)")
        run_dir = out / "run"
        cfg = with_overrides(model.cfg, {
            "model.checkpoint": str(init), "training.stage": args.stage, "training.learning_rate": args.learning_rate,
            "training.output_dir": str(run_dir), "training.max_steps": 100000, "training.warmup_steps": 10,
            "training.save_every": 25, "training.eval_every": 100000, "training.augment": True,
            "training.device": "cpu", "training.frame_stride": 1, "training.eval_fraction": 0.0})
        cfg = with_overrides(cfg, args.overrides)
        folders = prepare_recordings(args, out / "data")
        splits = [split_by_time(f, out / "data" / "train" / f.name, out / "data" / "val" / f.name, args.val_fraction)
                  for f in folders]
    except (InputError, ConfigError) as exc:
        print(f"adapt: {exc}", file=sys.stderr)
        return 2
    print(f"data: {len(splits)} recording(s): " + ", ".join(
        f"{s.name} {s.train_frames} train / {s.val_frames} validation frames" for s in splits), flush=True)
    cfg.training.data_dirs = [str(s.train_dir) for s in splits]
    cfg.training.eval_data_dirs = []  # no eval during training: every second goes to steps (validation is scored below)

    windows = {"frames": cfg.video.total_frames, "stride": cfg.training.frame_stride, "count": 0}

    def scores(m) -> tuple[dict, dict]:
        result = score_on_validation(m, [s.val_dir for s in splits], cfg, constant_depth, modes)
        windows["count"] = int(result["num_windows"])
        cc = {mode: heatmap_cc(result, mode) for mode in modes}
        base = {mode: {name: float(v["cc"]) for name, v in result["modes"][mode]["heatmap"].items()
                       if name not in ("model", "oracle") and "cc" in v} for mode in modes}
        return cc, base

    before_path = out / "run" / "before.json"
    start_pose = cfg.model.relative_pose
    saved = json.loads(before_path.read_text()) if before_path.is_file() else {}  # a resumed run scored it already
    if "relative_pose" in saved:
        before, baselines, pose_choice = saved["before"], saved["baselines"], saved["relative_pose"]
    else:
        print(f"scoring the starting model {init} on the validation part ...", flush=True)
        before, baselines = scores(model)
        pose_choice = choose_relative_pose(model, args.relative_pose, start_pose, [s.train_dir for s in splits],
                                           cfg, constant_depth, modes)
        if pose_choice["chosen"] != start_pose:  # what the pose method alone does, for the report
            pose_choice["starting_model_validation_cc"] = heatmap_cc(score_on_validation(
                model, [s.val_dir for s in splits], with_overrides(cfg, {"model.relative_pose": pose_choice["chosen"]}),
                constant_depth, ["rgb_only"]), "rgb_only")
        before_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(before_path, json.dumps({"before": before, "baselines": baselines,
                                                   "relative_pose": pose_choice}))
    print("starting model, validation CC: " + ", ".join(f"{m} {v:.3f}" for m, v in before.items()), flush=True)
    # from here on scores() (which reads cfg when called) and training use the chosen pose method
    cfg = with_overrides(cfg, {"model.relative_pose": pose_choice["chosen"]})
    if pose_choice["training_part_cc"]:
        print("colour-only poses on the training part (starting model, RGB-only CC): " + ", ".join(
            f"{k} {v:.3f}" for k, v in pose_choice["training_part_cc"].items()) + f" -> {pose_choice['chosen']}", flush=True)
    del model

    try:
        adapted, steps, train_s = train_within_budget(cfg, args.minutes * 60.0, progress=not args.no_progress)
    except InputError as exc:
        print(f"adapt: {exc}", file=sys.stderr)
        return 2
    after, _ = scores(adapted)
    gains = {m: after[m] - before[m] for m in modes}
    won = float(np.mean(list(gains.values()))) > 0 and min(gains.values()) >= 0
    result = {
        "init": str(init), "recordings": [str(r) for r in args.recordings], "stage": args.stage,
        "splits": [{"name": s.name, "train_frames": s.train_frames, "val_frames": s.val_frames} for s in splits],
        "steps": steps, "train_seconds": round(train_s, 1), "wall_seconds": round(time.monotonic() - wall_start, 1),
        "threads": torch.get_num_threads(), "niceness": os.nice(0), "scheduler": scheduler,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "validation_cc": {"before": before, "after": after, "change": gains}, "baselines": baselines, "won": won,
        "validation_windows": windows, "relative_pose": pose_choice,
    }
    table = describe_table(before, after, baselines)
    print(table)
    print(f"{steps} steps in {train_s / 60:.1f} min of training ({result['wall_seconds'] / 60:.1f} min in all), "
          f"peak RSS {result['peak_rss_mb']:.0f} MB")
    if pose_choice["chosen"] != start_pose:
        print(f"colour only: set model.relative_pose: {pose_choice['chosen']} in the node's parameters "
              f"(the scores above use it; the starting model used {start_pose})")
    if not won:
        print(f"the adapted model does not beat the starting one on validation ({', '.join(f'{m} {g:+.3f}' for m, g in gains.items())}): "
              f"no checkpoint written (the run is in {out / 'run'})")
        atomic_write_text(out / "run" / "adaptation.json", json.dumps(result, indent=1))
        return 0
    # the run's last.pt holds exactly these weights (saved at the last step): float32, no optimiser, atomically
    write_shipped_checkpoint(out / "run" / "last.pt", out / "checkpoint.pt",
                             {"train_median_depth_m": constant_depth, "adapted_from": str(init), "adaptation": result})
    atomic_write_text(out / "adaptation.json", json.dumps(result, indent=1))
    atomic_write_text(out / "ADAPTATION.md", _report(result, table))
    print(f"wrote {out / 'checkpoint.pt'}, {out / 'adaptation.json'}, {out / 'ADAPTATION.md'}")
    return 0


def _report(result: dict, table: str) -> str:
    data = "\n".join(f"- `{s['name']}`: {s['train_frames']} frames trained on, the last {s['val_frames']} for validation"
                     for s in result["splits"])
    return (f"# Adaptation\n\nFrom `{result['init']}`, stage `{result['stage']}`, {result['steps']} steps in "
            f"{result['train_seconds'] / 60:.1f} min of training ({result['wall_seconds'] / 60:.1f} min in all) on "
            f"{result['threads']} thread(s), peak RSS {result['peak_rss_mb']:.0f} MB.\n\n## Data\n\n{data}\n\n"
            f"## Validation heatmap CC (training/evaluate.py protocol)\n\n{result['validation_windows']['count']} windows "
            f"of {result['validation_windows']['frames']} frames at stride {result['validation_windows']['stride']} "
            f"on the held-out part (`model_net`: the networks without the match refinement; `classical`: ORB).\n\n"
            f"{table}\n{_pose_report(result['relative_pose'])}")


def _pose_report(choice: dict) -> str:
    """The colour-only pose method's paragraph of ADAPTATION.md."""
    text = f"\n## Colour-only poses\n\n`model.relative_pose: {choice['chosen']}`"
    if choice["training_part_cc"]:
        text += (" (chosen on the training part by the starting model's RGB-only CC: "
                 + ", ".join(f"{k} {v:.3f}" for k, v in choice["training_part_cc"].items()) + ")")
    if choice["chosen"] != choice["start"]:
        text += (f". The starting model used `{choice['start']}`; with `{choice['chosen']}` alone it scores "
                 f"{choice['starting_model_validation_cc']:.3f} RGB-only on validation. Set `model.relative_pose: "
                 f"{choice['chosen']}` in the node's parameters: the figures above assume it")
    return text + ".\n"



if __name__ == "__main__":
    sys.exit(main())

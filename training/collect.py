#!/usr/bin/env python3
"""Collect simulated episodes with the procedural indoor simulator (``vln_core.sim``).

Usage::

    python training/collect.py --episodes 20 --out data/sim [--workers 2] [--seed 0] \
        [--frames 100] [--size 224x224] [--config configs/vln_heatmap.yaml] [sim.hfov_deg=90 ...]

Episode ``i`` is written to ``<out>/ep_<i:06d>`` from seed ``seed + i``; the same seed and
settings produce identical files. Re-running the command resumes: complete episodes are
skipped, unfinished ``*.partial`` folders (a crash, Ctrl-C) are removed and redone. Nothing else
is ever removed: an existing ``ep_*`` folder that is not a complete episode (not written by this
command) is left alone and skipped with a message (exit status 2). Worker processes stop when
this process dies, even by SIGKILL.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vln_core.config import ConfigError, SimConfig, add_config_arguments, config_from_args  # noqa: E402
from vln_core.data.episode import PARTIAL_SUFFIX, is_complete_episode  # noqa: E402
from vln_core.process import die_with_parent  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    """``"224x224"`` / ``"480x640"`` -> ``(H, W)``."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like HxW (e.g. 224x224), got {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"--size must be at least 8x8, got {text!r}")
    return h, w


def episode_dir(out: Path, index: int) -> Path:
    return out / f"ep_{index:06d}"


def _work(job: tuple[str, int, SimConfig, str]) -> dict:
    path, seed, cfg, color_format = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from vln_core.sim.collect import generate_episode

    try:
        return generate_episode(path, seed, cfg, color_format=color_format)
    except Exception as exc:  # noqa: BLE001 - one bad episode must not stop the others
        return {"path": path, "frames": 0, "error": f"{path} (seed {seed}): {type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, required=True, help="number of episodes")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    parser.add_argument("--frames", type=int, default=None, help="frames per episode (sim.frames_per_episode)")
    parser.add_argument("--size", type=parse_size, default=None, help="HxW image size (sim.image_size)")
    parser.add_argument("--color-format", choices=("png", "jpg"), default="png")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.frames is not None:
        args.overrides.append(f"sim.frames_per_episode={args.frames}")
    if args.size is not None:
        args.overrides.append(f"sim.image_size=[{args.size[0]}, {args.size[1]}]")
    try:
        cfg = config_from_args(args).sim
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    args.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    skipped = 0
    blocked: list[Path] = []
    for i in range(args.episodes):
        path = episode_dir(args.out, i)
        if is_complete_episode(path):
            skipped += 1
            continue
        if path.exists() or path.is_symlink():  # not a complete episode: not ours, never deleted
            blocked.append(path)
            print(f"skipping {path}: it exists but is not a complete episode (no readable episode.json); "
                  f"left untouched - move it away to simulate episode {i} there", file=sys.stderr)
            continue
        stale = path.with_name(path.name + PARTIAL_SUFFIX)  # our own unfinished episode
        if stale.exists():
            shutil.rmtree(stale)
        jobs.append((str(path), args.seed + i, cfg, args.color_format))
    print(f"{args.episodes} episodes in {args.out}: {skipped} complete, {len(jobs)} to simulate "
          f"({cfg.frames_per_episode} frames at {cfg.image_size[0]}x{cfg.image_size[1]}, {args.workers} workers)")
    t0 = time.perf_counter()
    frames = 0
    failures: list[str] = []
    if jobs:
        workers = min(args.workers, len(jobs))
        bar = tqdm(total=len(jobs), unit="ep", dynamic_ncols=True)
        try:
            if workers == 1:
                for res in map(_work, jobs):
                    frames += res["frames"]
                    if "error" in res:
                        failures.append(res["error"])
                    bar.update(1)
            else:
                ctx = mp.get_context("spawn")
                with ctx.Pool(workers, maxtasksperchild=20, initializer=die_with_parent,
                              initargs=(os.getpid(),)) as pool:
                    for res in pool.imap_unordered(_work, jobs):
                        frames += res["frames"]
                        if "error" in res:
                            failures.append(res["error"])
                        bar.update(1)
                        bar.set_postfix(fps=f"{frames / max(time.perf_counter() - t0, 1e-9):.1f}")
        except KeyboardInterrupt:
            bar.close()
            print("interrupted: re-run the same command to resume", file=sys.stderr)
            return 130
        bar.close()
    seconds = time.perf_counter() - t0
    done = sum(is_complete_episode(episode_dir(args.out, i)) for i in range(args.episodes))
    print(f"summary: {done}/{args.episodes} episodes complete ({len(jobs)} simulated now, {skipped} skipped), "
          f"{frames} frames in {seconds:.1f} s ({frames / max(seconds, 1e-9):.1f} frames/s) -> {args.out}")
    if failures or done < args.episodes:
        for f in failures:
            print(f"error: {f}", file=sys.stderr)
        for path in blocked:
            print(f"error: {path} exists and is not a complete episode; skipped, left untouched", file=sys.stderr)
        return 1 if failures else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Onboard adaptation: fine-tune the model on a robot's own RGB-D recording, keep it only if it wins.

The recording is exact supervision (its depth and poses give true depth, poses and heatmaps).
Each recording is split **by time**: the first ``1 - val_fraction`` of its frames are written as
a training episode, the rest as a validation episode that is never trained on. The starting
model and the adapted one are scored on the validation episodes with ``training/evaluate.py``'s
protocol (:func:`vln_core.train.evaluation.evaluate_windows`, both modes, with its baselines),
and the adapted checkpoint is written only if its CC beats the starting model's.

Layout of the output folder (``training/adapt.py --out DIR``):

* ``DIR/data/{train,val}/<recording>/``: the split episodes (written once, reused on resume);
* ``DIR/run/``: the fine-tuning run (``last.pt``, logs; a killed run resumes from it);
* ``DIR/checkpoint.pt``, ``DIR/adaptation.json``, ``DIR/ADAPTATION.md``: only when it won.
"""
from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from vln_core.atomic import atomic_write_text
from vln_core.config import VLNConfig
from vln_core.data.episode import EpisodeWriter, read_episode
from vln_core.errors import InputError

#: state of a run in progress: the time it has used (a resumed run keeps its budget)
STATE_FILE = "adapt_state.json"


@dataclass
class SplitRecording:
    """One recording's time split: ``(train episode, validation episode)`` folders and sizes."""

    name: str
    train_dir: Path
    val_dir: Path
    train_frames: int
    val_frames: int


def split_by_time(source: Path, train_dir: Path, val_dir: Path, val_fraction: float) -> SplitRecording:
    """Write the first frames of ``source`` (by timestamp) to ``train_dir`` and the last
    ``val_fraction`` to ``val_dir`` (episodes with depth, poses, base poses when present).
    Folders already complete from an earlier run are reused."""
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    episode = read_episode(source)
    if not episode.has_depth:
        raise InputError(f"{source}: adaptation needs depth (an RGB-D recording); this recording has none")
    n = len(episode)
    order = np.argsort(np.asarray(episode.timestamps, dtype=np.float64), kind="stable")
    n_val = int(round(n * val_fraction))
    n_train = n - n_val
    if n_train < 4 or n_val < 4:
        raise InputError(f"{source}: {n} frames are too few to split {1 - val_fraction:.0%} / {val_fraction:.0%} "
                         "(at least 4 frames each)")
    for folder, indices in ((train_dir, order[:n_train]), (val_dir, order[n_train:])):
        if (folder / "episode.json").is_file():
            continue  # written by an earlier (killed) run
        folder.parent.mkdir(parents=True, exist_ok=True)
        H, W = episode.image_size
        with EpisodeWriter(folder, episode.K, (H, W), T_base_cam=episode.T_base_cam, source="recording") as writer:
            for i in indices:
                writer.add_frame(episode.color(int(i)), episode.depth(int(i)), episode.poses[int(i)],
                                 float(episode.timestamps[int(i)]),
                                 T_odom_base=None if episode.base_poses is None else episode.base_poses[int(i)])
            writer.finish(instruction=episode.instruction)
    return SplitRecording(source.name, train_dir, val_dir, n_train, n_val)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def score_on_validation(model: torch.nn.Module, val_dirs: Sequence[Path], cfg: VLNConfig, constant_depth_m: float,
                        modes: Sequence[str], max_windows: int = 48) -> dict[str, Any]:
    """``evaluate_windows`` on the validation episodes; returns its result dict.

    Windows are N_m frames at the stride the validation part allows (at least stride 1)."""
    from vln_core.train.dataset import EpisodeWindowDataset, find_episodes
    from vln_core.train.evaluation import evaluate_windows

    dataset = EpisodeWindowDataset(find_episodes([str(d) for d in val_dirs]), cfg)
    if len(dataset) == 0:
        raise InputError(f"the validation part has no window of {cfg.video.total_frames} frames at stride "
                         f"{cfg.training.frame_stride}: record longer, or lower video.total_frames")
    count = min(len(dataset), max_windows)
    indices = sorted({int(i) for i in torch.linspace(0, len(dataset) - 1, count).round().tolist()})
    model.eval()
    with torch.no_grad():
        return evaluate_windows(model, dataset, indices, cfg, float(constant_depth_m), modes, num_panels=0)


def heatmap_cc(result: dict[str, Any], mode: str, method: str = "model") -> float:
    """Mean heatmap CC of ``method`` in ``mode`` from an ``evaluate_windows`` result."""
    return float(result["modes"][mode]["heatmap"][method]["cc"])


@dataclass
class AdaptationResult:
    """What :func:`adapt` did: figures per mode before and after, steps, time, memory."""

    before: dict[str, float]
    after: dict[str, float]
    baselines: dict[str, dict[str, float]]
    steps: int
    seconds: float
    peak_rss_mb: float
    won: bool
    splits: list[SplitRecording] = field(default_factory=list)


def planned_max_steps(step: int, steps_timed: int, seconds_timed: float, seconds_left: float, cap: int) -> int:
    """The step the learning-rate schedule should end at: ``step`` plus the steps that fit in
    ``seconds_left`` at the mean time per step so far (``seconds_timed`` over ``steps_timed`` steps
    of this process), within ``[step + 1, cap]``. A mean over the whole run, re-planned after each
    chunk: a stall (the robot's node taking the cores, which this process yields to) costs its
    time once, and does not end the schedule as if every later step would stall too."""
    per_step = seconds_timed / max(steps_timed, 1)
    return int(min(cap, max(step + 1, step + int(seconds_left / max(per_step, 1e-3)))))


def train_within_budget(cfg: VLNConfig, seconds: float, progress: bool = True,
                        log: Callable[[str], None] = print) -> tuple[torch.nn.Module, int, float]:
    """Fine-tune as ``cfg.training`` says, from ``output_dir/last.pt`` when a killed run left one,
    until ``seconds`` of training time (counted across resumes) are used. The schedule's length
    is set from the measured time per step after the first steps. Returns ``(model, steps, s)``."""
    from vln_core.train.trainer import Trainer

    out = Path(cfg.training.output_dir)
    state_path = out / STATE_FILE
    used = 0.0
    if state_path.is_file():
        used = float(json.loads(state_path.read_text()).get("train_seconds", 0.0))
    trainer = Trainer(cfg, resume="auto", progress=progress)
    if trainer.resumed_from is not None:
        log(f"resuming from {trainer.resumed_from} at step {trainer.step} ({used:.0f} s of the budget used)")
    tc = cfg.training
    cap = tc.max_steps
    probe = 5
    first_step, timed = trainer.step, 0.0
    try:
        while used < seconds:
            chunk_target = trainer.step + (probe if trainer.step < probe else tc.save_every)
            start = time.monotonic()
            records = trainer.fit(max_steps=min(chunk_target, tc.max_steps))
            elapsed = time.monotonic() - start
            used += elapsed
            timed += elapsed
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(state_path, json.dumps({"train_seconds": used, "step": trainer.step}))
            if not records or trainer.step >= tc.max_steps:
                break
            # the cosine schedule ends where the time runs out (tc is read by the scheduler at each step)
            tc.max_steps = planned_max_steps(trainer.step, trainer.step - first_step, timed, seconds - used, cap)
    finally:
        trainer.close()
    return trainer.model, trainer.step, used


def describe_table(before: dict[str, float], after: dict[str, float], baselines: dict[str, dict[str, float]]) -> str:
    """Markdown table: per mode, CC of the starting model, the adapted one and the baselines."""
    names = sorted({b for v in baselines.values() for b in v})
    lines = ["| mode | starting model | adapted | change | " + " | ".join(names) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in names) + " |"]
    for mode in before:
        lines.append(f"| {mode} | {before[mode]:.3f} | {after[mode]:.3f} | {after[mode] - before[mode]:+.3f} | "
                     + " | ".join(f"{baselines[mode][n]:.3f}" if n in baselines[mode] else "-" for n in names) + " |")
    return "\n".join(lines)

"""The training loop: stages, gradient accumulation, DDP, checkpoints with exact resume, logging.

Stages (``training.stage``):

* ``geometry``: depth + pose losses; only the geometry encoder trains.
* ``heatmap``: heatmap, out-of-view and regulariser losses; the LLM stays frozen.
* ``finetune``: the heatmap losses plus waypoints; LoRA adapters (``model.lora_rank > 0``) or the
  unfrozen parts train.

``model.trainable_parameters(stage)`` (vln_core.models) decides which parameters train.

Exact resume: ``last.pt`` holds the model, optimiser, scheduler, the python / numpy / torch RNG
states and the data position (items consumed from the seeded :class:`SampleStream`), so a
run stopped after ``k`` steps and resumed reaches the same parameters as an uninterrupted run.
Checkpoints are written atomically (:func:`vln_core.train.checkpoint.save_checkpoint`); ``best.pt``
follows the lowest evaluation loss.

Distributed: started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the trainer joins the
process group (NCCL on CUDA, gloo on CPU), starts every rank from rank 0's weights, gives rank ``r``
the ``r``-th slice of every global micro-batch, averages the gradients of all ranks with one
all-reduce of the flattened gradients per optimiser step (after gradient accumulation), and lets
rank 0 alone write files. Explicit averaging rather than ``DistributedDataParallel``: the model has
trainable outputs that no loss of a stage uses (the goal query, the depth head in some stages),
which DDP's reducer rejects or mis-reduces, and per-step averaging makes accumulation free of
``no_sync`` bookkeeping. The result equals one process on the same global batch (tested).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from vln_core.atomic import atomic_write_text, remove_stale_temporaries
from vln_core.config import VLNConfig, config_to_dict, save_config
from vln_core.errors import InputError
from vln_core.train.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from vln_core.train.dataset import (
    EpisodeWindowDataset,
    RankBatchSampler,
    SampleStream,
    collate_samples,
    find_episodes,
    split_episodes,
)
from vln_core.train.losses import compute_losses, resolve_loss_weights

__all__ = [
    "LAST_CHECKPOINT",
    "BEST_CHECKPOINT",
    "resolve_device",
    "warmup_cosine",
    "model_inputs_from_batch",
    "Trainer",
    "train_mode",
    "init_distributed_from_env",
    "run_training",
    "set_aside_previous_run",
    "RUN_FILES",
]

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
#: what a run writes into ``training.output_dir`` (a fresh run moves these aside, never deletes them)
RUN_FILES = (LAST_CHECKPOINT, BEST_CHECKPOINT, "train_log.jsonl", "eval_log.jsonl", "config.yaml", "tb")
#: files written through vln_core.atomic whose stale temporaries a new run removes
_ATOMIC_FILES = (LAST_CHECKPOINT, BEST_CHECKPOINT, "config.yaml")


def set_aside_previous_run(output_dir: str | os.PathLike) -> Optional[Path]:
    """Move an earlier run's files (:data:`RUN_FILES`) out of the way before a fresh run.

    They go, unchanged, into ``output_dir/previous_<UTC time>/`` so a fresh run can neither
    overwrite the earlier ``best.pt`` nor append to its logs. Returns that folder, or None when
    ``output_dir`` holds no run files.
    """
    output_dir = Path(output_dir)
    present = [output_dir / name for name in RUN_FILES if (output_dir / name).exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = output_dir / f"previous_{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = output_dir / f"previous_{stamp}_{n}"
    target.mkdir()
    for path in present:
        os.replace(path, target / path.name)
    return target


def _keep_log_records_up_to(path: Path, step: int) -> int:
    """Drop the records of ``path`` (JSON lines with a ``step``) past ``step``, and any line a
    kill cut short, so a resumed run logs each step once. Returns the number of lines dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            record_step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            dropped += 1
            continue
        if record_step <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return dropped


def resolve_device(name: str) -> torch.device:
    """``"auto"``: ``cuda:<LOCAL_RANK>`` when CUDA is available, else CPU; otherwise ``name``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"training.device={name!r} but CUDA is not available")
    return device


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Learning-rate factor: linear warm-up from ~0 to 1, then cosine down to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _known_pose_windows(frame_index: torch.Tensor, episodes: list[str], fraction: float) -> torch.Tensor:
    """``(B,)`` bool: windows that get their true poses (a hash of episode and frame below ``fraction``)."""
    if fraction >= 1:
        return torch.ones(len(episodes), dtype=torch.bool)
    draws = [int(hashlib.sha1(f"{Path(e).name}:{int(t)}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
             for e, t in zip(episodes, frame_index.tolist())]
    return torch.tensor(draws) < fraction


def model_inputs_from_batch(model: torch.nn.Module, batch: dict[str, Any], device: torch.device,
                            max_length: int, pose_known_fraction: float = 0.0) -> Any:
    """Build ``ModelInputs`` from a collated batch (see :mod:`vln_core.train.dataset`).

    Args:
        model: the (unwrapped) ``VLNSpatialModel``; its tokenizer encodes the instructions.
        batch: from :func:`collate_samples`.
        device: where the tensors go.
        max_length: instruction tokens.

    Returns:
        ``ModelInputs`` with ``frames (B, N_m, 3, H, W)``, ``instruction_ids / mask (B, L)``,
        ``past_trajectory (B, 16, 4)``, ``intent (B,)``, ``keyframe_indices (B, N_k)``,
        ``intrinsics (B, 3, 3)``.
    """
    from vln_core.models import ModelInputs

    ids, mask = model.tokenizer.encode(list(batch["instruction"]), max_length)
    camera_poses = pose_known = None
    if pose_known_fraction > 0 and "camera_poses" in batch:
        camera_poses = batch["camera_poses"].to(device)
        # which windows get their true poses: a fixed function of the window, so runs are reproducible
        pose_known = _known_pose_windows(batch["frame_index"], batch["episode"], pose_known_fraction).to(device)
    return ModelInputs(
        camera_poses=camera_poses,
        pose_known=pose_known,
        frames=batch["frames"].to(device, non_blocking=True),
        instruction_ids=ids.to(device),
        instruction_mask=mask.to(device),
        past_trajectory=batch["past_trajectory"].to(device),
        intent=batch["intent"].to(device),
        keyframe_indices=batch["keyframe_indices"].to(device),
        intrinsics=batch["intrinsics"].to(device),
    )


def train_mode(model: torch.nn.Module) -> torch.nn.Module:
    """``model.train()``, except that batch-norm layers whose parameters are all frozen stay in
    eval mode.

    A frozen layer must compute what it did before training: in train mode batch norm normalises
    with the batch's statistics and overwrites its running mean and variance with them, so a
    "frozen" network would still change. Stage ``multiview`` (the default of ``training/adapt.py``)
    freezes the monocular prior it fuses; before this, 452 adaptation steps on 30 frames of a real
    recording moved 36 of the prior's running statistics by up to 2.3.
    """
    model.train()
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and params and not any(p.requires_grad for p in params):
            module.eval()
    return model


@dataclass
class StepRecord:
    """What one optimiser step reports."""

    step: int
    loss: float
    terms: dict[str, float]
    lr: float
    seconds: float
    grad_norm: float  # global L2 norm of the (all-reduced) gradient before clipping


class Trainer:
    """One training run (one process of it under DDP).

    Args:
        cfg: the project config; ``cfg.training`` drives the run.
        rank, world_size: this process's place; ``world_size > 1`` needs an initialised process group.
        resume: a checkpoint path; ``"auto"`` resumes from ``output_dir/last.pt`` when it exists;
            None starts fresh (an existing ``last.pt`` is then overwritten at the first save).
        model: a ready model instead of ``build_model(cfg)`` (tests inject small ones).
        progress: show a tqdm bar on rank 0.

    Raises:
        InputError: no episodes in ``training.data_dirs``, episodes too short, bad checkpoint.
    """

    def __init__(self, cfg: VLNConfig, rank: int = 0, world_size: int = 1, resume: Optional[str] = "auto",
                 model: Optional[torch.nn.Module] = None, progress: bool = True) -> None:
        self.cfg = cfg
        tc = cfg.training
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.device = resolve_device(tc.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.output_dir = Path(tc.output_dir)
        self.weights = resolve_loss_weights(tc.loss_weights)
        self.stage = tc.stage
        self.progress = progress and self.is_main
        self.temporal = self.stage != "geometry" and self.weights["temporal"] > 0

        # ----- data
        episodes = find_episodes(tc.data_dirs)
        if tc.eval_data_dirs:
            train_eps, eval_eps = episodes, find_episodes(tc.eval_data_dirs)
        else:
            train_eps, eval_eps = split_episodes(episodes, tc.eval_fraction)
        self.train_set = EpisodeWindowDataset(train_eps, cfg, temporal_pairs=self.temporal, augment=cfg.training.augment)
        self.eval_set = EpisodeWindowDataset(eval_eps, cfg, temporal_pairs=self.temporal) if eval_eps else None
        self.stream = SampleStream(len(self.train_set), tc.seed)

        # ----- model (same seed on every rank: identical initial weights)
        torch.manual_seed(tc.seed)
        if model is None:
            from vln_core.models import build_model

            model = build_model(cfg)
        if cfg.model.checkpoint:
            load_model_weights(model, cfg.model.checkpoint)
        params = list(model.trainable_parameters(self.stage))
        if not params:
            raise InputError(f"stage {self.stage!r}: the model reports no trainable parameters")
        model.to(self.device)
        train_mode(model)
        self.model = model
        self.params = params
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=tc.learning_rate,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: warmup_cosine(s, tc.warmup_steps, tc.max_steps, tc.min_lr_ratio),
        )
        if world_size > 1:
            if not dist.is_initialized():
                raise RuntimeError("world_size > 1 but torch.distributed is not initialised")
            with torch.no_grad():  # every rank starts from rank 0's weights
                for tensor in list(model.parameters()) + list(model.buffers()):
                    dist.broadcast(tensor.data, src=0)

        self.step = 0
        self.samples_seen = 0  # stream items consumed by the whole job (all ranks)
        self.best_eval = math.inf
        self.history: list[StepRecord] = []
        ckpt = self._resume_path(resume)
        if ckpt is not None:
            self._load(ckpt)
        self.resumed_from: Optional[Path] = ckpt
        self.writer = None

    # ------------------------------------------------------------------ checkpoints
    def _resume_path(self, resume: Optional[str]) -> Optional[Path]:
        if resume is None:
            return None
        if resume == "auto":
            last = self.output_dir / LAST_CHECKPOINT
            return last if last.is_file() else None
        return Path(resume)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "samples_seen": self.samples_seen,
            "data_position": dict(zip(("epoch", "index"), self.stream.position(self.samples_seen))),
            "best_eval": self.best_eval,
            "rng": capture_rng_state(),
            "stage": self.stage,
            "world_size": self.world_size,
            "config": config_to_dict(self.cfg),
        }

    def _load(self, path: Path) -> None:
        state = load_checkpoint(path, map_location="cpu")
        if state.get("stage") != self.stage:
            raise InputError(
                f"checkpoint {path} is from stage {state.get('stage')!r}, this run is {self.stage!r}; "
                "start a new stage with model.checkpoint=<file> instead of resuming"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.samples_seen = int(state["samples_seen"])
        self.best_eval = float(state["best_eval"])
        restore_rng_state(state["rng"])

    def save(self, name: str = LAST_CHECKPOINT) -> Optional[Path]:
        """Rank 0 writes ``output_dir/name`` atomically; other ranks return None."""
        if not self.is_main:
            return None
        return save_checkpoint(self.output_dir / name, self.state_dict())

    # ------------------------------------------------------------------ steps
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda" and self.cfg.training.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _loader(self) -> torch.utils.data.DataLoader:
        tc = self.cfg.training
        return torch.utils.data.DataLoader(
            self.train_set,
            batch_sampler=RankBatchSampler(self.stream, self.samples_seen, tc.batch_size, self.rank, self.world_size),
            collate_fn=collate_samples,
            num_workers=tc.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # a private generator: creating the iterator must not draw from the global RNG
            generator=torch.Generator().manual_seed(tc.seed),
        )

    def _forward_losses(self, batch: dict[str, Any]):
        inputs = model_inputs_from_batch(self.model, batch, self.device,
                                         self.cfg.model.max_instruction_length,
                                         self.cfg.training.pose_known_fraction)
        with self._autocast():
            outputs = self.model(inputs)
        return compute_losses(outputs, batch, self.weights, self.stage)

    def train_step(self, batches) -> StepRecord:
        """One optimiser step over ``grad_accum_steps`` micro-batches drawn from ``batches``."""
        tc = self.cfg.training
        start = time.perf_counter()
        train_mode(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        terms: dict[str, float] = {}
        for micro in range(tc.grad_accum_steps):
            batch = next(batches)
            result = self._forward_losses(batch)
            (result.total / tc.grad_accum_steps).backward()
            self.samples_seen += tc.batch_size * self.world_size
            total += float(result.total.detach()) / tc.grad_accum_steps
            for k, v in result.terms.items():
                terms[k] = terms.get(k, 0.0) + float(v) / tc.grad_accum_steps
        if self.world_size > 1:
            self._average_gradients()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.params, tc.max_grad_norm if tc.max_grad_norm > 0 else math.inf)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        if self.world_size > 1:  # report the global mean loss
            t = torch.tensor([total], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            total = float(t) / self.world_size
        record = StepRecord(self.step, total, terms, self.scheduler.get_last_lr()[0], time.perf_counter() - start,
                            float(grad_norm))
        self.history.append(record)
        return record

    @torch.no_grad()
    def _average_gradients(self) -> None:
        """Replace every trainable parameter's gradient by its mean over the ranks (one all-reduce).

        A parameter without a gradient on this rank contributes zeros; it keeps ``grad = None``
        when the mean is exactly zero too, so AdamW skips it as it would in one process.
        """
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= self.world_size
        for p, synced in zip(self.params, _unflatten_dense_tensors(flat, grads)):
            if p.grad is not None:
                p.grad.copy_(synced)
            elif bool(synced.any()):
                p.grad = synced.clone()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss terms on up to ``eval_max_samples`` evenly spread eval windows (rank 0's
        model; RNG state untouched). Empty dict when there is no eval set."""
        if self.eval_set is None:
            return {}
        tc = self.cfg.training
        n = len(self.eval_set)
        count = min(n, tc.eval_max_samples)
        indices = sorted({int(i) for i in torch.linspace(0, n - 1, count).round().tolist()})
        model = self.model
        rng = capture_rng_state()
        model.eval()
        sums: dict[str, float] = {}
        seen = 0
        try:
            for lo in range(0, len(indices), tc.batch_size):
                chunk = indices[lo:lo + tc.batch_size]
                batch = collate_samples([self.eval_set[i] for i in chunk])
                inputs = model_inputs_from_batch(model, batch, self.device, self.cfg.model.max_instruction_length,
                                         self.cfg.training.pose_known_fraction)
                with self._autocast():
                    outputs = model(inputs)
                result = compute_losses(outputs, batch, self.weights, self.stage)
                for k, v in {"loss": result.total, **result.terms}.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(chunk)
                seen += len(chunk)
        finally:
            train_mode(model)
            restore_rng_state(rng)
        return {k: v / max(seen, 1) for k, v in sums.items()}

    # ------------------------------------------------------------------ loop
    def _log(self, record: StepRecord) -> None:
        if not self.is_main:
            return
        if self.writer is not None:
            self.writer.add_scalar("train/loss", record.loss, record.step)
            for k, v in record.terms.items():
                self.writer.add_scalar(f"train/{k}", v, record.step)
            self.writer.add_scalar("train/lr", record.lr, record.step)
            self.writer.add_scalar("train/seconds_per_step", record.seconds, record.step)
            self.writer.add_scalar("train/grad_norm", record.grad_norm, record.step)
            self.writer.add_scalar("train/epoch", self.samples_seen / len(self.train_set), record.step)
        line = {"step": record.step, "loss": record.loss, "lr": record.lr, "seconds": record.seconds,
                "grad_norm": record.grad_norm, **record.terms}
        with open(self.output_dir / "train_log.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")

    def fit(self, max_steps: Optional[int] = None) -> list[StepRecord]:
        """Train until ``max_steps`` (default ``training.max_steps``) optimiser steps in total.

        Returns:
            The step records of this call.
        """
        tc = self.cfg.training
        target = tc.max_steps if max_steps is None else int(max_steps)
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            # temporaries of a save that a SIGKILL interrupted (only rank 0 writes here)
            remove_stale_temporaries(self.output_dir, _ATOMIC_FILES)
            if self.resumed_from is not None:  # steps after the checkpoint are redone: log them once
                for log in ("train_log.jsonl", "eval_log.jsonl"):
                    _keep_log_records_up_to(self.output_dir / log, self.step)
            save_config(self.cfg, self.output_dir / "config.yaml")
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.output_dir / "tb"))
        records: list[StepRecord] = []
        if self.step >= target:
            return records
        from tqdm import tqdm

        bar = tqdm(total=target, initial=self.step, disable=not self.progress, desc=f"train[{self.stage}]",
                   dynamic_ncols=True)
        batches = iter(self._loader())
        try:
            while self.step < target:
                record = self.train_step(batches)
                records.append(record)
                if record.step % tc.log_every == 0 or record.step == target:
                    self._log(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record.loss:.4f}", s_per_step=f"{record.seconds:.2f}")
                if record.step % tc.eval_every == 0 or record.step == target:
                    self._eval_and_keep_best(record.step)
                if record.step % tc.save_every == 0 or record.step == target:
                    self.save(LAST_CHECKPOINT)
                    if self.world_size > 1:
                        dist.barrier()
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.flush()
        return records

    def _eval_and_keep_best(self, step: int) -> None:
        if self.world_size > 1:
            dist.barrier()
        if not self.is_main:
            return
        metrics = self.evaluate()
        if not metrics:
            return
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"eval/{k}", v, step)
        with open(self.output_dir / "eval_log.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")
        if metrics["loss"] < self.best_eval:
            self.best_eval = metrics["loss"]
            self.save(BEST_CHECKPOINT)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def init_distributed_from_env() -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ...); returns
    ``(rank, world_size)``, ``(0, 1)`` when not launched distributed."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def run_training(cfg: VLNConfig, resume: Optional[str] = "auto", progress: bool = True) -> Trainer:
    """Train as configured (single process, or one rank of a torchrun job); returns the trainer.

    A run that starts from step 0 (``resume=None``, or ``"auto"`` without ``last.pt``) first moves
    an earlier run's files in ``training.output_dir`` aside (:func:`set_aside_previous_run`: a
    ``best.pt`` or logs it did not write) and prints where."""
    rank, world_size = init_distributed_from_env()
    try:
        trainer = Trainer(cfg, rank=rank, world_size=world_size, resume=resume, progress=progress)
        # a run that starts from scratch (--fresh, or "auto" with no last.pt to resume from: e.g. a
        # folder holding only an earlier best.pt, or a run killed before its first save) must not
        # overwrite or append to files it did not write: they are moved aside, never deleted.
        # After the checks: a run that cannot start moves nothing.
        if trainer.resumed_from is None and rank == 0:
            moved = set_aside_previous_run(cfg.training.output_dir)
            if moved is not None:
                names = ", ".join(sorted(p.name for p in moved.iterdir()))
                why = "fresh run" if resume is None else f"no {LAST_CHECKPOINT} to resume from, starting at step 0"
                print(f"{why}: moved the earlier run's files ({names}) to {moved}", flush=True)
        trainer.fit()
        trainer.close()
        return trainer
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()

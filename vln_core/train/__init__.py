"""Training: episode windows with geometric ground truth, losses, the trainer, evaluation.

    from vln_core.train import EpisodeWindowDataset, Trainer, compute_losses, run_training

* :mod:`vln_core.train.dataset` -- episodes -> windows with ground-truth heatmaps, depth, poses,
  waypoints; the seeded, resumable data order.
* :mod:`vln_core.train.losses` -- named, weighted loss terms (``training.loss_weights``).
* :mod:`vln_core.train.trainer` -- stages, accumulation, data parallel, checkpoints, resume, logging.
* :mod:`vln_core.train.checkpoint` -- atomic checkpoint files and RNG state capture.
* :mod:`vln_core.train.evaluation` -- model vs baseline metrics (training/evaluate.py).
"""
from vln_core.train.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from vln_core.train.dataset import EpisodeWindowDataset, SampleStream, collate_samples, find_episodes
from vln_core.train.losses import DEFAULT_LOSS_WEIGHTS, LOSS_TERMS, STAGE_TERMS, compute_losses, resolve_loss_weights
from vln_core.train.trainer import Trainer, run_training

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "LOSS_TERMS",
    "STAGE_TERMS",
    "EpisodeWindowDataset",
    "SampleStream",
    "Trainer",
    "collate_samples",
    "compute_losses",
    "find_episodes",
    "load_checkpoint",
    "load_model_weights",
    "resolve_loss_weights",
    "run_training",
    "save_checkpoint",
]

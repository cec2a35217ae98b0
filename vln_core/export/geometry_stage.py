"""ONNX export of the pipeline's geometry stage (``small`` / ``base`` / ``full``) at a fixed N_m.

The geometry stage is the heavy part of an update (VGGT-1B on all N_m frames for ``full``) and
the part TensorRT would run; the sampler (numpy), the one reprojection and the reasoning stage
stay in PyTorch. The graph is traced at batch 1 and a fixed ``N_m`` (``video.total_frames``) and
frame size, with the rotary position tables precomputed as constants for that size
(:mod:`vln_core.export.rotary`), so no data-dependent shape or conditional node is left for
TensorRT to mishandle.

    from vln_core.export.geometry_stage import export_geometry_stage, verify_geometry_stage
    path = export_geometry_stage(model, cfg, "exports/base_geometry.onnx")
    diffs = verify_geometry_stage(model, path, cfg)   # {"depth": 2e-6, ...}; raises ExportMismatchError

Graph input: ``frames`` ``(1, N_m, 3, H, W)`` float32 RGB in [0, 1], newest frame last (the
current view). Graph outputs (:data:`OUTPUT_NAMES`), as in
:class:`~vln_core.models.geometry_encoder.GeometryOutput`:

* ``depth``        (1, N_m, H, W) metres
* ``depth_conf``   (1, N_m, H, W)
* ``pose_enc``     (1, N_m, 9) [t(3), quat xyzw(4), fov_h, fov_w], camera-to-current
* ``patch_tokens`` (1, N_m, h*w, C) the tokens the fusion reads
"""
from __future__ import annotations

import copy
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vln_core.atomic import atomic_write_bytes
from vln_core.config import VLNConfig
from vln_core.errors import InputError
from vln_core.models.spatial_model import VLNSpatialModel

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "EXPORT_BATCH",
    "ExportMismatchError",
    "GeometryStageWrapper",
    "example_frames",
    "export_geometry_stage",
    "verify_geometry_stage",
]

INPUT_NAMES: tuple[str, ...] = ("frames",)
OUTPUT_NAMES: tuple[str, ...] = ("depth", "depth_conf", "pose_enc", "patch_tokens")
#: Batch size of the exported graph (fixed, like N_m and the frame size).
EXPORT_BATCH = 1


class ExportMismatchError(RuntimeError):
    """onnxruntime's outputs differ from the PyTorch model's by more than the tolerance."""


class GeometryStageWrapper(nn.Module):
    """The geometry stage with a flat tensor input and outputs (:data:`OUTPUT_NAMES`).

    Args:
        geometry: ``model.geometry`` of a :class:`VLNSpatialModel` (our geometry ViT or VGGT).
    """

    def __init__(self, geometry: nn.Module) -> None:
        super().__init__()
        self.geometry = geometry

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """frames ``(1, N_m, 3, H, W)`` -> ``(depth, depth_conf, pose_enc, patch_tokens)``."""
        out = self.geometry(frames)
        return tuple(getattr(out, name).float() for name in OUTPUT_NAMES)


def _check_exportable(model: VLNSpatialModel) -> None:
    if not isinstance(model, VLNSpatialModel):
        raise InputError(f"geometry-stage export needs a small/base/full model (VLNSpatialModel), got "
                         f"{type(model).__name__}; the embedded model exports with vln_core.export.reprojection")
    device = next(model.geometry.parameters()).device
    if device.type != "cpu":
        raise InputError(f"export the geometry stage from the CPU (it is on {device}): model.geometry_device=cpu")


def example_frames(cfg: VLNConfig, seed: int = 0) -> torch.Tensor:
    """Random frames ``(1, N_m, 3, H, W)`` of ``cfg.video`` sizes from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    height, width = cfg.video.frame_size
    return torch.rand(EXPORT_BATCH, cfg.video.total_frames, 3, height, width, generator=gen)


def _frozen_geometry(model: VLNSpatialModel, cfg: VLNConfig) -> nn.Module:
    """A copy of the geometry stage in eval mode with its rotary tables as constants."""
    from vln_core.export.rotary import freeze_rotary_tables

    geometry = copy.deepcopy(model.geometry).eval()
    if hasattr(geometry, "with_points"):
        geometry.with_points = False  # VGGT's point head is not an output (and its expm1 does not export)
    H, W = (int(s) for s in cfg.video.frame_size)
    network = getattr(geometry, "network", None)  # VGGT: the network sees the frames cut to its patch grid
    if network is not None:
        patch = int(geometry.patch_size)
        freeze_rotary_tables(network, (max(1, H // patch) * patch, max(1, W // patch) * patch))
        return geometry
    return freeze_rotary_tables(geometry, (H, W))


def export_geometry_stage(model: VLNSpatialModel, cfg: VLNConfig, path: str | os.PathLike,
                          opset: int | None = None) -> Path:
    """Export ``model.geometry`` (on the CPU) to an ONNX file at ``path``, atomically.

    Traced with :func:`example_frames` by the TorchScript-based exporter (``dynamo=False``) at
    batch 1, ``N_m = cfg.video.total_frames`` and ``cfg.video.frame_size``; checked with
    ``onnx.checker`` in memory and only then swapped in, so a failed export leaves an older file
    untouched. The model itself is not changed (the export works on a copy).

    Raises:
        InputError: not a pipeline model, or not on the CPU.
    """
    import onnx

    _check_exportable(model)
    opset = cfg.export.opset if opset is None else opset
    wrapper = GeometryStageWrapper(_frozen_geometry(model, cfg))
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)  # shapes are fixed on purpose
        torch.onnx.export(wrapper, (example_frames(cfg, seed=0),), buffer, opset_version=opset, dynamo=False,
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), do_constant_folding=True)
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_model_from_string(data))
    path = Path(path)
    atomic_write_bytes(path, data)
    return path


def verify_geometry_stage(model: VLNSpatialModel, path: str | os.PathLike, cfg: VLNConfig, atol: float = 1e-3,
                          seed: int = 1) -> dict[str, float]:
    """onnxruntime (CPU) against the model's own geometry stage in PyTorch on fresh frames.

    Returns:
        ``{output name: max |onnxruntime - torch|}``.

    Raises:
        ExportMismatchError: a shape differs or a difference exceeds ``atol`` (or is NaN).
        InputError: the file's inputs or outputs are not :data:`INPUT_NAMES` / :data:`OUTPUT_NAMES`.
    """
    import onnxruntime as ort

    _check_exportable(model)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_inputs = tuple(i.name for i in session.get_inputs())
    got_outputs = tuple(o.name for o in session.get_outputs())
    if got_inputs != INPUT_NAMES or got_outputs != OUTPUT_NAMES:
        raise InputError(f"{path} has inputs {got_inputs} and outputs {got_outputs}; expected "
                         f"{INPUT_NAMES} and {OUTPUT_NAMES} (not exported by export_geometry_stage?)")
    frames = example_frames(cfg, seed=seed)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = GeometryStageWrapper(model.geometry)(frames)  # the model as it is, not the frozen copy
    finally:
        model.train(was_training)
    results = session.run(None, {"frames": frames.numpy()})
    diffs: dict[str, float] = {}
    problems: list[str] = []
    for name, got, want in zip(OUTPUT_NAMES, results, reference):
        if tuple(got.shape) != tuple(want.shape):
            problems.append(f"{name}: shape {tuple(got.shape)} != torch {tuple(want.shape)}")
            diffs[name] = float("inf")
            continue
        diffs[name] = float(abs(got - want.numpy()).max()) if got.size else 0.0
        if not diffs[name] <= atol:  # also catches NaN
            problems.append(f"{name}: max abs difference {diffs[name]:.3g} > atol {atol:g}")
    if problems:
        raise ExportMismatchError(f"ONNX file {path} does not match the PyTorch geometry stage: " + "; ".join(problems)
                                  + f" (all differences: {_format_diffs(diffs)})")
    return diffs


def _format_diffs(diffs: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value:.3g}" for name, value in diffs.items())

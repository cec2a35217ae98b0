"""ONNX export of the embedded model, with keyframes and intrinsics as graph inputs.

The keyframe sampler (:mod:`vln_core.sampling`) is numpy and cannot be traced, so the exported
graph takes the keyframe indices as an input (the caller runs the sampler, or reuses the indices
of the ring buffer's keyframe memory) and also the camera intrinsics. Everything else of
:meth:`VLNSpatialModel.forward` is in the graph.

    from vln_core.export.window_model import export_onnx, verify_onnx
    path = export_onnx(model, cfg, "exports/embedded.onnx")
    diffs = verify_onnx(model, path, cfg)   # {"depth": 2e-6, ...}; raises ExportMismatchError

Graph inputs (:data:`INPUT_NAMES`). The batch is fixed at B = 1 (:data:`EXPORT_BATCH`): the
model computes its patch grid and pooling sizes from tensor shapes, and the TorchScript exporter
cannot keep those static once the batch axis is symbolic (``adaptive_avg_pool2d`` output size
fails). The instruction length L is a dynamic axis:

* ``frames``            (B, N_m, 3, H, W) float32 RGB in [0, 1], newest frame last (current view)
* ``instruction_ids``   (B, L) int64, from ``model.tokenizer.encode``; 1 <= L <= model.max_instruction_length
* ``instruction_mask``  (B, L) bool, True on real tokens
* ``past_trajectory``   (B, 16, 4) float32 [x, y, v, w] past base poses (m) and speeds, current base frame
* ``intent``            (B,) int64: 0 left, 1 straight, 2 right
* ``keyframe_indices``  (B, N_k) int64 indices into the N_m frames, each in [0, N_m)
* ``intrinsics``        (B, 3, 3) float32 pinhole K of the frames at (H, W) (pixels, OpenCV)

Graph outputs (:data:`OUTPUT_NAMES`), as in :class:`ModelOutputs`:

* ``depth``               (B, N_m, H, W) metres
* ``pose_enc``            (B, N_m, 9) [t(3), quat xyzw(4), fov_h, fov_w], camera-to-current
* ``heatmap_logits``      (B, N_k, H, W) (softmax over H*W gives the heatmap)
* ``out_of_view_logit``   (B, N_k)
* ``out_of_view_bearing`` (B, N_k, 2) (cos, sin)
* ``goal_logits``         (B, H, W)
* ``waypoints``           (B, 20, 2) metres in the current base frame

The graph does not check its inputs (the eager model's checks are traced away): out-of-range
keyframe indices give undefined results, so validate them before calling onnxruntime.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vln_core.atomic import atomic_write_bytes
from vln_core.config import VLNConfig
from vln_core.errors import InputError
from vln_core.models.spatial_model import PAST_TRAJECTORY_LENGTH, ModelInputs, VLNSpatialModel

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "DYNAMIC_AXES",
    "EXPORT_BATCH",
    "ExportMismatchError",
    "OnnxExportWrapper",
    "example_inputs",
    "export_onnx",
    "verify_onnx",
]

INPUT_NAMES: tuple[str, ...] = (
    "frames",
    "instruction_ids",
    "instruction_mask",
    "past_trajectory",
    "intent",
    "keyframe_indices",
    "intrinsics",
)
OUTPUT_NAMES: tuple[str, ...] = (
    "depth",
    "pose_enc",
    "heatmap_logits",
    "out_of_view_logit",
    "out_of_view_bearing",
    "goal_logits",
    "waypoints",
)
#: Batch size of the exported graph (fixed; see the module docstring).
EXPORT_BATCH = 1
#: Axes that stay symbolic in the exported graph (input name -> {axis: symbolic name}).
DYNAMIC_AXES: dict[str, dict[int, str]] = {
    "instruction_ids": {1: "instruction_length"},
    "instruction_mask": {1: "instruction_length"},
}
#: Horizontal field of view of the pinhole intrinsics in :func:`example_inputs`.
EXAMPLE_HFOV_DEG = 60.0
_EXAMPLE_INSTRUCTIONS = ("go to the red chair next to the table", "turn left at the door and stop")


class ExportMismatchError(RuntimeError):
    """onnxruntime's outputs differ from the PyTorch model's by more than the tolerance."""


class OnnxExportWrapper(nn.Module):
    """The model with flat tensor inputs and outputs (names and order: :data:`INPUT_NAMES`,
    :data:`OUTPUT_NAMES`; shapes in the module docstring).

    Args:
        model: an embedded :class:`VLNSpatialModel`; it is not copied, so eval() it first.
    """

    def __init__(self, model: VLNSpatialModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, instruction_ids: torch.Tensor, instruction_mask: torch.Tensor,
                past_trajectory: torch.Tensor, intent: torch.Tensor, keyframe_indices: torch.Tensor,
                intrinsics: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Shapes: frames (B, N_m, 3, H, W), instruction_ids / instruction_mask (B, L),
        past_trajectory (B, 16, 4), intent (B,), keyframe_indices (B, N_k), intrinsics (B, 3, 3).

        Returns:
            ``(depth, pose_enc, heatmap_logits, out_of_view_logit, out_of_view_bearing,
            goal_logits, waypoints)`` with the shapes of :class:`ModelOutputs`.
        """
        out = self.model(ModelInputs(frames, instruction_ids, instruction_mask, past_trajectory, intent,
                                     keyframe_indices, intrinsics))
        return tuple(getattr(out, name) for name in OUTPUT_NAMES)


def _check_exportable(model: VLNSpatialModel) -> None:
    if not isinstance(model, VLNSpatialModel):
        raise InputError(f"export needs a VLNSpatialModel, got {type(model).__name__}")
    arch = model.arch
    if arch.reasoner != "embedded" or arch.semantic != "small_vit":
        raise InputError(
            f"ONNX export is built and tested for the embedded model (own small ViT + small transformer "
            f"reasoner); this model has semantic={arch.semantic!r}, reasoner={arch.reasoner!r}"
        )
    devices = {str(device) for device in model.device_map.values()}
    if devices != {"cpu"}:
        raise InputError(f"export the model from the CPU (stage devices: {sorted(devices)}): "
                         "model.cpu(), or model.geometry_device=cpu model.semantic_device=cpu model.llm_device=cpu")


def example_inputs(model: VLNSpatialModel, cfg: VLNConfig, batch: int = 1, seed: int = 0
                   ) -> tuple[torch.Tensor, ...]:
    """Well-formed inputs in :data:`INPUT_NAMES` order for tracing and checking an export.

    Frames are random images (a seeded generator) of ``cfg.video`` sizes; the instructions are
    real sentences through ``model.tokenizer``; keyframes are spread over the buffer (shifted with
    the seed so different seeds give different indices); intrinsics are a centred pinhole with a
    60 degree horizontal field of view (focal scaled a little with the seed).

    Returns:
        frames (B, N_m, 3, H, W), instruction_ids (B, L), instruction_mask (B, L),
        past_trajectory (B, 16, 4), intent (B,), keyframe_indices (B, N_k), intrinsics (B, 3, 3).
    """
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    gen = torch.Generator().manual_seed(seed)
    n_frames, n_keyframes = cfg.video.total_frames, cfg.video.keyframes
    height, width = cfg.video.frame_size
    frames = torch.rand(batch, n_frames, 3, height, width, generator=gen)
    texts = [_EXAMPLE_INSTRUCTIONS[(seed + b) % len(_EXAMPLE_INSTRUCTIONS)] for b in range(batch)]
    ids, mask = model.tokenizer.encode(texts, cfg.model.max_instruction_length)
    past = torch.randn(batch, PAST_TRAJECTORY_LENGTH, 4, generator=gen) * 0.5
    intent = torch.arange(seed, seed + batch) % 3
    spread = torch.linspace(0, n_frames - 1, n_keyframes).round().long()
    keyframes = torch.stack([(spread + seed + b) % n_frames for b in range(batch)])
    focal = width / (2.0 * math.tan(math.radians(EXAMPLE_HFOV_DEG) / 2.0)) * (1.0 + 0.1 * (seed % 3))
    K = torch.tensor([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return frames, ids.long(), mask.bool(), past, intent.long(), keyframes, K.expand(batch, 3, 3).contiguous()


def export_onnx(model: VLNSpatialModel, cfg: VLNConfig, path: str | os.PathLike, opset: int | None = None) -> Path:
    """Export ``model`` (embedded, on the CPU) to an ONNX file at ``path``, atomically.

    The graph is traced with :func:`example_inputs` (batch :data:`EXPORT_BATCH` = 1) by the
    TorchScript-based exporter (``dynamo=False``); the instruction length is a dynamic axis. The whole file is built in
    memory, checked with ``onnx.checker`` and only then swapped in with
    :func:`vln_core.atomic.atomic_write_bytes`, so a failed export leaves an older file untouched.

    Args:
        model: the network; put in eval mode for the export and restored afterwards.
        cfg: the config the model was built with (``cfg.video`` sizes, ``cfg.model``).
        path: the ``.onnx`` file to write; its folder is created.
        opset: ONNX opset; default ``cfg.export.opset`` (17).

    Returns:
        ``Path(path)``.

    Raises:
        InputError: not the embedded model, or not on the CPU.
    """
    import onnx

    _check_exportable(model)
    opset = cfg.export.opset if opset is None else opset
    path = Path(path)
    wrapper = OnnxExportWrapper(model)
    args = example_inputs(model, cfg, batch=EXPORT_BATCH, seed=0)
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the eager input checks become constants in the trace; that is expected (see module doc)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(wrapper, args, buffer, opset_version=opset, dynamo=False,
                              input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                              dynamic_axes=DYNAMIC_AXES, do_constant_folding=True)
    finally:
        model.train(was_training)
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_model_from_string(data))
    atomic_write_bytes(path, data)
    return path


def verify_onnx(model: VLNSpatialModel, path: str | os.PathLike, cfg: VLNConfig, atol: float = 1e-3,
                seed: int = 1) -> dict[str, float]:
    """Run the ONNX file with onnxruntime (CPU) and the model in PyTorch on the same fresh inputs.

    The inputs (:func:`example_inputs` with ``seed`` != the export's 0) differ from the traced ones
    in frames, instruction (and its length), keyframe indices, intrinsics, trajectory and intent,
    so anything frozen into a constant during tracing shows up as a difference.

    Args:
        model: the network that was exported (CPU).
        path: the ``.onnx`` file.
        cfg: the config the model was built with.
        atol: largest accepted absolute difference for every output.
        seed: seed of the check inputs.

    Returns:
        ``{output name: max |onnxruntime - torch|}`` in :data:`OUTPUT_NAMES` order.

    Raises:
        ExportMismatchError: an output's shape differs or its difference exceeds ``atol``
            (the message lists every output's difference).
        InputError: the file's inputs or outputs are not :data:`INPUT_NAMES` / :data:`OUTPUT_NAMES`.
    """
    import onnxruntime as ort

    _check_exportable(model)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_inputs = tuple(i.name for i in session.get_inputs())
    got_outputs = tuple(o.name for o in session.get_outputs())
    if got_inputs != INPUT_NAMES or got_outputs != OUTPUT_NAMES:
        raise InputError(f"{path} has inputs {got_inputs} and outputs {got_outputs}; expected "
                         f"{INPUT_NAMES} and {OUTPUT_NAMES} (not exported by export_onnx?)")
    args = example_inputs(model, cfg, batch=EXPORT_BATCH, seed=seed)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = OnnxExportWrapper(model)(*args)
    finally:
        model.train(was_training)
    results = session.run(None, {name: tensor.numpy() for name, tensor in zip(INPUT_NAMES, args)})
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
        raise ExportMismatchError(f"ONNX file {path} does not match the PyTorch model: " + "; ".join(problems)
                                  + f" (all differences: {_format_diffs(diffs)})")
    return diffs


def _format_diffs(diffs: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value:.3g}" for name, value in diffs.items())

"""ONNX export of the reprojection (``embedded``) model: the networks the learned backends run.

The model's runtime work splits by how often it runs (see
:mod:`vln_core.backends.learned`): the frame encoder once per frame (its output is cached
while the frame is a keyframe), the relative-pose head and the goal / waypoint heads once per
update. Each is one graph, so each engine call is one session run with no dummy inputs. The
keyframe sampler and the reprojection (splatting into heatmaps) stay outside the graphs: they
are the geometry core's numpy / torch code, shared with the ``geometry`` backend and the ground
truth. Every graph has a dynamic batch axis.

``encoder.onnx``
    * in  ``frames`` (B, 3, H, W) float32 RGB in [0, 1] at the export's ``frame_size``
    * out ``depth`` (B, H, W) metres, ``depth_conf`` (B, H, W) > 0,
      ``pose_features`` (B, C_pose, H/16, W/16), ``f8`` (B, C8, H/8, W/8), ``f32`` (B, C32, H/32, W/32)
``pose_head.onnx``
    * in  ``pose_frames`` (P, C_pose, H/16, W/16), ``pose_current`` (P, C_pose, H/16, W/16)
    * out ``T_cur_cam`` (P, 4, 4) camera-to-current pose of each frame (OpenCV optical axes)
``goal_waypoints.onnx``
    * in  ``f8`` (B, C8, H/8, W/8), ``f32`` (B, C32, H/32, W/32), ``instruction_ids`` (B, L) int64,
      ``instruction_mask`` (B, L) float32 (1 on real tokens), ``past_trajectory`` (B, 16, 4) float32,
      ``intent`` (B,) int64 (0 left, 1 straight, 2 right); L is dynamic too
    * out ``goal_logits`` (B, H, W), ``waypoints`` (B, 20, 2) metres, current base frame

``meta.json`` beside them records the frame size, the tokenizer (kind, vocabulary size, a probe
encoding), channel counts, the opset, the sha256 of the checkpoint and of every ``.onnx`` file;
:func:`load_export` checks all of it before a backend uses the folder.

    from vln_core.export.reprojection import export_reprojection, verify_export
    meta = export_reprojection(model, "exports/embedded", checkpoint="models/embedded/checkpoint.pt")
    diffs = verify_export(model, "exports/embedded")     # {"encoder.depth": 1e-6, ...}
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from vln_core.atomic import fsync_dir
from vln_core.errors import InputError
from vln_core.models.spatial_model import NUM_WAYPOINTS, PAST_TRAJECTORY_LENGTH

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "GRAPHS",
    "MULTIVIEW_GRAPHS",
    "model_graphs",
    "GraphSpec",
    "DEFAULT_EXPORT_DIR",
    "TOKENIZER_PROBE",
    "ExportMismatchError",
    "export_reprojection",
    "verify_export",
    "load_export",
    "sha256_file",
    "graph_inputs",
]

EXPORT_FORMAT = "vln_heatmap.reprojection_onnx"
EXPORT_VERSION = 1
#: Where ``export/export_onnx.py`` writes and the ``onnx`` / ``tensorrt`` backends look by default.
DEFAULT_EXPORT_DIR = Path(__file__).resolve().parents[2] / "exports" / "embedded"
#: A sentence whose encoding is stored in meta.json: a runtime tokenizer that encodes it
#: differently would feed the graph wrong word ids.
TOKENIZER_PROBE = "go to the red chair next to the table, then stop"
EXPORT_COMMAND = "python export/export_onnx.py --checkpoint models/embedded/checkpoint.pt --out {out}"


class ExportMismatchError(RuntimeError):
    """onnxruntime's outputs differ from the PyTorch model's by more than the tolerance."""


@dataclass(frozen=True)
class GraphSpec:
    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]


GRAPHS: dict[str, GraphSpec] = {
    "encoder": GraphSpec(
        "encoder.onnx", ("frames",), ("depth", "depth_conf", "pose_features", "f8", "f32"),
        {n: {0: "batch"} for n in ("frames", "depth", "depth_conf", "pose_features", "f8", "f32")}),
    "pose_head": GraphSpec(
        "pose_head.onnx", ("pose_frames", "pose_current"), ("T_cur_cam",),
        {n: {0: "pairs"} for n in ("pose_frames", "pose_current", "T_cur_cam")}),
    "goal_waypoints": GraphSpec(
        "goal_waypoints.onnx",
        ("f8", "f32", "instruction_ids", "instruction_mask", "past_trajectory", "intent"),
        ("goal_logits", "waypoints"),
        {**{n: {0: "batch"} for n in ("f8", "f32", "past_trajectory", "intent", "goal_logits", "waypoints")},
         "instruction_ids": {0: "batch", 1: "instruction_length"},
         "instruction_mask": {0: "batch", 1: "instruction_length"}}),
}

#: The multi-view depth graphs, exported when the model has multi-view weights
#: (``meta.json`` ``multiview``: the sources per reference ``S``, padded; planes; channels).
MULTIVIEW_GRAPHS: dict[str, GraphSpec] = {
    "multiview_features": GraphSpec(
        "multiview_features.onnx", ("frames",), ("features",), {n: {0: "batch"} for n in ("frames", "features")}),
    "multiview_depth": GraphSpec(
        "multiview_depth.onnx",
        ("ref_features", "src_features", "K", "T_src_ref", "src_valid", "mono_depth", "mono_conf"),
        ("depth", "multiview_depth", "confidence"),
        {n: {0: "refs"} for n in ("ref_features", "src_features", "K", "T_src_ref", "src_valid", "mono_depth",
                                  "mono_conf", "depth", "multiview_depth", "confidence")}),
}


def model_graphs(model: nn.Module) -> dict[str, GraphSpec]:
    """The graphs a model exports: the three of every embedded model, plus the multi-view depth
    graphs when it has multi-view weights."""
    return {**GRAPHS, **(MULTIVIEW_GRAPHS if getattr(model, "has_multiview", False) else {})}


# ------------------------------------------------------------------------------------------ graphs
class _EncoderGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor):
        enc = self.model.encode_frames(frames)
        return enc.depth, enc.depth_conf, enc.pose_features, enc.f8, enc.f32


class _PoseGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pose_frames: torch.Tensor, pose_current: torch.Tensor):
        return self.model.pose_head(pose_frames, pose_current)[0]


class _GoalGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, f8, f32, instruction_ids, instruction_mask, past_trajectory, intent):
        from vln_core.models.reprojection_model import FrameEncoding

        enc = FrameEncoding(f8, f8, f8, f8, f32)  # only f8 / f32 are read
        return self.model.goal_and_waypoints(enc, instruction_ids, instruction_mask, past_trajectory, intent,
                                             self.model.frame_size)


class _MultiViewFeaturesGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor):
        return self.model.multiview_features(frames)


class _MultiViewDepthGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ref_features, src_features, K, T_src_ref, src_valid, mono_depth, mono_conf):
        out = self.model.multiview(ref_features, src_features, K, T_src_ref, tuple(self.model.frame_size),
                                   mono_depth, mono_conf, src_valid > 0.5)
        return out.depth, out.multiview_depth, out.confidence


_WRAPPERS = {"encoder": _EncoderGraph, "pose_head": _PoseGraph, "goal_waypoints": _GoalGraph,
             "multiview_features": _MultiViewFeaturesGraph, "multiview_depth": _MultiViewDepthGraph}


def _check_model(model: nn.Module) -> None:
    if getattr(model, "kind", "") != "reprojection":
        raise InputError(f"this export takes the reprojection model (model.name=embedded), got {type(model).__name__}; "
                         "the token model (model.name=embedded_tokens) exports with vln_core.export.window_model")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise InputError("export the model from the CPU (model.cpu())")


def _shapes(model: nn.Module) -> dict[str, Any]:
    H, W = model.frame_size
    arch = model.arch
    return {"frame_size": [H, W], "pose_features": [arch.pose_feature_dim, H // 16, W // 16],
            "f8": [arch.widths[1], H // 8, W // 8], "f32": [arch.widths[3], H // 32, W // 32],
            "goal_activation": str(getattr(model, "goal_activation", "softmax"))}


def graph_inputs(model: nn.Module, batch: int = 1, seed: int = 0, instruction: str | None = None
                 ) -> dict[str, dict[str, torch.Tensor]]:
    """Well-formed inputs per graph (``{graph: {input name: tensor}}``), seeded.

    The encoder gets random images; the heads get the encoder's own outputs of those images (real
    feature statistics, not noise) paired with a rolled copy as the current frames; the
    instruction is a real sentence through ``model.tokenizer``.
    """
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    gen = torch.Generator().manual_seed(seed)
    H, W = model.frame_size
    frames = torch.rand(batch, 3, H, W, generator=gen)
    with torch.no_grad():
        enc = model.encode_frames(frames)
    texts = [instruction or ("go to the red chair next to the table", "turn left at the door and stop")[(seed + b) % 2]
             for b in range(batch)]
    ids, mask = model.tokenizer.encode(texts, model.cfg.model.max_instruction_length)
    past = torch.randn(batch, PAST_TRAJECTORY_LENGTH, 4, generator=gen) * 0.5
    graphs: dict[str, dict[str, torch.Tensor]] = {}
    if getattr(model, "has_multiview", False):
        S = int(model.cfg.model.multiview_sources)
        with torch.no_grad():
            feats = model.multiview_features(frames)
        K = torch.tensor([[0.6 * W, 0.0, (W - 1) / 2], [0.0, 0.6 * W, (H - 1) / 2], [0.0, 0.0, 1.0]])
        T = torch.eye(4).repeat(batch, S, 1, 1)
        T[..., :3, 3] = torch.randn(batch, S, 3, generator=gen) * 0.15  # sideways and forward motion
        valid = torch.ones(batch, S)
        valid[0, -1] = 0.0  # one padded source
        graphs["multiview_features"] = {"frames": frames}
        graphs["multiview_depth"] = {
            "ref_features": feats, "src_features": feats.roll(1, dims=0)[:, None].repeat(1, S, 1, 1, 1),
            "K": K[None].repeat(batch, 1, 1), "T_src_ref": T, "src_valid": valid,
            "mono_depth": enc.depth, "mono_conf": enc.depth_conf}
    return {
        **graphs,
        "encoder": {"frames": frames},
        "pose_head": {"pose_frames": enc.pose_features, "pose_current": enc.pose_features.roll(1, dims=0)},
        "goal_waypoints": {"f8": enc.f8, "f32": enc.f32, "instruction_ids": ids.long(),
                           "instruction_mask": mask.float(), "past_trajectory": past,
                           "intent": torch.arange(seed, seed + batch) % 3},
    }


def _export_graph(model: nn.Module, name: str, opset: int) -> bytes:
    import onnx

    spec = model_graphs(model)[name]
    # trace at batch 2 so no size-1 axis gets specialised as a broadcast
    args = tuple(graph_inputs(model, batch=2, seed=0)[name][n] for n in spec.inputs)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the eager input checks (shape asserts, size branches) become constants: expected
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        # an eval() wrapper: the exporter restores the wrapper's own mode afterwards, recursively,
        # and a wrapper left in training mode would switch the model's batch norms to training
        torch.onnx.export(_WRAPPERS[name](model).eval(), args, buffer, opset_version=opset, dynamo=False,
                          input_names=list(spec.inputs), output_names=list(spec.outputs),
                          dynamic_axes=spec.dynamic_axes, do_constant_folding=True)
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_model_from_string(data))
    return data


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _replace_folder(tmp: Path, out: Path) -> None:
    """Swap the finished folder ``tmp`` in for ``out``; the old folder is removed only after.

    The new folder is complete and fsynced before any rename, so a crash leaves either the old
    export at ``out`` or (between the two renames) the old one at ``.<name>.old-*`` beside it and
    the new one at ``.<name>.tmp-*``; never a mix. A TensorRT engine cache (``engines/``) of the
    old export is carried over: its entries are keyed by the ONNX hashes, so stale ones are refused.
    """
    old: Optional[Path] = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.rename(out, old / out.name)
        engines = old / out.name / "engines"
        if engines.is_dir() and not (tmp / "engines").exists():
            os.rename(engines, tmp / "engines")
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:  # put the previous export back, engines included
            if (tmp / "engines").is_dir() and not (old / out.name / "engines").exists():
                os.rename(tmp / "engines", old / out.name / "engines")
            os.rename(old / out.name, out)
            shutil.rmtree(old, ignore_errors=True)
        raise
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_reprojection(model: nn.Module, out_dir: str | os.PathLike, opset: int = 17,
                        checkpoint: str | os.PathLike | None = None, atol: Optional[float] = 1e-4
                        ) -> dict[str, Any]:
    """Export the three graphs and ``meta.json`` into ``out_dir``, atomically as a folder.

    Every graph is built in memory and checked with ``onnx.checker`` first; the files are written
    into a temporary folder beside ``out_dir``, checked against PyTorch there
    (:func:`verify_export`, batches 1 and 3, when ``atol`` is not None; the differences go into
    ``meta.json`` as ``parity``), and only then replace ``out_dir``; so a failed, mismatching or
    killed export never replaces (or damages) a good one. An existing ``out_dir`` that is not an
    export (no ``meta.json``, not empty) is refused rather than replaced.

    Returns:
        the meta dict written to ``meta.json``.

    Raises:
        InputError: not the reprojection model, not on the CPU, or ``out_dir`` is something else.
        ExportMismatchError: onnxruntime differs from PyTorch by more than ``atol``.
    """
    import onnx

    _check_model(model)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "meta.json").is_file())):
        raise InputError(f"--out {out} exists and is not an export folder (no meta.json); "
                         "choose a new folder or remove it")
    was_training = model.training
    model.eval()
    try:
        blobs = {name: _export_graph(model, name, opset) for name in model_graphs(model)}
    finally:
        model.train(was_training)
    tok = model.tokenizer
    probe_ids, _ = tok.encode([TOKENIZER_PROBE], model.cfg.model.max_instruction_length)
    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "model": "embedded",
        **_shapes(model),
        "tokenizer": {"kind": type(tok).__name__, "vocab_size": int(tok.vocab_size),
                      "max_instruction_length": int(model.cfg.model.max_instruction_length),
                      "probe": TOKENIZER_PROBE, "probe_ids": probe_ids[0].tolist()},
        "num_waypoints": NUM_WAYPOINTS,
        "past_trajectory_length": PAST_TRAJECTORY_LENGTH,
        "opset": int(opset),
        "checkpoint": ({"path": str(checkpoint), "sha256": sha256_file(checkpoint)} if checkpoint else None),
        "graphs": {name: {"file": spec.file, "inputs": list(spec.inputs), "outputs": list(spec.outputs),
                          "sha256": hashlib.sha256(blobs[name]).hexdigest()}
                   for name, spec in model_graphs(model).items()},
        "multiview": ({"sources": int(model.cfg.model.multiview_sources),
                       "planes": int(model.multiview.arch.num_planes),
                       "feature_dim": int(model.multiview.arch.feature_dim)}
                      if getattr(model, "has_multiview", False) else None),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700
        for name, spec in model_graphs(model).items():
            _write_synced(tmp / spec.file, blobs[name])
        _write_synced(tmp / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
        if atol is not None:
            diffs = verify_export(model, tmp, atol=atol)
            meta["parity"] = {"atol": atol, "batches": [1, 3], "max_abs_diff": diffs}
            _write_synced(tmp / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
        fsync_dir(tmp)
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


# ------------------------------------------------------------------------------------------ loading
def _not_exported(folder: Path, why: str) -> InputError:
    return InputError(f"ONNX export {folder} {why}; export it with: {EXPORT_COMMAND.format(out=folder)}")


def load_export(folder: str | os.PathLike, check_hashes: bool = True) -> dict[str, Any]:
    """Read and check an export folder's ``meta.json`` (format, version, files, sha256).

    Returns:
        the meta dict with ``"folder"`` (absolute) added and each graph's ``"path"``.

    Raises:
        InputError: missing folder or meta, another format or version, a missing graph, or a
            graph whose sha256 is not the one recorded (a partial or mixed export); the message
            says how to export.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise _not_exported(folder, "does not exist")
    if folder.is_file():
        raise _not_exported(folder, "is a file, not an export folder (node.model_path of the onnx/tensorrt "
                                    "backends is the folder export_onnx.py writes)")
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise _not_exported(folder, "has no meta.json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise _not_exported(folder, f"has an unreadable meta.json ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise _not_exported(folder, f"holds another format ({meta.get('format') if isinstance(meta, dict) else meta!r}, "
                                    f"expected {EXPORT_FORMAT})")
    if meta.get("version") != EXPORT_VERSION:
        raise _not_exported(folder, f"is export version {meta.get('version')}, this code reads version {EXPORT_VERSION}")
    graphs = meta.get("graphs") or {}
    expected = {**GRAPHS, **(MULTIVIEW_GRAPHS if meta.get("multiview") else {})}
    for name, spec in expected.items():
        entry = graphs.get(name)
        if not isinstance(entry, dict) or entry.get("file") != spec.file:
            raise _not_exported(folder, f"meta.json lists no graph '{name}' ({spec.file})")
        path = folder / spec.file
        if not path.is_file():
            raise _not_exported(folder, f"lacks {spec.file}")
        if check_hashes:
            digest = sha256_file(path)
            if digest != entry.get("sha256"):
                raise _not_exported(folder, f": {spec.file} has sha256 {digest[:12]}... but meta.json records "
                                            f"{str(entry.get('sha256'))[:12]}... (a partial or mixed export)")
        entry["path"] = str(path.resolve())
    meta["folder"] = str(folder.resolve())
    return meta


# ------------------------------------------------------------------------------------------ parity
def verify_export(model: nn.Module, folder: str | os.PathLike, atol: float = 1e-4,
                  batches: tuple[int, ...] = (1, 3), seed: int = 1) -> dict[str, float]:
    """Run every graph in onnxruntime (CPU) and the model in PyTorch on the same fresh inputs,
    at each batch size in ``batches`` (the traced batch was 2).

    Returns:
        ``{"graph.output": max |onnxruntime - torch|}`` over all batches.

    Raises:
        ExportMismatchError: a shape differs or a difference exceeds ``atol`` (all listed).
    """
    import onnxruntime as ort

    _check_model(model)
    meta = load_export(folder)
    diffs: dict[str, float] = {}
    problems: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for name, spec in model_graphs(model).items():
            session = ort.InferenceSession(meta["graphs"][name]["path"], providers=["CPUExecutionProvider"])
            for batch in batches:
                feeds = graph_inputs(model, batch=batch, seed=seed + batch)[name]
                with torch.no_grad():
                    want = _WRAPPERS[name](model).eval()(*(feeds[n] for n in spec.inputs))
                want = want if isinstance(want, tuple) else (want,)
                got = session.run(list(spec.outputs), {n: feeds[n].numpy() for n in spec.inputs})
                for out_name, g, w in zip(spec.outputs, got, want):
                    key = f"{name}.{out_name}"
                    if tuple(g.shape) != tuple(w.shape):
                        problems.append(f"{key} (batch {batch}): shape {tuple(g.shape)} != torch {tuple(w.shape)}")
                        diffs[key] = float("inf")
                        continue
                    d = float(abs(g - w.numpy()).max()) if g.size else 0.0
                    diffs[key] = max(diffs.get(key, 0.0), d)
                    if not d <= atol:
                        problems.append(f"{key} (batch {batch}): max abs difference {d:.3g} > {atol:g}")
    finally:
        model.train(was_training)
    if problems:
        raise ExportMismatchError(f"ONNX export {folder} does not match the PyTorch model: " + "; ".join(problems))
    return diffs

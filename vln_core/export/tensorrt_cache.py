"""The TensorRT engine cache: engines built from the ONNX export, keyed so a stale one is never used. UNTESTED on a GPU.

No GPU and no TensorRT builder were available where this was written: the engine build
(:func:`build_engine`) and the engine run (:class:`vln_core.backends.tensorrt_backend.TensorRTEngine`) have never been executed.
What is tested (tests/test_tensorrt_cache.py) is the part that decides whether an engine may be
used at all -- pure Python, no TensorRT needed:

* engines live in ``<export folder>/engines/`` (``node.model_path``, default ``exports/embedded``),
  one per graph of the export (``encoder``, ``pose_head``, ``goal_waypoints``; see
  :mod:`vln_core.export.reprojection`) and precision;
* an engine is keyed by the **TensorRT version**, the **GPU name** and the **sha256 of the ONNX
  file** it was built from (plus graph and precision): the key is in the file name
  (:func:`engine_file_name`) and, complete, in a sidecar ``<engine>.json`` that also records the
  engine file's own sha256;
* :func:`find_engine` returns an engine only when file name, sidecar and engine bytes all match
  this machine and this export; an engine for another TensorRT, GPU or ONNX file, a missing or
  unreadable sidecar, or changed bytes are refused with a :class:`StaleEngineError` that says what
  differs and how to rebuild -- never used silently;
* :func:`write_engine` writes the engine and then its sidecar atomically
  (:func:`vln_core.atomic.atomic_write_bytes`), so a killed build leaves no engine that passes.

TensorRT itself is optional (never a dependency): ``tensorrt`` (the full TensorRT, e.g. JetPack
or NVIDIA's container) or ``tensorrt_rtx`` (TensorRT-RTX, whose Python bindings on PyPI are
``tensorrt-rtx-cu12-bindings`` + ``tensorrt-rtx-cu12-libs``; not verified here). Without either,
``node.backend: tensorrt`` stops with one line saying so.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import torch

from vln_core.atomic import atomic_write_bytes, atomic_write_text
from vln_core.config import ConfigError
from vln_core.errors import InputError
from vln_core.export.reprojection import sha256_file

__all__ = [
    "TensorRTUnavailableError",
    "EngineKey",
    "StaleEngineError",
    "PRECISIONS",
    "ENGINE_DIR",
    "engine_file_name",
    "engine_key_mismatch",
    "find_engine",
    "write_engine",
    "rebuild_command",
    "optimization_profiles",
    "import_tensorrt",
    "tensorrt_version",
    "gpu_name",
    "build_engine",
]

PRECISIONS = ("fp32", "fp16")
#: Engine cache folder inside the export folder.
ENGINE_DIR = "engines"
SIDECAR_FORMAT = "vln_heatmap.tensorrt_engine"
#: Largest batch each engine accepts (its optimisation profile): frames encoded at once, frame
#: pairs of the pose head (keyframes per update), goal/waypoint rows; and the instruction length.
MAX_ENCODE_BATCH = 16
MAX_POSE_PAIRS = 64
MAX_GOAL_BATCH = 4


class TensorRTUnavailableError(ConfigError):
    """TensorRT's Python package or a CUDA GPU is missing (the message says which and what to use)."""


class StaleEngineError(InputError):
    """An engine is missing, or exists but does not match this TensorRT, GPU or ONNX export."""


@dataclass(frozen=True)
class EngineKey:
    """What an engine is valid for."""

    graph: str  # encoder | pose_head | goal_waypoints
    precision: str  # fp32 | fp16
    tensorrt_version: str
    gpu_name: str
    onnx_sha256: str


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


def engine_file_name(key: EngineKey) -> str:
    """``<graph>.<precision>.trt<version>.<gpu>.<onnx sha256[:16]>.engine``; the full key is in the sidecar."""
    return (f"{key.graph}.{key.precision}.trt{_slug(key.tensorrt_version)}.{_slug(key.gpu_name)}."
            f"{key.onnx_sha256[:16]}.engine")


def rebuild_command(export_dir: str | os.PathLike, precision: str) -> str:
    return f"python export/build_tensorrt.py --export {export_dir}" + (" --fp16" if precision == "fp16" else "")


def engine_key_mismatch(recorded: dict[str, Any], expected: EngineKey) -> list[str]:
    """What differs between a sidecar's recorded key and the expected one (empty: it matches)."""
    labels = {"tensorrt_version": "TensorRT", "gpu_name": "GPU", "onnx_sha256": f"{expected.graph}.onnx sha256",
              "graph": "graph", "precision": "precision"}
    out = []
    for field, label in labels.items():
        want = getattr(expected, field)
        got = recorded.get(field)
        if got != want:
            short = (lambda v: str(v)[:12] + "...") if field == "onnx_sha256" else (lambda v: repr(v))
            out.append(f"{label} {short(got)} (here: {short(want)})")
    return out


def _read_sidecar(engine: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(engine.with_name(engine.name + ".json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT else None


def find_engine(cache_dir: str | os.PathLike, key: EngineKey, export_dir: str | os.PathLike | None = None) -> Path:
    """The cached engine for ``key``, checked; never an engine built for something else.

    Raises:
        StaleEngineError: no engine for ``key`` (other engines of the graph are listed with what
            differs), a sidecar that is missing, unreadable or records another key, or engine
            bytes whose sha256 is not the sidecar's. The message ends with the rebuild command.
    """
    cache_dir = Path(cache_dir)
    export_dir = Path(export_dir) if export_dir is not None else cache_dir.parent
    how = f"rebuild with: {rebuild_command(export_dir, key.precision)}"
    path = cache_dir / engine_file_name(key)
    if path.is_file():
        sidecar = _read_sidecar(path)
        if sidecar is None:
            raise StaleEngineError(f"TensorRT engine {path} has no readable sidecar {path.name}.json (an interrupted "
                                   f"build?); refused, {how}")
        diff = engine_key_mismatch(sidecar, key)
        if diff:
            raise StaleEngineError(f"TensorRT engine {path} was built for {'; '.join(diff)}; refused, {how}")
        digest = sha256_file(path)
        if digest != sidecar.get("engine_sha256"):
            raise StaleEngineError(f"TensorRT engine {path} has sha256 {digest[:12]}... but its sidecar records "
                                   f"{str(sidecar.get('engine_sha256'))[:12]}... (changed or damaged); refused, {how}")
        return path
    others = sorted(cache_dir.glob(f"{key.graph}.*.engine")) if cache_dir.is_dir() else []
    if others:
        notes = []
        for other in others:
            sidecar = _read_sidecar(other)
            why = "; ".join(engine_key_mismatch(sidecar, key)) if sidecar else "no readable sidecar"
            notes.append(f"{other.name}: {why}")
        raise StaleEngineError(f"no TensorRT engine of {key.graph} for TensorRT {key.tensorrt_version} on "
                               f"'{key.gpu_name}' ({key.precision}) from this export in {cache_dir}; stale engines "
                               f"refused: {' | '.join(notes)}; {how}")
    raise StaleEngineError(f"no TensorRT engine of {key.graph} ({key.precision}) in {cache_dir}; build it with: "
                           f"{rebuild_command(export_dir, key.precision)}")


def write_engine(cache_dir: str | os.PathLike, key: EngineKey, data: bytes, extra: Optional[dict[str, Any]] = None
                 ) -> Path:
    """Write an engine and its sidecar atomically (engine first, sidecar last: an engine without
    its sidecar is refused by :func:`find_engine`, so a killed build never yields a usable
    half-written engine). Returns the engine's path."""
    import hashlib

    cache_dir = Path(cache_dir)
    path = cache_dir / engine_file_name(key)
    sidecar = path.with_name(path.name + ".json")
    sidecar.unlink(missing_ok=True)  # the old sidecar must not vouch for new bytes while they are swapped in
    atomic_write_bytes(path, data)
    record = {"format": SIDECAR_FORMAT, **asdict(key), "engine_sha256": hashlib.sha256(data).hexdigest(),
              "built_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **(extra or {})}
    atomic_write_text(sidecar, json.dumps(record, indent=2) + "\n")
    return path


def optimization_profiles(meta: dict[str, Any]) -> dict[str, dict[str, tuple[tuple[int, ...], ...]]]:
    """``{graph: {input: (min, opt, max) shapes}}`` for the dynamic axes of the export."""
    H, W = meta["frame_size"]
    c_pose, h16, w16 = meta["pose_features"]
    c8, h8, w8 = meta["f8"]
    c32, h32, w32 = meta["f32"]
    L = int(meta["tokenizer"]["max_instruction_length"])
    T = int(meta["past_trajectory_length"])

    def batch(shape, lo, opt, hi):
        return ((lo, *shape), (opt, *shape), (hi, *shape))

    return {
        "encoder": {"frames": batch((3, H, W), 1, 1, MAX_ENCODE_BATCH)},
        "pose_head": {"pose_frames": batch((c_pose, h16, w16), 1, 8, MAX_POSE_PAIRS),
                      "pose_current": batch((c_pose, h16, w16), 1, 8, MAX_POSE_PAIRS)},
        "goal_waypoints": {"f8": batch((c8, h8, w8), 1, 1, MAX_GOAL_BATCH),
                           "f32": batch((c32, h32, w32), 1, 1, MAX_GOAL_BATCH),
                           "instruction_ids": ((1, 1), (1, min(16, L)), (MAX_GOAL_BATCH, L)),
                           "instruction_mask": ((1, 1), (1, min(16, L)), (MAX_GOAL_BATCH, L)),
                           "past_trajectory": batch((T, 4), 1, 1, MAX_GOAL_BATCH),
                           "intent": ((1,), (1,), (MAX_GOAL_BATCH,))},
    }


# ------------------------------------------------------------------------------------------ TensorRT
def import_tensorrt():
    """The TensorRT Python module (``tensorrt``, else TensorRT-RTX's), or one clear error."""
    errors = []
    for name in ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings"):
        try:
            module = __import__(name)
        except Exception as exc:  # ImportError, or a stub wheel's own error
            errors.append(f"{name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        if hasattr(module, "Builder") or hasattr(module, "Runtime"):
            return module
        errors.append(f"{name}: no Builder/Runtime (a stub package?)")
    raise TensorRTUnavailableError(
        "backend 'tensorrt' needs TensorRT's Python package, which is not importable here ("
        + "; ".join(errors) + "); install TensorRT (JetPack, NVIDIA's TensorRT container, or the tensorrt wheels "
        "where their download host is reachable) or use node.backend: onnx")


def tensorrt_version(trt) -> str:
    return str(getattr(trt, "__version__", "unknown"))


def gpu_name(device: int | str | torch.device = 0) -> str:
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("backend 'tensorrt' needs a CUDA GPU and a CUDA build of PyTorch "
                                      "(torch.cuda.is_available() is False); use node.backend: onnx on the CPU")
    return torch.cuda.get_device_name(torch.device(device) if isinstance(device, str) else device)


def build_engine(trt, onnx_path: str | os.PathLike, profile: dict[str, tuple[tuple[int, ...], ...]],
                 fp16: bool = False, workspace_bytes: int = 1 << 30) -> bytes:
    """Parse an ONNX file and build a serialized engine with one optimisation profile. UNTESTED."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt, "NetworkDefinitionCreationFlag") and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # TensorRT < 10; the default later
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16 and hasattr(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)
    opt = builder.create_optimization_profile()
    for name, (lo, mid, hi) in profile.items():
        opt.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(opt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InputError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    return bytes(serialized)



"""``node.backend: tensorrt``: the embedded model's TensorRT engines as the learned backend's engine. UNTESTED on a GPU.

The engines come from the cache in :mod:`vln_core.export.tensorrt_cache` (built by
``export/build_tensorrt.py``; an engine for another TensorRT, GPU or ONNX file is refused there,
never used silently). TensorRT itself is optional: without it ``node.backend: tensorrt`` stops
with one line saying so.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from vln_core.backends.base import BackendUnavailableError, register_backend
from vln_core.backends.learned import LearnedBackend
from vln_core.config import VLNConfig
from vln_core.errors import InputError
from vln_core.export.reprojection import GRAPHS, load_export
from vln_core.export.tensorrt_cache import (
    ENGINE_DIR,
    PRECISIONS,
    EngineKey,
    StaleEngineError,
    TensorRTUnavailableError,
    find_engine,
    gpu_name,
    import_tensorrt,
    rebuild_command,
    tensorrt_version,
)

__all__ = ["TensorRTEngine", "TensorRTBackend"]


class TensorRTEngine:
    """The three engines as a :class:`~vln_core.backends.learned.FrameEngine`. UNTESTED.

    Inputs and outputs are CUDA torch tensors bound by address (``execute_async_v3`` on the
    current torch stream); results come back to the CPU like the other engines'.
    """

    def __init__(self, folder: str | os.PathLike, precision: str = "fp32", device: str = "cuda:0") -> None:
        from vln_core.backends.onnx_backend import tokenizer_from_meta

        if precision not in PRECISIONS:
            raise InputError(f"TensorRT precision must be one of {PRECISIONS}, got {precision!r}")
        trt = import_tensorrt()
        self.trt = trt
        self.device = torch.device(device)
        self.meta = load_export(folder)
        self.folder = Path(self.meta["folder"])
        self.frame_size = tuple(int(s) for s in self.meta["frame_size"])
        self.tokenizer = tokenizer_from_meta(self.meta)
        version, gpu = tensorrt_version(trt), gpu_name(self.device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engines, self.contexts = {}, {}
        for name in GRAPHS:
            key = EngineKey(name, precision, version, gpu, self.meta["graphs"][name]["sha256"])
            path = find_engine(self.folder / ENGINE_DIR, key, self.folder)
            engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise StaleEngineError(f"TensorRT could not deserialize {path}; refused, rebuild with: "
                                       f"{rebuild_command(self.folder, precision)}")
            self.engines[name] = engine
            self.contexts[name] = engine.create_execution_context()
        self.precision = precision

    def _dtype(self, engine, name: str) -> torch.dtype:
        trt = self.trt
        table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
                 trt.DataType.BOOL: torch.bool}
        if hasattr(trt.DataType, "INT64"):
            table[trt.DataType.INT64] = torch.int64
        return table[engine.get_tensor_dtype(name)]

    def _run(self, graph: str, feeds: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        spec = GRAPHS[graph]
        engine, ctx = self.engines[graph], self.contexts[graph]
        keep = []
        for name in spec.inputs:
            t = feeds[name].to(self.device, self._dtype(engine, name)).contiguous()
            keep.append(t)
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in spec.outputs:
            out = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=self._dtype(engine, name), device=self.device)
            ctx.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {graph} failed")
        stream.synchronize()
        return [o.float().cpu() for o in outs]

    def encode(self, frames: torch.Tensor):
        from vln_core.models.reprojection_model import FrameEncoding

        return FrameEncoding(*self._run("encoder", {"frames": frames.float()}))

    def relative_poses(self, pose_frames: torch.Tensor, pose_current: torch.Tensor) -> torch.Tensor:
        return self._run("pose_head", {"pose_frames": pose_frames, "pose_current": pose_current})[0]

    def goal_and_waypoints(self, f8, f32, ids, mask, past, intent):
        goal, waypoints = self._run("goal_waypoints", {
            "f8": f8, "f32": f32, "instruction_ids": ids.long(), "instruction_mask": mask.float(),
            "past_trajectory": past.float(), "intent": intent.long()})
        return goal, waypoints


def _precision(cfg: VLNConfig) -> str:
    return str(cfg.node.tensorrt_precision)


@register_backend("tensorrt")
class TensorRTBackend(LearnedBackend):
    """``node.backend: tensorrt``: cached engines of the export ``node.model_path`` (default
    exports/embedded) at ``node.tensorrt_precision`` (fp32 or fp16). UNTESTED on a GPU."""

    name = "tensorrt"

    def __init__(self, cfg: VLNConfig) -> None:
        from vln_core.backends.onnx_backend import check_export_meta, export_folder

        try:
            import_tensorrt()  # one clear line when TensorRT is absent, before anything else
            engine = TensorRTEngine(export_folder(cfg), _precision(cfg))
            check_export_meta(engine.meta, cfg)
        except TensorRTUnavailableError as exc:
            raise BackendUnavailableError(str(exc)) from None
        except InputError as exc:
            raise BackendUnavailableError(f"backend 'tensorrt': {str(exc).splitlines()[0]}") from None
        super().__init__(cfg, engine)

    def describe(self) -> dict[str, str]:
        info = super().describe()
        info["tensorrt_engines"] = f"{self.engine.folder / ENGINE_DIR} ({self.engine.precision})"
        return info

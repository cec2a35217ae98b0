"""``node.backend: onnx``: the exported reprojection model in onnxruntime.

The networks of :class:`~vln_core.models.reprojection_model.ReprojectionHeatmapModel` run from the
folder that ``export/export_onnx.py`` writes (``node.model_path``; default ``exports/embedded``,
see :mod:`vln_core.export.reprojection`); everything else -- preprocessing, the per-frame
encoding cache, the reprojection into heatmaps, the trajectory -- is :class:`LearnedBackend`'s,
shared with the ``model`` backend, so both give the same outputs (within 1e-4,
tests/test_onnx_backend.py).

Execution providers: ``node.onnx_providers`` in order of preference, filtered to those this
onnxruntime build has (``CUDAExecutionProvider`` when onnxruntime-gpu and a GPU are present,
else ``CPUExecutionProvider``). The folder is checked before use: a missing folder says how to
export; a ``meta.json`` that does not match the graphs (sha256), the tokenizer or
``video.frame_size`` is refused.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from vln_core.config import VLNConfig
from vln_core.errors import InputError
from vln_core.export.reprojection import DEFAULT_EXPORT_DIR, GRAPHS, MULTIVIEW_GRAPHS, load_export
from vln_core.models.reprojection_model import FrameEncoding
from vln_core.backends.learned import LearnedBackend
from vln_core.backends.base import BackendUnavailableError, register_backend

__all__ = ["OnnxEngine", "OnnxBackend", "choose_providers", "tokenizer_from_meta", "check_export_meta",
           "export_folder"]


def export_folder(cfg: VLNConfig) -> Path:
    """``node.model_path`` or the default export folder."""
    return Path(cfg.node.model_path).expanduser() if cfg.node.model_path else DEFAULT_EXPORT_DIR


def choose_providers(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """The providers of ``wanted`` that ``available`` has, in ``wanted``'s order.

    Raises:
        InputError: none of them is available (names both lists).
    """
    chosen = [p for p in wanted if p in available]
    if not chosen:
        raise InputError(f"none of node.onnx_providers {list(wanted)} is available in this onnxruntime "
                         f"(available: {list(available)}); add CPUExecutionProvider")
    return chosen


def tokenizer_from_meta(meta: dict[str, Any]) -> Any:
    """The instruction tokenizer the export was made with, checked on the stored probe."""
    from vln_core.models.tokenizer import ByteTokenizer, HashedWordTokenizer

    tok_meta = meta.get("tokenizer") or {}
    kind = tok_meta.get("kind")
    if kind == "HashedWordTokenizer":
        tok = HashedWordTokenizer(int(tok_meta["vocab_size"]))
    elif kind == "ByteTokenizer":
        tok = ByteTokenizer()
    else:
        raise InputError(f"ONNX export {meta.get('folder')}: tokenizer {kind!r} cannot be rebuilt without the model")
    ids, _ = tok.encode([tok_meta.get("probe", "")], int(tok_meta.get("max_instruction_length", 64)))
    if ids[0].tolist() != tok_meta.get("probe_ids"):
        raise InputError(f"ONNX export {meta.get('folder')}: this code's {kind} encodes the probe sentence differently "
                         "from the export's; re-export with export/export_onnx.py")
    return tok


def check_export_meta(meta: dict[str, Any], cfg: VLNConfig) -> None:
    """Refuse an export whose frame size is not ``video.frame_size`` (the ``model`` backend builds
    the network at that size, so both would disagree)."""
    size = tuple(int(s) for s in meta.get("frame_size") or ())
    want = tuple(int(s) for s in cfg.video.frame_size)
    if size != want:
        raise InputError(f"ONNX export {meta.get('folder')} was made at frame size {size} but video.frame_size is "
                         f"{want}; set video.frame_size to {list(size)} or re-export with video.frame_size={list(want)}")
    if int(meta.get("past_trajectory_length", -1)) != 16 or int(meta.get("num_waypoints", -1)) != 20:
        raise InputError(f"ONNX export {meta.get('folder')}: past trajectory / waypoint counts "
                         f"{meta.get('past_trajectory_length')} / {meta.get('num_waypoints')} are not 16 / 20")


class OnnxEngine:
    """The exported graphs as a :class:`~vln_core.backends.learned.FrameEngine` (with the
    multi-view depth graphs when the export has them).

    ``OnnxEngine(folder, providers)``, or ``OnnxEngine(cfg, model_path=None)``: the folder
    ``model_path`` (else ``node.model_path``, else exports/embedded), ``node.onnx_providers``, and
    the export checked against ``cfg`` (:func:`check_export_meta`).

    Args:
        folder: the export folder (or the config, as above).
        providers: execution providers in order of preference (those available are used; default
            the CPU's); with a config: the model path or None.
        threads: intra-op threads per session (0: onnxruntime's default, all cores).

    Raises:
        InputError: see :func:`~vln_core.export.reprojection.load_export`,
            :func:`choose_providers`, :func:`tokenizer_from_meta`, :func:`check_export_meta`.
    """

    def __init__(self, folder: "str | os.PathLike | VLNConfig",
                 providers: "Sequence[str] | str | os.PathLike | None" = None,
                 threads: int = 0) -> None:
        import onnxruntime as ort

        cfg: Optional[VLNConfig] = None
        if isinstance(folder, VLNConfig):
            cfg, model_path = folder, providers
            folder = Path(model_path).expanduser() if model_path else export_folder(cfg)
            providers = tuple(getattr(cfg.node, "onnx_providers", ()) or ("CPUExecutionProvider",))
        elif providers is None:
            providers = ("CPUExecutionProvider",)
        self.meta = load_export(folder)
        self.folder = Path(self.meta["folder"])
        self.providers = choose_providers(providers, ort.get_available_providers())
        self.frame_size = tuple(int(s) for s in self.meta["frame_size"])
        self.tokenizer = tokenizer_from_meta(self.meta)
        #: how the goal logits become the heatmap (exports before the ``mask`` goal head: softmax)
        self.goal_activation = str(self.meta.get("goal_activation", "softmax"))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        # idle worker threads sleep instead of spinning: three sessions' spinning pools took the
        # node's CPU from ORB matching and DDS (node_latency on 2 cores: p95 307 ms with spinning)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions = {}
        mv = self.meta.get("multiview") or None
        #: the export holds the multi-view depth graphs (``S`` sources per reference, padded)
        self.has_multiview = bool(mv)
        self.num_sources = int(mv["sources"]) if mv else 0
        self.graphs = {**GRAPHS, **(MULTIVIEW_GRAPHS if mv else {})}
        for name, spec in self.graphs.items():
            try:
                session = ort.InferenceSession(self.meta["graphs"][name]["path"], options, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own types (InvalidGraph, Fail, ...)
                raise InputError(f"ONNX export {self.folder}: onnxruntime cannot load {spec.file}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            names = tuple(i.name for i in session.get_inputs()), tuple(o.name for o in session.get_outputs())
            if names != (spec.inputs, spec.outputs):
                raise InputError(f"ONNX export {self.folder}: {spec.file} has inputs/outputs {names}, expected "
                                 f"{(spec.inputs, spec.outputs)}; re-export with export/export_onnx.py")
            self.sessions[name] = session
        self.active_providers = list(self.sessions["encoder"].get_providers())
        if cfg is not None:
            check_export_meta(self.meta, cfg)

    def _run(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.sessions[name].run(list(self.graphs[name].outputs), feeds)

    def encode(self, frames: torch.Tensor) -> FrameEncoding:
        if frames.dim() != 4 or tuple(frames.shape[1:]) != (3, *self.frame_size):
            raise InputError(f"onnx engine: frames must be (B, 3, {self.frame_size[0]}, {self.frame_size[1]}), "
                             f"got {tuple(frames.shape)}")
        outs = self._run("encoder", {"frames": np.ascontiguousarray(frames.detach().cpu().numpy(), dtype=np.float32)})
        return FrameEncoding(*(torch.from_numpy(o) for o in outs))

    def multiview_features(self, frames: torch.Tensor) -> torch.Tensor:
        outs = self._run("multiview_features",
                         {"frames": np.ascontiguousarray(frames.detach().cpu().numpy(), dtype=np.float32)})
        return torch.from_numpy(outs[0])

    def multiview_depth(self, ref_features, src_features, K, T_src_ref, size, mono_depth, mono_conf, src_valid):
        """The multi-view network's forward (:class:`vln_core.models.multiview.MultiViewDepth`) on
        the exported graph: sources padded to the export's ``S``; without a monocular prior the
        multi-view depth alone is returned as the depth."""
        from vln_core.models.multiview import MultiViewOutput

        R, S = src_features.shape[:2]
        if S > self.num_sources:
            raise InputError(f"onnx engine: {S} sources per reference, the export takes {self.num_sources} "
                             "(model.multiview_sources must match the export)")
        pad = self.num_sources - S
        if pad:
            src_features = torch.cat([src_features, src_features[:, :1].expand(R, pad, *src_features.shape[2:])], 1)
            T_src_ref = torch.cat([T_src_ref, T_src_ref[:, :1].expand(R, pad, 4, 4)], 1)
            src_valid = torch.cat([src_valid, torch.zeros(R, pad, dtype=torch.bool, device=src_valid.device)], 1)
        K = K.expand(R, 3, 3) if K.dim() == 2 else K
        fused = mono_depth is not None
        H, W = (int(s) for s in size)
        if not fused:  # the graph always fuses; its multi-view output ignores the prior
            mono_depth = torch.ones(R, H, W)
            mono_conf = torch.ones(R, H, W)

        def arr(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)

        depth, mvs, conf = self._run("multiview_depth", {
            "ref_features": arr(ref_features), "src_features": arr(src_features), "K": arr(K),
            "T_src_ref": arr(T_src_ref), "src_valid": arr(src_valid.float()), "mono_depth": arr(mono_depth),
            "mono_conf": arr(mono_conf if mono_conf is not None else torch.ones_like(mono_depth))})
        depth_t, mvs_t = torch.from_numpy(depth), torch.from_numpy(mvs)
        return MultiViewOutput(depth=depth_t if fused else mvs_t, multiview_depth=mvs_t, confidence=torch.from_numpy(conf),
                               weight=torch.ones_like(mvs_t), logits=torch.zeros(0), planes=torch.zeros(0))

    def relative_poses(self, pose_frames: torch.Tensor, pose_current: torch.Tensor) -> torch.Tensor:
        feeds = {"pose_frames": np.ascontiguousarray(pose_frames.detach().cpu().numpy(), dtype=np.float32),
                 "pose_current": np.ascontiguousarray(pose_current.detach().cpu().numpy(), dtype=np.float32)}
        return torch.from_numpy(self._run("pose_head", feeds)[0])

    def goal_and_waypoints(self, f8: torch.Tensor, f32: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                           past: torch.Tensor, intent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def arr(t: torch.Tensor, dtype) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy().astype(dtype, copy=False))

        feeds = {"f8": arr(f8, np.float32), "f32": arr(f32, np.float32), "instruction_ids": arr(ids, np.int64),
                 "instruction_mask": arr(mask, np.float32), "past_trajectory": arr(past, np.float32),
                 "intent": arr(intent, np.int64)}
        goal, waypoints = self._run("goal_waypoints", feeds)
        return torch.from_numpy(goal), torch.from_numpy(waypoints)


def _unavailable(backend: str, exc: Exception) -> BackendUnavailableError:
    return BackendUnavailableError(f"backend '{backend}': {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


@register_backend("onnx")
class OnnxBackend(LearnedBackend):
    """``node.backend: onnx``: :class:`OnnxEngine` on ``node.model_path`` (default exports/embedded)
    with ``node.onnx_providers``."""

    name = "onnx"

    def __init__(self, cfg: VLNConfig, engine: Optional[OnnxEngine] = None) -> None:
        if engine is None:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                raise BackendUnavailableError("backend 'onnx' needs onnxruntime: pip install -e '.[export]' "
                                              "(or onnxruntime-gpu for CUDA)") from None
            providers = tuple(getattr(cfg.node, "onnx_providers", ()) or ("CPUExecutionProvider",))
            try:
                engine = OnnxEngine(export_folder(cfg), providers)
                check_export_meta(engine.meta, cfg)
            except InputError as exc:
                raise _unavailable(self.name, exc) from None
        super().__init__(cfg, engine)

    def describe(self) -> dict[str, str]:
        info = super().describe()
        info["onnx_export"] = str(self.engine.folder)
        info["onnx_providers"] = ", ".join(self.engine.active_providers)
        return info

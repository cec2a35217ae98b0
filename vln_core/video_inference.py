"""The pipeline on a recorded video: N_m frames in, keyframes and frame-indexed heatmaps out.

This is the design's inference mode (``tools/infer_video.py`` is the command-line layer):

1. read ``N_m`` frames evenly spread over the source (an mp4 through OpenCV, a folder of images,
   or a posed RGB-D folder);
2. geometry of every frame: measured (``geometry``: a posed RGB-D folder), predicted by the
   embedded model (``model`` / ``onnx``: depth, and camera motion when the source has no poses,
   refined with ORB matches when ``model.match_refinement``: :mod:`vln_core.geometry.refinement`),
   or by VGGT-1B (``vggt``, from a local checkpoint);
3. ``N_k`` keyframes among the first ``N_m - 1`` frames by space-aware sampling on that geometry;
4. heatmaps of each keyframe over the last frame by the geometry core's reprojection.

Shapes: frames ``(N, H, W, 3)`` uint8 RGB at the source resolution; the model grid is
``video.frame_size``; poses camera-to-current ``T_cur_cam (N, 4, 4)`` (OpenCV axes), depth metres.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from vln_core.config import VLNConfig
from vln_core.errors import InputError
from vln_core.geometry.transforms import invert_pose
from vln_core.geometry.matching import orb_features
from vln_core.models.window_geometry import window_geometry
from vln_core.heatmaps import InterFrameHeatmaps, heatmaps_from_config, predicted_depth_config
from vln_core.preprocess import preprocess_frames
from vln_core.sampling import sample_keyframes

__all__ = ["VideoSource", "VideoResult", "read_video_source", "infer_video", "write_video_outputs", "BACKENDS"]

BACKENDS = ("model", "onnx", "geometry", "vggt")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclass
class VideoSource:
    """Frames read from one source.

    Attributes:
        frames: ``(N, H, W, 3)`` uint8 RGB.
        frame_numbers: ``(N,)`` position of each frame in the source (video frame number, image
            order, or posed-folder frame id).
        K: ``(3, 3)`` intrinsics of the frames when the source knows them, else None.
        depths: ``(N, H, W)`` metres (posed RGB-D folder) or None.
        poses: ``(N, 4, 4)`` camera-to-world (posed folder) or None.
        kind: ``"video"``, ``"images"`` or ``"posed"``.
        total_frames: frames in the whole source.
    """

    frames: np.ndarray
    frame_numbers: np.ndarray
    K: Optional[np.ndarray]
    depths: Optional[np.ndarray]
    poses: Optional[np.ndarray]
    kind: str
    total_frames: int


def _even(total: int, count: int) -> np.ndarray:
    return np.unique(np.linspace(0, total - 1, count).round().astype(int))


def read_video_source(path: str | Path, num_frames: int) -> VideoSource:
    """Read ``num_frames`` evenly spread frames of a video file, image folder or posed folder.

    Raises:
        InputError: no such path, an unreadable video or image, fewer frames than asked, or a
            frame of another size than the first.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        from vln_core.data.posed_images import list_frame_ids, load_posed_sequence

        ids = list_frame_ids(path)
        if ids:
            if len(ids) < num_frames:
                raise InputError(f"{path}: {len(ids)} frames, fewer than the {num_frames} asked for (--frames)")
            chosen = [ids[i] for i in _even(len(ids), num_frames)]
            seq = load_posed_sequence(path, frame_ids=chosen)
            return VideoSource(seq.colors, np.asarray(seq.frame_ids), seq.K, seq.depths, seq.poses, "posed", len(ids))
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise InputError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) and no posed frames in this folder")
        if len(files) < num_frames:
            raise InputError(f"{path}: {len(files)} images, fewer than the {num_frames} asked for (--frames)")
        picks = _even(len(files), num_frames)
        frames = []
        for i in picks:
            bgr = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
            if bgr is None:
                raise InputError(f"{files[i]}: not a readable image")
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        _check_sizes(frames, [files[i].name for i in picks])
        return VideoSource(np.stack(frames), picks, None, None, None, "images", len(files))
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"{path}: not a video ({', '.join(VIDEO_SUFFIXES)}) or a folder of images")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError(f"{path}: OpenCV cannot open this video")
        frames_all: list[np.ndarray] = []
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        wanted = set(_even(total, num_frames).tolist()) if total >= num_frames else None
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if wanted is None or index in wanted:
                frames_all.append((index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise InputError(f"{path}: no frame could be decoded (unreadable or empty video)")
    if index < num_frames:
        raise InputError(f"{path}: {index} frames, fewer than the {num_frames} asked for (--frames)")
    if wanted is None or len(frames_all) != num_frames:  # frame count unknown or wrong: pick now
        by_index = dict(frames_all)
        picks = _even(index, num_frames)
        frames_all = [(i, by_index[i]) for i in picks if i in by_index]
        if len(frames_all) != len(picks):
            raise InputError(f"{path}: the container reported {total} frames but {index} decode; re-encode the video")
    _check_sizes([f for _, f in frames_all], [f"frame {i}" for i, _ in frames_all])
    return VideoSource(np.stack([f for _, f in frames_all]), np.array([i for i, _ in frames_all]), None, None, None,
                       "video", index)


def _check_sizes(frames: Sequence[np.ndarray], names: Sequence[str]) -> None:
    size = frames[0].shape[:2]
    for frame, name in zip(frames, names):
        if frame.shape[:2] != size:
            raise InputError(f"{name} is {frame.shape[1]}x{frame.shape[0]} but the first frame is {size[1]}x{size[0]}: "
                             "all frames must have one size")


@dataclass
class VideoResult:
    """What :func:`infer_video` found (shapes on the model grid ``(H, W)``)."""

    heatmaps: InterFrameHeatmaps  # (N_k, H, W) over the last frame
    keyframes: np.ndarray  # (N_k,) positions among the N_m frames
    depth: np.ndarray  # (N_m, H, W) metres (measured or predicted)
    T_cur_cam: np.ndarray  # (N_m, 4, 4) camera-to-current
    K: np.ndarray  # (3, 3) on (H, W)
    backend: str
    mode: str  # "measured", "rgb_pose", "rgb_only", "vggt"
    timings_ms: dict[str, float] = field(default_factory=dict)
    model_name: str = ""  # the configuration that ran (backend model / onnx)
    goal_heatmap: Optional[np.ndarray] = None  # (H, W) sums to 1: small/base/full's reasoning stage
    waypoints: Optional[np.ndarray] = None  # (20, 2) x forward, y left, metres in the current base frame


def _learned_engine(backend: str, cfg: VLNConfig, model_path: Optional[str]) -> Any:
    if backend == "model":
        from vln_core.backends.model_backend import TorchEngine

        return TorchEngine(cfg, model_path)
    try:
        from vln_core.backends.onnx_backend import OnnxEngine
    except ImportError as exc:
        raise InputError(f"the onnx backend is not available: {exc}") from None
    return OnnxEngine(cfg, model_path)


def _pipeline_model(cfg: VLNConfig, model_path: Optional[str], random_init: bool) -> Optional[Any]:
    """The small/base/full model that ``--backend model`` runs, or None for ``embedded``."""
    from vln_core.models.registry import build_model
    from vln_core.models.shipped import load_model_checkpoint

    name = cfg.model.name
    if model_path:
        from vln_core.train.checkpoint import load_checkpoint

        name = str(((load_checkpoint(model_path).get("config") or {}).get("model") or {}).get("name") or "embedded")
    if name not in ("small", "base", "full"):
        if random_init:
            raise InputError("--random-init is for the pipeline models (model.name=small/base/full, e.g. "
                             "--config configs/tiny_base.yaml); the embedded model ships trained weights")
        return None
    if model_path:
        return load_model_checkpoint(model_path, cfg)[0].eval()
    return build_model(cfg, random_init=random_init).eval()


def _run_pipeline(model: Any, frames: torch.Tensor, K: torch.Tensor, poses: Optional[np.ndarray],
                  instruction: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor, torch.Tensor]:
    """small/base/full on the whole window: ``(depth (N, H, W), T_cur_cam (N, 4, 4), K (3, 3) of the
    current frame, keyframes (N_k,) sampled by the model, goal_logits (H, W), waypoints (20, 2))``."""
    from vln_core.models.spatial_model import PAST_TRAJECTORY_LENGTH, ModelInputs

    ids, mask = model.tokenizer.encode([instruction or ""], model.cfg.model.max_instruction_length)
    inputs = ModelInputs(frames=frames[None], instruction_ids=ids, instruction_mask=mask,
                         past_trajectory=torch.zeros(1, PAST_TRAJECTORY_LENGTH, 4), intent=torch.ones(1, dtype=torch.long),
                         intrinsics=K[None],
                         camera_poses=None if poses is None else torch.from_numpy(poses).float()[None])
    stage = model.geometry_stage(inputs)
    goal_logits, waypoints = model.reasoning_stage(inputs, stage)
    return (stage.geometry.depth[0].float().cpu(), stage.T_cur_cam[0].float().cpu(), stage.K[0, -1].float().cpu(),
            stage.keyframes[0].cpu().numpy().astype(np.int64), goal_logits[0].float().cpu(), waypoints[0].float().cpu())


def infer_video(source: VideoSource, cfg: VLNConfig, backend: str, model_path: Optional[str] = None,
                hfov_deg: Optional[float] = None, progress: Optional[Callable[[str], None]] = None,
                instruction: str = "", random_init: bool = False) -> VideoResult:
    """Keyframes and heatmaps for ``source`` with ``backend`` (see the module doc).

    Args:
        source: from :func:`read_video_source`; the last frame is the current view.
        cfg: ``video.keyframes`` (N_k), ``video.frame_size``, ``frame_sampling``, ``heatmap``.
        backend: one of :data:`BACKENDS`.
        model_path: checkpoint (``model``; default the shipped one), export folder (``onnx``) or
            VGGT checkpoint (``vggt``, required).
        hfov_deg: horizontal field of view when the source has no intrinsics (default
            ``model.default_hfov_deg``).
        progress: called with a stage name as each stage starts.
        instruction: read by the pipeline models' reasoning stage (goal heatmap, waypoints).
        random_init: ``model`` with a pipeline configuration: random weights (a plumbing check,
            e.g. ``configs/tiny_base.yaml``; the result predicts nothing).
    """
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    say = progress or (lambda _: None)
    size = tuple(int(s) for s in cfg.video.frame_size)
    N = len(source.frames)
    Nk = cfg.video.keyframes
    if N < Nk + 1:
        raise InputError(f"{N} frames cannot hold {Nk} keyframes plus the current frame")
    K_src = source.K
    if K_src is None:
        from vln_core.models.reprojection_model import default_intrinsics

        h, w = source.frames.shape[1:3]
        K_src = default_intrinsics((h, w), hfov_deg or cfg.model.default_hfov_deg, dtype=torch.float64).numpy()
    depths_in = list(source.depths) if source.depths is not None else None
    pre = preprocess_frames(list(source.frames), depths_in, K_src, size)
    K = pre.K.float()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    say("geometry")
    keyframes: Optional[np.ndarray] = None
    goal = waypoints = None
    model_name = cfg.model.name if backend in ("model", "onnx") else ""
    hcfg = cfg.heatmap
    pipeline = _pipeline_model(cfg, model_path, random_init) if backend == "model" else None
    if random_init and pipeline is None:
        raise InputError("--random-init needs --backend model")
    with torch.no_grad():
        if pipeline is not None:  # small/base/full: geometry stage, its keyframes, reasoning stage
            depth, T, K, keyframes, goal_logits, wp = _run_pipeline(pipeline, pre.frames, K, source.poses, instruction)
            goal = torch.softmax(goal_logits.flatten(), 0).view(goal_logits.shape).numpy().astype(np.float32)
            waypoints = wp.numpy().astype(np.float32)
            mode = "rgb_pose" if source.poses is not None else "rgb_only"
            model_name, hcfg = pipeline.cfg.model.name, pipeline.heatmap_cfg
        elif backend == "geometry":
            if source.depths is None or source.poses is None:
                raise InputError("the geometry backend needs a posed RGB-D folder (depth and poses); use --backend model "
                                 "for a plain video")
            T_wc = torch.from_numpy(source.poses).float()
            T = invert_pose(T_wc[-1]) @ T_wc
            depth = pre.depths
            mode = "measured"
        elif backend == "vggt":
            if not model_path:
                raise InputError("--backend vggt needs --model-path DIR (a local VGGT-1B model.safetensors / .pt)")
            from vln_core.models.vggt.api import load_vggt

            geo = load_vggt(model_path).predict_geometry(pre.frames)
            depth, T = geo.depth.float().cpu(), geo.T_cur_cam.float().cpu()
            K = geo.K[-1].float().cpu()
            mode = "vggt"
        else:
            engine = _learned_engine(backend, cfg, model_path)
            model_name = "embedded"
            hcfg = predicted_depth_config(cfg.heatmap)
            enc = engine.encode(pre.frames)
            depth = enc.depth.float()
            if source.poses is not None:
                T_wc = torch.from_numpy(source.poses).float()
                T = invert_pose(T_wc[-1]) @ T_wc
                mode = "rgb_pose"
            else:
                pose_k = enc.pose_features[:-1]
                T = torch.cat([engine.relative_poses(pose_k, enc.pose_features[-1:].expand_as(pose_k)).float(),
                               torch.eye(4)[None]])
                mode = "rgb_only"
            multiview = cfg.model.depth_source != "monocular" and getattr(engine, "has_multiview", False)
            if cfg.model.match_refinement or multiview:
                # multi-view depth from the neighbours (metric with known poses), and/or the match
                # refinement: metric scale (known poses, monocular depth) or PnP poses from ORB matches
                steps = None if mode == "rgb_pose" else engine.relative_poses(enc.pose_features[:-1],
                                                                              enc.pose_features[1:]).float()
                depth, T, _ = window_geometry(
                    depth, enc.depth_conf.float(), K, T.float(), mode == "rgb_pose",
                    depth_source=cfg.model.depth_source, num_sources=cfg.model.multiview_sources,
                    relative_pose=cfg.model.relative_pose,
                    network=engine.multiview_depth if multiview else None,
                    features=engine.multiview_features(pre.frames) if multiview else None,
                    orb=[orb_features(f) for f in pre.frames] if cfg.model.match_refinement else None,
                    learned_steps=steps)
                depth, T = depth.float(), T.float()
    timings["geometry"] = (time.perf_counter() - t0) * 1e3
    say("keyframes")
    t1 = time.perf_counter()
    if keyframes is None:  # the pipeline models sample their own
        keyframes = np.asarray(sample_keyframes(depth[:-1], K, T[:-1], Nk, cfg.frame_sampling).indices, dtype=np.int64)
    timings["sampling"] = (time.perf_counter() - t1) * 1e3
    say("heatmaps")
    t2 = time.perf_counter()
    kf = torch.from_numpy(keyframes)
    if mode == "vggt":
        hcfg = predicted_depth_config(cfg.heatmap)
    with torch.no_grad():
        hm = heatmaps_from_config(depth[kf].float(), K, T[kf].float(), K, torch.eye(4), size, depth[-1].float(),
                                  cfg=hcfg)
    timings["heatmaps"] = (time.perf_counter() - t2) * 1e3
    timings["total"] = (time.perf_counter() - t0) * 1e3
    return VideoResult(heatmaps=hm, keyframes=keyframes, depth=depth.numpy().astype(np.float32),
                       T_cur_cam=T.double().numpy(), K=K.double().numpy(), backend=backend, mode=mode, timings_ms=timings,
                       model_name=model_name, goal_heatmap=goal, waypoints=waypoints)


def write_video_outputs(source: VideoSource, result: VideoResult, out_dir: str | Path, name: str,
                        settings: dict[str, Any]) -> list[Path]:
    """Write ``<name>_heatmaps.png`` (all keyframes over the last frame), ``<name>_heatmap_<k>.png``,
    ``<name>_selected_indices.npy`` (source frame numbers), ``<name>_geometry_info.npz`` (depth,
    poses, intrinsics) and ``<name>_summary.json``, each atomically. Returns the paths."""
    import json
    import math

    from vln_core.atomic import atomic_write_bytes, atomic_write_text
    from vln_core.viz import blend_heatmap, overlay_mosaic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hm = result.heatmaps.numpy()
    current = source.frames[-1]
    numbers = source.frame_numbers
    labels = [f"frame {int(numbers[k])}" for k in result.keyframes]
    thumbs = [source.frames[k] for k in result.keyframes]
    written: list[Path] = []

    def png(path: Path, rgb: np.ndarray) -> None:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise InputError(f"could not encode {path}")
        atomic_write_bytes(path, buf.tobytes())
        written.append(path)

    png(out / f"{name}_heatmaps.png", overlay_mosaic(current, hm, labels, thumbs))
    for j, k in enumerate(result.keyframes):
        png(out / f"{name}_heatmap_{j}.png", blend_heatmap(current, hm.heatmap[j]))

    def npy_bytes(save: Callable[[Any], None]) -> bytes:
        import io

        buf = io.BytesIO()
        save(buf)
        return buf.getvalue()

    if result.goal_heatmap is not None:
        png(out / f"{name}_goal_heatmap.png", blend_heatmap(current, result.goal_heatmap))

    path = out / f"{name}_selected_indices.npy"
    atomic_write_bytes(path, npy_bytes(lambda b: np.save(b, numbers[result.keyframes].astype(np.int64))))
    written.append(path)
    path = out / f"{name}_geometry_info.npz"
    atomic_write_bytes(path, npy_bytes(lambda b: np.savez_compressed(
        b, depth=result.depth, T_cur_cam=result.T_cur_cam, K=result.K, frame_numbers=numbers,
        keyframes=result.keyframes)))
    written.append(path)

    def deg(x: float) -> Optional[float]:
        return None if not math.isfinite(float(x)) else round(math.degrees(float(x)), 2)

    summary = {
        **settings,
        "backend": result.backend,
        "model": result.model_name or None,
        "mode": result.mode,
        "source_kind": source.kind,
        "source_frames": int(source.total_frames),
        "frames_used": [int(n) for n in numbers],
        "keyframes": [
            {"frame": int(numbers[k]), "position": int(k), "in_view": round(float(hm.in_view_fraction[j]), 4),
             "hidden": round(float(hm.occluded_fraction[j]), 4), "out_of_view": round(float(hm.out_of_view_fraction[j]), 4),
             "out_of_view_bearing_deg": deg(hm.out_of_view_bearing[j]), "has_overlap": bool(hm.has_overlap[j])}
            for j, k in enumerate(result.keyframes)
        ],
        "timings_ms": {k: round(v, 1) for k, v in result.timings_ms.items()},
        "heatmap_grid_hw": list(hm.heatmap.shape[-2:]),
    }
    if result.waypoints is not None:
        summary["waypoints_xy_m"] = [[round(float(x), 4), round(float(y), 4)] for x, y in result.waypoints]
    if result.goal_heatmap is not None:
        row, col = np.unravel_index(int(np.argmax(result.goal_heatmap)), result.goal_heatmap.shape)
        summary["goal_peak_rc"] = [int(row), int(col)]
    path = out / f"{name}_summary.json"
    atomic_write_text(path, json.dumps(summary, indent=2))
    written.append(path)
    return written

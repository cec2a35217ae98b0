"""One configuration system for the node, training and export.

Settings are plain dataclasses. A YAML file fills them, ``key.sub=value`` overrides from the
command line (or ROS parameters) change single fields, and every value is type-checked, so a
typo or a wrong type fails at start-up with the full dotted key in the message instead of
deep inside a training run.

The same YAML file can be a ROS 2 parameter file: a document of the form
``{node_name: {ros__parameters: {...}}}`` is unwrapped, so ``config/vln_heatmap.yaml`` serves
``ros2 launch``, the demo, the tests and the offline scripts alike.

Example::

    cfg = load_config("configs/vln_heatmap.yaml", ["video.keyframes=4", "heatmap.sigma_px=3"])
    cfg.video.keyframes  # 4
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, TypeVar, Union

import yaml

from vln_core.atomic import atomic_write_text

#: The repository (or source tree) root: relative default config paths of the scripts are resolved here.
REPO_ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the dotted key."""


# --------------------------------------------------------------------------------------------
# Sections. Each section belongs to one part of the project; keep defaults sane for a CPU robot.
# --------------------------------------------------------------------------------------------


@dataclass
class VideoConfig:
    """Frame buffering: N_m buffered frames, N_k keyframes, network input size."""

    total_frames: int = 16  # N_m: frames in the ring buffer / model input
    keyframes: int = 8  # N_k: keyframes chosen by the sampler
    frame_size: tuple[int, int] = (224, 224)  # (H, W) the model and heatmaps work at

    def validate(self, key: str) -> None:
        if self.total_frames < 1:
            raise ConfigError(f"{key}.total_frames must be >= 1, got {self.total_frames}")
        if not 1 <= self.keyframes <= self.total_frames:
            raise ConfigError(
                f"{key}.keyframes must be in [1, total_frames={self.total_frames}], got {self.keyframes}"
            )
        if min(self.frame_size) < 8:
            raise ConfigError(f"{key}.frame_size must be at least 8x8, got {self.frame_size}")


@dataclass
class FrameSamplingConfig:
    """Space-aware keyframe sampling (greedy maximum voxel coverage)."""

    method: Literal["space_aware", "uniform", "random"] = "space_aware"
    voxel_size: Optional[float] = None  # metres; None: shortest bbox side / voxel_divisions
    voxel_divisions: int = 20
    max_points_per_frame: int = 4096  # subsample each frame's valid points before voxelising
    min_novel_fraction: float = 0.05  # online memory: admit a frame if it adds this much coverage
    seed: int = 0

    def validate(self, key: str) -> None:
        if self.voxel_size is not None and self.voxel_size <= 0:
            raise ConfigError(f"{key}.voxel_size must be > 0 metres or null, got {self.voxel_size}")
        if self.voxel_divisions < 1:
            raise ConfigError(f"{key}.voxel_divisions must be >= 1, got {self.voxel_divisions}")
        if self.max_points_per_frame < 1:
            raise ConfigError(f"{key}.max_points_per_frame must be >= 1, got {self.max_points_per_frame}")
        if not 0.0 <= self.min_novel_fraction <= 1.0:
            raise ConfigError(f"{key}.min_novel_fraction must be in [0, 1], got {self.min_novel_fraction}")


@dataclass
class HeatmapConfig:
    """Ground-truth frame-indexed heatmaps (geometry core)."""

    sigma_px: float = 2.0  # Gaussian splat standard deviation, pixels of the heatmap grid
    source_stride: int = 2  # pool keyframe pixels in n x n cells, one weighted point each
    occlusion_margin_m: float = 0.05  # a point is hidden when it is this much behind c's depth
    occlusion_margin_rel: float = 0.02  # ... plus this fraction of its depth
    # the same relative margin where the depth is predicted (the learned modes): a network's depth
    # is only good to tens of percent, and a tighter margin hides content that is in plain view
    predicted_occlusion_margin_rel: float = 0.25  # chosen on data/sim_val (seeds 400000+), not the eval sets
    min_overlap_fraction: float = 1e-3  # below this fraction landing in view: no overlap, zero map
    adaptive_sigma: bool = True  # widen the blur where keyframe samples land sparser than the grid
    depth_spread: float = 0.0  # std of log keyframe depth the maps spread over (0: exact, the ground truth)
    # ... where the depth is predicted (the learned modes): the maps are the expected landing
    predicted_depth_spread: float = 0.16  # chosen on data/sim_val (seeds 400000+), not the eval sets

    def validate(self, key: str) -> None:
        if self.sigma_px < 0:
            raise ConfigError(f"{key}.sigma_px must be >= 0, got {self.sigma_px}")
        if self.source_stride < 1:
            raise ConfigError(f"{key}.source_stride must be >= 1, got {self.source_stride}")
        if self.occlusion_margin_m < 0 or self.occlusion_margin_rel < 0 or self.predicted_occlusion_margin_rel < 0:
            raise ConfigError(
                f"{key}.occlusion_margin_m, {key}.occlusion_margin_rel and {key}.predicted_occlusion_margin_rel "
                f"must be >= 0, got {self.occlusion_margin_m}, {self.occlusion_margin_rel}, "
                f"{self.predicted_occlusion_margin_rel}"
            )
        if not 0 <= self.depth_spread < 1 or not 0 <= self.predicted_depth_spread < 1:
            raise ConfigError(f"{key}.depth_spread and {key}.predicted_depth_spread must be in [0, 1), got "
                              f"{self.depth_spread} and {self.predicted_depth_spread}")
        if not 0 <= self.min_overlap_fraction <= 1:
            raise ConfigError(f"{key}.min_overlap_fraction must be in [0, 1], got {self.min_overlap_fraction}")


@dataclass
class TopicsConfig:
    image: str = "/camera/color/image_raw"
    compressed_image: str = ""  # if set, subscribe to sensor_msgs/CompressedImage here instead
    depth: str = "/camera/depth/image_raw"
    camera_info: str = "/camera/color/camera_info"
    odometry: str = "/odom"
    instruction: str = "/vln/instruction"


@dataclass
class NodeConfig:
    """The ROS 2 node (ros2_ws/src/vln_heatmap)."""

    topics: TopicsConfig = field(default_factory=TopicsConfig)
    # auto: geometry when depth and poses arrive, else the learned "model" (vln_core/backends/auto_backend.py)
    backend: Literal["geometry", "model", "onnx", "tensorrt", "auto"] = "auto"
    # checkpoint of the "model" backend (empty: the shipped models/embedded/checkpoint.pt); for
    # "onnx" / "tensorrt" the folder that export/export_onnx.py wrote (empty: exports/embedded)
    model_path: str = ""
    # what the learned backends take: "rgb_pose" (colour + odometry/tf poses, mode 2), "rgb_only"
    # (colour alone, poses predicted, mode 3), "auto" (known poses when every frame has one)
    learned_mode: Literal["auto", "rgb_pose", "rgb_only"] = "auto"
    # backend auto on the geometry path (depth + poses): still run the learned model's goal and
    # waypoint heads on the current frame, so an RGB-D robot gets the whole output
    auto_learned_heads: bool = True
    # where the waypoints come from: "head" (the model's waypoint head) or "memory" (the map of
    # what the robot has seen and where it saw the goal, planned on: vln_core/nav; needs a goal
    # head that gives per-pixel probabilities, model.arch_overrides.goal_head: mask, and depth,
    # measured or the learned backend's)
    waypoint_source: Literal["head", "memory"] = "head"
    robot_radius_m: float = 0.25  # the memory planner keeps this (+5 cm) from mapped obstacles
    onnx_providers: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")  # those present are used
    tensorrt_precision: Literal["fp32", "fp16"] = "fp32"  # which engines the "tensorrt" backend loads
    inference_rate_hz: float = 5.0
    # camera mount: base_link -> camera optical frame, [x, y, z, qx, qy, qz, qw] in metres
    camera_mount: tuple[float, ...] = (0.2, 0.0, 1.0, -0.5, 0.5, -0.5, 0.5)
    pose_source: Literal["odometry", "tf"] = "odometry"
    world_frame: str = "odom"
    base_frame: str = "base_link"  # robot body frame (tf lookups, waypoint paths without a world pose)
    # camera/depth/odometry subscriptions: "reliable" keeps 30 Hz 640x480 across processes
    # (measured ~30 Hz vs ~17 Hz best-effort on Fast DDS); "best_effort" matches SensorDataQoS drivers.
    # The queue depth absorbs stalls of a busy CPU (on a loaded 2-core machine depth 5 lost a third
    # of a 30 Hz stream, 10 a fifth, 30 none); the callbacks only convert, so a backlog drains fast.
    sensor_qos: Literal["reliable", "best_effort"] = "reliable"
    sensor_qos_depth: int = 30
    max_stamp_gap_s: float = 0.1  # image/depth/odometry pairing tolerance
    # a stamp this far past the previous one of its stream (a paused camera, a bag jump) resets
    # the buffered frames and the keyframe memory; this far backwards (bag loop) resets everything
    stamp_jump_reset_s: float = 3.0
    # grid the geometry backend computes heatmaps on: "frame_size" = video.frame_size (the grid
    # the learned model predicts on), "input" = the camera image's own resolution
    geometry_resolution: Literal["frame_size", "input"] = "frame_size"
    record: bool = False
    record_dir: str = "recordings"
    record_frames_per_episode: int = 300  # the recorder starts a new episode after this many frames
    record_queue_size: int = 32  # frames waiting for the disk; more are dropped (counted), never block
    publish_overlay: bool = True

    def validate(self, key: str) -> None:
        if self.inference_rate_hz <= 0:
            raise ConfigError(f"{key}.inference_rate_hz must be > 0, got {self.inference_rate_hz}")
        if not 0.05 <= self.robot_radius_m <= 2.0:
            raise ConfigError(f"{key}.robot_radius_m must be in [0.05, 2] metres, got {self.robot_radius_m}")
        if self.max_stamp_gap_s <= 0:
            raise ConfigError(f"{key}.max_stamp_gap_s must be > 0, got {self.max_stamp_gap_s}")
        if self.stamp_jump_reset_s <= self.max_stamp_gap_s:
            raise ConfigError(
                f"{key}.stamp_jump_reset_s must be > max_stamp_gap_s={self.max_stamp_gap_s}, "
                f"got {self.stamp_jump_reset_s}"
            )
        if self.record_frames_per_episode < 2:
            raise ConfigError(f"{key}.record_frames_per_episode must be >= 2, got {self.record_frames_per_episode}")
        if self.record_queue_size < 1:
            raise ConfigError(f"{key}.record_queue_size must be >= 1, got {self.record_queue_size}")
        if self.sensor_qos_depth < 1:
            raise ConfigError(f"{key}.sensor_qos_depth must be >= 1, got {self.sensor_qos_depth}")
        if len(self.camera_mount) != 7:
            raise ConfigError(f"{key}.camera_mount must be [x, y, z, qx, qy, qz, qw], got {self.camera_mount}")


@dataclass
class ModelConfig:
    """The learned network (vln_core.models); `name` picks a registered configuration."""

    name: Literal["embedded", "small", "base", "full"] = "embedded"
    checkpoint: str = ""
    dinov3_path: str = ""  # local path of a DINOv3 checkpoint (base/full)
    llm_path: str = ""  # local path of a Qwen2 / Qwen2.5-VL checkpoint (base/full)
    vggt_path: str = ""  # local VGGT-1B checkpoint (model.safetensors / .pt, or its directory): full's geometry
    freeze_semantic: bool = True
    freeze_llm: bool = True
    lora_rank: int = 0  # > 0: train the LLM with LoRA adapters of this rank
    lora_alpha: float = 16.0  # LoRA scaling numerator (scale = lora_alpha / lora_rank)
    max_instruction_length: int = 64  # instruction tokens kept (longer instructions are truncated)
    pos_encoding_3d: Literal["sinusoidal", "mlp"] = "sinusoidal"
    geometry_device: str = "auto"
    semantic_device: str = "auto"
    llm_device: str = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # the node refuses to serve model.name=full on a machine without CUDA (VGGT-1B + DINOv3 ViT-L + a
    # 3B LLM on a CPU take minutes per update); true serves it anyway
    allow_full_on_cpu: bool = False
    # horizontal field of view assumed when no intrinsics are known (a video without calibration)
    default_hfov_deg: float = 60.0
    # the learned modes refine the networks' per-frame geometry with ORB matches between each
    # keyframe and the current frame (vln_core/geometry/refinement.py): metric depth scale from
    # the known poses (rgb_pose), PnP poses on the predicted depth (rgb_only); false: networks alone
    match_refinement: bool = True
    # per-frame depth of the embedded model (vln_core/models/multiview.py): "fused" = plane-sweep
    # cost volume over neighbouring posed frames fused with the monocular prior; "multiview" = the
    # cost volume alone; "monocular" = the per-frame network alone (with the match scale search)
    depth_source: Literal["fused", "multiview", "monocular"] = "fused"
    multiview_sources: int = 3  # neighbouring frames per cost volume, chosen for parallax
    # RGB only: how a frame's pose against another comes from ORB matches and the predicted depth
    # (vln_core/geometry/two_view.py): "pnp" = PnP on the depth (chosen in simulation);
    # "pnp_or_essential" = the depth-free essential matrix where it fits the matches and the depth
    # clearly better than PnP (better where the network's depth is wrong: real cameras it never
    # saw; training/adapt.py chooses on the robot's own recording)
    relative_pose: Literal["pnp", "pnp_or_essential"] = "pnp"
    # sizes of our own parts (ModelArchitecture fields for small/base/full, ReprojectionArchitecture
    # fields for embedded) replacing the registered configuration's: tiny models for tests and
    # plumbing checks (configs/tiny_base.yaml); a checkpoint records them and loads with them
    arch_overrides: dict[str, Any] = field(default_factory=dict)
    # random weights only (build_model(random_init=True), tools/infer_video.py --random-init):
    # config fields of the pretrained parts, per part "dinov3" / "llm" / "vggt", replacing those of
    # the checkpoints the configuration expects
    random_init_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self, key: str) -> None:
        unknown = sorted(set(self.random_init_overrides) - {"dinov3", "llm", "vggt"})
        if unknown:
            raise ConfigError(f"{key}.random_init_overrides: unknown part(s) {unknown}; parts are dinov3, llm, vggt")
        if not 1 <= self.multiview_sources <= 8:
            raise ConfigError(f"{key}.multiview_sources must be in [1, 8], got {self.multiview_sources}")
        if not 10.0 <= self.default_hfov_deg <= 170.0:
            raise ConfigError(f"{key}.default_hfov_deg must be in [10, 170] degrees, got {self.default_hfov_deg}")

    def __post_init__(self) -> None:
        # existence is checked when a model is built (a config may be written for another machine)
        path = Path(self.vggt_path).expanduser() if isinstance(self.vggt_path, str) and self.vggt_path else None
        if path is not None and path.is_file() and path.suffix not in (".safetensors", ".pt", ".pth", ".bin"):
            raise ConfigError(f"model.vggt_path={self.vggt_path!r} is a file but not a .safetensors/.pt checkpoint")


@dataclass
class TrainingConfig:
    data_dirs: list[str] = field(default_factory=lambda: ["data/sim"])
    output_dir: str = "runs/embedded"
    stage: Literal["geometry", "heatmap", "finetune", "multiview"] = "heatmap"
    batch_size: int = 2
    grad_accum_steps: int = 1
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    max_steps: int = 2000
    warmup_steps: int = 100
    eval_every: int = 200
    save_every: int = 200
    num_workers: int = 0
    seed: int = 0
    bf16: bool = True  # autocast on CUDA only
    loss_weights: dict[str, float] = field(default_factory=dict)  # term -> weight, see vln_core.train.losses
    eval_data_dirs: list[str] = field(default_factory=list)  # empty: hold out eval_fraction of the episodes
    eval_fraction: float = 0.1
    eval_max_samples: int = 64  # windows scored per evaluation (evenly spread over the eval set)
    frame_stride: int = 1  # episode frames between consecutive buffered frames of a window
    max_grad_norm: float = 1.0  # 0 disables clipping
    augment: bool = False  # camera-like photometric augmentation of training windows (vln_core.train.augment)
    # with augment: one random crop per window (field of view and pixel aspect vary; targets follow)
    crop_augment: bool = False
    pose_known_fraction: float = 0.5  # share of training windows given their true poses (RGB + pose mode)
    # geometry-only training (stage multiview): scale each window's scene (depth and camera
    # translations together) by a log-uniform factor in [lo, hi]; [1, 1] = off
    scene_scale_range: tuple[float, float] = (1.0, 1.0)
    min_lr_ratio: float = 0.05  # cosine decays to learning_rate * min_lr_ratio
    log_every: int = 10
    device: str = "auto"  # auto: cuda when available (LOCAL_RANK picks the GPU), else cpu

    def validate(self, key: str) -> None:
        for name in ("batch_size", "grad_accum_steps", "max_steps", "frame_stride", "log_every",
                     "eval_every", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{key}.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"{key}.learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"{key}.eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"{key}.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        lo, hi = self.scene_scale_range
        if not 0 < lo <= hi:
            raise ConfigError(f"{key}.scene_scale_range must be [lo, hi] with 0 < lo <= hi, got {list(self.scene_scale_range)}")
        if self.warmup_steps < 0 or self.max_grad_norm < 0 or self.num_workers < 0:
            raise ConfigError(f"{key}.warmup_steps, max_grad_norm and num_workers must be >= 0")


@dataclass
class ExportConfig:
    """ONNX export (export/export_onnx.py, vln_core.export.window_model)."""

    output_dir: str = "exports"  # default folder of <model.name>.onnx
    opset: int = 17  # ONNX opset of the exported graph
    fp16: bool = False  # TensorRT engine precision: the printed trtexec command gets --fp16 (the ONNX stays fp32)

    def validate(self, key: str) -> None:
        if not 14 <= self.opset <= 20:  # 14: scaled_dot_product_attention; 20: TorchScript exporter maximum
            raise ConfigError(f"{key}.opset must be in [14, 20], got {self.opset}")


@dataclass
class SimConfig:
    """Procedural indoor simulator (training/collect.py)."""

    frames_per_episode: int = 100
    image_size: tuple[int, int] = (224, 224)  # (H, W)
    hfov_deg: float = 75.0
    camera_rate_hz: float = 10.0
    camera_height_m: float = 1.0
    max_speed_mps: float = 0.5
    max_turn_rate_dps: float = 60.0
    rooms: tuple[int, int] = (2, 4)  # min, max rooms per scene
    camera_forward_m: float = 0.1  # optical centre ahead of base_link
    camera_pitch_deg: float = 0.0  # > 0 tilts the camera down
    robot_radius_m: float = 0.25  # collision radius; paths keep clearance_margin_m more
    clearance_margin_m: float = 0.1
    max_accel_mps2: float = 0.6
    max_turn_accel_dps2: float = 180.0
    pause_prob: float = 0.3  # chance of one stop during an episode
    lookaround_prob: float = 0.35  # chance of one look to the side and back
    intent_horizon_s: float = 3.0  # intent = direction of the position this far ahead
    ceiling_height_m: tuple[float, float] = (2.4, 3.0)  # min, max

    def validate(self, key: str) -> None:
        if self.frames_per_episode < 2:
            raise ConfigError(f"{key}.frames_per_episode must be >= 2, got {self.frames_per_episode}")
        if min(self.image_size) < 8:
            raise ConfigError(f"{key}.image_size must be at least 8x8, got {self.image_size}")
        if not 10.0 <= self.hfov_deg <= 150.0:
            raise ConfigError(f"{key}.hfov_deg must be in [10, 150], got {self.hfov_deg}")
        for name in ("camera_rate_hz", "max_speed_mps", "max_turn_rate_dps", "max_accel_mps2", "max_turn_accel_dps2"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{key}.{name} must be > 0, got {getattr(self, name)}")
        if not 0.2 <= self.camera_height_m <= 2.0:
            raise ConfigError(f"{key}.camera_height_m must be in [0.2, 2.0] m, got {self.camera_height_m}")
        if self.rooms[0] < 1 or self.rooms[1] < self.rooms[0] or self.rooms[1] > 8:
            raise ConfigError(f"{key}.rooms must be (min >= 1, max >= min, max <= 8), got {self.rooms}")
        if not 0.1 <= self.robot_radius_m <= 0.45:
            raise ConfigError(f"{key}.robot_radius_m must be in [0.1, 0.45] m (doors are ~1 m), got {self.robot_radius_m}")
        if not (2.2 <= self.ceiling_height_m[0] <= self.ceiling_height_m[1] <= 4.0):
            raise ConfigError(f"{key}.ceiling_height_m must be (min, max) within [2.2, 4.0], got {self.ceiling_height_m}")
        if self.camera_height_m > self.ceiling_height_m[0] - 0.3:
            raise ConfigError(f"{key}.camera_height_m must stay 0.3 m below the lowest ceiling")


@dataclass
class VLNConfig:
    """The root: one tree for node, training, export and simulator."""

    video: VideoConfig = field(default_factory=VideoConfig)
    frame_sampling: FrameSamplingConfig = field(default_factory=FrameSamplingConfig)
    heatmap: HeatmapConfig = field(default_factory=HeatmapConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    sim: SimConfig = field(default_factory=SimConfig)


# --------------------------------------------------------------------------------------------
# Machinery
# --------------------------------------------------------------------------------------------


def _unwrap_ros_params(data: dict) -> dict:
    """Return the ``ros__parameters`` body of a ROS 2 parameter file, or ``data`` unchanged."""
    if isinstance(data, dict) and len(data) == 1:
        (body,) = data.values()
        if isinstance(body, dict) and set(body) == {"ros__parameters"}:
            return body["ros__parameters"] or {}
    return data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (list -> tuple, int -> float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} matches none of {[_type_name(a) for a in args]}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key)
    if origin in (list, tuple):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} items, got {len(value)}: {value!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        ktp, vtp = args if args else (Any, Any)
        return {_coerce(k, ktp, f"{key}.<key>"): _coerce(v, vtp, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def _build(cls: type[T], data: dict, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = prefix or cls.__name__
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(prefix or cls.__name__)
    return obj


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists), ready for YAML or JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=3"`` -> ``("a.b", 3)``; the value is parsed as YAML (numbers, lists, null, true)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key, value


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top, got {type(data).__name__}")
    return _unwrap_ros_params(data)


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] | dict[str, Any] = (),
    cls: type[T] = VLNConfig,  # type: ignore[assignment]
) -> T:
    """Build ``cls`` from defaults, then the YAML file at ``path``, then ``overrides``.

    ``overrides`` are ``"dotted.key=value"`` strings or a ``{dotted.key: value}`` dict (as ROS
    parameters arrive). Raises :class:`ConfigError` naming the offending key.
    """
    data: dict = {}
    if path:
        data = read_yaml(path)
        # allow dotted keys inside the file too (ROS parameter files may flatten them)
        flat = {k: v for k, v in data.items() if "." in k}
        for k in flat:
            del data[k]
        for k, v in flat.items():
            _set_dotted(data, k, v)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        _set_dotted(data, key, value)
    return _build(cls, data)


def config_from_dict(data: dict, cls: type[T] = VLNConfig) -> T:  # type: ignore[assignment]
    """Build ``cls`` from a nested tree (what :func:`config_to_dict` returns and checkpoints store),
    validated like a YAML file."""
    return _build(cls, dict(data))


def with_overrides(cfg: T, overrides: Sequence[str] | dict[str, Any]) -> T:
    """A validated copy of ``cfg`` with ``dotted.key=value`` overrides applied (e.g. a checkpoint's
    own config, adjusted for a fine-tuning run)."""
    data = config_to_dict(cfg)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        _set_dotted(data, key, value)
    return _build(type(cfg), data)


def flatten_config(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"video.keyframes": 8, ...}``: the form ROS parameters take."""
    out: dict[str, Any] = {}
    for name, value in config_to_dict(cfg).items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            sub = getattr(cfg, name)
            if dataclasses.is_dataclass(sub):
                out.update(flatten_config(sub, key + "."))
                continue
        out[key] = value
    return out


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--config FILE`` plus trailing ``key.sub=value`` overrides, for every script.

    A relative ``default`` names a file of this repository (``configs/train_embedded.yaml``) and
    is resolved against the repository root, so a script finds its default config from any
    current folder; a ``--config`` the user types stays relative to the current folder."""
    if default is not None and not os.path.isabs(default):
        default = str(REPO_ROOT / default)
    parser.add_argument("--config", default=default, help="YAML config file (plain or ROS parameter file)")
    parser.add_argument(
        "overrides", nargs="*", default=[], metavar="KEY=VALUE",
        help="override single settings, e.g. video.keyframes=4 training.max_steps=100",
    )


def config_from_args(args: argparse.Namespace, cls: type[T] = VLNConfig) -> T:  # type: ignore[assignment]
    return load_config(args.config, args.overrides, cls)

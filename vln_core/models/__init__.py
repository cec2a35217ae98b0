"""The learned network: geometry encoder, space-aware keyframes, semantic encoder, fusion with 3D
positional encodings, reasoning (small transformer or LLM), heatmap / goal / waypoint heads.

    from vln_core.models import build_model, ModelInputs
    model = build_model(cfg)            # cfg.model.name in list_models()
    ids, mask = model.tokenizer.encode(["go to the kitchen"], cfg.model.max_instruction_length)
    out = model(ModelInputs(frames, ids, mask, past_trajectory, intent))
"""
from vln_core.models.geometry_encoder import (
    extrinsics_intrinsics_to_pose_encoding,
    pose_encoding_to_extrinsics_intrinsics,
)
from vln_core.models.registry import ModelSpec, build_model, list_models, model_spec, register_model
from vln_core.models.spatial_model import (
    NUM_WAYPOINTS,
    PAST_TRAJECTORY_LENGTH,
    STAGES,
    ModelArchitecture,
    ModelInputs,
    ModelOutputs,
    VLNSpatialModel,
    resolve_device,
)

__all__ = [
    "extrinsics_intrinsics_to_pose_encoding",
    "pose_encoding_to_extrinsics_intrinsics",
    "ModelSpec",
    "build_model",
    "list_models",
    "model_spec",
    "register_model",
    "NUM_WAYPOINTS",
    "PAST_TRAJECTORY_LENGTH",
    "STAGES",
    "ModelArchitecture",
    "ModelInputs",
    "ModelOutputs",
    "VLNSpatialModel",
    "resolve_device",
]

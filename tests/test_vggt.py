"""VGGT geometry encoder (vln_core.models.vggt) against the reference implementation, without
the real weights and without a GPU or network.

* golden: a small reference VGGT's state dict loads strictly into ours and reproduces the
  reference's depth, depth confidence, pose encodings (and world points) within 1e-4;
* layout: at VGGT-1B size (embed 1024, depth 24, 16 heads, patch 14, 518 px), built on the
  meta device, our parameter names and shapes equal the reference's minus ``track_head.*``;
* conventions: VGGT's world-to-first-camera encodings -> our camera-to-current poses;
* errors: missing path, mismatched checkpoints (keys named), the track head dropped explicitly.

The fixtures come from ``tools/make_vggt_fixture.py`` (run against a fetched reference checkout).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vln_core.geometry.transforms import invert_pose, make_pose, matrix_to_quat, quat_to_matrix, transform_points
from vln_core.models.geometry_encoder import pose_encoding_to_extrinsics_intrinsics
from vln_core.models.vggt import (
    VGGT,
    VGGT_1B,
    VGGTCheckpointError,
    VGGTConfig,
    VGGTGeometryEncoder,
    load_vggt,
    load_vggt_network,
    vggt_input_size,
)
from vln_core.models.vggt.convert import (
    resize_intrinsics,
    vggt_intrinsics,
    vggt_points_to_current,
    vggt_to_camera_to_current,
    vggt_world_to_camera,
)
from vln_core.models.vggt.loading import match_state_dict, read_state_dict

FIXTURES = Path(__file__).parent / "fixtures"
TINY_WEIGHTS = FIXTURES / "vggt_tiny.safetensors"
TOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    io = torch.load(FIXTURES / "vggt_tiny_io.pt", weights_only=True)
    return io, VGGTConfig.from_dict(io["config"])


@pytest.fixture(scope="module")
def tiny(golden):
    _, cfg = golden
    return load_vggt(str(TINY_WEIGHTS), config=cfg)


def test_fixtures_are_small_and_from_the_reference():
    sizes = {p.name: p.stat().st_size for p in FIXTURES.glob("vggt_*")}
    assert set(sizes) >= {"vggt_tiny.safetensors", "vggt_tiny_io.pt", "vggt_1b_layout.json"}
    assert sum(sizes.values()) <= 2_000_000, sizes
    layout = json.loads((FIXTURES / "vggt_1b_layout.json").read_text())
    assert "Spatial-MLLM" in layout["source"] and len(layout["commit"]) == 40


# ------------------------------------------------------------------------------ golden outputs


def test_golden_outputs_match_the_reference(golden, tiny):
    io, _ = golden
    with torch.no_grad():
        out = tiny.network(io["images"][None])
    diffs = {
        "pose_enc": (out.pose_enc[0] - io["pose_enc"]).abs().max().item(),
        "pose_enc_iterations": (torch.stack(out.pose_enc_iterations)[:, 0] - io["pose_enc_list"]).abs().max().item(),
        "depth": (out.depth[0] - io["depth"]).abs().max().item(),
        "depth_conf": (out.depth_conf[0] - io["depth_conf"]).abs().max().item(),
        "world_points": (out.world_points[0] - io["world_points"]).abs().max().item(),
        "world_points_conf": (out.world_points_conf[0] - io["world_points_conf"]).abs().max().item(),
    }
    print("golden max abs diff:", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert all(v <= TOL for v in diffs.values()), diffs
    # the comparison is not vacuous: outputs vary across pixels and frames
    assert io["depth"].std() > 0.01 and io["pose_enc"][1:].sub(io["pose_enc"][0]).abs().max() > 0.01


def test_golden_pose_decoding_matches_the_reference(golden):
    """Quaternion order (x, y, z, w), world-to-camera extrinsics and the fov intrinsics decode as
    the reference's ``pose_encoding_to_extri_intri`` does."""
    io, _ = golden
    H, W = io["images"].shape[-2:]
    E = vggt_world_to_camera(io["pose_enc"])
    assert torch.allclose(E[:, :3, :4], io["extrinsics"], atol=1e-5)
    assert torch.allclose(vggt_intrinsics(io["pose_enc"], (H, W)), io["intrinsics"], atol=1e-4)


def test_strict_loading_of_the_tiny_reference_state_dict(golden):
    _, cfg = golden
    state = read_state_dict(TINY_WEIGHTS)
    model = VGGT(cfg)
    kept, dropped = match_state_dict(model, state)
    assert not dropped and set(kept) == set(model.state_dict())
    model.load_state_dict(kept, strict=True)  # torch agrees


# ------------------------------------------------------------------------------ layout at real size


def test_vggt_1b_layout_on_meta_equals_the_reference():
    layout = json.loads((FIXTURES / "vggt_1b_layout.json").read_text())["parameters"]
    reference = {k: tuple(v) for k, v in layout.items() if not k.startswith("track_head.")}
    assert len(layout) - len(reference) > 300  # the published layout has a track head we drop
    cfg = VGGT_1B
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size, cfg.img_size) == (1024, 24, 16, 14, 518)
    with torch.device("meta"):
        model = VGGT(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(reference)) == []
    assert sorted(set(reference) - set(ours)) == []
    assert {k: s for k, s in ours.items() if reference[k] != s} == {}
    total = sum(math.prod(s) for s in ours.values())
    assert 1.15e9 < total < 1.2e9  # VGGT-1B without its track head


# ------------------------------------------------------------------------------ conventions


def _rotation(axis, angle):
    axis = torch.tensor(axis, dtype=torch.float64)
    axis = axis / axis.norm()
    q = torch.cat([axis * math.sin(angle / 2), torch.tensor([math.cos(angle / 2)], dtype=torch.float64)])
    return quat_to_matrix(q)


def _vggt_encoding(T_w_cam: torch.Tensor, K: torch.Tensor, image_hw) -> torch.Tensor:
    """What VGGT would predict for cameras ``T_w_cam (S, 4, 4)``: world = the first camera,
    world-to-camera ``[t, quat xyzw, fov_h, fov_w]`` (written from the paper's definition)."""
    H, W = image_hw
    E = invert_pose(T_w_cam) @ T_w_cam[0]  # T_cam_i <- cam_0
    fov_h = 2 * torch.atan((H / 2) / K[:, 1, 1])
    fov_w = 2 * torch.atan((W / 2) / K[:, 0, 0])
    return torch.cat([E[:, :3, 3], matrix_to_quat(E[:, :3, :3]), fov_h[:, None], fov_w[:, None]], dim=-1)


def test_conversion_to_camera_to_current():
    torch.manual_seed(0)
    S, H, W = 4, 48, 64
    T_w_cam = torch.stack([make_pose(_rotation([0.2, 1.0, 0.1 * i], 0.3 * i - 0.4),
                                     torch.tensor([0.5 * i, -0.1 * i, 0.2 + 0.3 * i], dtype=torch.float64))
                           for i in range(S)])
    K = torch.tensor([[50.0, 0, W / 2], [0, 45.0, H / 2], [0, 0, 1]], dtype=torch.float64).expand(S, 3, 3)
    enc = _vggt_encoding(T_w_cam, K, (H, W)).float()
    enc[:, 3:7] *= torch.tensor([2.0, 0.5, 1.0, 3.0])[:, None]  # VGGT's quaternions need not be unit
    T_cur_cam, K_out = vggt_to_camera_to_current(enc, (H, W))
    expected = invert_pose(T_w_cam[-1]) @ T_w_cam  # our contract: camera-to-current, current = last
    assert torch.allclose(T_cur_cam.double(), expected, atol=1e-5)
    assert torch.allclose(T_cur_cam[-1], torch.eye(4), atol=1e-6)
    assert torch.allclose(K_out.double(), K, atol=1e-3)

    # world points (VGGT: first camera's frame) -> current camera frame
    p_cam1 = torch.tensor([[0.3, -0.2, 2.0], [-1.0, 0.5, 4.0]], dtype=torch.float64)
    p_world = transform_points(T_w_cam[1], p_cam1)  # some world
    p_first = transform_points(invert_pose(T_w_cam[0]), p_world)  # VGGT's world
    pts = torch.zeros(S, 1, 2, 3)
    pts[1, 0] = p_first.float()
    cur = vggt_points_to_current(pts, enc)
    assert torch.allclose(cur[1, 0].double(), transform_points(invert_pose(T_w_cam[-1]), p_world), atol=1e-4)

    # round trip through our 9-d encoding and the decoder the model uses
    from vln_core.models.vggt.convert import camera_to_current_pose_encoding

    ours = camera_to_current_pose_encoding(T_cur_cam, K_out, (H, W))
    T_back, K_back = pose_encoding_to_extrinsics_intrinsics(ours, (H, W))
    assert torch.allclose(T_back, T_cur_cam, atol=1e-5)
    assert torch.allclose(K_back[..., :2, :2], K_out[..., :2, :2], atol=1e-3)  # principal point: (W-1)/2 there


def test_resize_intrinsics_keeps_pixel_centres():
    K = torch.tensor([[100.0, 0, 259.0], [0, 100.0, 196.0], [0, 0, 1]])
    K2 = resize_intrinsics(K, (392, 518), (480, 640))
    # the ray through a pixel centre in the small image passes the same point in the large one
    u, v = 100.0, 50.0
    ray = torch.linalg.solve(K, torch.tensor([u, v, 1.0]))
    u2 = (u + 0.5) * 640 / 518 - 0.5
    v2 = (v + 0.5) * 480 / 392 - 0.5
    assert torch.allclose(K2 @ ray, torch.tensor([u2, v2, 1.0]), atol=1e-4)
    assert vggt_input_size((480, 640)) == (392, 518)


def test_predict_geometry_api(golden, tiny):
    io, _ = golden
    frames = io["images"]  # (3, 3, 42, 56): multiples of 14, run as they are
    geo = tiny.predict_geometry(frames, size=(42, 56))
    assert geo.depth.shape == (3, 42, 56) and geo.depth_conf.shape == (3, 42, 56)
    assert geo.T_cur_cam.shape == (3, 4, 4) and geo.K.shape == (3, 3, 3)
    assert geo.points_cur.shape == (3, 42, 56, 3) and geo.points_conf.shape == (3, 42, 56)
    assert torch.allclose(geo.depth, io["depth"], atol=TOL)
    assert torch.allclose(geo.T_cur_cam[-1], torch.eye(4), atol=1e-5)
    T_ref, _ = vggt_to_camera_to_current(io["pose_enc"], (42, 56))
    assert torch.allclose(geo.T_cur_cam, T_ref, atol=1e-4)
    # another input size: resized in, resized back out
    geo2 = tiny.predict_geometry(torch.nn.functional.interpolate(frames, size=(60, 80)), size=(42, 56))
    assert geo2.depth.shape == (3, 60, 80) and geo2.points_cur.shape == (3, 60, 80, 3)
    assert geo2.network_hw == (42, 56)
    assert torch.allclose(geo2.K[:, :2, 2], torch.tensor([28.5 * 80 / 56 - 0.5, 21.5 * 60 / 42 - 0.5]).expand(3, 2))
    with pytest.raises(ValueError, match="multiples of the patch size"):
        tiny.predict_geometry(frames, size=(40, 56))


def test_encoder_for_the_full_model(golden):
    io, cfg = golden
    encoder = VGGTGeometryEncoder(load_vggt_network(str(TINY_WEIGHTS), cfg))
    frames = io["images"][None].repeat(2, 1, 1, 1, 1)  # (B=2, N=3, 3, 42, 56)
    out = encoder(frames)
    assert out.depth.shape == (2, 3, 42, 56) and out.pose_enc.shape == (2, 3, 9)
    assert out.patch_tokens.shape == (2, 3, 3 * 4, 2 * cfg.embed_dim) and out.grid == (3, 4)
    assert out.points_cur.shape == (2, 3, 42, 56, 3)
    assert torch.allclose(out.depth[1], io["depth"], atol=TOL)
    assert not any(p.requires_grad for p in encoder.frozen_parameters())
    assert not out.depth.requires_grad  # frozen: no autograd graph through a 1B-parameter network


# ------------------------------------------------------------------------------ errors


def test_missing_path_error_names_the_path(tmp_path):
    with pytest.raises(VGGTCheckpointError, match="no such file or directory"):
        load_vggt(str(tmp_path / "VGGT-1B"))
    with pytest.raises(VGGTCheckpointError, match="model.vggt_path"):
        load_vggt("")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VGGTCheckpointError, match="holds none of"):
        load_vggt(str(tmp_path / "empty"))


def test_mismatched_checkpoint_names_the_keys(tmp_path, golden):
    _, cfg = golden
    state = read_state_dict(TINY_WEIGHTS)
    state.pop("camera_head.embed_pose.weight")
    state["aggregator.extra_token"] = torch.zeros(3)
    state["depth_head.norm.weight"] = torch.zeros(7)
    path = tmp_path / "model.pt"
    torch.save(state, path)
    with pytest.raises(VGGTCheckpointError) as err:
        load_vggt(str(tmp_path), config=cfg)  # a directory holding model.pt
    message = str(err.value)
    assert "1 missing key(s): camera_head.embed_pose.weight" in message
    assert "1 unexpected key(s): aggregator.extra_token" in message
    assert "depth_head.norm.weight (7,) vs network (64,)" in message
    # VGGT-1B's default config against the tiny checkpoint: every key mis-shaped or absent
    with pytest.raises(VGGTCheckpointError, match="missing key"):
        load_vggt(str(TINY_WEIGHTS))
    (tmp_path / "broken.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(VGGTCheckpointError, match="could not be read"):
        load_vggt(str(tmp_path / "broken.safetensors"), config=cfg)


def test_track_head_keys_are_dropped_explicitly_and_nothing_else(tmp_path, golden, caplog):
    io, cfg = golden
    state = read_state_dict(TINY_WEIGHTS)
    state["track_head.feature_extractor.norm.weight"] = torch.ones(8)
    state["track_head.tracker.fmap_proj.weight"] = torch.ones(4, 4)
    torch.save({"model": state}, tmp_path / "model.pt")  # wrapped as some training scripts save it
    model = load_vggt_network(str(tmp_path / "model.pt"), cfg)
    with torch.no_grad():
        assert torch.allclose(model(io["images"][None]).depth[0], io["depth"], atol=TOL)
    kept, dropped = match_state_dict(VGGT(cfg), state)
    assert dropped == ["track_head.feature_extractor.norm.weight", "track_head.tracker.fmap_proj.weight"]
    with pytest.raises(VGGTCheckpointError, match="unexpected key.*track_head"):
        match_state_dict(VGGT(cfg), state, drop_prefixes=())


# ------------------------------------------------------------------------------ the full model


def _tiny_full_parts():
    from transformers import DINOv3ViTConfig, DINOv3ViTModel, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    torch.manual_seed(0)
    dino = DINOv3ViTModel(DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=2, patch_size=8, num_register_tokens=2, image_size=56))
    llm = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}))
    return dino, llm


def _full_cfg(*overrides):
    from vln_core.config import load_config

    return load_config(None, ["model.name=full", "video.total_frames=4", "video.keyframes=2",
                              "video.frame_size=[56, 56]", "frame_sampling.max_points_per_frame=256", *overrides])


def test_full_model_uses_vggt_geometry_and_samples_on_its_points(golden):
    from vln_core.models import ModelInputs, build_model
    from vln_core.models.spatial_model import VLNSpatialModel

    _, cfg_tiny = golden
    network = load_vggt_network(str(TINY_WEIGHTS), cfg_tiny)
    dino, llm = _tiny_full_parts()
    arch = dict(fusion_dim=32, decoder_heads=2, decoder_layers=1, waypoint_hidden=32)
    model = build_model(_full_cfg(), semantic_backbone=dino, llm=llm, geometry_backbone=network, arch_overrides=arch)
    assert isinstance(model, VLNSpatialModel) and isinstance(model.geometry, VGGTGeometryEncoder)
    assert model.arch.geometry_dim == 2 * cfg_tiny.embed_dim
    seen = []
    original = model.sample_keyframes_from_points
    model.sample_keyframes_from_points = lambda p, c: seen.append(p.shape) or original(p, c)
    torch.manual_seed(1)
    ids, mask = model.tokenizer.encode(["go to the red chair"], 16)
    inputs = ModelInputs(frames=torch.rand(1, 4, 3, 56, 56), instruction_ids=ids, instruction_mask=mask,
                         past_trajectory=torch.randn(1, 16, 4), intent=torch.tensor([1]))
    out = model(inputs)
    assert seen == [(1, 4, 56, 56, 3)]  # keyframes came from VGGT's point map
    assert out.keyframe_indices.shape == (1, 2) and out.heatmap_logits.shape == (1, 2, 56, 56)
    assert torch.isfinite(out.heatmap_logits).all() and out.depth.shape == (1, 4, 56, 56)
    # VGGT is pretrained and frozen in every stage; the rest trains as before
    for stage in ("geometry", "heatmap", "finetune"):
        model.trainable_parameters(stage)
        assert not any(p.requires_grad for p in model.geometry.network.parameters())
    assert "geometry_pretrained" not in {g["name"] for g in model.param_groups()}


def test_full_model_needs_the_vggt_path(tmp_path):
    from vln_core.config import ConfigError
    from vln_core.models import build_model

    dino, llm = _tiny_full_parts()
    with pytest.raises(ConfigError, match="model.vggt_path"):
        build_model(_full_cfg(), semantic_backbone=dino, llm=llm)
    with pytest.raises(ConfigError, match="no such file"):
        build_model(_full_cfg(f"model.vggt_path={tmp_path / 'nope'}"), semantic_backbone=dino, llm=llm)
    bad = tmp_path / "weights.json"
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="vggt_path"):
        _full_cfg(f"model.vggt_path={bad}")


def test_full_at_real_size_builds_on_meta_with_vggt_1b():
    from vln_core.models import build_model

    with torch.device("meta"):
        model = build_model(_full_cfg("video.frame_size=[392, 518]", "model.geometry_device=meta",
                                      "model.semantic_device=meta", "model.llm_device=meta"), random_init=True)
    vggt = sum(p.numel() for p in model.geometry.network.parameters())
    assert 1.15e9 < vggt < 1.2e9
    assert model.fusion is not None and model.arch.geometry_dim == 2048


def test_llm_attention_kernel_choice(monkeypatch):
    from vln_core.models import placement

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert placement.llm_attn_implementation("bfloat16", cpu) == "sdpa"
    monkeypatch.setattr(placement.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(placement, "flash_attn_available", lambda: False)
    assert placement.llm_load_kwargs("bfloat16", gpu) == {"attn_implementation": "sdpa", "dtype": torch.bfloat16}
    monkeypatch.setattr(placement, "flash_attn_available", lambda: True)
    assert placement.llm_attn_implementation("bfloat16", gpu) == "flash_attention_2"
    assert placement.llm_attn_implementation("float32", gpu) == "sdpa"  # flash-attn needs bf16/fp16


def test_bfloat16_aggregator_with_float32_heads(golden):
    """The GPU setting (aggregator in bf16, heads in float32) runs and stays close; on CPU here."""
    io, cfg = golden
    vggt = load_vggt(str(TINY_WEIGHTS), config=cfg, dtype="bfloat16")
    assert vggt.network.aggregator.camera_token.dtype == torch.bfloat16
    assert vggt.network.depth_head.norm.weight.dtype == torch.float32
    geo = vggt.predict_geometry(io["images"], size=(42, 56))
    assert geo.depth.dtype == torch.float32
    assert (geo.depth - io["depth"]).abs().max() < 0.05 * io["depth"].abs().max()

"""The network (vln_core.models): stage shapes, full forwards (embedded and a tiny "base" with the
real transformers DINOv3ViTModel + Qwen2Model built from tiny configs), freezing per training
stage, ConvexUpSample, 3D positional encodings, LoRA, keyframe sampling and device fallback.

Everything is tiny (56x56 frames, 4 buffered frames); nothing is downloaded.
"""
from __future__ import annotations

import logging
import math

import pytest
import torch

from vln_core.config import ConfigError, load_config
from vln_core.errors import InputError
from vln_core.geometry.transforms import make_pose, quat_to_matrix
from vln_core.models import ModelInputs, build_model, list_models, resolve_device
from vln_core.models.fusion import (
    MLPPositionalEncoding3D,
    SinusoidalPositionalEncoding3D,
    TokenFusion,
    patch_world_coordinates,
    resample_token_grid,
)
from vln_core.models.geometry_encoder import (
    GeometryEncoder,
    extrinsics_intrinsics_to_pose_encoding,
    pose_encoding_to_extrinsics_intrinsics,
)
from vln_core.models.heads import ConvexUpSample, GoalHeatmapDecoder, WaypointHead, convex_upsample
from vln_core.models.reasoning import EmbeddedReasoner, LLMReasoner, language_model_of
from vln_core.models.semantic_encoder import SemanticEncoder, SmallViT
from vln_core.models.tokenizer import ByteTokenizer, HashedWordTokenizer

torch.set_num_threads(1)

H = W = 56
N_M, N_K = 4, 2
TINY_ARCH = dict(geometry_dim=32, geometry_depth=1, geometry_heads=2, geometry_registers=1, semantic_dim=32,
                 semantic_depth=1, semantic_heads=2, fusion_dim=32, reasoning_depth=1, reasoning_heads=2,
                 decoder_heads=2, decoder_layers=1, waypoint_hidden=32, vocab_size=64)


def tiny_cfg(name: str = "small", *overrides: str):
    return load_config(None, [f"model.name={name}", f"video.total_frames={N_M}", f"video.keyframes={N_K}",
                              f"video.frame_size=[{H}, {W}]", "frame_sampling.max_points_per_frame=256", *overrides])


def tiny_dinov3():
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    return DINOv3ViTModel(DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=2, patch_size=8, num_register_tokens=2, image_size=H))


def tiny_qwen2():
    from transformers import Qwen2Config, Qwen2Model

    torch.manual_seed(0)
    return Qwen2Model(Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512))


def tiny_vggt():
    from vln_core.models.vggt import VGGT, VGGTConfig

    torch.manual_seed(0)
    return VGGT(VGGTConfig(img_size=H, embed_dim=32, depth=2, num_heads=2, patch_embed_depth=1, patch_embed_heads=2,
                           camera_trunk_depth=1, camera_heads=2, dpt_features=16, dpt_out_channels=(8, 16, 32, 32),
                           dpt_layers=(0, 1, 1, 1)))


def tiny_base(*overrides: str):
    return build_model(tiny_cfg("base", *overrides), semantic_backbone=tiny_dinov3(), llm=tiny_qwen2(),
                       arch_overrides=TINY_ARCH)


def make_inputs(model, batch: int = 2, keyframes: torch.Tensor | None = None) -> ModelInputs:
    torch.manual_seed(1)
    ids, mask = model.tokenizer.encode(["go to the red chair", "turn left at the door"][:batch], 16)
    return ModelInputs(
        frames=torch.rand(batch, N_M, 3, H, W),
        instruction_ids=ids,
        instruction_mask=mask,
        past_trajectory=torch.randn(batch, 16, 4),
        intent=torch.tensor([0, 2][:batch]),
        keyframe_indices=keyframes,
    )


def check_output_shapes(out, batch: int) -> None:
    assert out.depth.shape == (batch, N_M, H, W)
    assert out.depth_conf.shape == (batch, N_M, H, W)
    assert out.pose_enc.shape == (batch, N_M, 9)
    assert out.keyframe_indices.shape == (batch, N_K)
    assert out.heatmap_logits.shape == (batch, N_K, H, W)
    assert out.out_of_view_logit.shape == (batch, N_K)
    assert out.out_of_view_bearing.shape == (batch, N_K, 2)
    assert out.goal_logits.shape == (batch, H, W)
    assert out.waypoints.shape == (batch, 20, 2)
    for name, value in vars(out).items():
        if value is not None and value.is_floating_point():  # pose_enc_predicted: models given poses only
            assert torch.isfinite(value).all(), name
    assert (out.depth > 0).all()
    assert torch.allclose(out.out_of_view_bearing.norm(dim=-1), torch.ones(batch, N_K), atol=1e-5)


# ------------------------------------------------------------------------------ tokenizers


def test_tokenizers_are_deterministic_and_pad():
    tok = HashedWordTokenizer(512)
    ids, mask = tok.encode(["Go to the chair", "stop"], max_length=8)
    assert ids.shape == mask.shape == (2, 6) and ids.dtype == torch.long and mask.dtype == torch.bool
    assert mask[0].all() and mask[1].tolist() == [True, True, True, False, False, False]
    assert (ids[1, 3:] == tok.pad_id).all()
    assert tok.word_id("Chair") == tok.word_id("chair") and 3 <= tok.word_id("chair") < 512
    again, _ = HashedWordTokenizer(512).encode(["go to the chair"], 8)
    assert torch.equal(again[0], ids[0])
    short, short_mask = tok.encode(["a b c d e f g h"], max_length=4)
    assert short.shape == (1, 4) and short_mask.all()
    b_ids, _ = ByteTokenizer().encode(["ab"], 8)
    assert b_ids.tolist() == [[1, ord("a") + 3, ord("b") + 3, 2]]
    with pytest.raises(InputError):
        tok.encode("not a list", 8)


# ------------------------------------------------------------------------------ geometry


def test_geometry_encoder_shapes_and_current_frame_is_identity():
    torch.manual_seed(0)
    enc = GeometryEncoder((H, W), patch_size=14, dim=32, depth=2, num_heads=2, num_register_tokens=1)
    out = enc(torch.rand(2, N_M, 3, H, W))
    assert out.grid == (4, 4)
    assert out.depth.shape == out.depth_conf.shape == (2, N_M, H, W)
    assert (out.depth > 0).all() and (out.depth_conf >= 1).all()
    assert out.patch_tokens.shape == (2, N_M, 16, 32) and out.camera_tokens.shape == (2, N_M, 32)
    assert out.pose_enc.shape == (2, N_M, 9)
    assert torch.allclose(out.pose_enc[:, -1, :7], torch.tensor([0, 0, 0, 0, 0, 0, 1.0]).expand(2, 7))
    assert torch.allclose(out.pose_enc[..., 3:7].norm(dim=-1), torch.ones(2, N_M), atol=1e-5)
    fov = out.pose_enc[..., 7:]
    assert ((fov > math.radians(10)) & (fov < math.radians(170))).all()


def test_pose_encoding_round_trip():
    q = torch.tensor([[0.1, -0.2, 0.3, 0.9], [0.0, 0.0, 0.0, 1.0]])
    T = make_pose(quat_to_matrix(q), torch.tensor([[1.0, 2.0, -0.5], [0.0, 0.0, 0.0]]))
    K = torch.tensor([[50.0, 0, (W - 1) / 2], [0, 60.0, (H - 1) / 2], [0, 0, 1]]).expand(2, 3, 3)
    enc = extrinsics_intrinsics_to_pose_encoding(T, K, (H, W))
    T2, K2 = pose_encoding_to_extrinsics_intrinsics(enc, (H, W))
    assert torch.allclose(T2, T, atol=1e-5) and torch.allclose(K2, K, atol=1e-4)
    assert enc[0, 7] == pytest.approx(2 * math.atan(H / 2 / 60.0), abs=1e-6)


# ------------------------------------------------------------------------------ semantic


def test_semantic_encoder_small_vit_and_dinov3_drop_prefix_tokens():
    small = SemanticEncoder(SmallViT((H, W), patch_size=16, dim=32, depth=1, num_heads=2))
    tokens, grid = small(torch.rand(3, 3, H, W))
    assert grid == (3, 3) and tokens.shape == (3, 9, 32)
    dino = SemanticEncoder(tiny_dinov3(), frozen=True)
    assert dino.num_prefix_tokens == 3  # CLS + 2 registers
    tokens, grid = dino(torch.rand(2, 3, H, W))
    assert grid == (7, 7) and tokens.shape == (2, 49, 32)
    assert not tokens.requires_grad  # frozen backbones run without autograd
    with pytest.raises(InputError):
        dino(torch.rand(2, 4, H, W))


# ------------------------------------------------------------------------------ fusion


def test_resample_token_grid_keeps_constant_maps_and_shapes():
    tokens = torch.full((2, 3, 9, 5), 0.7)
    out = resample_token_grid(tokens, (3, 3), (4, 4))
    assert out.shape == (2, 3, 16, 5) and torch.allclose(out, torch.full_like(out, 0.7))
    with pytest.raises(InputError):
        resample_token_grid(tokens, (2, 2), (4, 4))


def test_patch_world_coordinates_of_a_fronto_parallel_plane():
    depth = torch.full((1, 8, 8), 2.0)
    K = torch.tensor([[[4.0, 0, 3.5], [0, 4.0, 3.5], [0, 0, 1]]])
    shift = make_pose(torch.eye(3)[None], torch.tensor([[1.0, 0.0, 0.5]]))
    xyz, valid = patch_world_coordinates(depth, K, shift, (2, 2))
    assert xyz.shape == (1, 2, 2, 3) and valid.all()
    # camera-frame z = 2; shifted by +0.5 in z and +1 in x; the 4x4 patches are symmetric about the centre
    assert torch.allclose(xyz[..., 2], torch.full((1, 2, 2), 2.5))
    assert torch.allclose(xyz[0, :, 0, 0] + xyz[0, :, 1, 0], torch.full((2,), 2.0))
    assert xyz[0, 0, 0, 0] < 1.0 < xyz[0, 0, 1, 0]
    depth[0, :4, :4] = 0.0  # one patch without any valid pixel
    xyz, valid = patch_world_coordinates(depth, K, shift, (2, 2))
    assert not valid[0, 0, 0] and valid.sum() == 3 and torch.equal(xyz[0, 0, 0], torch.zeros(3))


def test_patch_world_coordinates_match_the_geometry_core_unprojection():
    from vln_core.geometry.reproject import unproject_depth

    torch.manual_seed(0)
    depth = torch.rand(2, 12, 16) * 3 + 0.5
    depth[0, :3, :5] = 0.0
    depth[1, 7, 2] = float("nan")
    K = torch.tensor([[9.0, 0, 7.5], [0, 8.0, 5.5], [0, 0, 1]]).expand(2, 3, 3)
    T = make_pose(quat_to_matrix(torch.tensor([[0.1, 0.2, -0.1, 0.95], [0.0, 0.3, 0.0, 0.95]])),
                  torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.2, -0.3]]))
    xyz, valid = patch_world_coordinates(depth, K, T, (3, 4))
    points, point_valid = unproject_depth(depth, K, T)
    w = point_valid.float()
    expected = (points * w[..., None]).view(2, 3, 4, 4, 4, 3).sum((2, 4)) / w.view(2, 3, 4, 4, 4).sum((2, 4))[..., None]
    assert torch.allclose(xyz, expected, atol=1e-5)
    assert valid.all()


@pytest.mark.parametrize("pe_cls", [SinusoidalPositionalEncoding3D, MLPPositionalEncoding3D])
def test_3d_positional_encodings_shapes_and_distinct_points(pe_cls):
    torch.manual_seed(0)
    pe = pe_cls(24)
    xyz = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.2], [0.5, -0.3, 3.0]])
    enc = pe(xyz[None].expand(2, 3, 3))
    assert enc.shape == (2, 3, 24)
    assert not torch.allclose(enc[0, 0], enc[0, 1], atol=1e-4)
    assert not torch.allclose(enc[0, 0], enc[0, 2], atol=1e-4)
    assert torch.allclose(enc[0], enc[1])  # a function of xyz only
    with pytest.raises(InputError):
        pe(torch.zeros(2, 4))


def test_token_fusion_shapes_and_slot_embeddings_distinguish_frames():
    torch.manual_seed(0)
    fusion = TokenFusion(geometry_dim=16, semantic_dim=24, dim=32, num_slots=3, pos_encoding_3d="mlp")
    geo = torch.randn(2, 1, 16, 16).expand(2, 3, 16, 16)  # identical content in every frame
    sem = torch.randn(2, 1, 9, 24).expand(2, 3, 9, 24)
    xyz = torch.ones(2, 3, 4, 4, 3)
    out = fusion(geo, (4, 4), sem, (3, 3), xyz, torch.ones(2, 3, 4, 4, dtype=torch.bool), torch.arange(3), (4, 4))
    assert out.shape == (2, 3, 16, 32)
    assert not torch.allclose(out[:, 0], out[:, 1])  # only the slot embedding differs


# ------------------------------------------------------------------------------ heads


def test_convex_upsample_constant_shape_and_weights():
    torch.manual_seed(0)
    up = ConvexUpSample(feature_dim=8, factor=4)
    coarse = torch.full((2, 3, 5, 6), -1.25)
    feats = torch.randn(2, 8, 5, 6)
    fine = up(coarse, feats)
    assert fine.shape == (2, 3, 20, 24)
    assert torch.allclose(fine, torch.full_like(fine, -1.25), atol=1e-6)
    weights = up.convex_weights(feats)
    assert weights.shape == (2, 9, 4, 4, 5, 6) and (weights >= 0).all()
    assert torch.allclose(weights.sum(dim=1), torch.ones(2, 4, 4, 5, 6), atol=1e-6)
    # a non-constant map stays within the range of its coarse values (convexity)
    ramp = torch.arange(30.0).view(1, 1, 5, 6)
    fine = up(ramp, feats[:1])
    assert fine.min() >= 0 and fine.max() <= 29
    # with all the weight on the centre neighbour the result is nearest-neighbour upsampling
    mask = torch.full((1, 9, 2, 2, 5, 6), -1e4)
    mask[:, 4] = 0.0
    nearest = convex_upsample(ramp, mask.view(1, 36, 5, 6), 2)
    assert torch.equal(nearest, ramp.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_goal_decoder_and_waypoint_head_shapes():
    torch.manual_seed(0)
    dec = GoalHeatmapDecoder(dim=16, num_heads=2, upsample_factor=4, num_layers=1)
    tokens = torch.randn(2, 12, 16)
    logits = dec(torch.randn(2, 16), tokens, (3, 4), (12, 16))
    assert logits.shape == (2, 12, 16) and torch.isfinite(logits).all()
    # the goal query steers the map: another query, another map
    assert not torch.allclose(logits, dec(torch.randn(2, 16), tokens, (3, 4), (12, 16)))
    with pytest.raises(InputError, match="goal_query"):
        dec(torch.randn(2, 3, 16), tokens, (3, 4), (12, 16))
    head = WaypointHead(16, hidden=32)
    wp = head(torch.randn(2, 16), torch.randn(2, 16), torch.randn(2, 16, 4), torch.tensor([0, 1]))
    assert wp.shape == (2, 20, 2)
    with pytest.raises(InputError, match="intent"):
        head(torch.randn(2, 16), torch.randn(2, 16), torch.randn(2, 16, 4), torch.tensor([0, 3]))


# ------------------------------------------------------------------------------ reasoning


def test_embedded_reasoner_reads_the_instruction():
    torch.manual_seed(0)
    r = EmbeddedReasoner(dim=16, vocab_size=64, depth=1, num_heads=2, max_instruction_length=8).eval()
    visual = torch.randn(1, 5, 16).expand(2, 5, 16)
    ids = torch.tensor([[1, 5, 6, 2], [1, 9, 2, 0]])
    mask = ids != 0
    instr, vis = r(ids, mask, visual)
    assert instr.shape == (2, 4, 16) and vis.shape == (2, 5, 16)
    assert not torch.allclose(vis[0], vis[1])  # same pixels, different instruction
    with pytest.raises(InputError):
        r(torch.zeros(1, 9, dtype=torch.long), torch.ones(1, 9, dtype=torch.bool), visual[:1])


def test_llm_reasoner_with_real_qwen2_and_causal_lm_wrapper():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    causal = Qwen2ForCausalLM(cfg)
    assert language_model_of(causal) is causal.model
    r = LLMReasoner(causal, dim=16)
    ids = torch.tensor([[1, 5, 6, 2], [1, 9, 2, 0]])
    instr, vis = r(ids, ids != 0, torch.randn(2, 6, 16))
    assert instr.shape == (2, 4, 16) and vis.shape == (2, 6, 16)
    with pytest.raises(InputError, match="instruction ids"):
        r(torch.full((1, 2), 500), torch.ones(1, 2, dtype=torch.bool), torch.randn(1, 6, 16))


def test_reasoners_ignore_instruction_padding():
    torch.manual_seed(0)
    visual = torch.randn(1, 5, 16)
    ids = torch.tensor([[1, 5, 6, 2]])
    padded = torch.tensor([[1, 5, 6, 2, 0, 0, 0]])
    for reasoner in (EmbeddedReasoner(dim=16, vocab_size=64, depth=1, num_heads=2, max_instruction_length=8).eval(),
                     LLMReasoner(tiny_qwen2(), dim=16).eval()):
        instr_a, vis_a = reasoner(ids, ids != 0, visual)
        instr_b, vis_b = reasoner(padded, padded != 0, visual)
        assert torch.allclose(vis_a, vis_b, atol=1e-5), type(reasoner).__name__
        assert torch.allclose(instr_a, instr_b[:, :4], atol=1e-5), type(reasoner).__name__


def test_llm_reasoner_takes_the_language_model_of_qwen2_5_vl():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLTextModel

    torch.manual_seed(0)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=1, eos_token_id=2,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                           fullatt_block_indexes=[0]),
        bos_token_id=1, eos_token_id=2,
    )
    vlm = Qwen2_5_VLForConditionalGeneration(cfg)
    reasoner = LLMReasoner(vlm, dim=16, lora_rank=2)
    assert isinstance(reasoner.llm, Qwen2_5_VLTextModel)
    assert len(reasoner.lora_parameters()) == 8
    ids = torch.tensor([[1, 5, 6, 2], [1, 9, 2, 0]])
    instr, vis = reasoner(ids, ids != 0, torch.randn(2, 6, 16))
    assert instr.shape == (2, 4, 16) and vis.shape == (2, 6, 16) and torch.isfinite(vis).all()


def test_lora_adds_trainable_adapters_and_keeps_llm_base_frozen():
    model = tiny_base("model.lora_rank=4")
    lora = model.reasoner.lora_parameters()
    assert len(lora) == 2 * 4  # lora_A and lora_B on q, k, v, o of the single layer
    model.trainable_parameters("finetune")
    assert all(p.requires_grad for p in lora)
    assert not any(p.requires_grad for p in model.reasoner.base_parameters())
    out = model(make_inputs(model, keyframes=torch.tensor([[0, 1], [1, 2]])))
    (out.heatmap_logits.mean() + out.waypoints.mean() + out.goal_logits.mean()).backward()
    lora_b = [p for n, p in model.reasoner.llm.named_parameters() if "lora_B" in n]
    assert all(p.grad is not None for p in lora)
    assert all(p.grad.abs().sum() > 0 for p in lora_b)  # B starts at zero, so A's gradient is zero at first
    assert all(p.grad is None for p in model.reasoner.base_parameters())
    model.trainable_parameters("heatmap")
    assert not any(p.requires_grad for p in lora)


# ------------------------------------------------------------------------------ full model


def test_embedded_forward_shapes_sampled_and_given_keyframes():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), arch_overrides=TINY_ARCH)
    out = model(make_inputs(model))
    check_output_shapes(out, 2)
    kf = out.keyframe_indices
    assert ((kf >= 0) & (kf < N_M)).all() and (kf[:, 1:] > kf[:, :-1]).all()  # valid, sorted, distinct
    given = torch.tensor([[0, 3], [1, 2]])
    out2 = model(make_inputs(model, keyframes=given))
    assert torch.equal(out2.keyframe_indices, given)
    heat = torch.softmax(out2.heatmap_logits.flatten(2), dim=-1)
    assert torch.allclose(heat.sum(-1), torch.ones(2, N_K), atol=1e-5)
    with pytest.raises(InputError, match="keyframe_indices"):
        model(make_inputs(model, keyframes=torch.tensor([[0, 4], [1, 2]])))


def test_tiny_base_with_real_dinov3_and_qwen2_forward():
    model = tiny_base()
    assert model.semantic.is_hf and isinstance(model.reasoner, LLMReasoner)
    out = model(make_inputs(model))
    check_output_shapes(out, 2)


def test_known_intrinsics_are_used_instead_of_predicted_fov():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), arch_overrides=TINY_ARCH).eval()
    inputs = make_inputs(model, keyframes=torch.tensor([[0, 1], [0, 1]]))
    inputs.camera_poses = _turning_poses(2)
    with torch.no_grad():
        a = model(inputs)
        inputs.intrinsics = torch.tensor([[5.0, 0, 27.5], [0, 5.0, 27.5], [0, 0, 1]]).expand(2, 3, 3).clone()
        b = model(inputs)
    assert not torch.allclose(a.goal_logits, b.goal_logits)  # the 3D positional encoding changed with the camera
    assert not torch.allclose(a.heatmap_logits, b.heatmap_logits)  # and the reprojection of the turned keyframes


def _turning_poses(batch: int) -> torch.Tensor:
    """``(B, N_M, 4, 4)`` camera-to-world poses of a camera turning 10 degrees per frame about its y axis."""
    poses = []
    for i in range(N_M):
        angle = torch.tensor(math.radians(10.0 * (i - N_M + 1)))
        R = torch.tensor([[torch.cos(angle), 0.0, torch.sin(angle)], [0.0, 1.0, 0.0],
                          [-torch.sin(angle), 0.0, torch.cos(angle)]])
        poses.append(make_pose(R, torch.tensor([0.1 * i, 0.0, 0.0])))
    return torch.stack(poses)[None].expand(batch, N_M, 4, 4).clone()


@pytest.mark.parametrize("name", ["small", "base", "full"])
def test_pipeline_heatmaps_are_the_one_reprojection_of_its_geometry_stage(name):
    """Every configuration's keyframe heatmaps come from the geometry core's reprojection of the
    geometry stage's depth and poses (known poses where given), as the ground truth's do."""
    from vln_core.heatmaps import heatmaps_from_config
    from vln_core.models.geometry_encoder import pose_encoding_to_extrinsics_intrinsics
    from vln_core.models.reprojected_heatmaps import HEATMAP_LOG_EPS

    torch.manual_seed(0)
    if name == "small":
        model = build_model(tiny_cfg(name), arch_overrides=TINY_ARCH).eval()
    elif name == "base":
        model = tiny_base().eval()
    else:  # VGGT geometry, DINOv3, the Qwen2.5-VL language model
        model = build_model(tiny_cfg("full"), semantic_backbone=tiny_dinov3(), llm=tiny_qwen2(),
                            geometry_backbone=tiny_vggt(), arch_overrides=TINY_ARCH).eval()
    inputs = make_inputs(model, keyframes=torch.tensor([[0, 2], [1, 2]]))
    inputs.camera_poses = _turning_poses(2)
    inputs.pose_known = torch.tensor([True, False])  # sample 1: the geometry stage's own poses
    inputs.intrinsics = torch.tensor([[40.0, 0, 27.5], [0, 40.0, 27.5], [0, 0, 1]]).expand(2, 3, 3).clone()
    with torch.no_grad():
        out = model(inputs)
        geo = model.geometry(inputs.frames)
    T_pred, _ = pose_encoding_to_extrinsics_intrinsics(geo.pose_enc, (H, W))
    K = inputs.intrinsics[:, None].expand(2, N_M, 3, 3)
    T_known = torch.linalg.inv(inputs.camera_poses[:, -1:]) @ inputs.camera_poses
    for b, T in ((0, T_known[0]), (1, T_pred[1])):
        kf = inputs.keyframe_indices[b]
        ref = heatmaps_from_config(geo.depth[b, kf], K[b, kf], T[kf], K[b, -1], torch.eye(4), (H, W),
                                   geo.depth[b, -1], cfg=model.cfg.heatmap)
        assert torch.allclose(out.heatmap_logits[b], torch.log(ref.heatmap + HEATMAP_LOG_EPS), atol=1e-4)
    assert torch.allclose(out.depth, geo.depth)
    assert torch.allclose(out.pose_enc_predicted, geo.pose_enc)
    # the reasoning stage read the instruction: goal heatmap and waypoints, finite
    assert out.goal_logits.shape == (2, H, W) and out.waypoints.shape == (2, 20, 2)
    assert torch.isfinite(out.goal_logits).all() and torch.isfinite(out.waypoints).all()
    # the turned keyframes land elsewhere than an unmoved camera would put them
    still = make_inputs(model, keyframes=inputs.keyframe_indices)
    still.camera_poses = torch.eye(4).expand(2, N_M, 4, 4).clone()
    still.intrinsics = inputs.intrinsics
    with torch.no_grad():
        assert not torch.allclose(model(still).heatmap_logits[0], out.heatmap_logits[0], atol=1e-3)


def _grad_groups(model) -> tuple[set[str], set[str]]:
    with_grad, frozen_with_grad = set(), set()
    for name, params in model._groups().items():
        for p in params:
            if p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0:
                with_grad.add(name)
            if not p.requires_grad and p.grad is not None:
                frozen_with_grad.add(name)
    return with_grad, frozen_with_grad


def _full_loss(out) -> torch.Tensor:
    return (out.depth.mean() + out.depth_conf.mean() + out.pose_enc.sum() + out.heatmap_logits.std()
            + out.goal_logits.std() + out.out_of_view_logit.sum() + out.out_of_view_bearing.sum()
            + out.waypoints.sum())


@pytest.mark.parametrize("stage,expected", [
    ("geometry", {"geometry"}),
    ("heatmap", {"geometry", "fusion", "reasoner", "goal_head"}),
    ("finetune", {"geometry", "fusion", "reasoner", "goal_head", "waypoint_head"}),
])
def test_stage_freezing_tiny_base(stage, expected):
    model = tiny_base()  # freeze_semantic and freeze_llm default True, no LoRA
    trainable = model.trainable_parameters(stage)
    assert trainable and all(p.requires_grad for p in trainable)
    assert {g["name"] for g in model.param_groups()} == expected
    _full_loss(model(make_inputs(model, keyframes=torch.tensor([[0, 1], [1, 2]])))).backward()
    with_grad, frozen_with_grad = _grad_groups(model)
    assert with_grad == expected
    assert not frozen_with_grad
    assert all(p.grad is None for p in model.semantic.backbone.parameters())
    assert all(p.grad is None for p in model.reasoner.base_parameters())


def test_stage_freezing_small_trains_its_own_backbones_and_unfrozen_llm():
    model = build_model(tiny_cfg(), arch_overrides=TINY_ARCH)
    model.trainable_parameters("heatmap")
    _full_loss(model(make_inputs(model, keyframes=torch.tensor([[0, 1], [1, 2]])))).backward()
    with_grad, frozen_with_grad = _grad_groups(model)
    assert with_grad == {"geometry", "semantic_backbone", "fusion", "reasoner", "goal_head"}
    assert not frozen_with_grad
    unfrozen = tiny_base("model.freeze_llm=false", "model.freeze_semantic=false")
    assert set(unfrozen.stage_groups("finetune")) >= {"llm", "semantic_backbone", "waypoint_head"}
    with pytest.raises(InputError):
        model.trainable_parameters("pretrain")


# ------------------------------------------------------------------------------ keyframes, registry, devices


def test_keyframe_sampling_from_geometry_prefers_new_space():
    model = build_model(tiny_cfg(), arch_overrides=TINY_ARCH)
    depth = torch.full((1, N_M, H, W), 2.0)
    K = torch.tensor([[30.0, 0, 27.5], [0, 30.0, 27.5], [0, 0, 1]]).expand(1, N_M, 3, 3)
    T = torch.eye(4).repeat(1, N_M, 1, 1)
    T[0, 1, 0, 3] = 10.0  # frame 1 looks at a wall 10 m to the side; frames 0, 2, 3 see the same wall
    kf = model.sample_keyframes(depth, K, T)
    assert kf.tolist() == [[0, 1]]


def test_registry_names_and_missing_paths_raise_clear_errors():
    assert set(list_models()) >= {"embedded", "base", "full"}
    with pytest.raises(ConfigError, match="model.dinov3_path"):
        build_model(tiny_cfg("base"))
    with pytest.raises(ConfigError, match="model.llm_path"):
        build_model(tiny_cfg("full"), semantic_backbone=tiny_dinov3())
    with pytest.raises(ConfigError, match="no such file"):
        build_model(tiny_cfg("base", "model.dinov3_path=/nonexistent/dinov3"))
    with pytest.raises(ConfigError, match="arch_overrides"):
        build_model(tiny_cfg(), arch_overrides={"not_a_field": 1})


def _save_tiny_tokenizer(path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "go": 4, "to": 5, "the": 6, "chair": 7}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(str(path))


@pytest.mark.parametrize("kind", ["qwen2", "qwen2_5_vl"])
def test_base_and_full_load_pretrained_weights_from_local_paths(tmp_path, kind):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Config, Qwen2ForCausalLM

    from vln_core.models.tokenizer import HFTokenizerAdapter

    torch.manual_seed(0)
    dino = tiny_dinov3()
    dino.save_pretrained(str(tmp_path / "dinov3"))
    text = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, bos_token_id=1, eos_token_id=2)
    if kind == "qwen2":  # a causal-LM checkpoint, as Qwen2-0.5B ships
        checkpoint = Qwen2ForCausalLM(Qwen2Config(**text))
        source = checkpoint.model
    else:
        checkpoint = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
            text_config=dict(text, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
            vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                               fullatt_block_indexes=[0]),
            bos_token_id=1, eos_token_id=2))
        source = checkpoint.model.language_model
    checkpoint.save_pretrained(str(tmp_path / "llm"))
    _save_tiny_tokenizer(tmp_path / "llm")
    name = "base" if kind == "qwen2" else "full"
    cfg = tiny_cfg(name, f"model.dinov3_path={tmp_path / 'dinov3'}", f"model.llm_path={tmp_path / 'llm'}")
    vggt = {"geometry_backbone": tiny_vggt()} if name == "full" else {}  # full's geometry is VGGT (test_vggt.py)
    model = build_model(cfg, arch_overrides=TINY_ARCH, **vggt)
    assert isinstance(model.tokenizer, HFTokenizerAdapter)
    loaded_llm = dict(model.reasoner.llm.named_parameters())
    for key, value in source.named_parameters():
        assert torch.equal(loaded_llm[key], value), key  # real weights, not a fresh random init
    loaded_dino = dict(model.semantic.backbone.named_parameters())
    for key, value in dino.named_parameters():
        assert torch.equal(loaded_dino[key], value), key
    model.tokenizer = HashedWordTokenizer(128)  # the stand-in tokenizer files only exist to be loadable
    check_output_shapes(model(make_inputs(model)), 2)


def test_device_map_falls_back_to_cpu(caplog):
    model = build_model(tiny_cfg("small", "model.llm_device=cuda:0", "model.geometry_device=auto"),
                        arch_overrides=TINY_ARCH)
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the CPU fallback cannot be observed on this machine")
    assert resolve_device("auto", 1) == torch.device("cpu")
    with caplog.at_level(logging.WARNING):
        assert resolve_device("cuda:1") == torch.device("cpu")
    assert "CUDA is not available" in caplog.text
    assert set(model.device_map.values()) == {torch.device("cpu")}
    assert all(p.device.type == "cpu" for p in model.parameters())
    model.place_on_devices({"llm": "meta"})  # one stage elsewhere; the others stay
    assert model.device_map == {"geometry": torch.device("cpu"), "semantic": torch.device("cpu"),
                                "llm": torch.device("meta")}
    assert all(p.device.type == "meta" for p in model.reasoner.parameters())
    with pytest.raises(InputError):
        resolve_device("not-a-device")


def test_small_model_fits_a_fixed_goal_target():
    """A few optimizer steps on one batch move the goal heatmap onto the target pixels: the
    gradients through the goal decoder, convex upsampling, reasoning and fusion are useful."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), arch_overrides=TINY_ARCH)
    params = model.trainable_parameters("heatmap")
    inputs = make_inputs(model, keyframes=torch.tensor([[0, 1], [1, 2]]))
    target = torch.tensor([3 * W + 5, 40 * W + 50])  # flat pixel index of each sample's goal
    optimizer = torch.optim.Adam(params, lr=3e-3)

    def loss_and_hits():
        logits = model(inputs).goal_logits.flatten(1)  # (B, H*W)
        return torch.nn.functional.cross_entropy(logits, target), (logits.argmax(-1) == target).float().mean()

    initial, _ = loss_and_hits()
    for _ in range(40):
        loss, _ = loss_and_hits()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final, hits = loss_and_hits()
    assert final < 0.5 * initial
    assert hits == 1.0

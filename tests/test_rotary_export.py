"""vln_core.export.rotary: rotary tables frozen as constants for one input size, on tiny real
architectures (transformers' DINOv3ViTModel and our VGGT), nothing mocked.

What is checked:

* the frozen model's eval outputs are bit-equal to the original's (and within 1e-6 asserted);
* the ONNX export (TorchScript exporter, ``dynamo=False``, opset 17, constant folding, as
  vln_core/export does) of the frozen model has no ``If`` / ``Loop`` nodes and its rope modules
  compute nothing from shapes: no ``Shape`` / ``Range`` / ``Size`` / ``Tile`` / ``Pow`` / ``Cos`` /
  ``Sin`` nodes under a rope scope;
* what the unfrozen exports had (measured with torch 2.13 / transformers 5.x): DINOv3's rope
  exported two ``If`` nodes (from ``Tensor.tile``) plus ``Shape``/``Size``/``Cos``/``Sin``; VGGT's
  RoPE2D recomputed its tables in the graph (``Pow``/``Cos``/``Sin`` per call, fed by ``Shape``:
  the traced head width also makes its Python table cache miss) and baked ``pos.max()`` in as a
  constant; no ``If`` / ``Loop`` there;
* onnxruntime on the frozen export equals PyTorch within 1e-3;
* a size that is not a multiple of the patch size raises InputError, as does a frozen DINOv3
  rope fed another size; shared RoPE2D stays shared; state_dict is unchanged; freezing twice or
  freezing a model without rope changes nothing; bf16 RoPE2D results stay equal.
"""
from __future__ import annotations

import collections
import io
import warnings

import pytest
import torch
from torch import nn

from vln_core.errors import InputError
from vln_core.export.rotary import FixedRoPE2D, FrozenDinoV3Rope, freeze_rotary_tables, rope_modules
from vln_core.models.vggt import VGGT, VGGTConfig
from vln_core.models.vggt.layers import RoPE2D

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

torch.set_num_threads(1)

OPSET = 17
#: op types a rope module must not export once frozen (table computation or shape reads)
TABLE_OPS = {"If", "Loop", "Shape", "Size", "Range", "Tile", "Pow", "Cos", "Sin", "Cast", "ConstantOfShape"}
DINO_HW = (64, 48)  # patch 16: a 4x3 grid, non-square on purpose
VGGT_HW = (56, 56)  # patch 14: the tiny VGGT's img_size (another size interpolates its position
#                     embedding bicubically with antialias, which the ONNX exporter does not support)


def tiny_dinov3():
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    return DINOv3ViTModel(DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=2, patch_size=16, num_register_tokens=4,
                                          image_size=DINO_HW[0])).eval()


def tiny_vggt():
    torch.manual_seed(0)
    return VGGT(VGGTConfig(img_size=VGGT_HW[0], embed_dim=32, depth=2, num_heads=2, patch_embed_depth=1,
                           patch_embed_heads=2, camera_trunk_depth=1, camera_heads=2, dpt_features=16,
                           dpt_out_channels=(8, 16, 32, 32), dpt_layers=(0, 1, 1, 1))).eval()


class DinoOut(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state


class VggtOut(nn.Module):
    """VGGT's outputs as a tuple; ``with_points=False`` for export (the point head's
    ``torch.expm1`` has no ONNX symbolic in the TorchScript exporter at opset 17)."""

    def __init__(self, model: nn.Module, with_points: bool = True) -> None:
        super().__init__()
        self.model = model
        self.with_points = with_points

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images, with_points=self.with_points)
        points = (out.world_points, out.world_points_conf) if self.with_points else ()
        return (out.pose_enc, out.depth, out.depth_conf, *points)


def run(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = module(x)
    return out if isinstance(out, tuple) else (out,)


def export(module: nn.Module, x: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: the eager shape checks become constants
        torch.onnx.export(module.eval(), (x,), buffer, opset_version=OPSET, dynamo=False, input_names=["x"],
                          do_constant_folding=True)
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_model_from_string(data))
    return data


def op_counts(data: bytes, scope: str | None = None) -> collections.Counter:
    """Op types of the graph's nodes (recursively into subgraphs), only those whose name contains
    ``scope`` when given (the TorchScript exporter names nodes by module path)."""
    counts: collections.Counter = collections.Counter()

    def visit(graph) -> None:
        for node in graph.node:
            if scope is None or scope in node.name:
                counts[node.op_type] += 1
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(onnx.load_model_from_string(data).graph)
    return counts


def ort_outputs(data: bytes, x: torch.Tensor) -> list:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.numpy()})


def assert_same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> None:
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert torch.allclose(u, v, atol=1e-6, rtol=0), (u - v).abs().max()
        assert torch.equal(u, v)  # in fact bit-equal: the same float32 arithmetic on the same tables


# ------------------------------------------------------------------------------------ DINOv3


def test_dinov3_frozen_equals_original():
    model = tiny_dinov3()
    x = torch.rand(2, 3, *DINO_HW)
    before = run(DinoOut(model), x)
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    assert freeze_rotary_tables(model, DINO_HW) is model
    assert isinstance(model.rope_embeddings, FrozenDinoV3Rope)
    assert rope_modules(model) == []
    assert_same(run(DinoOut(model), x), before)
    state = model.state_dict()  # non-persistent buffers: checkpoints load before and after
    assert state.keys() == keys.keys() and all(torch.equal(state[k], keys[k]) for k in keys)


def test_dinov3_frozen_tables_are_the_eval_mode_tables_whatever_the_mode():
    model = tiny_dinov3()
    x = torch.rand(1, 3, *DINO_HW)
    cos, sin = model.rope_embeddings.eval()(x)
    model.train()  # the original would augment its coordinates now; the tables come from eval mode
    freeze_rotary_tables(model, DINO_HW)
    assert model.rope_embeddings.training
    for dtype in (torch.float32, torch.bfloat16):
        c, s = model.rope_embeddings(x.to(dtype))
        assert c.dtype == s.dtype == dtype
        assert torch.equal(c, cos.to(dtype)) and torch.equal(s, sin.to(dtype))


def test_dinov3_export_has_no_conditionals_and_matches_onnxruntime():
    model = tiny_dinov3()
    x = torch.rand(2, 3, *DINO_HW)
    unfrozen = export(DinoOut(model), x)
    freeze_rotary_tables(model, DINO_HW)
    frozen = export(DinoOut(model), x)

    # what the unfrozen export had: conditionals and trigonometry computed from the input's shape
    before = op_counts(unfrozen, "/rope_embeddings/")
    assert before["If"] >= 1 and before["Shape"] >= 1 and before["Cos"] >= 1 and before["Sin"] >= 1, before
    # frozen: no conditional anywhere, and the rope module is two constants
    assert not {"If", "Loop"} & set(op_counts(frozen)), op_counts(frozen)
    assert not TABLE_OPS & set(op_counts(frozen, "/rope_embeddings/")), op_counts(frozen, "/rope_embeddings/")
    assert op_counts(frozen)["Shape"] < op_counts(unfrozen)["Shape"]

    expected = run(DinoOut(model), x)
    got = ort_outputs(frozen, x)
    for e, g in zip(expected, got):
        assert torch.allclose(torch.from_numpy(g), e, atol=1e-3, rtol=0), (torch.from_numpy(g) - e).abs().max()


def test_dinov3_size_errors():
    model = tiny_dinov3()
    with pytest.raises(InputError, match="patch size 16x16"):
        freeze_rotary_tables(model, (60, 48))
    assert not isinstance(model.rope_embeddings, FrozenDinoV3Rope)  # nothing replaced on error
    freeze_rotary_tables(model, DINO_HW)
    with pytest.raises(InputError, match="frozen for 64x48"):
        model(pixel_values=torch.rand(1, 3, 64, 64))
    with pytest.raises(InputError, match="positive"):
        freeze_rotary_tables(tiny_dinov3(), (0, 48))


# -------------------------------------------------------------------------------------- VGGT


def test_vggt_frozen_equals_original_and_rope_stays_shared():
    model = tiny_vggt()
    hw = (56, 42)  # non-square: a 4x3 grid (eager only; see VGGT_HW)
    x = torch.rand(1, 3, 3, *hw)
    before = run(VggtOut(model), x)
    keys = set(model.state_dict())
    freeze_rotary_tables(model, hw)
    rope = model.aggregator.rope
    assert isinstance(rope, FixedRoPE2D) and rope.grid == (4, 3) and rope.head_dim == 16
    blocks = [*model.aggregator.frame_blocks, *model.aggregator.global_blocks]
    assert all(b.attn.rope is rope for b in blocks)  # one shared table, like the original
    assert all(b.attn.rope is None for b in model.aggregator.patch_embed.blocks)  # no rope there
    assert rope_modules(model) == []
    assert set(model.state_dict()) == keys
    assert_same(run(VggtOut(model), x), before)
    assert freeze_rotary_tables(model, hw) is model and model.aggregator.rope is rope  # second call: no-op


def test_fixed_rope2d_equals_rope2d_in_float32_and_bfloat16():
    torch.manual_seed(0)
    grid = (5, 3)
    from vln_core.models.vggt.layers import patch_positions

    pos = patch_positions(2, grid, 5, torch.device("cpu"))  # (2, 5 + 15, 2)
    fixed = FixedRoPE2D(100.0, 16, grid)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 2, pos.shape[1], 16).to(dtype)
        assert torch.equal(fixed(x, pos), RoPE2D(100.0)(x, pos))
    fixed.to(torch.bfloat16)  # a model cast after freezing: the angle table rounds as RoPE2D's does
    x = torch.randn(2, 2, pos.shape[1], 16, dtype=torch.bfloat16)
    assert torch.equal(fixed(x, pos), RoPE2D(100.0)(x, pos))


def test_vggt_export_has_no_conditionals_or_rope_table_ops_and_matches_onnxruntime():
    model = tiny_vggt()
    x = torch.rand(1, 3, 3, *VGGT_HW)
    unfrozen = export(VggtOut(model, with_points=False), x)
    freeze_rotary_tables(model, VGGT_HW)
    frozen = export(VggtOut(model, with_points=False), x)

    # what the unfrozen export had: no conditionals, but the tables recomputed per call in the
    # graph from the traced shape (Shape -> Div -> Pow/Cos/Sin) under every block's rope scope
    before = op_counts(unfrozen, "/rope")
    assert not {"If", "Loop"} & set(op_counts(unfrozen))
    assert before["Pow"] == before["Cos"] == before["Sin"] == 2 * 2 * 2  # 2 pairs x (frame, global) x (q, k)
    assert before["Shape"] >= 1
    # frozen: no conditionals; rope scopes only gather and rotate (Gather, Slice, Neg, Concat, Mul, Add)
    after = op_counts(frozen, "/rope")
    assert not {"If", "Loop"} & set(op_counts(frozen))
    assert not TABLE_OPS & set(after), after
    assert after["Gather"] >= 1 and after["Mul"] >= 1
    assert op_counts(frozen)["Shape"] < op_counts(unfrozen)["Shape"]

    expected = run(VggtOut(model, with_points=False), x)
    got = ort_outputs(frozen, x)
    assert len(got) == len(expected) == 3
    for e, g in zip(expected, got):
        assert torch.allclose(torch.from_numpy(g), e, atol=1e-3, rtol=1e-4), (torch.from_numpy(g) - e).abs().max()


def test_vggt_size_errors():
    model = tiny_vggt()
    with pytest.raises(InputError, match="patch size 14x14"):
        freeze_rotary_tables(model, (56, 50))
    assert isinstance(model.aggregator.rope, RoPE2D)
    with pytest.raises(InputError, match="not inside a module with an int patch_size"):
        freeze_rotary_tables(nn.Sequential(RoPE2D()), (56, 56))


def test_no_rope_is_a_no_op():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert freeze_rotary_tables(model, (56, 56)) is model
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

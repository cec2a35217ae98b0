"""ONNX export of the pipeline's geometry stage (vln_core.export.geometry_stage, export/export_onnx.py).

The geometry stage of a tiny ``small`` model and of a tiny ``full`` model (VGGT: 2D rotary
embeddings, frozen as constant tables for the export) is exported at a fixed N_m, run with
onnxruntime and compared with PyTorch within 1e-3; a failing export must leave an older file
untouched; the CLI runs as a subprocess.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_models import H, N_M, TINY_ARCH, W, tiny_cfg, tiny_dinov3, tiny_qwen2, tiny_vggt
from vln_core.errors import InputError
from vln_core.export.geometry_stage import (
    EXPORT_BATCH,
    INPUT_NAMES,
    OUTPUT_NAMES,
    ExportMismatchError,
    GeometryStageWrapper,
    example_frames,
    export_geometry_stage,
    verify_geometry_stage,
)
from vln_core.models import build_model

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_cfg("small")
    torch.manual_seed(0)
    return build_model(cfg, arch_overrides=TINY_ARCH).eval(), cfg


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    model, cfg = tiny
    return export_geometry_stage(model, cfg, tmp_path_factory.mktemp("onnx") / "sub" / "small_geometry.onnx")


def test_export_writes_the_geometry_stage_at_fixed_n_m_that_matches_pytorch(tiny, exported):
    model, cfg = tiny
    assert exported.is_file() and exported.stat().st_size > 10_000
    assert [p.name for p in exported.parent.iterdir()] == ["small_geometry.onnx"]  # no temporary file left
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    assert {i.name: i.shape for i in session.get_inputs()} == {"frames": [EXPORT_BATCH, N_M, 3, H, W]}
    assert tuple(o.name for o in session.get_outputs()) == OUTPUT_NAMES
    diffs = verify_geometry_stage(model, exported, cfg)
    assert tuple(diffs) == OUTPUT_NAMES
    assert all(0.0 <= d < 1e-3 for d in diffs.values()), diffs
    # other frames than the traced ones: nothing data-dependent was frozen into constants
    frames = example_frames(cfg, seed=7)
    with torch.no_grad():
        reference = GeometryStageWrapper(model.geometry)(frames)
    got = session.run(None, {"frames": frames.numpy()})
    for name, g, r in zip(OUTPUT_NAMES, got, reference):
        assert g.shape == tuple(r.shape) and abs(g - r.numpy()).max() < 1e-3, name


def test_the_full_models_vggt_geometry_stage_exports_without_conditionals_and_matches(tmp_path):
    cfg = tiny_cfg("full")
    torch.manual_seed(0)
    model = build_model(cfg, semantic_backbone=tiny_dinov3(), llm=tiny_qwen2(), geometry_backbone=tiny_vggt(),
                        arch_overrides=TINY_ARCH).eval()
    path = export_geometry_stage(model, cfg, tmp_path / "full_geometry.onnx")
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not ops & {"If", "Loop"}, ops
    diffs = verify_geometry_stage(model, path, cfg)
    assert all(d < 1e-3 for d in diffs.values()), diffs
    # the export worked on a copy: the model's own rotary modules are untouched
    from vln_core.models.vggt.layers import RoPE2D
    assert any(isinstance(m, RoPE2D) for m in model.geometry.modules())


def test_verify_reports_a_model_that_differs_from_the_file(tiny, exported):
    model, cfg = tiny
    changed = build_model(cfg, arch_overrides=TINY_ARCH).eval()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in changed.geometry.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ExportMismatchError, match="does not match"):
        verify_geometry_stage(changed, exported, cfg)


def test_failed_export_leaves_the_previous_file_unchanged(tiny, tmp_path, monkeypatch):
    model, cfg = tiny
    path = export_geometry_stage(model, cfg, tmp_path / "g.onnx")
    good = path.read_bytes()

    def broken_export(module, args, f, *a, **kw):
        f.write(b"half an onnx file")
        raise RuntimeError("exporter crashed half-way")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(RuntimeError, match="half-way"):
        export_geometry_stage(model, cfg, path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx"]
    monkeypatch.undo()
    verify_geometry_stage(model, path, cfg)


def test_export_rejects_a_module_that_is_not_a_pipeline_model(tiny, tmp_path):
    _, cfg = tiny
    with pytest.raises(InputError, match="VLNSpatialModel"):
        export_geometry_stage(torch.nn.Linear(2, 2), cfg, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    assert INPUT_NAMES == ("frames",)


def test_cli_exports_random_init_only_when_allowed(tmp_path):
    out = tmp_path / "cli" / "small_geometry.onnx"
    overrides = ["model.name=small", f"video.total_frames={N_M}", "video.keyframes=2", f"video.frame_size=[{H}, {W}]"]
    script = str(REPO / "export" / "export_onnx.py")
    refused = subprocess.run([sys.executable, script, "--config", str(REPO / "configs/train_embedded.yaml"),
                              "--out", str(out), *overrides], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--allow-random-init" in refused.stderr
    assert not out.exists()

    done = subprocess.run([sys.executable, script, "--config", str(REPO / "configs/train_embedded.yaml"),
                           "--allow-random-init", "--out", str(out), "--runs", "1", *overrides],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.is_file()
    assert "max |onnxruntime - torch| per output: depth=" in done.stdout
    assert "onnxruntime" in done.stdout and "PyTorch eager" in done.stdout
    assert f"trtexec --onnx={out}" in done.stdout

"""ONNX export of the embedded model (vln_core.export.window_model, export/export_onnx.py).

A tiny embedded model (56x56 frames, 4 buffered frames, 2 keyframes; sizes from tests/test_models.py)
is exported, run with onnxruntime and compared with PyTorch; a failing export must leave an older
file untouched; the CLI runs as a subprocess.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_models import H, N_K, N_M, TINY_ARCH, W, tiny_cfg
from vln_core.errors import InputError
from vln_core.models import build_model
from vln_core.export.window_model import (
    EXPORT_BATCH,
    INPUT_NAMES,
    OUTPUT_NAMES,
    ExportMismatchError,
    OnnxExportWrapper,
    example_inputs,
    export_onnx,
    verify_onnx,
)

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_cfg("embedded_tokens")  # the token model; the reprojection model: test_onnx_backend.py
    torch.manual_seed(0)
    return build_model(cfg, arch_overrides=TINY_ARCH).eval(), cfg


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    model, cfg = tiny
    return export_onnx(model, cfg, tmp_path_factory.mktemp("onnx") / "sub" / "embedded.onnx")


def test_export_writes_a_graph_with_named_inputs_that_matches_pytorch(tiny, exported):
    model, cfg = tiny
    assert exported.is_file() and exported.stat().st_size > 10_000
    assert [p.name for p in exported.parent.iterdir()] == ["embedded.onnx"]  # no temporary file left
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert tuple(inputs) == INPUT_NAMES
    assert tuple(o.name for o in session.get_outputs()) == OUTPUT_NAMES
    assert inputs["frames"] == [EXPORT_BATCH, N_M, 3, H, W]
    assert inputs["keyframe_indices"] == [EXPORT_BATCH, N_K] and inputs["intrinsics"] == [EXPORT_BATCH, 3, 3]
    assert isinstance(inputs["instruction_ids"][1], str)  # the instruction length is a dynamic axis

    diffs = verify_onnx(model, exported, cfg)
    assert tuple(diffs) == OUTPUT_NAMES
    assert all(0.0 <= d < 1e-3 for d in diffs.values()), diffs

    # a shorter instruction, other keyframes and intrinsics than the traced ones
    args = list(example_inputs(model, cfg, seed=4))
    ids, mask = model.tokenizer.encode(["stop"], cfg.model.max_instruction_length)
    args[1], args[2] = ids, mask
    args[5] = torch.tensor([[3, 1]])
    assert ids.shape[1] != example_inputs(model, cfg, seed=0)[1].shape[1]
    with torch.no_grad():
        reference = OnnxExportWrapper(model)(*args)
    got = session.run(None, {name: t.numpy() for name, t in zip(INPUT_NAMES, args)})
    assert [g.shape for g in got] == [tuple(r.shape) for r in reference]
    assert got[OUTPUT_NAMES.index("waypoints")].shape == (1, 20, 2)
    for name, g, r in zip(OUTPUT_NAMES, got, reference):
        assert abs(g - r.numpy()).max() < 1e-3, name


def test_verify_reports_a_model_that_differs_from_the_file(tiny, exported):
    model, cfg = tiny
    changed = build_model(cfg, arch_overrides=TINY_ARCH).eval()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        # only the goal query differs (not by a constant: a layer norm would cancel that)
        changed.goal_query.add_(torch.randn(changed.goal_query.shape, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ExportMismatchError, match="goal_logits"):
        verify_onnx(changed, exported, cfg)


def test_failed_export_leaves_the_previous_file_unchanged(tiny, tmp_path, monkeypatch):
    model, cfg = tiny
    path = export_onnx(model, cfg, tmp_path / "embedded.onnx")
    good = path.read_bytes()

    def broken_export(module, args, f, *a, **kw):
        f.write(b"half an onnx file")
        raise RuntimeError("exporter crashed half-way")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(RuntimeError, match="half-way"):
        export_onnx(model, cfg, path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embedded.onnx"]
    monkeypatch.undo()
    verify_onnx(model, path, cfg)


def test_export_rejects_a_module_that_is_not_the_model(tiny, tmp_path):
    model, cfg = tiny
    with pytest.raises(InputError, match="VLNSpatialModel"):
        export_onnx(torch.nn.Linear(2, 2), cfg, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_exports_random_init_only_when_allowed(tmp_path):
    out = tmp_path / "cli" / "embedded.onnx"
    overrides = ["model.name=embedded_tokens", f"video.total_frames={N_M}", f"video.keyframes={N_K}", f"video.frame_size=[{H}, {W}]"]
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

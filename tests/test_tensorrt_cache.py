"""The TensorRT engine cache, without TensorRT: keys (TensorRT version, GPU name, ONNX sha256) in
the file name and a sidecar, stale or mismatched engines refused with the rebuild command, atomic
writes; and the one-line refusals when TensorRT is not installed. The engine build and run
themselves are untested (no GPU, no TensorRT here)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vln_core.export.tensorrt_cache import (
    EngineKey,
    StaleEngineError,
    engine_file_name,
    engine_key_mismatch,
    find_engine,
    optimization_profiles,
    write_engine,
)

REPO = Path(__file__).resolve().parents[1]
SHA = "ab" * 32
KEY = EngineKey("encoder", "fp32", "10.3.0", "NVIDIA H200", SHA)
HAS_TENSORRT = any(importlib.util.find_spec(m) for m in ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings"))


def test_key_is_in_the_file_name_and_the_sidecar(tmp_path):
    name = engine_file_name(KEY)
    assert name == f"encoder.fp32.trt10.3.0.nvidia-h200.{SHA[:16]}.engine"
    for other in (EngineKey("encoder", "fp32", "10.4.0", "NVIDIA H200", SHA),
                  EngineKey("encoder", "fp32", "10.3.0", "NVIDIA A100-SXM4-80GB", SHA),
                  EngineKey("encoder", "fp32", "10.3.0", "NVIDIA H200", "cd" * 32),
                  EngineKey("encoder", "fp16", "10.3.0", "NVIDIA H200", SHA),
                  EngineKey("pose_head", "fp32", "10.3.0", "NVIDIA H200", SHA)):
        assert engine_file_name(other) != name
    path = write_engine(tmp_path / "engines", KEY, b"engine bytes", extra={"onnx_file": "encoder.onnx"})
    assert path.name == name and path.read_bytes() == b"engine bytes"
    sidecar = json.loads(path.with_name(name + ".json").read_text())
    assert sidecar["tensorrt_version"] == "10.3.0" and sidecar["gpu_name"] == "NVIDIA H200"
    assert sidecar["onnx_sha256"] == SHA and sidecar["onnx_file"] == "encoder.onnx" and len(sidecar["engine_sha256"]) == 64
    assert sorted(p.name for p in path.parent.iterdir()) == [name, name + ".json"]  # no temporaries
    assert find_engine(tmp_path / "engines", KEY) == path
    assert engine_key_mismatch(sidecar, KEY) == []


@pytest.mark.parametrize("field, value, words", [
    ("tensorrt_version", "10.4.0", "TensorRT '10.3.0' (here: '10.4.0')"),
    ("gpu_name", "NVIDIA A100", "GPU 'NVIDIA H200' (here: 'NVIDIA A100')"),
    ("onnx_sha256", "cd" * 32, "encoder.onnx sha256 abababababab... (here: cdcdcdcdcdcd...)"),
])
def test_an_engine_for_another_tensorrt_gpu_or_onnx_is_refused(tmp_path, field, value, words):
    write_engine(tmp_path / "engines", KEY, b"old engine")
    wanted = EngineKey(**{**KEY.__dict__, field: value})
    with pytest.raises(StaleEngineError) as err:
        find_engine(tmp_path / "engines", wanted)
    message = str(err.value)
    assert words in message and "stale engines refused" in message
    assert message.endswith(f"rebuild with: python export/build_tensorrt.py --export {tmp_path}")


def test_a_renamed_damaged_or_sidecarless_engine_is_refused(tmp_path):
    cache = tmp_path / "engines"
    path = write_engine(cache, KEY, b"good engine")
    # bytes changed after the build
    path.write_bytes(b"other bytes")
    with pytest.raises(StaleEngineError, match="changed or damaged.*rebuild with"):
        find_engine(cache, KEY)
    # an engine of another key renamed to this key's name: the sidecar tells
    other = EngineKey(**{**KEY.__dict__, "tensorrt_version": "8.6.1"})
    other_path = write_engine(cache, other, b"8.6 engine")
    path.unlink()
    path.with_name(path.name + ".json").unlink()
    other_path.rename(path)
    other_path.with_name(other_path.name + ".json").rename(path.with_name(path.name + ".json"))
    with pytest.raises(StaleEngineError, match=r"was built for TensorRT '8.6.1' \(here: '10.3.0'\)"):
        find_engine(cache, KEY)
    # an engine whose sidecar was never written (a build killed between the two writes)
    path.with_name(path.name + ".json").unlink()
    with pytest.raises(StaleEngineError, match="no readable sidecar .*interrupted build"):
        find_engine(cache, KEY)


def test_missing_engine_says_how_to_build(tmp_path):
    with pytest.raises(StaleEngineError, match=r"no TensorRT engine of encoder \(fp16\) .*build it with: python "
                                               r"export/build_tensorrt.py --export .* --fp16$"):
        find_engine(tmp_path / "engines", EngineKey(**{**KEY.__dict__, "precision": "fp16"}))


def test_engine_write_is_atomic(tmp_path, monkeypatch):
    import os

    cache = tmp_path / "engines"
    path = write_engine(cache, KEY, b"good engine")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_engine(cache, KEY, b"new engine, never complete")
    monkeypatch.undo()
    assert path.read_bytes() == b"good engine"
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # no temporary; the old sidecar was withdrawn
    with pytest.raises(StaleEngineError, match="no readable sidecar"):  # so the engine is not trusted either
        find_engine(cache, KEY)


def test_optimization_profiles_cover_the_dynamic_axes():
    meta = {"frame_size": [224, 224], "pose_features": [48, 14, 14], "f8": [48, 28, 28], "f32": [128, 7, 7],
            "tokenizer": {"max_instruction_length": 64}, "past_trajectory_length": 16}
    prof = optimization_profiles(meta)
    assert prof["encoder"]["frames"][0] == (1, 3, 224, 224) and prof["encoder"]["frames"][2][0] >= 8
    assert prof["pose_head"]["pose_frames"][2] == (64, 48, 14, 14)
    assert prof["goal_waypoints"]["instruction_ids"] == ((1, 1), (1, 16), (4, 64))
    assert set(prof) == {"encoder", "pose_head", "goal_waypoints"}


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_without_tensorrt_the_backend_and_the_build_stop_with_one_line(tmp_path):
    from vln_core.config import load_config
    from vln_core.backends.base import BackendUnavailableError, create_backend

    with pytest.raises(BackendUnavailableError) as err:
        create_backend("tensorrt", load_config(None, ["node.backend=tensorrt"]))
    message = str(err.value)
    assert "\n" not in message and "needs TensorRT's Python package" in message and "node.backend: onnx" in message

    done = subprocess.run([sys.executable, str(REPO / "export/build_tensorrt.py"), "--export", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "export_onnx.py" in done.stderr  # the export is checked first: it says how to make one

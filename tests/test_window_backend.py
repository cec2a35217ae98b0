"""``node.backend: model`` serving the pipeline models (small / base / full) per window.

A tiny ``base`` (real transformers DINOv3 and Qwen2 classes from tiny configs, our own parts at
tiny sizes) serves the runtime on the real RGB-D sequence: its heatmaps are the model's own
reprojected maps, its goal heatmap and waypoints the model's reasoning stage, each equal to the
model called directly on the same window; ``full`` refuses to start on a CPU with one line.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_auto_backend import Feeder, _cfg, episode  # noqa: F401  (fixture)
from test_models import TINY_ARCH, tiny_dinov3, tiny_qwen2
from vln_core.backends import BackendUnavailableError, CameraFrame, create_backend
from vln_core.backends.window_backend import WindowModelBackend
from vln_core.models import build_model
from vln_core.models.reprojected_heatmaps import HEATMAP_LOG_EPS
from vln_core.runtime import NavigationRuntime

torch.set_num_threads(1)
INSTRUCTION = "go to the box on the table"
SIZE = ("video.frame_size=[56, 56]", "video.total_frames=6", "video.keyframes=3")


def _tiny_base(cfg):
    torch.manual_seed(0)
    return build_model(cfg, semantic_backbone=tiny_dinov3(), llm=tiny_qwen2(), arch_overrides=TINY_ARCH).eval()


def _frame(episode, j: int, seq: int, posed: bool = True) -> CameraFrame:
    return CameraFrame(stamp_ns=1_000_000_000 + seq * 100_000_000, frame_id="camera", rgb=episode.color(j),
                       K=np.asarray(episode.K, dtype=np.float64), T_wc=episode.poses[j] if posed else None, seq=seq)


@pytest.mark.parametrize("posed", [True, False])
def test_window_backend_outputs_are_the_model_called_directly(episode, posed):  # noqa: F811
    cfg = _cfg("model.name=base", *SIZE)
    model = _tiny_base(cfg)
    backend = WindowModelBackend(cfg, model=model)
    keyframes = [_frame(episode, j, i, posed) for i, j in enumerate((0, 12, 24))]
    current = _frame(episode, 40, 3, posed)
    result = backend.infer(current, keyframes, INSTRUCTION)

    past = torch.zeros(1, 16, 4)
    inputs = backend.window_inputs(current, keyframes, INSTRUCTION, past)
    assert (inputs.camera_poses is not None) == posed
    with torch.no_grad():
        direct = model(inputs)
    heat = (direct.heatmap_logits[0].exp() - HEATMAP_LOG_EPS).numpy()  # the logits are log(heatmap + eps)
    got = result.heatmaps.heatmap.numpy()
    assert got.shape == (3, 56, 56)
    has = result.heatmaps.has_overlap.numpy()
    assert has.any()
    assert np.abs(got[has] - heat[has]).max() <= 1e-4 * heat[has].max()
    goal = torch.softmax(direct.goal_logits[0].flatten(), 0).view(56, 56).numpy()
    assert np.abs(result.goal_heatmap - goal).max() <= 1e-4 * goal.max()
    # the first update's past trajectory is the robot standing: the same zeros as given here
    assert np.abs(result.waypoints - direct.waypoints[0].numpy()).max() < 1e-4
    assert backend.last_mode == ("rgb_pose" if posed else "rgb_only")
    info = backend.describe()
    assert info["model"].startswith("base (given)") and "geometry" in info["stage_times"]
    # the known poses move the keyframes' maps: the same window with the camera held still differs
    if posed:
        still = [CameraFrame(**{**vars(f), "T_wc": np.eye(4)}) for f in keyframes]
        moved = backend.infer(CameraFrame(**{**vars(current), "T_wc": np.eye(4)}), still, INSTRUCTION)
        assert not np.allclose(moved.heatmaps.heatmap.numpy(), got, atol=1e-4)


def test_runtime_serves_the_tiny_base_with_space_aware_keyframes(episode):  # noqa: F811
    cfg = _cfg("model.name=base", *SIZE)
    backend = WindowModelBackend(cfg, model=_tiny_base(cfg))
    now = [0.0]
    rt = NavigationRuntime(cfg, backend=backend, clock=lambda: now[0])
    rt.set_instruction(INSTRUCTION)
    feeder = Feeder(rt, episode, now)
    outputs = [out for i in range(0, 60, 4) if (out := feeder.feed(i, depth=False)) is not None]
    assert len(outputs) >= 10
    last = outputs[-1]
    assert last.heatmaps.heatmap.shape[1:] == (56, 56) and 1 <= last.heatmaps.heatmap.shape[0] <= 3
    assert last.waypoints.shape == (20, 2) and last.goal_heatmap.shape == (56, 56)
    assert max(len(o.keyframe_indices) for o in outputs) == 3  # the memory filled up to N_k
    status = next(s for s in rt.diagnostics() if "backend" in s["name"])
    assert status["values"]["keyframe_geometry"] == "predicted", status  # space-aware on the model's depth
    assert status["values"]["last_update_mode"] == "rgb_pose"


def test_full_refuses_a_cpu_in_one_line_and_base_names_the_missing_weights(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: full is allowed")
    with pytest.raises(BackendUnavailableError) as err:
        create_backend("model", _cfg("model.name=full", *SIZE))
    message = str(err.value)
    assert "\n" not in message and "needs a CUDA GPU" in message and "model.allow_full_on_cpu" in message
    with pytest.raises(BackendUnavailableError, match="needs a local DINOv3 checkpoint: set model.dinov3_path"):
        create_backend("model", _cfg("model.name=full", "model.allow_full_on_cpu=true", *SIZE))
    with pytest.raises(BackendUnavailableError, match="model.dinov3_path"):
        create_backend("model", _cfg("model.name=base", *SIZE))

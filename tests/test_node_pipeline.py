"""The node serves a pipeline model (``base``, tiny) on real ROS 2 middleware.

A tiny ``base`` (DINOv3 and a Qwen2 causal LM from tiny configs, saved to local folders as real
checkpoints with a tokenizer; our own parts at the registered sizes) is saved as a training
checkpoint and served with ``node.backend: model``, ``model.name: base`` and ``node.model_path``.
``vln_heatmap_replay --no-depth`` publishes the real sequence's colour, CameraInfo and odometry.
The node's heatmaps and goal heatmap must equal (1e-4 of the peak) the same checkpoint's model
called directly on the same window (keyframes + current frame, as the keyframe arrays name
them); diagnostics must name the model, its load time and per-stage times.
"""
from __future__ import annotations

import json
import numpy as np
import pytest
import torch

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) is not installed")

from ros_helpers import (  # noqa: E402
    RosTestNode,
    node_command,
    real_rgbd_dir,
    start_process,
    stop_process,
    unique_domain_id,
)
from test_models import _save_tiny_tokenizer, tiny_dinov3  # noqa: E402
from test_node_learned import CAMERA_FRAME, Probe, _frame, _params_file  # noqa: E402
from vln_core.backends.window_backend import WindowModelBackend  # noqa: E402
from vln_core.config import config_to_dict, load_config  # noqa: E402
from vln_core.data.episode import read_episode  # noqa: E402
from vln_core.geometry.camera import PinholeCamera  # noqa: E402
from vln_core.models import build_model  # noqa: E402
from vln_core.models.reprojected_heatmaps import HEATMAP_LOG_EPS  # noqa: E402
from vln_core.models.shipped import load_model_checkpoint  # noqa: E402
from vln_core.train.checkpoint import save_checkpoint  # noqa: E402
from vln_heatmap import msg_conversions as conv  # noqa: E402
from vln_heatmap.replay import base_poses_for_node, mount_matrix  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

INSTRUCTION = "go to the chair"
SIZES = ("video.frame_size:=[56, 56]", "video.total_frames:=6", "video.keyframes:=3")
PARAMETERS = ("node.backend:=model", "node.learned_mode:=rgb_pose", "node.inference_rate_hz:=2.0",
              "node.max_stamp_gap_s:=0.01", *SIZES)


def _tiny_base_checkpoint(tmp_path, params) -> tuple[tuple[str, ...], object]:
    """Local DINOv3 and LLM folders, a checkpoint of a base model built on them, and the node parameters."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tiny_dinov3().save_pretrained(str(tmp_path / "dinov3"))
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1, bos_token_id=1, eos_token_id=2)
                     ).save_pretrained(str(tmp_path / "llm"))
    _save_tiny_tokenizer(tmp_path / "llm")
    parameters = (*PARAMETERS, "model.name:=base", f"model.dinov3_path:={tmp_path / 'dinov3'}",
                  f"model.llm_path:={tmp_path / 'llm'}", f"node.model_path:={tmp_path / 'base.pt'}")
    cfg = load_config(params, [p.replace(":=", "=") for p in parameters])
    torch.manual_seed(1)
    model = build_model(cfg)
    save_checkpoint(tmp_path / "base.pt", {"model": model.state_dict(), "config": config_to_dict(cfg)})
    return parameters, cfg


def test_node_serves_a_tiny_base_with_heatmaps_equal_to_the_model(tmp_path):
    if not (real_rgbd_dir() / "intrinsics.K.txt").is_file():
        pytest.skip(f"real RGB-D sequence not found at {real_rgbd_dir()} (set VLN_REAL_RGBD_DIR)")
    params = _params_file(tmp_path)
    parameters, cfg = _tiny_base_checkpoint(tmp_path, params)
    assert cfg.model.name == "base" and tuple(cfg.video.frame_size) == (56, 56)
    domain_id = unique_domain_id()
    node_log, replay_log, manifest = tmp_path / "node.log", tmp_path / "replay.log", tmp_path / "manifest.json"
    proc = start_process(node_command(*parameters, params_file=params), domain_id, node_log)
    ros = RosTestNode("pipeline_node_probe", domain_id)
    probe = Probe(ros)
    replay = None
    try:
        up = ros.spin_until(lambda: probe.diagnostics or proc.poll() is not None, timeout_s=90)
        assert up and proc.poll() is None, f"node did not come up:\n{node_log.read_text(errors='replace')}"
        replay = start_process(
            ["-m", "vln_heatmap.replay", str(real_rgbd_dir()), "--loop", "--no-depth", "--manifest", str(manifest),
             "--params-file", str(params), "--camera-frame", CAMERA_FRAME, "--instruction", INSTRUCTION],
            domain_id, replay_log)
        assert ros.spin_until(lambda: len(probe.heatmaps) >= 5 or proc.poll() is not None, 120), (
            f"{len(probe.heatmaps)} outputs\n{node_log.read_text(errors='replace')[-3000:]}")
        replay_code = stop_process(replay, timeout=20)

        def settled() -> bool:
            n = len(probe.heatmaps)
            return (int(probe.status("output")["values"].get("outputs", -1)) == n == len(probe.goals)
                    and len(probe.keyframe_stamps) == n)

        ros.spin_until(settled, 20)
        assert replay_code == 0, replay_log.read_text(errors="replace")
        assert proc.poll() is None, node_log.read_text(errors="replace")[-3000:]
        backend_status = probe.status("backend")
    finally:
        if replay is not None:
            stop_process(replay, timeout=20)
        code = stop_process(proc, timeout=20)
        ros.close()
    assert code in (0, -2, 130), node_log.read_text(errors="replace")[-3000:]

    values = backend_status["values"]
    assert values["model"] == f"base (checkpoint {tmp_path / 'base.pt'})", values
    assert values["load_time"].endswith(" s") and "geometry" in values["stage_times"], values
    assert values["last_update_mode"] == "rgb_pose" and values["keyframe_geometry"] == "predicted", values

    # --- the same checkpoint called directly on the window each output names
    frames = json.loads(manifest.read_text())["frames"]
    position = {f["stamp_ns"]: n for n, f in enumerate(frames)}
    episode = read_episode(real_rgbd_dir())
    H, W = episode.image_size
    K_msg, width, height = conv.camera_info_msg_to_K(conv.camera_info_msg(episode.K, W, H, 0, CAMERA_FRAME))
    K = PinholeCamera.from_K(K_msg, width=width, height=height).K
    T_base_cam = mount_matrix(cfg)
    base_poses, _ = base_poses_for_node(episode, T_base_cam)
    model, _ = load_model_checkpoint(tmp_path / "base.pt", cfg)
    window = WindowModelBackend(cfg, model=model)

    def frame(stamp: int):
        return _frame(episode, frames[position[stamp]]["index"], stamp, position[stamp], K, T_base_cam, base_poses)

    worst = {"heatmaps": 0.0, "goal": 0.0}
    assert len(probe.heatmaps) >= 5
    for msg, goal_msg in zip(probe.heatmaps, probe.goals):
        stamp = conv.stamp_ns(msg)
        key_stamps = probe.keyframe_stamps[stamp]
        assert 1 <= len(key_stamps) <= 3 and all(s in position and s <= stamp for s in key_stamps)
        inputs = window.window_inputs(frame(stamp), [frame(s) for s in key_stamps], INSTRUCTION)
        with torch.no_grad():
            direct = model(inputs)
        want = (direct.heatmap_logits[0].exp() - HEATMAP_LOG_EPS).numpy()  # the logits are log(heatmap + eps)
        got = conv.image_msg_to_heatmaps(msg, len(key_stamps))
        assert got.shape == want.shape == (len(key_stamps), 56, 56)
        worst["heatmaps"] = max(worst["heatmaps"], float(np.abs(got - want).max()) / max(float(want.max()), 1e-12))
        goal = torch.softmax(direct.goal_logits[0].flatten(), 0).view(56, 56).numpy()
        got_goal = conv.image_msg_to_heatmaps(goal_msg, 1)[0]
        worst["goal"] = max(worst["goal"], float(np.abs(got_goal - goal).max()) / float(goal.max()))
    assert max(len(s) for s in probe.keyframe_stamps.values()) >= 2  # the memory held several keyframes
    assert all(v <= 1e-4 for v in worst.values()), worst

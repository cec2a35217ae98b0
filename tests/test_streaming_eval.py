"""Streaming evaluation (``training/evaluate_stream.py``): the real sequence through the node's
runtime, frame by frame, scored against the geometry core's exact heatmaps.

* the geometry backend fed the recorded depth gives the exact heatmaps (CC 1): the scoring
  compares the same keyframes of the same current frame;
* the shipped model's multi-view depth beats its own monocular depth on the real stream
  (measured on all 50 frames: fused 0.30, monocular 0.15; the first 24 frames are checked here);
* bad input: exit 2 and one line.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vln_core.config import load_config
from vln_core.data.episode import read_episode
from vln_core.models.shipped import SHIPPED_CHECKPOINT
from vln_core.train.streaming_eval import stream_episode

REPO = Path(__file__).resolve().parents[1]
NODE_PARAMS = REPO / "ros2_ws" / "src" / "vln_heatmap" / "config" / "vln_heatmap.yaml"
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def first_frames(real_rgbd_dir, tmp_path_factory) -> Path:
    """The first 24 frames of the real sequence as a posed folder of their own."""
    out = tmp_path_factory.mktemp("box24")
    shutil.copy(real_rgbd_dir / "intrinsics.K.txt", out)
    ids = sorted({p.name.split(".")[0] for p in real_rgbd_dir.glob("frame-*.color.png")})[:24]
    for name in ids:
        for kind in ("color.png", "depth.png", "pose.txt"):
            shutil.copy(real_rgbd_dir / f"{name}.{kind}", out)
    return out


def _cfg(*overrides: str):
    return load_config(NODE_PARAMS, ["node.publish_overlay=false", *overrides])


def test_geometry_backend_with_depth_scores_exactly_one(first_frames):
    score = stream_episode(read_episode(first_frames), _cfg("node.backend=geometry"), 2, depth=True)
    assert len(score.outputs) == 12
    ccs = [c for o in score.outputs for c in o["cc_per_keyframe"] if c is not None]
    assert len(ccs) >= 12 and np.allclose(ccs, 1.0, atol=1e-4), ccs


def test_multiview_depth_beats_monocular_on_the_real_stream(first_frames):
    episode = read_episode(first_frames)
    cc = {}
    for source in ("fused", "monocular"):
        cfg = _cfg("node.backend=model", "node.learned_mode=rgb_pose", f"node.model_path={SHIPPED_CHECKPOINT}",
                   f"model.depth_source={source}")
        score = stream_episode(episode, cfg, 1)
        assert len(score.outputs) == 24 and all(o["backend"] == "model" for o in score.outputs)
        cc[source] = score.cc_mean
    assert cc["fused"] > cc["monocular"] + 0.05, cc


def test_cli_refuses_a_missing_folder_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "training" / "evaluate_stream.py"), "--data",
                           str(tmp_path / "absent"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "absent" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()

"""tools/infer_video.py on real files: an mp4 written here from the real RGB-D sequence (learned
model, colour only), the posed folder itself (geometry path = the geometry core), and bad input
(exit 2, one line, no traceback)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vln_core.data.posed_images import list_frame_ids, load_posed_sequence

REPO = Path(__file__).resolve().parents[1]
REAL_RGBD = REPO.parent / "shared" / "data" / "real_rgbd_box"
needs_real = pytest.mark.skipif(not REAL_RGBD.is_dir(), reason=f"real RGB-D sequence not found at {REAL_RGBD}")


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "infer_video.py"), *args, "--no-progress"],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def write_mp4(path: Path, frames: list[np.ndarray], fps: float = 15.0) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


def check_outputs(out: Path, name: str, n_key: int) -> dict:
    summary = json.loads((out / f"{name}_summary.json").read_text())
    assert (out / f"{name}_heatmaps.png").is_file()
    for k in range(n_key):
        img = cv2.imread(str(out / f"{name}_heatmap_{k}.png"))
        assert img is not None and img.shape[2] == 3
    sel = np.load(out / f"{name}_selected_indices.npy")
    geo = np.load(out / f"{name}_geometry_info.npz")
    assert sel.shape == (n_key,) and len(set(sel.tolist())) == n_key
    assert geo["depth"].shape[0] == summary["frames"] and np.isfinite(geo["depth"]).all() and (geo["depth"] >= 0).all()
    assert np.allclose(geo["T_cur_cam"][-1], np.eye(4), atol=1e-5)  # the current frame is the reference
    for kf in summary["keyframes"]:
        total = kf["in_view"] + kf["hidden"] + kf["out_of_view"]
        assert abs(total - 1.0) < 1e-3 or total == 0
    return summary


@needs_real
def test_mp4_from_the_real_sequence_with_the_learned_model(tmp_path):
    seq = load_posed_sequence(REAL_RGBD)
    video = tmp_path / "box.mp4"
    write_mp4(video, list(seq.colors))
    done = run(str(video), "--out", str(tmp_path / "out"), "--frames", "12", "--keyframes", "4",
               "--instruction", "look into the box")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = check_outputs(tmp_path / "out", "box", 4)
    assert summary["backend"] == "model" and summary["mode"] == "rgb_only" and summary["source_kind"] == "video"
    assert summary["source_frames"] == len(seq.colors) and summary["instruction"] == "look into the box"
    assert all(k["frame"] < len(seq.colors) for k in summary["keyframes"])


@needs_real
def test_tiny_base_with_random_weights_writes_the_design_outputs_through_every_stage(tmp_path):
    """A plumbing check: configs/tiny_base.yaml with --random-init runs the pipeline (geometry
    stage, its own keyframes, the one reprojection, DINOv3 + fusion + Qwen2 reasoning) on a video
    and writes the design's outputs, plus the goal heatmap and the waypoints."""
    seq = load_posed_sequence(REAL_RGBD)
    video = tmp_path / "box.mp4"
    write_mp4(video, list(seq.colors[:40]))
    out = tmp_path / "tiny"
    done = run(str(video), "--out", str(out), "--backend", "model", "--config", "configs/tiny_base.yaml",
               "--random-init", "--instruction", "go to the box")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "model base (RANDOM WEIGHTS: plumbing check) (rgb_only)" in done.stdout
    summary = check_outputs(out, "box", 4)
    assert summary["model"] == "base" and summary["random_init"] is True and summary["frames"] == 8
    assert len(summary["waypoints_xy_m"]) == 20 and np.isfinite(np.array(summary["waypoints_xy_m"])).all()
    assert cv2.imread(str(out / "box_goal_heatmap.png")).shape == (*seq.colors.shape[1:3], 3)
    refused = run(str(video), "--out", str(tmp_path / "no"), "--random-init")
    assert refused.returncode == 2 and "--random-init is for the pipeline models" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "no").exists()


@needs_real
def test_posed_folder_with_the_geometry_path_matches_the_geometry_core(tmp_path):
    from vln_core.config import load_config
    from vln_core.geometry.transforms import invert_pose
    from vln_core.heatmaps import heatmaps_from_config
    from vln_core.preprocess import preprocess_frames

    done = run(str(REAL_RGBD), "--out", str(tmp_path), "--backend", "geometry", "--frames", "10", "--keyframes", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = check_outputs(tmp_path, "real_rgbd_box", 3)
    assert summary["mode"] == "measured"
    ids = summary["frames_used"]
    seq = load_posed_sequence(REAL_RGBD, frame_ids=ids)
    cfg = load_config(REPO / "ros2_ws/src/vln_heatmap/config/vln_heatmap.yaml")
    pre = preprocess_frames(list(seq.colors), list(seq.depths), seq.K, cfg.video.frame_size)
    T = torch.from_numpy(seq.poses).float()
    T_cur = invert_pose(T[-1]) @ T
    kf = torch.tensor([k["position"] for k in summary["keyframes"]])
    ref = heatmaps_from_config(pre.depths[kf], pre.K, T_cur[kf], pre.K, torch.eye(4), cfg.video.frame_size,
                               pre.depths[-1], cfg=cfg.heatmap)
    for j, k in enumerate(summary["keyframes"]):
        assert k["in_view"] == pytest.approx(float(ref.in_view_fraction[j]), abs=1e-4)
        assert k["out_of_view"] == pytest.approx(float(ref.out_of_view_fraction[j]), abs=1e-4)
    geo = np.load(tmp_path / "real_rgbd_box_geometry_info.npz")
    assert np.allclose(geo["depth"], pre.depths.numpy()) and np.allclose(geo["T_cur_cam"], T_cur.numpy(), atol=1e-5)


def test_bad_input_is_exit_2_and_one_line(tmp_path):
    cases = {}
    cases["no such file"] = (str(tmp_path / "missing.mp4"),)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    cases["cannot open this video"] = (str(junk),)
    short = tmp_path / "short.mp4"
    write_mp4(short, [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(5)])
    cases["fewer than the 16 asked for"] = (str(short), "--frames", "16")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i in range(6):
        size = (48, 64) if i != 3 else (40, 64)
        cv2.imwrite(str(mixed / f"img_{i:03d}.png"), np.full((*size, 3), 30 * i, np.uint8))
    cases["all frames must have one size"] = (str(mixed), "--frames", "6", "--keyframes", "2")
    cases["needs a posed RGB-D folder"] = (str(short), "--frames", "4", "--keyframes", "2", "--backend", "geometry")
    cases["needs --model-path"] = (str(short), "--frames", "4", "--keyframes", "2", "--backend", "vggt")
    for expected, args in cases.items():
        done = run(*args, "--out", str(tmp_path / "out"), timeout=120)
        assert done.returncode == 2, (expected, done.stderr[-1000:])
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], (expected, done.stderr[-1000:])
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # nothing written on bad input

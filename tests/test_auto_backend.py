"""node.backend auto, keyframes from predicted geometry, lazy overlay: the runtime without ROS.

The learned backend is the shipped checkpoint (models/embedded/checkpoint.pt) on the real posed
RGB-D sequence; a fake clock drives the stream ages that ``auto`` decides by.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vln_core.config import load_config
from vln_core.data.episode import read_episode
from vln_core.models.shipped import SHIPPED_CHECKPOINT
from vln_core.backends import AutoBackend
from vln_core.runtime import NavigationRuntime

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO / "ros2_ws" / "src" / "vln_heatmap" / "config" / "vln_heatmap.yaml"
STEP_S = 0.25  # fake seconds between frames


def real_rgbd_dir() -> Path:
    import os

    env = os.environ.get("VLN_REAL_RGBD_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "real_rgbd_box"


@pytest.fixture(scope="module")
def episode():
    if not (real_rgbd_dir() / "intrinsics.K.txt").is_file():
        pytest.skip(f"real RGB-D sequence not found at {real_rgbd_dir()} (set VLN_REAL_RGBD_DIR)")
    assert SHIPPED_CHECKPOINT.is_file(), f"the shipped checkpoint {SHIPPED_CHECKPOINT} is missing"
    return read_episode(real_rgbd_dir())


def _cfg(*overrides: str):
    return load_config(PARAMS_FILE, ["node.publish_overlay=false", "video.total_frames=8", "video.keyframes=4",
                                     "node.model_path=", *overrides])


class Feeder:
    """Feeds episode frames into a runtime on a fake clock."""

    def __init__(self, rt: NavigationRuntime, episode, now: list[float]):
        self.rt, self.ep, self.now = rt, episode, now
        H, W = episode.image_size
        rt.set_camera_info(episode.K, W, H)
        self.base = episode.poses @ np.linalg.inv(rt.T_base_cam)

    def stamp(self, i: int) -> int:
        return 1_000_000_000 + i * 100_000_000

    def feed(self, i: int, depth: bool, odometry: bool = True):
        j = i % len(self.ep)
        if odometry:
            self.rt.add_odometry(self.stamp(i), self.base[j])
        self.rt.add_image(self.stamp(i), "camera", self.ep.color(j))
        if depth:
            self.rt.add_depth(self.stamp(i), self.ep.depth(j))
        self.now[0] += STEP_S
        return self.rt.step()


def _backend_status(rt: NavigationRuntime) -> dict:
    return next(s for s in rt.diagnostics() if "backend" in s["name"])


def test_auto_runs_geometry_with_depth_and_poses_and_the_model_without_depth(episode):
    now = [0.0]
    rt = NavigationRuntime(_cfg("node.backend=auto", "node.auto_learned_heads=false"), clock=lambda: now[0])
    assert isinstance(rt.backend, AutoBackend)
    feeder = Feeder(rt, episode, now)

    # RGB-D + odometry: geometry from the first frame on; without the learned heads on that path
    # the learned model is not even loaded
    for i in range(6):
        out = feeder.feed(i, depth=True)
        assert out is not None, rt.waiting_reason
        assert out.backend == "auto (geometry)" and out.waypoints is None and out.goal_heatmap is None
    status = _backend_status(rt)
    assert "geometry: depth and poses paired" in status["message"], status
    assert status["values"]["auto_learned_backend"] == "model (not loaded)"
    assert status["values"]["keyframe_geometry"] == "measured"

    # depth stops: the frames wait for it (geometry) until depth is 2 s old, then the model runs
    # from colour + odometry, with the keyframe memory cleared and rebuilt on predicted geometry
    outputs = []
    for i in range(6, 30):
        out = feeder.feed(i, depth=False)
        if out is not None:
            outputs.append(out)
    learned = [o for o in outputs if o.backend == "auto (model)"]
    assert learned and all(o.backend == "auto (model)" for o in outputs[outputs.index(learned[0]):])
    assert len(learned) >= 10, [o.backend for o in outputs]
    status = _backend_status(rt)
    assert "model (rgb_pose): no depth image for" in status["message"], status
    assert status["values"]["auto_learned_backend"] == "model (loaded)"
    assert status["values"]["keyframe_geometry"] == "predicted"
    assert status["values"]["last_update_mode"] == "rgb_pose"
    assert rt.error_count("backend_switched") == 1
    assert "geometry -> model (rgb_pose)" in rt.last_error("backend_switched")
    assert rt.error_count("space_aware_unavailable") == 0  # space-aware on predicted depth, no uniform fallback
    assert rt.error_count("step_failed") == 0, rt.last_error("step_failed")
    last = learned[-1]
    K = len(last.keyframe_indices)
    assert 2 <= K <= 4 and last.heatmaps.heatmap.shape == (K, 224, 224)
    assert set(last.keyframe_indices) <= {o.seq for o in learned}  # memory rebuilt after the switch
    assert last.waypoints.shape == (20, 2) and np.isfinite(last.waypoints).all()
    assert last.goal_heatmap.shape == (224, 224) and abs(float(last.goal_heatmap.sum()) - 1) < 1e-4
    assert last.T_odom_base is not None  # the waypoints can go into the odometry frame

    # depth is back: geometry again
    for i in range(30, 33):
        out = feeder.feed(i, depth=True)
    assert out is not None and out.backend == "auto (geometry)"
    assert rt.error_count("backend_switched") == 2
    rt.close()


def test_auto_with_depth_still_gets_the_learned_goal_and_waypoints(episode):
    """node.auto_learned_heads (default on): an RGB-D robot gets the exact heatmaps from depth and
    the learned goal heatmap and waypoints, the same as the learned backend's heads called directly."""
    from vln_core.backends import CameraFrame, create_backend

    now = [0.0]
    cfg = _cfg("node.backend=auto")
    assert cfg.node.auto_learned_heads
    rt = NavigationRuntime(cfg, clock=lambda: now[0])
    feeder = Feeder(rt, episode, now)
    outputs = [feeder.feed(i, depth=True) for i in range(6)]
    assert all(o is not None and o.backend == "auto (geometry)" for o in outputs), rt.waiting_reason
    status = _backend_status(rt)
    assert status["values"]["auto_learned_backend"] == "model (loaded)"
    assert status["values"]["keyframe_geometry"] == "measured"
    assert "predicts no waypoints" not in status["message"]

    direct = create_backend("model", cfg)
    for i, out in enumerate(outputs):
        assert out.waypoints.shape == (20, 2) and np.isfinite(out.waypoints).all()
        assert abs(float(out.goal_heatmap.sum()) - 1) < 1e-4
        frame = CameraFrame(stamp_ns=feeder.stamp(i), frame_id="camera", rgb=episode.color(i), K=episode.K,
                            T_wc=out.T_wc, T_odom_base=out.T_odom_base, seq=out.seq)
        goal, waypoints = direct.goal_and_waypoints(frame, "")
        np.testing.assert_allclose(out.waypoints, waypoints, atol=1e-5)
        np.testing.assert_allclose(out.goal_heatmap, goal, atol=1e-6)
    rt.close()


def test_auto_waits_for_depth_first_then_runs_colour_only(episode):
    now = [0.0]
    rt = NavigationRuntime(_cfg("node.backend=auto"), clock=lambda: now[0])
    feeder = Feeder(rt, episode, now)
    out = feeder.feed(0, depth=False, odometry=False)
    assert out is None and "auto: waiting up to 2 s for depth and poses" in rt.waiting_reason
    outputs = [feeder.feed(i, depth=False, odometry=False) for i in range(1, 16)]
    got = [o for o in outputs if o is not None]
    assert got, rt.waiting_reason
    status = _backend_status(rt)
    assert "model (rgb_only): no depth image received yet, no poses received yet" in status["message"], status
    assert status["values"]["last_update_mode"] == "rgb_only"
    assert rt.error_count("backend_switched") == 0  # a first choice is no switch
    for o in got:
        assert o.T_wc is None and o.T_odom_base is None  # the waypoints stay in base_link
        assert o.waypoints.shape == (20, 2) and np.isfinite(o.heatmaps.heatmap.numpy()).all()
    assert rt.error_count("space_aware_unavailable") == 0 and rt.voxel_size is not None
    rt.close()


def test_model_keyframes_on_predicted_geometry_are_never_recorded_as_depth(episode, tmp_path):
    """The learned backend's predicted depth drives space-aware sampling, but the recorder
    (node.record) writes only what was measured: no depth for a colour-only robot."""
    now = [0.0]
    rt = NavigationRuntime(_cfg("node.backend=model", "node.record=true", f"node.record_dir={tmp_path}"),
                           clock=lambda: now[0])
    feeder = Feeder(rt, episode, now)
    seqs = set()
    for i in range(0, 48, 2):  # every other frame: more motion between updates
        out = feeder.feed(i, depth=False)
        assert out is not None, rt.waiting_reason
        seqs.add(out.seq)
    memory = next(s for s in rt.diagnostics() if "backend" in s["name"])["values"]
    assert memory["keyframe_geometry"] == "predicted" and rt.voxel_size is not None
    # space-aware, not uniform: the memory keeps only frames that add new voxels of the prediction
    assert int(memory["memory_offered"]) == len(seqs) and int(memory["memory_coverage_voxels"]) > 0
    assert len(out.keyframe_indices) == 4 and set(out.keyframe_indices) <= seqs
    rt.close()
    episodes = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert episodes, list(tmp_path.iterdir())
    recorded = [read_episode(p) for p in episodes]
    assert sum(len(e) for e in recorded) == len(seqs)
    assert not any(e.has_depth for e in recorded) and all(e.depth(0) is None for e in recorded)


def test_overlay_is_drawn_only_when_asked(episode):
    now = [0.0]
    rt = NavigationRuntime(_cfg("node.backend=geometry", "node.publish_overlay=true"), clock=lambda: now[0])
    feeder = Feeder(rt, episode, now)
    rt.add_odometry(feeder.stamp(0), feeder.base[0])
    rt.add_image(feeder.stamp(0), "camera", episode.color(0))
    rt.add_depth(feeder.stamp(0), episode.depth(0))
    out = rt.step(overlay=False)  # the node: nobody subscribes to ~/overlay
    assert out is not None and out.overlay is None and out.latency_ms["overlay"] < 1.0
    rt.add_odometry(feeder.stamp(1), feeder.base[1])
    rt.add_image(feeder.stamp(1), "camera", episode.color(1))
    rt.add_depth(feeder.stamp(1), episode.depth(1))
    out = rt.step()  # default: node.publish_overlay
    assert out is not None and out.overlay is not None and out.overlay.dtype == np.uint8 and out.overlay.ndim == 3
    values = next(s for s in rt.diagnostics() if s["name"].endswith("output"))["values"]
    assert int(values["overlays_drawn"]) == 1 and int(values["overlays_skipped_no_subscriber"]) == 1
    rt.close()


def test_auto_names_a_learned_backend_that_cannot_load(episode, tmp_path):
    now = [0.0]
    missing = tmp_path / "no_such_checkpoint.pt"
    rt = NavigationRuntime(_cfg("node.backend=auto", f"node.model_path={missing}"), clock=lambda: now[0])
    feeder = Feeder(rt, episode, now)
    outputs = [feeder.feed(i, depth=False) for i in range(12)]
    assert all(o is None for o in outputs)
    assert rt.error_count("step_failed") >= 1
    message = rt.last_error("step_failed")
    assert "learned backend 'model' could not be created" in message and str(missing) in message, message
    status = _backend_status(rt)
    assert status["values"]["auto_learned_backend"] == "model (failed to load)"
    # depth arrives: geometry serves, the failed model is not retried
    out = feeder.feed(12, depth=True)
    assert out is not None and out.backend == "auto (geometry)"
    rt.close()

"""The node's ROS-free runtime: pairing, pose interpolation, newest-frame policy, bad inputs,
heatmaps equal to the geometry reference, registry, recorder, diagnostics, threading."""
from __future__ import annotations

import math
import threading
import time

import cv2
import numpy as np
import pytest
import torch

from vln_core.config import load_config
from vln_core.data.episode import list_episodes, read_episode
from vln_core.data.posed_images import load_posed_sequence
from vln_core.errors import InputError
from vln_core.geometry.camera import PinholeCamera
from vln_core.geometry.tf_buffer import rotation_to_quat
from vln_core.geometry.transforms import camera_pose_from_base, pose_from_xyz_quat
from vln_core.heatmaps import frame_indexed_heatmaps
from vln_core.backends import (
    BackendUnavailableError,
    CameraFrame,
    GeometryBackend,
    create_backend,
    register_backend,
    registered_backends,
)
from vln_core.runtime import EpisodeRecorder, NavigationRuntime, interpolate_pose, pose_at
from vln_core.runtime.diagnostics import LEVEL_BYTES

torch.set_num_threads(1)

# ------------------------------------------------------------------------------ synthetic scene
H, W = 48, 64
K_SYN = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])
# planes n . p = c in the odom frame (REP 103, z up): floor, far wall, two side walls
PLANES = [((0.0, 0.0, 1.0), 0.0), ((1.0, 0.0, 0.0), 5.0), ((0.0, 1.0, 0.0), 2.5), ((0.0, -1.0, 0.0), 2.5)]
DT_NS = 100_000_000  # 10 Hz camera
T0_NS = 5_000_000_000


def base_pose(i: int) -> np.ndarray:
    """Robot drives forward slowly while turning left: T_odom_base of frame i."""
    yaw = 0.06 * i
    c, s = math.cos(yaw), math.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    T[:3, 3] = [0.05 * i, 0.02 * i, 0.0]
    return T


def plane_depth(K: np.ndarray, T_wc: np.ndarray, h: int = H, w: int = W) -> np.ndarray:
    """Exact depth (z along the optical axis) of the nearest plane in front of the camera."""
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # (h, w, 3), z = 1
    dirs = rays @ T_wc[:3, :3].T
    origin = T_wc[:3, 3]
    depth = np.full((h, w), np.inf)
    for n, c in PLANES:
        n = np.asarray(n)
        denom = dirs @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (c - origin @ n) / denom
        depth = np.where((z > 1e-6) & (z < depth), z, depth)
    depth[~np.isfinite(depth)] = 0.0
    return depth.astype(np.float32)


def synthetic_rgb(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 255, (H, W, 3), dtype=np.uint8)


def make_cfg(*overrides: str):
    return load_config(None, ["node.backend=geometry", "node.publish_overlay=false", "video.total_frames=8", "video.keyframes=4",
                               *overrides])


class Feeder:
    """Feeds a runtime the synthetic robot: odometry at the image stamps, depth 3 ms after."""

    def __init__(self, rt: NavigationRuntime, K: np.ndarray = K_SYN, size=(H, W)) -> None:
        self.rt = rt
        self.K = K
        self.size = size
        self.frames: dict[int, dict] = {}  # runtime seq -> what was fed
        self.seq = 0

    def expected_T_wc(self, i: int) -> np.ndarray:
        return camera_pose_from_base(base_pose(i), self.rt.T_base_cam).numpy()

    def feed(self, i: int, *, depth: bool = True, odometry: bool = True, stamp_ns: int | None = None) -> int:
        stamp = T0_NS + i * DT_NS if stamp_ns is None else stamp_ns
        T_wc = self.expected_T_wc(i)
        d = plane_depth(self.K, T_wc, *self.size)
        if odometry:
            self.rt.add_odometry(stamp, base_pose(i), (0.5, 0.6))
        rgb = synthetic_rgb(i) if self.size == (H, W) else np.zeros((*self.size, 3), np.uint8)
        self.rt.add_image(stamp, "camera_optical", rgb)
        if depth:
            self.rt.add_depth(stamp + 3_000_000, d)
        seq = self.seq
        self.frames[seq] = {"i": i, "stamp": stamp, "depth": d, "T_wc": T_wc, "rgb": rgb}
        self.seq += 1
        return seq


def new_runtime(*overrides: str, camera_info: bool = True) -> tuple[NavigationRuntime, Feeder]:
    rt = NavigationRuntime(make_cfg(*overrides))
    if camera_info:
        rt.set_camera_info(K_SYN, W, H)
    return rt, Feeder(rt)


def reference_heatmaps(rt: NavigationRuntime, feeder: Feeder, out, grid=None):
    """frame_indexed_heatmaps for the output's current frame and keyframes, computed directly."""
    cur = feeder.frames[out.seq]
    keys = [feeder.frames[s] for s in out.keyframe_indices]
    K_cur, size = feeder.K, feeder.size
    depth_of = lambda f: f["depth"]  # noqa: E731
    if grid is not None:
        h, w = feeder.size
        K_cur = PinholeCamera.from_K(feeder.K, w, h).resized(grid[1], grid[0]).K
        size = grid
        depth_of = lambda f: cv2.resize(f["depth"], (grid[1], grid[0]), interpolation=cv2.INTER_NEAREST_EXACT)  # noqa: E731
    hc = rt.cfg.heatmap
    return frame_indexed_heatmaps(
        torch.from_numpy(np.stack([depth_of(f) for f in keys])),
        torch.from_numpy(np.stack([K_cur] * len(keys))).float(),
        torch.from_numpy(np.stack([f["T_wc"] for f in keys])).float(),
        torch.from_numpy(K_cur).float(),
        torch.from_numpy(cur["T_wc"]).float(),
        size,
        torch.from_numpy(depth_of(cur)),
        sigma_px=hc.sigma_px, source_stride=hc.source_stride,
        occlusion_margin_m=hc.occlusion_margin_m, occlusion_margin_rel=hc.occlusion_margin_rel,
        min_overlap_fraction=hc.min_overlap_fraction,
    )


def assert_same_heatmaps(got, ref) -> None:
    for name in ("heatmap", "occluded", "in_view_fraction", "occluded_fraction", "out_of_view_fraction"):
        np.testing.assert_allclose(np.asarray(getattr(got, name)), np.asarray(getattr(ref, name)), atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(np.asarray(got.has_overlap), np.asarray(ref.has_overlap))
    np.testing.assert_array_equal(np.asarray(got.num_valid), np.asarray(ref.num_valid))


# ------------------------------------------------------------------------------ pose interpolation
def _yaw(T: np.ndarray) -> float:
    return math.atan2(T[1, 0], T[0, 0])


def test_interpolate_pose_is_lerp_and_slerp():
    T0 = base_pose(0)
    T1 = np.eye(4)
    T1[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # yaw 90 deg
    T1[:3, 3] = [2.0, -1.0, 0.5]
    mid = interpolate_pose(T0, T1, 0.25)
    assert _yaw(mid) == pytest.approx(math.radians(22.5), abs=1e-9)
    np.testing.assert_allclose(mid[:3, 3], [0.5, -0.25, 0.125], atol=1e-12)
    np.testing.assert_allclose(mid[:3, :3] @ mid[:3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(interpolate_pose(T0, T1, 0.0), T0, atol=1e-12)
    np.testing.assert_allclose(interpolate_pose(T0, T1, 1.0), T1, atol=1e-12)


def test_pose_at_brackets_nearest_and_tolerance():
    stamps = [100, 200]
    poses = [base_pose(0), base_pose(10)]
    T, _, how = pose_at(stamps, poses, 150, 60)
    assert how == "interpolated"
    np.testing.assert_allclose(T, interpolate_pose(poses[0], poses[1], 0.5))
    T, _, how = pose_at(stamps, poses, 230, 60)  # after the last: nearest, no extrapolation
    assert how == "nearest"
    np.testing.assert_allclose(T, poses[1])
    T, _, why = pose_at(stamps, poses, 300, 60)
    assert T is None and "0.000 s before" in why


def test_runtime_camera_pose_at_mid_stamp_interpolates_odometry():
    rt, _ = new_runtime()
    T_a = base_pose(0)
    T_b = np.eye(4)
    T_b[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # turned 90 deg left
    T_b[:3, 3] = [1.0, 0.4, 0.0]
    rt.add_odometry(T0_NS, T_a)
    rt.add_odometry(T0_NS + 80_000_000, T_b)
    stamp = T0_NS + 20_000_000  # a quarter of the way
    T_mid = np.eye(4)
    q = math.radians(22.5)
    T_mid[:3, :3] = [[math.cos(q), -math.sin(q), 0.0], [math.sin(q), math.cos(q), 0.0], [0.0, 0.0, 1.0]]
    T_mid[:3, 3] = [0.25, 0.1, 0.0]
    T_wc = camera_pose_from_base(T_mid, rt.T_base_cam).numpy()
    rt.add_image(stamp, "cam", synthetic_rgb(0))
    rt.add_depth(stamp, plane_depth(K_SYN, T_wc))
    out = rt.step()
    assert out is not None, rt.waiting_reason
    np.testing.assert_allclose(out.T_wc, T_wc, atol=1e-9)


# ------------------------------------------------------------------------------ heatmaps = reference
@pytest.mark.parametrize("resolution", ["input", "frame_size"])
def test_step_heatmaps_equal_geometry_reference_synthetic(resolution):
    rt, feeder = new_runtime(f"node.geometry_resolution={resolution}", "video.frame_size=[30,40]")
    outputs = []
    for i in range(14):
        feeder.feed(i)
        out = rt.step()
        assert out is not None, rt.waiting_reason
        outputs.append(out)
    grid = None if resolution == "input" else (30, 40)
    for out in outputs:
        assert out.seq == len([o for o in outputs if o.seq < out.seq])  # every frame processed
        assert 1 <= len(out.keyframe_indices) <= 4
        assert out.keyframe_indices == sorted(out.keyframe_indices)
        assert out.keyframe_stamps == [feeder.frames[s]["stamp"] for s in out.keyframe_indices]
        assert out.waypoints is None and out.goal_heatmap is None
        np.testing.assert_allclose(out.T_wc, feeder.frames[out.seq]["T_wc"], atol=1e-9)
        assert_same_heatmaps(out.heatmaps, reference_heatmaps(rt, feeder, out, grid))
        expected_size = (H, W) if grid is None else grid
        assert tuple(out.heatmaps.heatmap.shape) == (len(out.keyframe_indices), *expected_size)
    # the robot turned ~45 degrees: the memory holds more than the latest frames
    assert outputs[-1].keyframe_indices[0] < 10
    assert set(outputs[-1].latency_ms) >= {"pairing", "memory", "backend", "overlay", "total"}


def test_step_heatmaps_equal_geometry_reference_real(real_rgbd_dir):
    seq = load_posed_sequence(real_rgbd_dir, stride=4, max_frames=10)
    cfg = load_config(None, ["node.backend=geometry", "node.publish_overlay=true", "video.keyframes=4"])
    rt = NavigationRuntime(cfg)
    h, w = seq.image_size
    rt.set_camera_info(seq.K, w, h)
    mount_inv = np.linalg.inv(rt.T_base_cam)
    grid = tuple(cfg.video.frame_size)
    K_grid = PinholeCamera.from_K(seq.K, w, h).resized(grid[1], grid[0]).K
    depth_grid = [cv2.resize(d, (grid[1], grid[0]), interpolation=cv2.INTER_NEAREST_EXACT) for d in seq.depths]
    for i in range(len(seq)):
        stamp = T0_NS + i * DT_NS
        rt.add_odometry(stamp - 5_000_000, seq.poses[i] @ mount_inv)  # T_odom_base so that T_wc = pose
        rt.add_odometry(stamp + 5_000_000, seq.poses[i] @ mount_inv)
        rt.add_image(stamp, "camera_color_optical_frame", seq.colors[i])
        rt.add_depth(stamp, seq.depths[i])
        out = rt.step()
        assert out is not None, rt.waiting_reason
        assert out.seq == i
        np.testing.assert_allclose(out.T_wc, seq.poses[i], atol=1e-6)
        keys = out.keyframe_indices
        ref = frame_indexed_heatmaps(
            np.stack([depth_grid[k] for k in keys]), np.stack([K_grid] * len(keys)).astype(np.float32),
            np.stack([seq.poses[k] for k in keys]).astype(np.float32), K_grid.astype(np.float32),
            seq.poses[i].astype(np.float32), grid, depth_grid[i],
            sigma_px=cfg.heatmap.sigma_px, source_stride=cfg.heatmap.source_stride,
            occlusion_margin_m=cfg.heatmap.occlusion_margin_m, occlusion_margin_rel=cfg.heatmap.occlusion_margin_rel,
            min_overlap_fraction=cfg.heatmap.min_overlap_fraction,
        )
        assert_same_heatmaps(out.heatmaps, ref)
        assert out.overlay is not None and out.overlay.dtype == np.uint8 and out.overlay.shape[2] == 3
        if i in keys:  # the current frame lands on itself almost entirely
            assert float(out.heatmaps.in_view_fraction[keys.index(i)]) > 0.9
    assert len(keys) == 4 and keys[0] < len(seq) - 4  # coverage keeps early frames, not just the latest


# ------------------------------------------------------------------------------ newest frame, drops, ring bound
def test_step_takes_newest_complete_frame_and_counts_drops():
    rt, feeder = new_runtime()
    for i in range(5):
        feeder.feed(i)
    out = rt.step()
    assert out.seq == 4
    assert rt.counters()["dropped_superseded"] == 4
    assert rt.step() is None and rt.waiting_reason == "no new image since the last output"

    feeder.feed(5)  # complete
    feeder.feed(6, depth=False)  # newest, depth still missing
    out = rt.step()
    assert out.seq == 5  # the newest *complete* frame; 6 waits
    assert rt.step() is None and "no depth image" in rt.waiting_reason
    rt.add_depth(feeder.frames[6]["stamp"] + 1_000_000, feeder.frames[6]["depth"])
    out = rt.step()
    assert out.seq == 6
    assert rt.counters()["dropped_superseded"] == 4


def test_ring_never_exceeds_total_frames():
    rt, feeder = new_runtime("video.total_frames=4", "video.keyframes=2")
    for i in range(10):
        feeder.feed(i)
        assert rt.buffered_frames <= 4
    assert rt.buffered_frames == 4
    assert rt.counters()["dropped_overflow"] == 6
    out = rt.step()
    assert out.seq == 9 and rt.counters()["dropped_superseded"] == 3


def test_depth_before_image_is_paired_once_the_pairing_is_final():
    """Depth 20 ms early is used, but only when no closer depth can still come (waited out)."""
    now = [100.0]
    rt = NavigationRuntime(make_cfg(), clock=lambda: now[0])
    rt.set_camera_info(K_SYN, W, H)
    feeder = Feeder(rt)
    T_wc = feeder.expected_T_wc(0)
    rt.add_odometry(T0_NS, base_pose(0))
    rt.add_depth(T0_NS - 20_000_000, plane_depth(K_SYN, T_wc))
    rt.add_image(T0_NS, "cam", synthetic_rgb(0))
    assert rt.step() is None
    assert "depth" in rt.waiting_reason
    now[0] += rt.cfg.node.max_stamp_gap_s + 0.01
    out = rt.step()
    assert out is not None and out.seq == 0


def test_pose_waits_for_odometry_after_the_image_instead_of_holding_a_stale_one():
    """An image stamped after the newest odometry is not given that older pose straight away."""
    now = [100.0]
    rt = NavigationRuntime(make_cfg(), clock=lambda: now[0])
    rt.set_camera_info(K_SYN, W, H)
    feeder = Feeder(rt)
    stamp = T0_NS + DT_NS
    rt.add_odometry(T0_NS, base_pose(0))  # 1 frame old: within tolerance, not bracketing
    rt.add_image(stamp, "cam", synthetic_rgb(1))
    rt.add_depth(stamp, plane_depth(K_SYN, feeder.expected_T_wc(1)))
    assert rt.step() is None
    assert "odometry" in rt.waiting_reason
    rt.add_odometry(stamp + DT_NS, base_pose(2))  # now the stamp is bracketed: interpolate
    out = rt.step()
    assert out is not None
    expected = camera_pose_from_base(interpolate_pose(base_pose(0), base_pose(2), 0.5), rt.T_base_cam).numpy()
    np.testing.assert_allclose(out.T_wc, expected, atol=1e-6)


# ------------------------------------------------------------------------------ bad input
def _keeps_working(rt: NavigationRuntime, feeder: Feeder, i: int) -> None:
    seq = feeder.feed(i)
    out = rt.step()
    assert out is not None, rt.waiting_reason
    assert out.seq == seq


def test_malformed_inputs_raise_and_runtime_keeps_working():
    rt, feeder = new_runtime()
    _keeps_working(rt, feeder, 0)
    stamp = T0_NS + 10 * DT_NS
    bad_calls = [
        (lambda: rt.add_image(stamp, "cam", np.zeros((H, W, 3), np.float32)), "uint8"),
        (lambda: rt.add_image(stamp, "cam", np.zeros((H, W), np.uint8)), "(H, W, 3)"),
        (lambda: rt.add_image(stamp, "cam", np.zeros((0, 0, 3), np.uint8)), "empty"),
        (lambda: rt.add_image(1.5, "cam", synthetic_rgb(1)), "integer nanoseconds"),
        (lambda: rt.add_depth(stamp, np.full((H, W), np.nan, np.float32)), "no valid pixel"),
        (lambda: rt.add_depth(stamp, np.ones((H // 2, W // 2), np.float32)), "registered to the colour camera"),
        (lambda: rt.add_depth(stamp, np.ones((H, W), np.int32)), "dtype"),
        (lambda: rt.add_odometry(stamp, np.diag([2.0, 2.0, 2.0, 1.0])), "not a rotation"),
        (lambda: rt.add_odometry(stamp, np.full((4, 4), np.nan)), "NaN"),
        (lambda: rt.add_odometry(stamp, np.eye(3)), "(4, 4)"),
        (lambda: rt.add_odometry(stamp, np.eye(4), velocity=(np.inf, 0.0)), "velocity"),
        (lambda: rt.set_camera_pose(stamp, np.diag([1.0, 1.0, -1.0, 1.0])), "not a rotation"),
        (lambda: rt.set_camera_info(np.diag([-5.0, 5.0, 1.0]), W, H), "CameraInfo rejected"),
        (lambda: rt.set_instruction("   "), "empty"),
        (lambda: rt.set_instruction(None), "string"),
    ]
    for call, words in bad_calls:
        with pytest.raises(InputError) as info:
            call()
        assert words in str(info.value), (words, str(info.value))
    for kind in ("image_invalid", "depth_invalid", "depth_size_mismatch", "odometry_invalid", "camera_pose_invalid",
                 "camera_info_invalid", "instruction_invalid"):
        assert rt.error_count(kind) >= 1, kind
    _keeps_working(rt, feeder, 1)
    errors = next(d for d in rt.diagnostics() if d["name"].endswith("errors"))
    assert errors["level"] == "ERROR" and "odometry_invalid" in errors["values"]


def test_out_of_order_stamps_are_dropped_with_error():
    rt, feeder = new_runtime()
    _keeps_working(rt, feeder, 0)
    _keeps_working(rt, feeder, 1)
    old = feeder.frames[0]["stamp"]
    with pytest.raises(InputError, match="not after the previous"):
        rt.add_image(old, "cam", synthetic_rgb(0))
    with pytest.raises(InputError, match="not after the previous"):
        rt.add_odometry(old, base_pose(0))
    with pytest.raises(InputError, match="not after the previous"):
        rt.add_depth(old, feeder.frames[0]["depth"])
    assert rt.error_count("image_out_of_order") == 1 and rt.error_count("odometry_out_of_order") == 1
    assert rt.buffered_frames == 2  # nothing was added
    _keeps_working(rt, feeder, 2)


def test_invalid_depth_pixels_are_masked_and_counted():
    rt, feeder = new_runtime("node.geometry_resolution=input")
    T_wc = feeder.expected_T_wc(0)
    depth = plane_depth(K_SYN, T_wc)
    depth[0, :10] = np.nan
    depth[1, :5] = -1.0
    depth[2, :3] = np.inf
    rt.add_odometry(T0_NS, base_pose(0))
    rt.add_image(T0_NS, "cam", synthetic_rgb(0))
    rt.add_depth(T0_NS, depth)
    out = rt.step()
    assert out is not None
    assert rt.counters()["depth_invalid_pixels"] == 18
    clean = depth.copy()
    clean[~np.isfinite(clean) | (clean < 0)] = 0
    feeder.frames[0] = {"depth": clean, "T_wc": T_wc, "stamp": T0_NS}
    feeder.seq = 1
    assert_same_heatmaps(out.heatmaps, reference_heatmaps(rt, feeder, out))
    # uint16 millimetres are accepted too (REP 118), 0 and 65535 = no measurement
    mm = np.round(clean * 1000).astype(np.uint16)
    mm[3, :4] = 65535
    seq = feeder.feed(1, depth=False)
    rt.add_depth(feeder.frames[seq]["stamp"], mm)
    out = rt.step()
    assert out is not None and out.seq == seq


def test_missing_camera_info_keeps_frames_and_says_why():
    rt, feeder = new_runtime(camera_info=False)
    feeder.feed(0)
    feeder.feed(1)
    assert rt.step() is None
    assert "no CameraInfo" in rt.waiting_reason
    assert rt.buffered_frames == 2
    inputs = next(d for d in rt.diagnostics() if d["name"].endswith("inputs"))
    assert inputs["level"] == "ERROR" and "no CameraInfo" in inputs["message"]
    rt.set_camera_info(K_SYN, W, H)
    out = rt.step()
    assert out is not None and out.seq == 1  # the kept frames are used once intrinsics arrive


def test_image_size_change_resets_and_accepts_new_size():
    rt, feeder = new_runtime()
    for i in range(3):
        _keeps_working(rt, feeder, i)
    big = (2 * H, 2 * W)
    K_big = PinholeCamera.from_K(K_SYN, W, H).resized(2 * W, 2 * H).K
    feeder.K, feeder.size = K_big, big
    feeder.feed(3)
    assert rt.error_count("image_size_changed") == 1
    assert rt.step() is None and "CameraInfo is for 64x48 but the image is 128x96" in rt.waiting_reason
    rt.set_camera_info(K_big, 2 * W, 2 * H)
    out = rt.step()
    assert out is not None and out.seq == 3
    assert out.keyframe_indices == [3]  # memory was reset: no keyframe of the old size remains
    assert out.heatmaps.heatmap.shape[1:] == tuple(rt.cfg.video.frame_size)


def test_stamp_jumps_reset_with_warning():
    rt, feeder = new_runtime()
    for i in range(4):
        _keeps_working(rt, feeder, i)
    # a 10 s pause of every stream: buffers and keyframes reset, new frames accepted
    seq = feeder.feed(200)
    assert rt.error_count("image_gap") == 1 and rt.error_count("odometry_gap") == 1
    out = rt.step()
    assert out.seq == seq and out.keyframe_indices == [seq]
    # a bag loop: time goes back far; everything resets, no out-of-order error
    seq = feeder.feed(0, stamp_ns=T0_NS)
    assert rt.error_count("time_jump_back") >= 1
    assert rt.error_count("image_out_of_order") == 0
    out = rt.step()
    assert out.seq == seq and out.keyframe_indices == [seq]
    assert rt.counters()["resets"] >= 2
    _keeps_working(rt, feeder, 1)


def test_no_odometry_near_image_waits_with_reason():
    rt, feeder = new_runtime()
    feeder.feed(0, odometry=False)
    rt.add_odometry(T0_NS + 500_000_000, base_pose(5))
    assert rt.step() is None
    assert "odometry: nearest pose is 0.500 s after the image stamp" in rt.waiting_reason


def test_tf_pose_source_uses_camera_poses():
    rt, feeder = new_runtime("node.pose_source=tf", "node.geometry_resolution=input")
    for i in range(3):
        stamp = T0_NS + i * DT_NS
        T_wc = feeder.expected_T_wc(i)
        rt.set_camera_pose(stamp, T_wc)
        feeder.feed(i, odometry=False)
        out = rt.step()
        assert out is not None, rt.waiting_reason
        np.testing.assert_allclose(out.T_wc, T_wc, atol=1e-12)
        assert_same_heatmaps(out.heatmaps, reference_heatmaps(rt, feeder, out))



def _tf_tuple(parent: str, child: str, stamp: int, T: np.ndarray) -> tuple:
    return (parent, child, stamp, T[:3, 3].tolist(), rotation_to_quat(T[:3, :3]).tolist())


def test_tf_pose_source_composes_tf_and_waits_for_the_transform_after_the_image():
    """/tf odom -> base_link + /tf_static base_link -> optical frame: the camera pose is their
    composition at the image stamp, exactly what odometry x camera_mount gives."""
    now = [100.0]
    rt = NavigationRuntime(make_cfg("node.pose_source=tf", "node.geometry_resolution=input"), clock=lambda: now[0])
    rt.set_camera_info(K_SYN, W, H)
    feeder = Feeder(rt)
    assert rt.add_transforms([_tf_tuple("base_link", "camera_optical", 0, rt.T_base_cam)], static=True) == 1
    for i in range(3):
        stamp = T0_NS + i * DT_NS
        rt.add_transforms([_tf_tuple("odom", "base_link", stamp, base_pose(i))])
        feeder.feed(i, odometry=False)
        out = rt.step()
        assert out is not None, rt.waiting_reason
        np.testing.assert_allclose(out.T_wc, feeder.expected_T_wc(i), atol=1e-9)
        assert_same_heatmaps(out.heatmaps, reference_heatmaps(rt, feeder, out))
    # the image comes before the transform of its own time: it waits instead of taking the older one
    seq = feeder.feed(4, odometry=False)
    assert rt.step() is None
    assert "waiting for tf after the image stamp" in rt.waiting_reason
    assert "extrapolation: stamp 5.400 s is after the newest transform odom -> base_link at 5.200 s" in rt.waiting_reason
    rt.add_transforms([_tf_tuple("odom", "base_link", T0_NS + 5 * DT_NS, base_pose(5))])
    out = rt.step()  # interpolated between frames 2 and 5 (linear motion, constant yaw rate: exact)
    assert out is not None and out.seq == seq, rt.waiting_reason
    np.testing.assert_allclose(out.T_wc, feeder.expected_T_wc(4), atol=1e-9)
    assert_same_heatmaps(out.heatmaps, reference_heatmaps(rt, feeder, out))
    # tf stopped: after node.max_stamp_gap_s the newest transform within the tolerance is used
    seq = feeder.feed(6, odometry=False)
    assert rt.step() is None
    now[0] += 0.2
    out = rt.step()
    assert out is not None and out.seq == seq, rt.waiting_reason
    np.testing.assert_allclose(out.T_wc, feeder.expected_T_wc(5), atol=1e-9)
    inputs = next(s for s in rt.diagnostics() if s["name"] == "vln_heatmap: inputs")
    assert str(inputs["values"]["camera_pose_count"]) == "5"


def test_tf_pose_source_says_which_frames_are_not_connected():
    rt, feeder = new_runtime("node.pose_source=tf")
    rt.add_transforms([_tf_tuple("base_link", "camera_optical", 0, rt.T_base_cam)], static=True)
    feeder.feed(0, odometry=False)
    assert rt.step() is None
    assert "frame 'odom' does not exist" in rt.waiting_reason
    rt.add_transforms([_tf_tuple("odom", "wheel", T0_NS, base_pose(0))])
    assert rt.step() is None
    assert "tf camera pose odom -> camera_optical: frame 'camera_optical' is not connected to 'odom'" in rt.waiting_reason
    with pytest.raises(InputError, match="not normalised"):
        rt.add_transforms([("odom", "base_link", T0_NS, (0, 0, 0), (0, 0, 0, 3.0))])
    assert rt.error_count("tf_invalid") == 1


# ------------------------------------------------------------------------------ backends
def test_backend_registry():
    cfg = make_cfg()
    assert "geometry" in registered_backends()
    assert isinstance(create_backend("geometry", cfg), GeometryBackend)
    with pytest.raises(BackendUnavailableError, match="no provider module is known"):
        create_backend("no_such_backend", cfg)
    try:  # the tensorrt backend needs TensorRT's Python package; without it one line says what to install
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="backend 'tensorrt' needs TensorRT's Python package"):
            create_backend("tensorrt", cfg)
    with pytest.raises(ValueError, match="already registered"):
        register_backend("geometry", lambda c: GeometryBackend(c))
    register_backend("geometry_full_resolution", lambda c: GeometryBackend(load_config(None, ["node.geometry_resolution=input"])))
    backend = create_backend("geometry_full_resolution", cfg)
    frame = CameraFrame(0, "cam", synthetic_rgb(0))
    assert backend.output_size(frame) == (H, W)


def test_geometry_backend_reports_no_waypoints_in_diagnostics():
    rt, feeder = new_runtime()
    _keeps_working(rt, feeder, 0)
    diag = rt.diagnostics()
    assert {d["level"] for d in diag} <= set(LEVEL_BYTES)
    backend = next(d for d in diag if "backend" in d["name"])
    assert "predicts no waypoints" in backend["message"]
    assert backend["values"]["backend"] == "geometry"
    output = next(d for d in diag if d["name"].endswith("output"))
    assert "latency_backend_ms" in output["values"] and "latency_total_ms" in output["values"]
    assert all(isinstance(v, str) for d in diag for v in d["values"].values())


def test_uniform_sampling_spans_the_last_total_frames():
    rt, feeder = new_runtime("frame_sampling.method=uniform", "video.total_frames=7", "video.keyframes=3")
    for i in range(12):
        _keeps_working(rt, feeder, i)
    assert rt.keyframe_indices == [5, 8, 11]  # evenly over the last 7 processed frames, newest included


def test_report_error_appears_in_diagnostics_with_text():
    rt, feeder = new_runtime()
    _keeps_working(rt, feeder, 0)
    rt.report_error("image_decode", "compressed image could not be decoded: bad JPEG header")
    errors = next(d for d in rt.diagnostics() if d["name"].endswith("errors"))
    assert errors["level"] == "ERROR"
    assert "1 x ERROR" in errors["values"]["image_decode"] and "bad JPEG header" in errors["values"]["image_decode"]
    assert "UTC" in errors["values"]["image_decode"]


# ------------------------------------------------------------------------------ recorder
def _camera_frame(i: int, K=K_SYN) -> CameraFrame:
    T_wc = camera_pose_from_base(base_pose(i), pose_from_xyz_quat(torch.tensor((0.2, 0.0, 1.0, -0.5, 0.5, -0.5, 0.5), dtype=torch.float64))).numpy()
    return CameraFrame(
        stamp_ns=T0_NS + i * DT_NS, frame_id="cam", rgb=synthetic_rgb(i), depth_m=plane_depth(K, T_wc), K=K,
        T_wc=T_wc, T_odom_base=base_pose(i), seq=i, base_velocity=np.array([0.5, 0.6]),
    )


def test_recorder_writes_complete_episodes_and_rolls(tmp_path):
    rec = EpisodeRecorder(tmp_path, K_SYN, (H, W), T_base_cam=np.eye(4), instruction_getter=lambda: "go to the door",
                          frames_per_episode=4, queue_size=64)
    frames = [_camera_frame(i) for i in range(10)]
    for f in frames:
        assert rec.submit(f)
    deadline = time.monotonic() + 30
    # all ten written: the third episode (2 frames) is open for sure (at 8 written it may be
    # between the second's finish and the third's start, with no .partial folder: a race)
    while rec.stats()["written"] < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(p.name.endswith(".partial") for p in tmp_path.iterdir())  # the open episode is not complete yet
    episodes = rec.close()
    assert [len(read_episode(p)) for p in episodes] == [4, 4, 2]
    assert list_episodes(tmp_path) == sorted(episodes)
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    ep = read_episode(episodes[1])
    assert ep.instruction == "go to the door" and ep.source == "recording"
    np.testing.assert_allclose(ep.poses, np.stack([f.T_wc for f in frames[4:8]]), atol=1e-9)
    np.testing.assert_allclose(ep.base_velocities, [[0.5, 0.6]] * 4)
    np.testing.assert_allclose(ep.depth(0), frames[4].depth_m, atol=6e-4)
    np.testing.assert_array_equal(ep.color(2), frames[6].rgb)
    np.testing.assert_allclose(ep.timestamps, [f.stamp_ns * 1e-9 for f in frames[4:8]])
    assert not rec.submit(frames[0])  # closed


def test_recorder_never_blocks_and_counts_drops(tmp_path):
    rec = EpisodeRecorder(tmp_path, None, None, frames_per_episode=1000, queue_size=2)
    big_K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    rng = np.random.default_rng(0)
    frame = CameraFrame(T0_NS, "cam", rng.integers(0, 255, (480, 640, 3), dtype=np.uint8),
                        depth_m=rng.uniform(0.5, 4.0, (480, 640)).astype(np.float32), K=big_K, T_wc=np.eye(4))
    submit_s = []
    t_start = time.perf_counter()
    for i in range(40):
        f = CameraFrame(T0_NS + i * DT_NS, "cam", frame.rgb, frame.depth_m, big_K, np.eye(4), seq=i)
        t = time.perf_counter()
        rec.submit(f)
        submit_s.append(time.perf_counter() - t)
    submit_total = time.perf_counter() - t_start
    episodes = rec.close()
    write_total = time.perf_counter() - t_start
    stats = rec.stats()
    assert stats["dropped_queue_full"] > 0  # the disk could not keep up: frames dropped, not queued
    assert stats["written"] + stats["dropped_queue_full"] == 40
    assert len(read_episode(episodes[0])) == stats["written"]
    # submitting 40 full-size frames took a small part of the time writing the kept ones took
    assert submit_total < 0.5 * write_total, (submit_total, write_total, max(submit_s))


def test_runtime_records_when_enabled(tmp_path):
    rt, feeder = new_runtime("node.record=true", f"node.record_dir={tmp_path}", "node.record_frames_per_episode=3")
    rt.set_instruction("find the kitchen")
    for i in range(7):
        _keeps_working(rt, feeder, i)
    recorder = rt.recorder
    rt.close()
    episodes = recorder.finished_episodes
    assert [len(read_episode(p)) for p in episodes] == [3, 3, 1]
    ep = read_episode(episodes[0])
    assert ep.instruction == "find the kitchen"
    np.testing.assert_allclose(ep.poses[1], feeder.frames[1]["T_wc"], atol=1e-9)
    np.testing.assert_allclose(ep.base_poses[2], base_pose(2), atol=1e-9)
    np.testing.assert_allclose(ep.T_base_cam, rt.T_base_cam, atol=1e-12)


# ------------------------------------------------------------------------------ threads
def test_callbacks_and_step_on_two_threads():
    rt, feeder = new_runtime()
    errors: list[BaseException] = []

    def produce():
        try:
            for i in range(40):
                feeder.feed(i)
                time.sleep(0.002)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=produce)
    thread.start()
    outputs = []
    while thread.is_alive():
        out = rt.step()
        if out is not None:
            outputs.append(out)
    thread.join()
    out = rt.step()
    if out is not None:
        outputs.append(out)
    assert not errors and rt.last_exception is None
    seqs = [o.seq for o in outputs]
    assert seqs == sorted(set(seqs)) and seqs[-1] == 39
    counters = rt.counters()
    assert len(seqs) + counters.get("dropped_superseded", 0) + counters.get("dropped_overflow", 0) == 40
    for o in outputs[-3:]:
        assert_same_heatmaps(o.heatmaps, reference_heatmaps(rt, feeder, o, tuple(rt.cfg.video.frame_size)))

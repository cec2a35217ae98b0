"""Procedural simulator: exact depth, pose consistency, determinism, planning limits, instructions,
resumable collection. Small images and few frames keep every test quick."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from vln_core.config import load_config
from vln_core.data.episode import PARTIAL_SUFFIX, is_complete_episode, read_episode
from vln_core.geometry.camera import PinholeCamera
from vln_core.geometry.reproject import reproject_depth
from vln_core.sim.collect import build_episode, drive_limits, generate_episode, plan_episode
from vln_core.sim.planner import build_occupancy_grid, plan_path, segment_is_free
from vln_core.sim.render import CEILING_ID, FLOOR_ID, RayCaster
from vln_core.sim.scene import BOX, CYLINDER, ELLIPSOID, Primitive, Room, Scene, generate_scene
from vln_core.sim.textures import Material
from vln_core.sim.trajectory import base_poses, camera_mount, camera_poses

REPO = Path(__file__).resolve().parents[1]


def _sim_cfg(*overrides: str):
    return load_config(None, list(overrides)).sim


def _box_room_scene(prims: list[Primitive], height: float = 2.5) -> Scene:
    """One 10 m x 10 m room around the origin holding ``prims`` (no furniture, one light)."""
    mat = Material("plaster", (0.6, 0.6, 0.6))
    room = Room(0, "office", (-5.0, -5.0, 5.0, 5.0), mat, mat, mat, np.array([0.1, 0.1, 0.1]))
    res = 0.05
    origin = np.array([-6.0, -6.0])
    labels = np.full((240, 240), -1, np.int16)
    labels[20:220, 20:220] = 0
    return Scene(0, [room], [], [], prims, [], height, 0.12, origin, res, labels,
                 np.ones_like(labels, dtype=np.float32), {})


def _camera_pose(x: float, y: float, yaw: float, height: float = 1.0, pitch_deg: float = 0.0) -> np.ndarray:
    T_odom_base = base_poses(np.array([[x, y]]), np.array([yaw]))
    return camera_poses(T_odom_base, camera_mount(height, 0.0, pitch_deg))[0]


def test_camera_mount_axes_follow_rep103_and_opencv():
    T = camera_mount(1.0, 0.1, 0.0)
    R = T[:3, :3]
    np.testing.assert_allclose(R[:, 2], [1, 0, 0], atol=1e-12)  # optical z = base forward
    np.testing.assert_allclose(R[:, 0], [0, -1, 0], atol=1e-12)  # optical x = base right (-y)
    np.testing.assert_allclose(R[:, 1], [0, 0, -1], atol=1e-12)  # optical y = base down (-z)
    np.testing.assert_allclose(T[:3, 3], [0.1, 0.0, 1.0])
    pitched = camera_mount(1.0, 0.0, 10.0)[:3, :3]
    assert pitched[2, 2] == pytest.approx(-math.sin(math.radians(10.0)))  # looks down


def test_wall_depth_equals_analytic_plane_z_depth():
    # wall face at x = 2.94 (box centre 3.0, half thickness 0.06); camera yawed 20 deg, pitched 5 deg
    wall = Primitive(BOX, np.array([3.0, 0.0, 1.25]), np.array([0.06, 4.0, 1.25]), 0.0, None)
    scene = _box_room_scene([wall])
    cam = PinholeCamera.from_hfov(75.0, 64, 48)
    T_wc = _camera_pose(0.3, -0.2, math.radians(20.0), pitch_deg=5.0)
    depth, ids = RayCaster(scene, cam).cast(T_wc)
    on_wall = ids == 0
    assert on_wall.sum() > 0.5 * ids.size
    u, v = np.meshgrid(np.arange(64), np.arange(48))
    d_cam = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u, float)], axis=-1)
    d_world = d_cam @ T_wc[:3, :3].T
    # ray o + s * d_world with d_cam_z = 1: s is the z-depth; plane x = 2.94
    s = (2.94 - T_wc[0, 3]) / d_world[..., 0]
    np.testing.assert_allclose(depth[on_wall], s[on_wall], atol=1e-3)
    assert np.abs(depth[on_wall] - s[on_wall]).max() < 1e-6
    # floor and ceiling planes are exact too
    floor = ids == FLOOR_ID
    np.testing.assert_allclose(depth[floor], (0.0 - T_wc[2, 3]) / d_world[floor][:, 2], atol=1e-6)
    assert (ids == CEILING_ID).any()


def test_sphere_cylinder_and_yawed_box_centre_depths():
    cam = PinholeCamera.from_hfov(60.0, 33, 33)  # odd size: the centre pixel ray is the optical axis
    T_wc = _camera_pose(0.0, 0.0, 0.0, height=1.0)
    cases = [
        (Primitive(ELLIPSOID, np.array([3.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5]), 0.0, None), 2.5),
        (Primitive(CYLINDER, np.array([3.0, 0.0, 1.0]), np.array([0.4, 0.4, 0.5]), 0.0, None), 2.6),
        # a box yawed 45 deg presents its edge: nearest point along the axis at 3 - 0.3 * sqrt(2)
        (Primitive(BOX, np.array([3.0, 0.0, 1.0]), np.array([0.3, 0.3, 0.5]), math.pi / 4, None), 3.0 - 0.3 * math.sqrt(2)),
    ]
    for prim, expected in cases:
        depth, ids = RayCaster(_box_room_scene([prim]), cam).cast(T_wc)
        assert ids[16, 16] == 0
        assert depth[16, 16] == pytest.approx(expected, abs=1e-6)


@pytest.fixture(scope="module")
def small_episode(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "ep_a"
    cfg = _sim_cfg("sim.frames_per_episode=10", "sim.image_size=[48, 64]")
    generate_episode(out, 3, cfg)
    return out


def test_episode_depth_reprojects_between_consecutive_frames(small_episode):
    ep = read_episode(small_episode)
    assert len(ep) == 10 and ep.source == "sim" and ep.has_depth
    medians = []
    for i in range(len(ep) - 1):
        d0, d1 = ep.depth(i), ep.depth(i + 1)
        warped = reproject_depth(d0, ep.K, ep.poses[i], ep.K, ep.poses[i + 1], d1.shape).numpy()
        both = (warped > 0) & (d1 > 0)
        assert both.mean() > 0.5, f"frames {i}->{i + 1} barely overlap"
        medians.append(float(np.median(np.abs(warped[both] - d1[both]))))
    assert max(medians) < 0.01, medians


def test_episode_metadata_goal_intent_and_base_poses(small_episode):
    ep = read_episode(small_episode)
    assert ep.goal["object"] and ep.goal["category"]
    assert ep.intent in ("left", "straight", "right")
    assert len(ep.extra["intents"]) == len(ep)
    # T_wc = T_odom_base @ T_base_cam for every frame
    np.testing.assert_allclose(ep.poses, ep.base_poses @ ep.T_base_cam, atol=1e-9)
    np.testing.assert_allclose(ep.timestamps, np.arange(len(ep)) / 10.0)


def test_same_seed_same_bytes(small_episode, tmp_path):
    again = tmp_path / "ep_b"
    generate_episode(again, 3, _sim_cfg("sim.frames_per_episode=10", "sim.image_size=[48, 64]"))
    names = sorted(p.name for p in small_episode.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (small_episode / name).read_bytes() == (again / name).read_bytes(), name
    other = tmp_path / "ep_c"
    generate_episode(other, 4, _sim_cfg("sim.frames_per_episode=10", "sim.image_size=[48, 64]"))
    assert (other / "frame-000000.color.png").read_bytes() != (again / "frame-000000.color.png").read_bytes()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planned_trajectory_is_collision_free_and_within_limits(seed):
    cfg = _sim_cfg("sim.frames_per_episode=80")
    scene = generate_scene(seed, cfg.rooms)
    grid = build_occupancy_grid(scene, body_height=cfg.camera_height_m + 0.3)
    plan = plan_episode(scene, cfg, np.random.default_rng(seed), grid)
    assert plan is not None
    r_plan = cfg.robot_radius_m + cfg.clearance_margin_m
    for a, b in zip(plan.path[:-1], plan.path[1:]):
        assert segment_is_free(grid, a, b, r_plan)
    traj = plan.trajectory
    assert (grid.clearance_at(traj.xy) >= cfg.robot_radius_m).all()
    dt = 1.0 / cfg.camera_rate_hz
    speed = np.linalg.norm(np.diff(traj.xy, axis=0), axis=1) / dt
    turn = np.abs(np.diff(traj.yaw)) / dt
    assert speed.max() <= cfg.max_speed_mps * (1 + 1e-6)
    assert turn.max() <= math.radians(cfg.max_turn_rate_dps) * (1 + 1e-6)
    assert (traj.v <= cfg.max_speed_mps + 1e-9).all() and (np.abs(traj.w) <= drive_limits(cfg).max_turn_rate + 1e-9).all()
    assert speed.max() > 0.2  # it does drive
    # the planner itself: an A* path between two free points keeps the clearance
    path = plan_path(grid, plan.path[0], plan.approach_xy, r_plan)
    assert path is not None and np.allclose(path[-1], plan.approach_xy)


def test_occupancy_grid_blocks_walls_and_furniture():
    scene = generate_scene(5)
    grid = build_occupancy_grid(scene)
    for prim in scene.primitives:
        if prim.object_index < 0 and prim.material is None and prim.center[2] - prim.half[2] < 0.1:  # wall
            assert grid.clearance_at(prim.center[:2]) == 0.0
    obstacles = [o for o in scene.objects if o.obstacle and o.category in ("sofa", "bed", "cabinet", "bookshelf")]
    assert obstacles
    for obj in obstacles:
        assert grid.clearance_at(obj.position[:2]) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_instruction_mentions_goal(seed):
    cfg = _sim_cfg("sim.frames_per_episode=60")
    plan = build_episode(seed, cfg)
    from vln_core.sim.instructions import make_instruction

    n_obj = len(plan.scene.objects)
    visible = np.zeros((len(plan.trajectory.xy), n_obj), np.int64)
    text, details = make_instruction(plan.scene, plan.trajectory, plan.goal, visible, 100, "straight",
                                     np.random.default_rng(seed))
    goal_word = "TV" if plan.goal.category == "tv" else plan.goal.category
    assert goal_word in text
    assert details["goal_name"] in text
    assert details["landmarks"] == []  # nothing was visible: no landmark may be named
    assert text[0].isupper() and text.endswith(".")


def _run_collect(args: list[str]) -> int:
    """Run ``training/collect.py``'s ``main`` in-process (loaded under a unique module name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("training_collect_cli", REPO / "training" / "collect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(args)


def test_collect_cli_resumes_and_redoes_stale_partials(tmp_path):
    out = tmp_path / "sim"
    common = ["--frames", "3", "--size", "24x32", "--workers", "1", "--seed", "7", "--out", str(out)]
    assert _run_collect(["--episodes", "2", *common]) == 0
    first = out / "ep_000000" / "episode.json"
    stamp = first.stat().st_mtime_ns
    reference = (out / "ep_000001" / "frame-000002.color.png").read_bytes()
    # simulate a run killed while writing episode 1: only a partial folder is left
    shutil.rmtree(out / "ep_000001")
    stale = out / ("ep_000001" + PARTIAL_SUFFIX)
    stale.mkdir()
    (stale / "frame-000000.color.png").write_bytes(b"garbage")
    assert _run_collect(["--episodes", "3", *common]) == 0
    assert first.stat().st_mtime_ns == stamp  # complete episode skipped
    assert not stale.exists()
    assert all(is_complete_episode(out / f"ep_{i:06d}") for i in range(3))
    assert (out / "ep_000001" / "frame-000002.color.png").read_bytes() == reference  # redone identically


def test_sim_config_rejects_bad_values():
    from vln_core.config import ConfigError

    with pytest.raises(ConfigError, match="sim.robot_radius_m"):
        load_config(None, ["sim.robot_radius_m=0.9"])
    with pytest.raises(ConfigError, match="sim.rooms"):
        load_config(None, ["sim.rooms=[3, 2]"])


def test_frame_intents_from_future_position_and_heading():
    from vln_core.sim.instructions import frame_intents
    from vln_core.sim.trajectory import BaseTrajectory

    n = 40
    t = np.arange(n) / 10.0
    # straight along +x for 2 s, then a left arc at 1.2 rad/s: over a 1 s horizon the chord bears 0.6 rad (34 deg) left
    xy = np.stack([np.minimum(t, 2.0) * 0.5 + np.where(t > 2, np.sin((t - 2) * 1.2) * 0.6, 0),
                   np.where(t > 2, (1 - np.cos((t - 2) * 1.2)) * 0.6, 0.0)], axis=1)
    yaw = np.where(t > 2, (t - 2) * 1.2, 0.0)
    traj = BaseTrajectory(xy, yaw, np.full(n, 0.5), np.zeros(n), t, -1)
    intents = frame_intents(traj, 1.0, 10.0)
    assert intents[0] == "straight"
    assert intents[25] == "left"
    mirrored = BaseTrajectory(xy * [1, -1], -yaw, np.full(n, 0.5), np.zeros(n), t, -1)
    assert frame_intents(mirrored, 1.0, 10.0)[25] == "right"
    # turning in place: the heading change decides
    spin = BaseTrajectory(np.zeros((n, 2)), -np.linspace(0, 2, n), np.zeros(n), np.full(n, -0.5), t, -1)
    assert frame_intents(spin, 1.0, 10.0)[0] == "right"

"""One simulated episode end to end: scene -> goal and route -> driven trajectory -> rendered
frames -> instruction -> an episode folder written through :class:`vln_core.data.episode.EpisodeWriter`.

Determinism: everything derives from the episode seed through separate random streams (scene,
route, sensor noise, wording), so the same seed always gives the same bytes on disk.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vln_core.config import SimConfig, config_to_dict
from vln_core.data.episode import EpisodeWriter
from vln_core.geometry.camera import PinholeCamera
from vln_core.sim.instructions import GOAL_CATEGORIES, frame_intents, make_instruction
from vln_core.sim.planner import OccupancyGrid, build_occupancy_grid, grid_search, path_from_field, shortcut_path
from vln_core.sim.render import RayCaster
from vln_core.sim.scene import Scene, SceneObject, generate_scene
from vln_core.sim.sensor import SensorState, apply_sensor
from vln_core.sim.trajectory import BaseTrajectory, DriveLimits, base_poses, camera_mount, camera_poses, drive_path

__all__ = ["EpisodePlan", "SIM_VERSION", "drive_limits", "plan_episode", "build_episode", "generate_episode"]

SIM_VERSION = 1


@dataclass
class EpisodePlan:
    """A feasible episode: goal object, approach point, path and the driven trajectory."""

    scene: Scene
    grid: OccupancyGrid
    goal: SceneObject
    approach_xy: np.ndarray
    path: np.ndarray
    trajectory: BaseTrajectory


def drive_limits(cfg: SimConfig) -> DriveLimits:
    """The robot's :class:`DriveLimits` from the simulator config."""
    return DriveLimits(
        rate_hz=cfg.camera_rate_hz, max_speed=cfg.max_speed_mps, max_turn_rate=math.radians(cfg.max_turn_rate_dps),
        max_accel=cfg.max_accel_mps2, max_turn_accel=math.radians(cfg.max_turn_accel_dps2),
    )


def _approach_points(obj: SceneObject, stand_off: float) -> list[np.ndarray]:
    """Candidate robot positions around ``obj``: in front first, then the sides, then behind."""
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    d, w = obj.size[0] / 2, obj.size[1] / 2
    local = [(d + stand_off, 0.0), (d + stand_off * 0.8, w * 0.7 + stand_off * 0.6), (d + stand_off * 0.8, -(w * 0.7 + stand_off * 0.6)),
             (0.0, w + stand_off), (0.0, -(w + stand_off)), (-(d + stand_off), 0.0)]
    return [obj.position[:2] + np.array([c * lx - s * ly, s * lx + c * ly]) for lx, ly in local]


def _goal_in_final_view(scene: Scene, goal: SceneObject, traj: BaseTrajectory, cfg: SimConfig,
                        min_fraction: float = 0.02) -> bool:
    """Whether the goal covers at least ``min_fraction`` of a low-resolution view from the last pose."""
    camera = PinholeCamera.from_hfov(cfg.hfov_deg, 40, max(8, int(round(40 * cfg.image_size[0] / cfg.image_size[1]))))
    T_odom_base = base_poses(traj.xy[-1:], traj.yaw[-1:])
    T_wc = camera_poses(T_odom_base, camera_mount(cfg.camera_height_m, cfg.camera_forward_m, cfg.camera_pitch_deg))[0]
    _, prim_ids = RayCaster(scene, camera).cast(T_wc)
    goal_prims = np.asarray(goal.primitives, dtype=np.int64)
    return bool(np.isin(prim_ids, goal_prims).mean() >= min_fraction)


def plan_episode(scene: Scene, cfg: SimConfig, rng: np.random.Generator, grid: OccupancyGrid | None = None) -> EpisodePlan | None:
    """Choose a goal object, an approach point, a start about one episode's drive away, and drive.

    The trajectory must arrive (and turn to face the goal) before the last frames, and every
    pose must keep ``robot_radius_m`` of clearance on the occupancy grid. Returns None when no
    goal in this scene admits such an episode.
    """
    grid = grid or build_occupancy_grid(scene, body_height=cfg.camera_height_m + 0.3)
    r_plan = cfg.robot_radius_m + cfg.clearance_margin_m
    limits = drive_limits(cfg)
    duration = cfg.frames_per_episode / cfg.camera_rate_hz
    goals = [o for o in scene.objects if o.category in GOAL_CATEGORIES]
    # balance categories: a random category order first, then a random object within each
    # (otherwise chairs, which come in sets around tables, would dominate the goals)
    category_rank = {c: r for r, c in enumerate(rng.permutation(sorted({g.category for g in goals})))}
    tiebreak = rng.random(len(goals))
    order = sorted(range(len(goals)), key=lambda k: (category_rank[goals[k].category], tiebreak[k]))
    fallback: EpisodePlan | None = None  # best plan that did not arrive in time (short episodes)
    for gi in order[:10]:
        goal = goals[int(gi)]
        approach = None
        # stand far enough back that the camera frames the whole object, closer only if needed
        for stand_off in (1.1, 0.8, r_plan + 0.1):
            for p in _approach_points(goal, stand_off):
                # same room: a free cell behind a wall would hide the goal
                if grid.clearance_at(p) >= r_plan + 0.03 and int(scene.room_at(p)) == goal.room_index:
                    approach = p
                    break
            if approach is not None:
                break
        if approach is None:
            continue
        cost, parent, shape = grid_search(grid, approach, r_plan)
        step = 2
        clear_c = grid.clearance[::step, ::step]
        finite = np.isfinite(cost) & (clear_c >= r_plan + 0.05)
        if finite.sum() < 20:
            continue
        rows, cols = np.nonzero(finite)
        centres = grid.center_of(np.stack([rows * step + step // 2, cols * step + step // 2], axis=1))
        rooms = scene.room_at(centres)
        for fraction in (1.0, 0.85, 0.7, 0.55, 0.4, 0.28):
            want = fraction * cfg.max_speed_mps * duration
            band = (cost[rows, cols] > max(0.75 * want, 0.3)) & (cost[rows, cols] < max(1.2 * want, 1.0))
            if band.sum() == 0:
                continue
            other_room = band & (rooms != goal.room_index)
            pool = np.nonzero(other_room if other_room.any() and rng.random() < 0.8 else band)[0]
            k = int(pool[rng.integers(len(pool))])
            start = centres[k]
            raw = path_from_field(grid, parent, shape, start, step=step)
            raw = np.concatenate([start[None, :], raw[1:-1], approach[None, :]])
            path = shortcut_path(grid, raw, r_plan)
            if len(path) < 2:
                continue
            heading = math.atan2(path[1, 1] - path[0, 1], path[1, 0] - path[0, 0])
            offset = rng.uniform(-0.35, 0.35) if rng.random() < 0.75 else rng.uniform(-1.3, 1.3)
            traj = drive_path(path, heading + offset, goal.position[:2], limits, cfg.frames_per_episode, rng,
                              cfg.pause_prob, cfg.lookaround_prob)
            if (grid.clearance_at(traj.xy) < cfg.robot_radius_m).any():
                continue
            plan = EpisodePlan(scene, grid, goal, approach, path, traj)
            if traj.arrived_frame < 0 or traj.arrived_frame > cfg.frames_per_episode - 3:
                if fallback is None:
                    fallback = plan  # e.g. a 12-frame clip: too short to arrive anywhere
                continue
            if not _goal_in_final_view(scene, goal, traj, cfg):
                continue
            return plan
    return fallback


def build_episode(seed: int, cfg: SimConfig, max_scene_tries: int = 6) -> EpisodePlan:
    """Scene and feasible plan for ``seed`` (deterministic). Scenes where no goal works (rare:
    furniture blocking every door) are redrawn from derived seeds."""
    for attempt in range(max_scene_tries):
        scene_seed = seed if attempt == 0 else int(np.random.default_rng([seed, 99, attempt]).integers(1 << 31))
        scene = generate_scene(scene_seed, tuple(cfg.rooms), tuple(cfg.ceiling_height_m))
        plan = plan_episode(scene, cfg, np.random.default_rng([seed, 1, attempt]))
        if plan is not None:
            return plan
    raise RuntimeError(f"no feasible episode for seed {seed} after {max_scene_tries} scenes")


def generate_episode(out_dir: str | Path, seed: int, cfg: SimConfig, color_format: str = "png") -> dict:
    """Simulate and write one episode to ``out_dir`` (crash-safe via ``<out_dir>.partial``).

    Args:
        out_dir: final episode folder (must not exist).
        seed: episode seed; the same seed and config give identical files.
        cfg: :class:`SimConfig` (image size, frames, robot limits...).
        color_format: "png" or "jpg".

    Returns:
        ``{"path", "frames", "seconds", "instruction"}``.
    """
    t0 = time.perf_counter()
    plan = build_episode(seed, cfg)
    scene, traj, goal = plan.scene, plan.trajectory, plan.goal
    H, W = cfg.image_size
    camera = PinholeCamera.from_hfov(cfg.hfov_deg, W, H)
    T_base_cam = camera_mount(cfg.camera_height_m, cfg.camera_forward_m, cfg.camera_pitch_deg)
    T_odom_base = base_poses(traj.xy, traj.yaw)
    T_wc = camera_poses(T_odom_base, T_base_cam)
    caster = RayCaster(scene, camera)
    sensor_rng = np.random.default_rng([seed, 2])
    state = SensorState()
    visible = np.zeros((len(T_wc), max(1, len(scene.objects))), np.int64)
    intents = frame_intents(traj, cfg.intent_horizon_s, cfg.camera_rate_hz)
    with EpisodeWriter(out_dir, camera.K, (H, W), T_base_cam=T_base_cam, source="sim", color_format=color_format,
                       write_depth=True) as writer:
        for i in range(len(T_wc)):
            res = caster.render(T_wc[i])
            ids = res.object_id[res.object_id >= 0]
            if len(scene.objects):
                visible[i] = np.bincount(ids, minlength=len(scene.objects))[: len(scene.objects)]
            color = apply_sensor(res.radiance, scene.sensor, sensor_rng, state)
            writer.add_frame(color, res.depth, T_wc[i], float(traj.t[i]), T_odom_base=T_odom_base[i],
                             base_velocity=(float(traj.v[i]), float(traj.w[i])))
        instruction, details = make_instruction(scene, traj, goal, visible, H * W, intents[0],
                                                np.random.default_rng([seed, 3]))
        goal_record = {
            "object": goal.name,  # "<colour> <category>"; the instruction may shorten or qualify it
            "category": goal.category,
            "color": goal.color or None,
            "position": [float(goal.position[0]), float(goal.position[1]), float(goal.size[2] / 2)],
        }
        extra = {
            "simulator": {"version": SIM_VERSION, "seed": int(seed), "config": config_to_dict(cfg)},
            "intents": intents,
            "arrived_frame": int(traj.arrived_frame),
            "events": [[int(f), e] for f, e in traj.events],
            "approach_point": [float(v) for v in plan.approach_xy],
            "path": [[round(float(x), 3), round(float(y), 3)] for x, y in plan.path],
            "rooms_traversed": details["rooms"],
            "landmarks": details["landmarks"],
            "goal_object_index": int(goal.index),
            "goal_name_in_instruction": details["goal_name"],
            "goal_visible_frames": int((visible[:, goal.index] > 0).sum()),
        }
        scene_record = scene.summary()
        scene_record["sensor"] = scene.sensor
        writer.finish(instruction, goal=goal_record, intent=intents[0], scene=scene_record, extra=extra)
    return {"path": str(out_dir), "frames": len(T_wc), "seconds": time.perf_counter() - t0, "instruction": instruction}

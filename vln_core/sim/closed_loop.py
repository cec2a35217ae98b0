"""Closed-loop navigation in simulated homes: a policy drives the robot from what it sees.

An episode (:func:`make_nav_episode`) is a home from a seed, a goal object, a start at least
``min_path_m`` of planner path away from it and an instruction from
:mod:`vln_core.sim.instructions` (the wording the model was trained on, naming the goal and the
rooms on the way). Each decision step (``dt`` seconds) the simulator renders the camera at the
robot's pose (:class:`NavSimulator`), a policy turns the observation into a velocity command or
a stop, and the robot moves in 0.1 s sub-steps; a sub-step that would bring the robot's disc
(``sim.robot_radius_m``) into an obstacle of the occupancy grid is not taken: the motion stops
and a collision is counted.

Metrics as VLN-CE reports them (:func:`run_episode`, :func:`summarize`): success (the episode
ended, by the policy's stop or at the step limit, within ``SUCCESS_M`` of the goal object's
footprint), SPL (success weighted by shortest path length / max(path driven, shortest path)),
navigation error (distance to the goal at the end), oracle success (within ``SUCCESS_M`` at any
step), collisions, steps, and the time per step spent rendering and in the policy.

Policies: :class:`WaypointPolicy` follows the node's waypoints (the same
:class:`~vln_core.runtime.NavigationRuntime` and backend as the node; stops when the waypoints
do); :class:`GoalHeatmapGreedy` turns toward the goal heatmap's peak and drives; baselines
:class:`RandomWalk`, :class:`ForwardExplorer` (drive until the way ahead is blocked, then turn)
and :class:`ShortestPathOracle` (the planner's path, with the true map).

Frames: world = odom (z up), base_link x forward / y left (REP 103), camera OpenCV optical.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import numpy as np

from vln_core.config import SimConfig
from vln_core.geometry.camera import PinholeCamera
from vln_core.geometry.transforms import pose_to_xyz_quat
from vln_core.sim.collect import build_episode
from vln_core.sim.instructions import frame_intents, make_instruction
from vln_core.sim.planner import OccupancyGrid, grid_search, plan_path
from vln_core.sim.render import RayCaster
from vln_core.sim.scene import Scene, SceneObject
from vln_core.sim.sensor import SensorState, apply_sensor
from vln_core.sim.trajectory import base_poses, camera_mount, camera_poses

__all__ = [
    "SUCCESS_M", "NavEpisode", "make_nav_episode", "goal_distance", "goal_distances", "shortest_path_to_goal", "path_length", "Observation", "Command",
    "NavSimulator", "node_camera_mount", "Policy", "WaypointPolicy", "GoalHeatmapGreedy", "RandomWalk", "ForwardExplorer",
    "ShortestPathOracle", "EpisodeResult", "run_episode", "summarize", "pursue",
]

#: An episode succeeds when it ends within this distance (metres) of the goal object's footprint.
SUCCESS_M = 1.0
#: Motion is integrated (and collisions checked) in sub-steps of this length (seconds).
SUBSTEP_S = 0.1
#: The waypoint policies stop when the predicted path ends this close to the robot (metres).
STOP_RADIUS_M = 0.2
#: Pure pursuit aims at the first waypoint at least this far ahead (metres).
LOOKAHEAD_M = 0.4
#: The oracle's (and SPL's) shortest path ends this close to the goal's footprint, inside the
#: success radius with room for the controller's last 0.15 m.
ORACLE_REGION_M = 0.8


# ------------------------------------------------------------------------------------ episodes
@dataclass
class NavEpisode:
    """One closed-loop episode (see the module doc)."""

    seed: int
    scene: Scene
    grid: OccupancyGrid
    goal: SceneObject
    start_xy: np.ndarray  # (2,) world
    start_yaw: float
    instruction: str
    shortest_path: np.ndarray  # (P, 2) the planner's path from the start to within ORACLE_REGION_M of the goal
    shortest_m: float


def path_length(xy: np.ndarray) -> float:
    """Length (metres) of a polyline ``(P, 2)``."""
    xy = np.asarray(xy, dtype=np.float64)
    return float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum()) if len(xy) > 1 else 0.0


def goal_distances(goal: SceneObject, xy: np.ndarray) -> np.ndarray:
    """Distances (metres) from points ``(..., 2)`` to the goal object's footprint rectangle (0 inside)."""
    c, s = math.cos(goal.yaw), math.sin(goal.yaw)
    d = np.asarray(xy, dtype=np.float64) - goal.position[:2]
    local = np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)
    outside = np.maximum(np.abs(local) - np.asarray(goal.size[:2], dtype=np.float64) / 2, 0.0)
    return np.linalg.norm(outside, axis=-1)


def goal_distance(goal: SceneObject, xy: np.ndarray) -> float:
    """Distance (metres) from the point ``xy`` (2,) to the goal object's footprint (0 inside)."""
    return float(goal_distances(goal, np.asarray(xy, dtype=np.float64)))


def shortest_path_to_goal(grid: OccupancyGrid, start_xy: np.ndarray, goal: SceneObject, clearance: float,
                          region_m: float = ORACLE_REGION_M) -> Optional[np.ndarray]:
    """The planner's shortest path ``(P, 2)`` from ``start_xy`` to the nearest (by path) place
    where the robot fits (``clearance``) within ``region_m`` of the goal's footprint; None if none."""
    cost, parent, shape = grid_search(grid, np.asarray(start_xy, dtype=np.float64), clearance)
    rows, cols = np.nonzero(np.isfinite(cost))
    if not len(rows):
        return None
    centres = grid.center_of(np.stack([rows * 2 + 1, cols * 2 + 1], axis=1))
    inside = goal_distances(goal, centres) <= region_m
    if not inside.any():
        return None
    k = np.flatnonzero(inside)[int(np.argmin(cost[rows[inside], cols[inside]]))]
    return plan_path(grid, np.asarray(start_xy, dtype=np.float64), centres[k], clearance)


def make_nav_episode(seed: int, cfg: SimConfig, min_path_m: float = 3.0) -> Optional[NavEpisode]:
    """The episode of ``seed``: the collector's own plan (home, goal, start) with its instruction,
    and the planner's shortest path from the start into the success region (SPL's reference);
    None when that path is shorter than ``min_path_m`` or there is none.

    The instruction comes from :func:`make_instruction` as in training, with the landmarks seen
    along the planner's own drive (rendered at 40 px: visibility only)."""
    plan = build_episode(seed, cfg)
    path = shortest_path_to_goal(plan.grid, plan.trajectory.xy[0], plan.goal, cfg.robot_radius_m + cfg.clearance_margin_m)
    if path is None or path_length(path) < min_path_m:
        return None
    shortest = path_length(path)
    traj = plan.trajectory
    low = PinholeCamera.from_hfov(cfg.hfov_deg, 40, max(8, int(round(40 * cfg.image_size[0] / cfg.image_size[1]))))
    caster = RayCaster(plan.scene, low)
    T_wc = camera_poses(base_poses(traj.xy, traj.yaw), camera_mount(cfg.camera_height_m, cfg.camera_forward_m,
                                                                    cfg.camera_pitch_deg))
    n_obj = max(1, len(plan.scene.objects))
    object_of = np.array([p.object_index for p in plan.scene.primitives] + [-1], dtype=np.int64)  # [-1]: no primitive
    visible = np.zeros((len(T_wc), n_obj), np.int64)
    for i, T in enumerate(T_wc):
        _, prim = caster.cast(T)
        prim = np.asarray(prim, dtype=np.int64).ravel()
        obj = object_of[np.where(prim >= 0, prim, -1)]
        visible[i] = np.bincount(obj[obj >= 0], minlength=n_obj)[:n_obj]
    intents = frame_intents(traj, cfg.intent_horizon_s, cfg.camera_rate_hz)
    instruction, _ = make_instruction(plan.scene, traj, plan.goal, visible, low.width * low.height, intents[0],
                                      np.random.default_rng([seed, 3]))
    return NavEpisode(seed=seed, scene=plan.scene, grid=plan.grid, goal=plan.goal, start_xy=traj.xy[0].copy(),
                      start_yaw=float(traj.yaw[0]), instruction=instruction, shortest_path=path,
                      shortest_m=shortest)


# ------------------------------------------------------------------------------------ simulator
@dataclass
class Observation:
    """What a policy gets at one step (the node's inputs, plus the time)."""

    t: float  # seconds since the start
    rgb: Optional[np.ndarray]  # (H, W, 3) uint8; None for a policy that does not look (``uses_camera = False``)
    depth: Optional[np.ndarray]  # (H, W) float32 metres (0 = no return) when the robot has a depth camera
    K: np.ndarray  # (3, 3)
    T_odom_base: np.ndarray  # (4, 4) base_link -> odom
    T_wc: np.ndarray  # (4, 4) camera optical -> odom
    object_id: Optional[np.ndarray] = None  # (H, W) int32 scene object per pixel (-1: structure), training only


@dataclass
class Command:
    """A policy's decision: forward speed (m/s), turn rate (rad/s, + left), or stop."""

    v: float = 0.0
    w: float = 0.0
    stop: bool = False


def node_camera_mount(cfg: SimConfig) -> list[float]:
    """The simulated robot's camera mount as ``node.camera_mount`` ``[x, y, z, qx, qy, qz, qw]``
    (camera optical frame in base_link): a runtime driving the simulator must use it, or every
    pose it derives from odometry is off by the difference (a camera placed 0.1 m too far ahead
    doubles the baseline of a robot turning on the spot, and multi-view depth with it)."""
    T = camera_mount(cfg.camera_height_m, cfg.camera_forward_m, cfg.camera_pitch_deg)
    return [float(v) for v in pose_to_xyz_quat(T)]


class NavSimulator:
    """Renders the robot's camera and moves its base with collisions (see the module doc).

    Args:
        episode: the home and the start.
        cfg: camera size, field of view and mount, robot radius and speed limits.
        with_depth: render depth into the observations too (an RGB-D robot).
        seed: the sensor noise stream.
    """

    def __init__(self, episode: NavEpisode, cfg: SimConfig, with_depth: bool = False, seed: int = 0) -> None:
        self.episode, self.cfg, self.with_depth = episode, cfg, with_depth
        H, W = cfg.image_size
        self.camera = PinholeCamera.from_hfov(cfg.hfov_deg, W, H)
        self.T_base_cam = camera_mount(cfg.camera_height_m, cfg.camera_forward_m, cfg.camera_pitch_deg)
        self.caster = RayCaster(episode.scene, self.camera)
        self._rng = np.random.default_rng([seed, 2])
        self._sensor = SensorState()
        self.xy = episode.start_xy.astype(np.float64).copy()
        self.yaw = float(episode.start_yaw)

    def observe(self, t: float, with_objects: bool = False, camera: bool = True) -> Observation:
        """Render the camera at the robot's pose (``with_objects``: the object id of every pixel
        too, a training label no policy gets); ``camera`` False: the poses alone (a policy that
        does not look; rendering is most of a step's time)."""
        T_odom_base = base_poses(self.xy[None], np.array([self.yaw]))[0]
        T_wc = camera_poses(T_odom_base[None], self.T_base_cam)[0]
        if not camera:
            return Observation(t=t, rgb=None, depth=None, K=self.camera.K.copy(), T_odom_base=T_odom_base, T_wc=T_wc)
        res = self.caster.render(T_wc)
        rgb = apply_sensor(res.radiance, self.episode.scene.sensor, self._rng, self._sensor)
        return Observation(t=t, rgb=rgb, depth=res.depth if self.with_depth else None, K=self.camera.K.copy(),
                           T_odom_base=T_odom_base, T_wc=T_wc, object_id=res.object_id if with_objects else None)

    def move(self, command: Command, dt: float) -> bool:
        """Drive ``command`` (clipped to the robot's limits) for ``dt`` seconds; True if it collided
        (the robot then stays at its last free pose)."""
        v = float(np.clip(command.v, 0.0, self.cfg.max_speed_mps))
        w_max = math.radians(self.cfg.max_turn_rate_dps)
        w = float(np.clip(command.w, -w_max, w_max))
        steps = max(1, int(round(dt / SUBSTEP_S)))
        h = dt / steps
        for _ in range(steps):
            yaw = self.yaw + w * h
            xy = self.xy + v * h * np.array([math.cos(yaw), math.sin(yaw)])
            if v > 0 and float(self.episode.grid.clearance_at(xy)) < self.cfg.robot_radius_m:
                self.yaw = yaw  # turning in place never collides (a disc)
                return True
            self.xy, self.yaw = xy, yaw
        return False


# ------------------------------------------------------------------------------------ policies
class Policy(Protocol):
    """``name``; an optional ``uses_camera = False`` says the policy reads no image, and
    :func:`run_episode` then renders none (unless a GIF frame needs it)."""

    name: str

    def reset(self, episode: NavEpisode, sim: NavSimulator) -> None: ...

    def act(self, obs: Observation) -> Command: ...


def pursue(target_xy: np.ndarray, max_speed: float, max_turn: float, horizon_s: float = 1.0) -> Command:
    """Pure pursuit toward ``target_xy`` (base frame, x forward, y left): turn toward it, drive
    when it is roughly ahead, slower when it is near."""
    x, y = float(target_xy[0]), float(target_xy[1])
    dist, angle = math.hypot(x, y), math.atan2(y, x)
    w = float(np.clip(2.0 * angle, -max_turn, max_turn))
    v = 0.0 if abs(angle) > math.radians(50) else min(max_speed, dist / horizon_s) * max(math.cos(angle), 0.0)
    return Command(v=v, w=w)


def _to_base(T_odom_base: np.ndarray, xy_world: np.ndarray) -> np.ndarray:
    """World xy ``(..., 2)`` -> base-frame xy."""
    d = np.asarray(xy_world, dtype=np.float64) - T_odom_base[:2, 3]
    R = T_odom_base[:2, :2]
    return d @ R  # R^T d for row vectors


class _RuntimePolicy:
    """Shared by the policies that run the node's runtime: feeds it the observation as the node's
    callbacks would (CameraInfo, odometry, colour, depth, instruction) and keeps its last output."""

    def __init__(self, make_runtime: Callable[[], Any], max_speed: float, max_turn: float) -> None:
        self.make_runtime, self.max_speed, self.max_turn = make_runtime, max_speed, max_turn
        self.runtime: Any = None
        self.last_output: Any = None
        self.waiting_steps = 0

    def reset(self, episode: NavEpisode, sim: NavSimulator) -> None:
        if self.runtime is not None:
            self.runtime.close()
        self.runtime = self.make_runtime()
        mount = getattr(self.runtime, "T_base_cam", None)
        if mount is not None and not np.allclose(mount, sim.T_base_cam, atol=1e-6):
            raise ValueError(f"node.camera_mount {np.round(mount[:3, 3], 3).tolist()} is not the simulated camera's "
                             f"{np.round(sim.T_base_cam[:3, 3], 3).tolist()}: set it with closed_loop.node_camera_mount")
        self.runtime.set_camera_info(sim.camera.K, sim.camera.width, sim.camera.height)
        self.runtime.set_instruction(episode.instruction)
        self.last_output, self.waiting_steps = None, 0

    def _step(self, obs: Observation) -> Any:
        stamp = 1_000_000_000 + int(round(obs.t * 1e9))
        self.runtime.add_odometry(stamp, obs.T_odom_base)
        self.runtime.add_image(stamp, "camera", obs.rgb)
        if obs.depth is not None:
            self.runtime.add_depth(stamp, obs.depth)
        out = self.runtime.step(overlay=False)
        if out is None:
            self.waiting_steps += 1
        else:
            self.last_output = out
        return out

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None


class WaypointPolicy(_RuntimePolicy):
    """Follow the node's waypoints (pure pursuit on the first one ``LOOKAHEAD_M`` ahead); stop when
    the predicted path ends within ``STOP_RADIUS_M`` of the robot. With
    ``node.waypoint_source=memory`` the runtime also says what its waypoints do
    (:attr:`~vln_core.runtime.RuntimeOutput.navigation_mode`): ``scan`` turns in place, ``stop``
    stops. The forward speed it commanded goes back to the runtime (a bump is motion commanded
    but not made)."""

    def __init__(self, make_runtime: Callable[[], Any], max_speed: float, max_turn: float, name: str = "model") -> None:
        super().__init__(make_runtime, max_speed, max_turn)
        self.name = name
        self.commanded = 0.0

    def reset(self, episode: NavEpisode, sim: NavSimulator) -> None:
        super().reset(episode, sim)
        self.commanded = 0.0

    def act(self, obs: Observation) -> Command:
        self.runtime.commanded_speed = self.commanded
        command = self._follow(self._step(obs))
        self.commanded = command.v
        return command

    def _follow(self, out: Any) -> Command:
        if out is None or out.waypoints is None:
            return Command()
        if out.navigation_mode == "stop":
            return Command(stop=True)
        if out.navigation_mode == "scan":
            return Command(w=self.max_turn)
        wp = np.asarray(out.waypoints, dtype=np.float64)
        if not out.navigation_mode and np.linalg.norm(wp[-1]) < STOP_RADIUS_M:
            return Command(stop=True)  # the head's path ends at the robot (the memory planner says "stop")
        far = np.flatnonzero(np.linalg.norm(wp, axis=1) >= LOOKAHEAD_M)
        target = wp[far[0]] if len(far) else wp[-1]
        return pursue(target, self.max_speed, self.max_turn)


class GoalHeatmapGreedy(_RuntimePolicy):
    """Turn toward the goal heatmap's peak (its bearing through the camera intrinsics) and drive
    forward when it is within 20 degrees; never stops."""

    name = "goal_heatmap_greedy"

    def act(self, obs: Observation) -> Command:
        out = self._step(obs)
        if out is None or out.goal_heatmap is None:
            return Command()
        goal = np.asarray(out.goal_heatmap)
        h, w = goal.shape
        col = (int(np.argmax(goal)) % w + 0.5) * obs.rgb.shape[1] / w - 0.5
        bearing = -math.atan2(col - obs.K[0, 2], obs.K[0, 0])  # + left
        turn = float(np.clip(2.0 * bearing, -self.max_turn, self.max_turn))
        return Command(v=self.max_speed if abs(bearing) < math.radians(20) else 0.0, w=turn)


class RandomWalk:
    """A random forward speed and turn rate each step; never stops."""

    name = "random_walk"
    uses_camera = False  # looks at nothing: no rendering

    def __init__(self, max_speed: float, max_turn: float, seed: int = 0) -> None:
        self.max_speed, self.max_turn, self.seed = max_speed, max_turn, seed
        self.rng = np.random.default_rng(seed)

    def reset(self, episode: NavEpisode, sim: NavSimulator) -> None:
        self.rng = np.random.default_rng([self.seed, episode.seed])

    def act(self, obs: Observation) -> Command:
        return Command(v=float(self.rng.uniform(0, self.max_speed)), w=float(self.rng.uniform(-self.max_turn, self.max_turn)))


class ForwardExplorer:
    """Drive straight until the way 0.5 m ahead is blocked (a bumper / range sensor: the occupancy
    grid), then turn in place toward a random side until it is free; never stops."""

    name = "forward_explorer"
    uses_camera = False  # the pose and the true map (its range sensor): no rendering

    def __init__(self, max_speed: float, max_turn: float, radius: float, seed: int = 0) -> None:
        self.max_speed, self.max_turn, self.radius, self.seed = max_speed, max_turn, radius, seed
        self.turn_sign = 1.0
        self.grid: Optional[OccupancyGrid] = None
        self.rng = np.random.default_rng(seed)

    def reset(self, episode: NavEpisode, sim: NavSimulator) -> None:
        self.grid = episode.grid
        self.rng = np.random.default_rng([self.seed, episode.seed])
        self.turn_sign = 1.0

    def act(self, obs: Observation) -> Command:
        heading = obs.T_odom_base[:2, 0]
        ahead = obs.T_odom_base[:2, 3][None] + np.linspace(0.1, 0.5, 5)[:, None] * heading[None]
        if (self.grid.clearance_at(ahead) >= self.radius).all():
            self.turn_sign = 1.0 if self.rng.random() < 0.5 else -1.0
            return Command(v=self.max_speed)
        return Command(w=self.turn_sign * self.max_turn)


class ShortestPathOracle:
    """The planner's shortest path on the true map, followed by pure pursuit; stops at its end."""

    name = "shortest_path_oracle"
    uses_camera = False  # the pose and the planner's path: no rendering

    def __init__(self, max_speed: float, max_turn: float) -> None:
        self.max_speed, self.max_turn = max_speed, max_turn
        self.path = np.zeros((0, 2))
        self.goal: Optional[SceneObject] = None

    def reset(self, episode: NavEpisode, sim: NavSimulator) -> None:
        self.path, self.goal = episode.shortest_path, episode.goal

    def act(self, obs: Observation) -> Command:
        here = obs.T_odom_base[:2, 3]
        if np.linalg.norm(self.path[-1] - here) < 0.15:
            return Command(stop=True)
        ahead = np.linalg.norm(self.path - here, axis=1)
        i = int(np.argmin(ahead))
        later = [j for j in range(i, len(self.path)) if ahead[j] >= LOOKAHEAD_M]
        target = self.path[later[0]] if later else self.path[-1]
        return pursue(_to_base(obs.T_odom_base, target), self.max_speed, self.max_turn)


# ------------------------------------------------------------------------------------ running
@dataclass
class EpisodeResult:
    """What one policy did in one episode."""

    seed: int
    policy: str
    goal_category: str
    instruction: str
    success: bool
    spl: float
    navigation_error_m: float
    oracle_success: bool
    stopped: bool
    collisions: int
    steps: int
    path_m: float
    shortest_m: float
    render_ms: float  # mean per step
    policy_ms: float  # mean per step
    trajectory: list[list[float]] = field(default_factory=list)  # [[x, y, yaw], ...] per step

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


def run_episode(policy: Any, episode: NavEpisode, cfg: SimConfig, max_steps: int, dt: float,
                with_depth: bool = False, on_step: Optional[Callable[[NavSimulator, Observation, Any], None]] = None
                ) -> EpisodeResult:
    """Run ``policy`` from the start until it stops or ``max_steps`` decisions; see the module doc
    for the metrics. ``on_step(sim, obs, policy)`` sees every step (GIF frames)."""
    sim = NavSimulator(episode, cfg, with_depth=with_depth, seed=episode.seed)
    camera = getattr(policy, "uses_camera", True) or on_step is not None  # a GIF frame shows the view
    policy.reset(episode, sim)
    xy = [sim.xy.copy()]
    trajectory = [[float(sim.xy[0]), float(sim.xy[1]), sim.yaw]]
    render_s = policy_s = 0.0
    collisions, steps, stopped = 0, 0, False
    oracle = goal_distance(episode.goal, sim.xy) <= SUCCESS_M
    for step in range(max_steps):
        t0 = time.perf_counter()
        obs = sim.observe(step * dt, camera=camera)
        t1 = time.perf_counter()
        command = policy.act(obs)
        t2 = time.perf_counter()
        render_s += t1 - t0
        policy_s += t2 - t1
        steps += 1
        if on_step is not None:
            on_step(sim, obs, policy)
        if command.stop:
            stopped = True
            break
        collisions += int(sim.move(command, dt))
        xy.append(sim.xy.copy())
        trajectory.append([float(sim.xy[0]), float(sim.xy[1]), sim.yaw])
        oracle = oracle or goal_distance(episode.goal, sim.xy) <= SUCCESS_M
    final_error = goal_distance(episode.goal, sim.xy)
    success = final_error <= SUCCESS_M
    driven = path_length(np.array(xy))
    spl = float(success) * episode.shortest_m / max(driven, episode.shortest_m)
    return EpisodeResult(seed=episode.seed, policy=policy.name, goal_category=episode.goal.category,
                         instruction=episode.instruction, success=success, spl=spl, navigation_error_m=final_error,
                         oracle_success=oracle, stopped=stopped, collisions=collisions, steps=steps, path_m=driven,
                         shortest_m=episode.shortest_m, render_ms=1e3 * render_s / max(steps, 1),
                         policy_ms=1e3 * policy_s / max(steps, 1),
                         trajectory=[[round(v, 3) for v in row] for row in trajectory])


def summarize(results: list[EpisodeResult]) -> dict[str, Any]:
    """Mean metrics over episodes (success and SPL also per goal category)."""
    if not results:
        return {"episodes": 0}
    mean = lambda key: float(np.mean([float(getattr(r, key)) for r in results]))  # noqa: E731
    by_category: dict[str, dict[str, float]] = {}
    for cat in sorted({r.goal_category for r in results}):
        rs = [r for r in results if r.goal_category == cat]
        by_category[cat] = {"episodes": len(rs), "success": float(np.mean([r.success for r in rs])),
                            "spl": float(np.mean([r.spl for r in rs]))}
    return {
        "episodes": len(results),
        "success": mean("success"),
        "spl": mean("spl"),
        "navigation_error_m": mean("navigation_error_m"),
        "oracle_success": mean("oracle_success"),
        "stop_rate": mean("stopped"),
        "collisions_per_episode": mean("collisions"),
        "steps": mean("steps"),
        "path_m": mean("path_m"),
        "render_ms_per_step": mean("render_ms"),
        "policy_ms_per_step": mean("policy_ms"),
        "per_category": by_category,
    }

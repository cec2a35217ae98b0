"""Navigation from memory (vln_core/nav): the map of what the robot saw and the planner on it.

Real parts: views rendered by the simulator's ray caster in procedural homes (true depth, the
true goal pixels standing in for a perfect goal head), the occupancy planner, and the node's
runtime with the geometry backend. A wall seen at 3 m is mapped there with free floor before it
and nothing known behind; a goal seen from two poses is where it was seen even when the robot
has turned away, centred on the object when its evidence saturates, and without a separate
object the heatmap spilled onto; the navigator looks around first, then drives to the goal in
an unseen home and stops near it; a bump marks the cell ahead, and a robot pressed against a
wall still plans; with no free place close enough in front of the goal it drives to one a
little farther and stops there; the runtime with ``node.waypoint_source=memory`` publishes the
plan's waypoints and says what they do.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from vln_core.config import SimConfig
from vln_core.nav.memory_map import NavigationMap
from vln_core.nav.navigator import APPROACH_WIDEN_M, MemoryNavigator, path_waypoints
from vln_core.sim import closed_loop as cl

CFG = SimConfig(image_size=(96, 96))


def _camera_looking_along_x(x: float = 0.0, y: float = 0.0, yaw: float = 0.0, height: float = 1.0) -> np.ndarray:
    """Camera-to-world pose, OpenCV optical axes: optical z along world (cos yaw, sin yaw, 0)."""
    c, s = math.cos(yaw), math.sin(yaw)
    R = np.array([[s, 0.0, c], [-c, 0.0, s], [0.0, -1.0, 0.0]])  # columns: optical x, y, z in world
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, [x, y, height]
    return T


def _wall_view(distance: float = 3.0, size: int = 224, f: float = 146.0) -> tuple[np.ndarray, np.ndarray]:
    """Depth of a wall ``distance`` ahead over a floor 1 m below the camera, and its intrinsics
    (the simulator's camera: 224 px, 75 degrees)."""
    K = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1.0]])
    v = np.arange(size, dtype=np.float64)[:, None] - K[1, 2]
    floor = np.where(v > 0, f * 1.0 / np.maximum(v, 1e-9), np.inf)
    depth = np.minimum(floor, distance) * np.ones((1, size))
    return depth.astype(np.float32), K


def _step_on_the_map_alone(nav: MemoryNavigator, xy=(0.0, 0.0)):
    """One navigator step at ``xy`` with a view that returns no depth: the decision comes from
    the map the test built."""
    base = np.eye(4)
    base[:2, 3] = xy
    no_returns = np.zeros((96, 96), np.float32)
    return nav.step(0.0, base, no_returns, np.array([[60.0, 0, 47.5], [0, 60.0, 47.5], [0, 0, 1]]),
                    _camera_looking_along_x(*xy), None)


def test_a_wall_is_mapped_where_it_is_with_free_floor_before_it_and_nothing_known_behind():
    depth, K = _wall_view(3.05)  # mid-cell: the map's cells are 0.1 m
    m = NavigationMap(np.zeros(2), size_m=12.0)
    for _ in range(2):
        m.update(depth, K, _camera_looking_along_x())
    occupied = lambda x, y: m.occupancy[tuple(np.array(m.cells(np.array([[x, y]]))[:2])[:, 0])] > 0  # noqa: E731
    seen = lambda x, y: m.seen[tuple(np.array(m.cells(np.array([[x, y]]))[:2])[:, 0])]  # noqa: E731
    assert occupied(3.05, 0.0) and occupied(3.05, 0.8)
    assert all(seen(x, 0.0) and not occupied(x, 0.0) for x in (1.0, 1.5, 2.0, 2.5))
    assert not seen(4.0, 0.0) and not seen(-1.0, 0.0)  # behind the wall, behind the camera
    frontier = m.frontier()
    # the cone's sides are frontier, the wall's middle is not (nothing unknown is reachable there)
    assert len(frontier) and not np.any((np.abs(frontier[:, 0] - 3.0) < 0.2) & (np.abs(frontier[:, 1]) < 1.5))
    grid = m.planning_grid(unknown_free=False)
    r, c, _ = m.cells(np.array([[3.05, 0.0], [1.5, 0.0]]))
    assert grid.occupied[r[0], c[0]] and not grid.occupied[r[1], c[1]]


def test_a_models_depth_too_short_maps_the_floor_as_floor_when_its_error_is_given():
    """A predicted depth 15 % short lifts far floor points 0.15 m above the floor: read as
    measured depth they wall the robot in; with ``depth_rel_error`` they are floor, the wall stays."""
    depth, K = _wall_view(3.05)
    short = depth * np.float32(0.85)
    for rel_error, floor_free in ((0.0, False), (0.2, True)):
        m = NavigationMap(np.zeros(2), size_m=12.0)
        m.update(short, K, _camera_looking_along_x(), depth_rel_error=rel_error)
        occupied = lambda x, y: m.occupancy[tuple(np.array(m.cells(np.array([[x, y]]))[:2])[:, 0])] > 0  # noqa: E731
        assert occupied(3.05 * 0.85, 0.0)  # the wall, where the short depth puts it
        assert all(not occupied(x, 0.0) for x in (1.0, 1.5, 2.0)) == floor_free
    m = NavigationMap(np.zeros(2), size_m=12.0)
    m.update(depth, K, _camera_looking_along_x(), max_range_m=2.0)  # the wall at 3 m is beyond the range
    seen = lambda x, y: m.seen[tuple(np.array(m.cells(np.array([[x, y]]))[:2])[:, 0])]  # noqa: E731
    assert not seen(3.05, 0.0) and seen(1.5, 0.0)  # free up to the range, unknown beyond
    assert not (m.occupancy > 0).any()


def test_the_goal_is_remembered_where_it_was_seen_after_the_robot_turns_away():
    depth, K = _wall_view(3.05)
    goal = np.full(depth.shape, 0.02, np.float32)
    goal[70:140, 140:196] = 0.97  # right of the image centre: world y < 0
    m = NavigationMap(np.zeros(2), size_m=12.0)
    assert m.goal_cells() is None
    m.update(depth, K, _camera_looking_along_x(), goal)
    m.update(depth, K, _camera_looking_along_x(y=0.3), goal)
    cells = m.goal_cells()
    assert cells is not None
    assert np.all(np.abs(cells[:, 0] - 3.05) < 0.25) and np.all(cells[:, 1] < 0.4)
    # turned around, looking at an empty floor the other way: the goal stays where it was seen
    back, _ = _wall_view(5.0)
    m.update(back, K, _camera_looking_along_x(yaw=math.pi), np.full(back.shape, 0.02, np.float32))
    again = m.goal_cells()
    assert again is not None and np.allclose(again[0], cells[0], atol=0.11)
    # near views of the same place without the goal vote it down (each less than one sighting adds)
    for _ in range(12):
        m.update(depth, K, _camera_looking_along_x(), np.full(depth.shape, 0.02, np.float32))
    assert m.goal_cells() is None


def test_the_goal_is_centred_on_the_object_when_its_evidence_saturates_everywhere():
    # a 2.2 m x 1.7 m bed seen many times: every one of its cells is at the evidence limit, and the
    # wall just behind it got a little evidence too (the heatmap's blur)
    m = NavigationMap(np.zeros(2), size_m=12.0)
    bed = (slice(m.cells(np.array([[0.0, -2.0]]))[0][0], m.cells(np.array([[0.0, -0.3]]))[0][0]),
           slice(m.cells(np.array([[1.0, 0.0]]))[1][0], m.cells(np.array([[3.2, 0.0]]))[1][0]))
    m.goal[bed] = 6.0
    wall_row = bed[0].start - 1
    m.goal[wall_row, bed[1]] = 6.0
    cells = m.goal_cells(threshold=2.0)
    centre = np.array([2.1, -1.15])
    assert np.linalg.norm(cells[0] - centre) < 0.35, cells[0]
    # the side the robot comes from (y = -0.3) is among the goal's cells
    assert cells[:, 1].max() > -0.45
    assert len(cells) > 100


def test_the_goals_cells_leave_out_a_separate_object_the_heatmap_spilled_onto():
    # a desk (0.9 m x 1.7 m) and, 0.4 m in front of it, a chair the heatmap also lit up
    m = NavigationMap(np.zeros(2), size_m=12.0)
    rows, cols = np.mgrid[0:120, 0:120]
    x, y = m.center_of(rows, cols).transpose(2, 0, 1)
    desk = (x > 2.0) & (x < 2.9) & (np.abs(y) < 0.85)
    chair = (x > 1.2) & (x < 1.6) & (np.abs(y) < 0.2)
    m.goal[desk] = 6.0
    m.goal[chair] = 6.0
    cells = m.goal_cells(threshold=2.0)
    assert cells[:, 0].min() > 2.0  # the chair is 1 m from the desk: stopping beside it is no success
    assert len(cells) == desk.sum()


def test_path_waypoints_walk_the_path_in_the_base_frame():
    T = np.eye(4)
    T[:2, :2] = [[0.0, -1.0], [1.0, 0.0]]  # facing +y
    T[:2, 3] = [1.0, 2.0]
    wp = path_waypoints(np.array([[1.0, 2.0], [1.0, 2.5]]), T)
    assert wp.shape == (20, 2)
    assert np.allclose(wp[0], [0.05, 0.0], atol=1e-6) and np.allclose(wp[-1], [0.5, 0.0], atol=1e-6)


@pytest.fixture(scope="module")
def episode():
    seed = 900000
    while (ep := cl.make_nav_episode(seed, CFG)) is None:
        seed += 1
    return ep


def test_the_navigator_looks_around_then_drives_to_the_goal_and_stops_near_it(episode):
    """True depth and the true goal pixels (a perfect goal head): the navigator alone must find
    the goal in an unseen home, drive there without collisions and stop within the success radius."""
    goal_index = episode.scene.objects.index(episode.goal)
    max_turn = math.radians(CFG.max_turn_rate_dps)

    class TruthPolicy:
        name = "memory_truth"

        def reset(self, ep, sim):
            self.sim, self.nav, self.v, self.modes = sim, MemoryNavigator(), 0.0, []

        def act(self, obs):
            view = self.sim.caster.render(obs.T_wc)
            goal = np.where(view.object_id == goal_index, 0.97, 0.02).astype(np.float32)
            d = self.nav.step(obs.t, obs.T_odom_base, view.depth, obs.K, obs.T_wc, goal, self.v)
            self.modes.append(d.mode)
            assert d.waypoints.shape == (20, 2)
            if d.mode == "stop":
                return cl.Command(stop=True)
            if d.mode == "scan":
                self.v = 0.0
                return cl.Command(w=max_turn)
            far = np.flatnonzero(np.linalg.norm(d.waypoints, axis=1) >= cl.LOOKAHEAD_M)
            c = cl.pursue(d.waypoints[far[0]] if len(far) else d.waypoints[-1], CFG.max_speed_mps, max_turn)
            self.v = c.v
            return c

    policy = TruthPolicy()
    result = cl.run_episode(policy, episode, CFG, max_steps=60, dt=0.5)
    assert result.success and result.stopped and result.collisions == 0, (result, policy.modes)
    assert policy.modes[-1] == "stop" and "goal" in policy.modes
    assert result.spl > 0.6


def test_the_navigator_scans_first_and_a_bump_marks_the_cell_ahead():
    depth, K = _wall_view(3.0)
    nav = MemoryNavigator()
    base = np.eye(4)
    d = nav.step(0.0, base, depth, K, _camera_looking_along_x(), None)
    assert d.mode == "scan" and d.goal_xy is None
    ahead = nav.map.cells(np.array([[0.3, 0.0]]))
    before = float(nav.map.occupancy[ahead[0][0], ahead[1][0]])
    nav.step(0.5, base, depth, K, _camera_looking_along_x(), None, commanded_speed=0.5)  # commanded, not moved
    assert float(nav.map.occupancy[ahead[0][0], ahead[1][0]]) > max(before, 0.0)


def test_a_robot_walled_in_by_single_hits_still_explores_through_them():
    """A ring of cells each hit by one view (a model's depth error) around a looked-around robot,
    free floor seen beyond it, then unknown: it drives out through the ring rather than turning on the spot forever; a
    ring hit by many views (a real wall) keeps it turning."""
    for hits, expected in ((1, "explore"), (6, "scan")):
        nav = MemoryNavigator()
        nav.map = NavigationMap(np.zeros(2), size_m=12.0)
        rows, cols = np.mgrid[0:120, 0:120]
        r = np.hypot(*(nav.map.center_of(rows, cols).transpose(2, 0, 1)))
        nav.map.seen[:] = r < 1.8  # free inside, the ring, free floor seen beyond it, then unknown
        nav.map.occupancy[r < 1.8] = -2.0
        nav.map.occupancy[(r >= 1.05) & (r < 1.25)] = hits * 0.9
        nav.turned, nav._last_mode = 2 * math.pi, "scan"
        d = _step_on_the_map_alone(nav)
        assert d.mode == expected, (hits, d.mode)


def test_a_robot_pressed_against_a_wall_after_a_bump_still_plans_to_the_goal():
    """The robot stands just over its radius from a wall behind it (x = -0.15), off the planner's
    lattice: the lattice place under it is too close to the wall for the search to start there.
    It plans from the free place beside it to the goal it knows instead of turning on the spot."""
    nav = MemoryNavigator()
    nav.map = NavigationMap(np.zeros(2), size_m=12.0)
    rows, cols = np.mgrid[0:120, 0:120]
    centres = nav.map.center_of(rows, cols)
    nav.map.seen[:] = True
    nav.map.occupancy[:] = -2.0
    wall = (centres[..., 0] > -0.26) & (centres[..., 0] < -0.14)
    nav.map.occupancy[wall] = 4.0
    goal = np.hypot(centres[..., 0] - 3.0, centres[..., 1] - 0.2) < 0.25
    nav.map.goal[goal] = 6.0
    nav.turned, nav._last_mode = 2 * math.pi, "explore"
    base = np.eye(4)
    base[:2, 3] = [0.19, 0.19]
    assert np.hypot(*(centres[wall] - base[:2, 3]).T).min() > nav.clearance  # outside the freed disc
    d = _step_on_the_map_alone(nav, (0.19, 0.19))
    assert d.mode == "goal", d.mode
    assert np.allclose(d.path_xy[0], base[:2, 3]) and d.path_xy[-1, 0] > 2.3
    assert d.waypoints[-1, 0] > 0.5  # it drives away from the wall, towards the goal


def test_with_no_place_close_enough_in_front_of_the_goal_it_drives_to_one_a_little_farther_and_stops_there():
    """A TV against a wall. With ``approach_m`` below the robot's clearance no free place is that
    close to it: the robot drives to a place seen free in front of it, a little farther, rather
    than exploring, and stops there once the goal has about two confident views of evidence."""
    def room(evidence):
        nav = MemoryNavigator(approach_m=0.25, stop_m=0.25)
        nav.map = NavigationMap(np.zeros(2), size_m=12.0)
        rows, cols = np.mgrid[0:120, 0:120]
        x, y = nav.map.center_of(rows, cols).transpose(2, 0, 1)
        nav.map.seen[:] = y > -2.1  # behind the wall: unknown
        nav.map.occupancy[y > -2.1] = -2.0
        nav.map.occupancy[(y > -2.1) & (y < -2.0)] = 4.0  # the wall
        tv = (np.abs(x) < 0.8) & (y > -2.0) & (y < -1.6)
        nav.map.occupancy[tv] = 4.0
        nav.map.goal[tv] = evidence
        nav.turned, nav._last_mode = 2 * math.pi, "goal"
        return nav

    d = _step_on_the_map_alone(room(6.0), (0.0, 1.5))
    assert d.mode == "goal", d.mode
    end = d.path_xy[-1]
    assert -1.6 + 0.25 < end[1] < -1.6 + 0.25 + APPROACH_WIDEN_M + 0.15 and abs(end[0]) < 0.8
    assert _step_on_the_map_alone(room(6.0), end).mode == "stop"
    assert _step_on_the_map_alone(room(3.0), end).mode == "goal"  # one view's evidence: not enough to stop this far


def test_the_runtime_publishes_the_memory_plan_and_says_what_it_does(episode):
    """node.waypoint_source=memory on the geometry backend (an RGB-D robot): the waypoints are
    the navigator's; its goal heatmap is no probability, so the runtime warns that it only explores."""
    from vln_core.config import load_config
    from vln_core.runtime import NavigationRuntime

    cfg = load_config(None, ["node.backend=geometry", "node.waypoint_source=memory", "node.publish_overlay=false"])
    cfg.node.camera_mount = tuple(cl.node_camera_mount(CFG))
    runtime = NavigationRuntime(cfg)
    sim = cl.NavSimulator(episode, CFG, with_depth=True)
    runtime.set_camera_info(sim.camera.K, sim.camera.width, sim.camera.height)
    runtime.set_instruction(episode.instruction)
    outputs = []
    try:
        for step in range(3):
            obs = sim.observe(step * 0.5)
            stamp = 1_000_000_000 + step * 500_000_000
            runtime.add_odometry(stamp, obs.T_odom_base)
            runtime.add_image(stamp, "camera", obs.rgb)
            runtime.add_depth(stamp, obs.depth)
            out = runtime.step(overlay=False)
            if out is not None:
                outputs.append(out)
            sim.move(cl.Command(w=math.radians(CFG.max_turn_rate_dps)), 0.5)
        assert outputs and all(o.navigation_mode == "scan" for o in outputs)
        assert all(o.waypoints is not None and o.waypoints.shape == (20, 2) for o in outputs)
        report = runtime.diagnostics()
        text = repr(report)
        assert "memory (scan)" in text and "memory_without_goal" in text
    finally:
        runtime.close()


def test_the_closed_loop_runtime_sees_the_camera_where_the_simulator_renders_it(episode):
    """The runtime derives every camera pose from odometry and ``node.camera_mount``: a mount that
    is not the simulated camera's (it once put the camera 0.1 m too far ahead, which doubled the
    baseline of a robot turning on the spot and the multi-view depth with it) is refused, and
    :func:`~vln_core.sim.closed_loop.node_camera_mount` gives the one that matches."""
    from vln_core.config import load_config
    from vln_core.runtime import NavigationRuntime

    cfg = load_config(None, ["node.backend=geometry", "node.publish_overlay=false",
                             "node.camera_mount=[0.2,0.0,1.0,-0.5,0.5,-0.5,0.5]"])
    sim = cl.NavSimulator(episode, CFG)
    assert not np.allclose(sim.T_base_cam[:3, 3], [0.2, 0.0, 1.0])  # the simulated camera sits elsewhere
    policy = cl.WaypointPolicy(lambda: NavigationRuntime(cfg), 0.5, 1.0)
    try:
        with pytest.raises(ValueError, match="camera_mount"):
            policy.reset(episode, sim)
        cfg.node.camera_mount = tuple(cl.node_camera_mount(CFG))
        policy.reset(episode, sim)
        obs = sim.observe(0.0)
        assert np.allclose(obs.T_odom_base @ policy.runtime.T_base_cam, obs.T_wc, atol=1e-9)
    finally:
        policy.close()

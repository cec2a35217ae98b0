"""Waypoints from memory: plan on the map of what the robot has seen to where it saw the goal.

:class:`MemoryNavigator` turns each processed view (depth, camera pose, goal heatmap) into the
node's waypoints:

1. the view updates the :class:`~vln_core.nav.memory_map.NavigationMap` (occupancy and goal
   evidence in the world frame);
2. once the goal evidence is strong enough, the target is the free place nearest the robot
   within ``approach_m`` of the goal's cells (seen free first; a little farther, before a
   place in unknown space); until then the robot first turns in place once around
   (the goal may be behind it) and then explores: the frontier (known free next to unknown)
   that is near and ahead;
3. one Dijkstra search from the robot (from a free place beside it when it stands too close to
   an obstacle, as after a bump) over the map (unknown cells count as free, so paths may
   lead into what is not seen yet; the next views correct them) gives the cheapest reachable
   target and the path to it, whose first metre becomes the ``(20, 2)`` waypoints in the base
   frame (x forward, y left), 0.05 m apart;
4. within ``stop_m`` of the goal's cells, or at the widened place with about two confident
   views of the goal, the waypoints are all zero: stop.

A commanded forward motion that did not happen (a bump) marks the cell ahead as an obstacle.
Everything is in the odom frame (z up, floor z = 0); base poses are base-to-odom (REP 103).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import cv2
import numpy as np

from vln_core.models.spatial_model import NUM_WAYPOINTS
from vln_core.nav.memory_map import NavigationMap
from vln_core.sim.planner import OccupancyGrid, grid_search, path_from_field, shortcut_path

__all__ = ["MemoryNavigator", "NavigatorDecision", "path_waypoints", "WAYPOINT_SPACING_M", "PREDICTED_DEPTH_REL_ERROR",
           "PREDICTED_DEPTH_RANGE_M"]

#: The planner's lattice takes every second map cell (0.2 m at the map's 0.1 m).
_STEP = 2
#: The node's waypoints are 0.1 s apart at the robot's top speed of 0.5 m/s.
WAYPOINT_SPACING_M = 0.05
#: A model's depth (a colour-only robot) is mapped as off by this share (the floor test widens
#: with it) and only up to this range: beyond it the learned depth says little.
PREDICTED_DEPTH_REL_ERROR, PREDICTED_DEPTH_RANGE_M = 0.2, 3.0
#: With no frontier reachable, cells count as walls only above this occupancy log-odds (about
#: three views' hits more than misses).
WALLED_IN_OCCUPANCY = 2.0
#: When no place seen free is within ``approach_m`` of the goal, one this much farther will do;
#: the robot also stops there (still inside the 1 m of success).
APPROACH_WIDEN_M = 0.25
#: A planned path shorter than this (metres) means the robot is at the place it drives to; it
#: stops at a widened place only where the goal has this much more evidence than
#: ``goal_threshold`` (about one more confident view than it needs to count as the goal).
ARRIVED_M, ARRIVED_EVIDENCE = 0.2, 2.0
#: With no place reachable from where the robot stands, the search starts from a free place
#: this close (metres).
UNSTICK_M = 0.45


class _Reach(NamedTuple):
    """One Dijkstra search on the planner's lattice (see :meth:`MemoryNavigator._reachable`)."""

    cost: np.ndarray  # (h, w) path cost from the source, inf where unreached
    parent: np.ndarray  # (h, w) flat index of each place's predecessor
    shape: tuple[int, int]  # the lattice's (h, w)
    clearance: float  # metres the search kept from obstacles
    moved_source: bool  # the search started from a free place beside the robot, not under it


def path_waypoints(path_xy: np.ndarray, T_odom_base: np.ndarray, n: int = NUM_WAYPOINTS,
                   spacing: float = WAYPOINT_SPACING_M) -> np.ndarray:
    """The first ``n`` points of a world path ``(P, 2)`` (starting at the robot) every ``spacing``
    metres of arc length, in the base frame ``(n, 2)`` float32; the end repeats where the path
    is shorter."""
    path = np.asarray(path_xy, dtype=np.float64)
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    want = np.minimum(spacing * np.arange(1, n + 1), arc[-1])
    pts = np.stack([np.interp(want, arc, path[:, 0]), np.interp(want, arc, path[:, 1])], axis=1)
    d = pts - T_odom_base[:2, 3]
    return (d @ T_odom_base[:2, :2]).astype(np.float32)


@dataclass
class NavigatorDecision:
    """What the navigator decided for one view."""

    waypoints: np.ndarray  # (20, 2) float32 base frame (x forward, y left), metres; all zero: stop
    mode: str  # "stop", "goal", "scan" or "explore"
    goal_xy: Optional[np.ndarray]  # (2,) world xy of the goal estimate, or None
    path_xy: Optional[np.ndarray]  # (P, 2) the planned world path, or None


class MemoryNavigator:
    """See the module doc.

    Args:
        robot_radius_m: the robot's disc; paths keep ``margin_m`` more.
        stop_m: stop this close to the goal's cells (metres; they are the surfaces of the object
            the views saw, and what the goal heatmap's blur put just behind it: 0.85 m stopped
            short of the 1 m success radius at deep counters and beside TVs; 0.55 / 0.45 were
            chosen on training homes, seeds 5000+).
        approach_m: the target is a free place within this distance of the goal's cells.
        goal_threshold: goal log-odds a place needs to count as the goal.
    """

    def __init__(self, robot_radius_m: float = 0.25, margin_m: float = 0.05, stop_m: float = 0.55,
                 approach_m: float = 0.45, goal_threshold: float = 2.0, map_size_m: float = 20.0) -> None:
        self.radius, self.clearance = robot_radius_m, robot_radius_m + margin_m
        self.stop_m, self.approach_m, self.goal_threshold = stop_m, approach_m, goal_threshold
        self.map_size_m = map_size_m
        self.map: Optional[NavigationMap] = None
        self.turned = 0.0
        self._last: Optional[tuple[float, np.ndarray, float]] = None  # (time, xy, yaw)
        self._last_mode = ""

    def reset(self) -> None:
        self.map, self.turned, self._last, self._last_mode = None, 0.0, None, ""

    def step(self, t: float, T_odom_base: np.ndarray, depth: np.ndarray, K: np.ndarray, T_wc: np.ndarray,
             goal_probability: Optional[np.ndarray], commanded_speed: float = 0.0,
             depth_measured: bool = True) -> NavigatorDecision:
        """One view at time ``t`` (seconds): ``depth (H, W)`` metres with intrinsics ``K``, the camera
        pose ``T_wc`` and base pose ``T_odom_base`` (both to odom), the goal heatmap as per-pixel
        probabilities ``(h, w)``; ``commanded_speed`` is the forward speed driven since the last
        view (m/s), to notice bumps; ``depth_measured`` False for a model's depth (mapped with
        :data:`PREDICTED_DEPTH_REL_ERROR` and up to :data:`PREDICTED_DEPTH_RANGE_M`)."""
        xy = T_odom_base[:2, 3].astype(np.float64)
        yaw = math.atan2(T_odom_base[1, 0], T_odom_base[0, 0])
        if self.map is None:
            self.map = NavigationMap(xy, size_m=self.map_size_m)
        if self._last is not None:
            t0, xy0, yaw0 = self._last
            dt = max(t - t0, 1e-3)
            turn = (yaw - yaw0 + math.pi) % (2 * math.pi) - math.pi
            if self._last_mode == "scan":
                self.turned += abs(turn)
            if commanded_speed > 0.05 and np.linalg.norm(xy - xy0) < 0.3 * commanded_speed * dt:
                heading = np.array([math.cos(yaw), math.sin(yaw)])
                for ahead in (0.05, 0.15):  # just beyond the robot's disc
                    self.map.mark_blocked(xy + (self.radius + ahead) * heading)
        self._last = (t, xy, yaw)
        if depth_measured:
            self.map.update(depth, K, T_wc, goal_probability)
        else:
            self.map.update(depth, K, T_wc, goal_probability, depth_rel_error=PREDICTED_DEPTH_REL_ERROR,
                            max_range_m=PREDICTED_DEPTH_RANGE_M)
        cells = self.map.goal_cells(self.goal_threshold)
        goal = None if cells is None else cells[0]
        zero = np.zeros((NUM_WAYPOINTS, 2), np.float32)
        nearest = np.inf if cells is None else float(np.linalg.norm(cells - xy, axis=1).min())
        if nearest <= self.stop_m:
            return self._decide(NavigatorDecision(zero, "stop", goal, None))
        grid = self.map.planning_grid(unknown_free=True, robot_xy=xy, robot_radius=self.clearance)
        field = self._reachable(grid, xy)
        if cells is not None:
            path = self._path_to(grid, field, xy, self._approach(field, grid, cells))
            if (path is not None and np.linalg.norm(np.diff(path, axis=0), axis=1).sum() < ARRIVED_M
                    and nearest <= self.stop_m + APPROACH_WIDEN_M
                    and self._evidence(goal) >= self.goal_threshold + ARRIVED_EVIDENCE):
                return self._decide(NavigatorDecision(zero, "stop", goal, None))  # at the widened place
            if path is not None:
                return self._decide(NavigatorDecision(path_waypoints(path, T_odom_base), "goal", goal, path))
        path = None
        if self.turned >= 2 * math.pi - 0.2 or cells is not None:
            path = self._explore(grid, field, xy, yaw)
            if path is None:  # walled in: a depth error seen once is no wall (cells hit by several views are)
                grid = self.map.planning_grid(unknown_free=True, robot_xy=xy, robot_radius=self.clearance,
                                              occupied_above=WALLED_IN_OCCUPANCY)
                path = self._explore(grid, self._reachable(grid, xy), xy, yaw)
        if path is None:  # turn in place: the first look around, or nowhere to go yet
            angle = np.linspace(0.1, 1.0, NUM_WAYPOINTS) * math.pi / 2
            arc = np.stack([0.05 * np.cos(angle), 0.05 * np.sin(angle)], axis=1).astype(np.float32)
            return self._decide(NavigatorDecision(arc, "scan", goal, None))
        return self._decide(NavigatorDecision(path_waypoints(path, T_odom_base), "explore", goal, path))

    def _evidence(self, xy: np.ndarray) -> float:
        """Goal log-odds of the map cell at world ``xy (2,)``."""
        r, c, _ = self.map.cells(np.asarray(xy, dtype=np.float64)[None])
        return float(self.map.goal[r[0], c[0]])

    def _decide(self, decision: NavigatorDecision) -> NavigatorDecision:
        self._last_mode = decision.mode
        return decision

    def _reachable(self, grid: OccupancyGrid, xy: np.ndarray) -> _Reach:
        """Path cost from the robot to every place (Dijkstra on the planner's lattice), the
        clearance it was searched with (the planner's, or the bare radius when the robot is
        closer than that to a mapped wall) and whether the search had to start from a free
        lattice place beside the robot: after a bump the robot stands against what it hit, and
        the lattice place under it is too close to the obstacle, so nothing would be reachable
        and the robot would turn in place until the episode ends."""
        for clearance in (self.clearance, self.radius - 0.03):
            cost, parent, shape = grid_search(grid, xy, clearance, step=_STEP)
            if np.isfinite(cost).sum() > 1:
                return _Reach(cost, parent, shape, clearance, False)
        clearance = self.radius - 0.03
        lattice_clearance = grid.clearance[::_STEP, ::_STEP]  # what grid_search reads
        places = self._lattice_xy(grid, lattice_clearance.shape)
        free = lattice_clearance >= clearance
        d = np.linalg.norm(places - xy, axis=-1)
        beside = np.flatnonzero((free & (d <= UNSTICK_M)).ravel())
        for k in beside[np.argsort(d.ravel()[beside])][:4]:
            source = places.reshape(-1, 2)[k]
            cost, parent, shape = grid_search(grid, source, clearance, step=_STEP)
            if np.isfinite(cost).sum() > 1:
                return _Reach(cost, parent, shape, clearance, True)
        return _Reach(cost, parent, shape, clearance, False)

    @staticmethod
    def _lattice_xy(grid: OccupancyGrid, shape: tuple[int, int]) -> np.ndarray:
        rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
        return grid.center_of(np.stack([rows * _STEP + _STEP // 2, cols * _STEP + _STEP // 2], axis=-1))

    def _approach(self, field: _Reach, grid: OccupancyGrid, cells: np.ndarray) -> Optional[tuple[int, int]]:
        """The lattice place to drive to for the goal's ``cells (G, 2)``: the cheapest reachable
        place within ``approach_m`` of them, preferring places the robot has seen free.

        Two widenings keep the goal reachable: a place seen free up to ``APPROACH_WIDEN_M`` farther
        (the 0.2 m lattice can skip the thin band between the robot's clearance and
        ``approach_m`` in front of a large object) comes before a place in unknown space, and
        a place in unknown space at ``approach_m`` is most often behind the wall the goal stands
        against: only a detour around the room reaches it."""
        cost, shape = field.cost, field.shape
        ok = np.isfinite(cost)
        if not ok.any():
            return None
        rows, cols = np.nonzero(ok)
        centres = self._lattice_xy(grid, shape)[rows, cols]
        # metres from every map cell's centre to the nearest goal cell's centre (exact Euclidean)
        away = np.ones(self.map.goal.shape, np.uint8)
        gr, gc, gin = self.map.cells(cells)
        away[gr[gin], gc[gin]] = 0
        dist = cv2.distanceTransform(away, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) * self.map.resolution
        mr, mc, inside = self.map.cells(centres)
        d = np.where(inside, dist[mr, mc], np.inf)
        seen_free = inside & self.map.seen[mr, mc] & (self.map.occupancy[mr, mc] < 0.0)
        for pool, within in ((seen_free, self.approach_m), (seen_free, self.approach_m + APPROACH_WIDEN_M),
                             (np.ones_like(seen_free), self.approach_m)):
            near = np.flatnonzero(pool & (d <= within))
            if len(near):
                k = near[int(np.argmin(cost[rows[near], cols[near]]))]
                return int(rows[k]), int(cols[k])
        return None

    def _path_to(self, grid: OccupancyGrid, field: _Reach, xy: np.ndarray, place: Optional[tuple[int, int]]
                 ) -> Optional[np.ndarray]:
        """World path ``(P, 2)`` from the robot to a lattice ``place`` along the cost field."""
        if place is None:
            return None
        end = self._lattice_xy(grid, field.shape)[place]
        back = path_from_field(grid, field.parent, field.shape, end, step=_STEP)
        if field.moved_source:  # first off the obstacle to the free place the search started from
            return np.concatenate([xy[None], back[::-1]])
        path = np.concatenate([xy[None], back[::-1][1:]]) if len(back) > 1 else np.stack([xy, end])
        return shortcut_path(grid, path, field.clearance)

    def _explore(self, grid: OccupancyGrid, field: _Reach, xy: np.ndarray, yaw: float) -> Optional[np.ndarray]:
        """Path to the frontier that is cheap to reach and ahead (1 m of path per 40 degrees of
        turn; frontiers closer than 1 m are what the next views will reveal anyway)."""
        frontier = self.map.frontier()
        cost, shape = field.cost, field.shape
        if not len(frontier) or not np.isfinite(cost).any():
            return None
        rc = grid.cell_of(frontier) // _STEP
        rc = np.minimum(rc, np.array(shape) - 1)
        c = cost[rc[:, 0], rc[:, 1]]
        ok = np.isfinite(c)
        if not ok.any():
            return None
        frontier, rc, c = frontier[ok], rc[ok], c[ok]
        d = frontier - xy
        bearing = np.abs((np.arctan2(d[:, 1], d[:, 0]) - yaw + math.pi) % (2 * math.pi) - math.pi)
        score = c + 1.5 * bearing + np.where(c < 1.0, 3.0, 0.0)
        k = int(np.argmin(score))
        return self._path_to(grid, field, xy, (int(rc[k, 0]), int(rc[k, 1])))

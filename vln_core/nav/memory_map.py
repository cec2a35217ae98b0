"""The robot's memory of where things are: a top-down map built from the views it has seen.

:class:`NavigationMap` is a world-frame (odom, z up) grid that every processed view updates
from its depth (measured, or the model's) and its camera pose:

* **occupancy** (log-odds per cell): a point between ``floor_m`` and ``body_height_m`` above the
  floor is an obstacle hit, and the cells its line of sight crosses on the way are free;
  floor points are free. Cells no ray touched stay unknown;
* **goal evidence** (log-odds per cell): each view's goal heatmap (a per-pixel probability that
  the pixel shows the object the instruction names, :mod:`vln_core.models.goal_grounding`) is
  carried to the world with the same depth; a cell the view saw gets the logit of the highest
  probability that landed in it, so a goal seen from several poses stands out, a one-off false
  detection is voted down by the views that saw the same place without it, and a goal seen
  earlier and now behind the robot is still there.

Grid cell ``(row, col)`` covers world ``x in [ox + col res, ox + (col + 1) res)``, ``y in
[oy + row res, ...)`` (the simulator's :class:`~vln_core.sim.planner.OccupancyGrid` convention,
whose planner the navigator reuses). Camera poses are camera-to-world, OpenCV optical axes.
"""
from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

from vln_core.sim.planner import OccupancyGrid

__all__ = ["NavigationMap"]

_HIT, _MISS, _LIMIT = 0.9, -0.35, 4.0
_GOAL_LIMIT = 6.0
#: Per view, a cell's goal log-odds change by the logit of the highest goal probability that
#: landed in it, clipped to [-GOAL_MISS, GOAL_HIT]; a cell that any point of the view beyond
#: GOAL_MISS_RANGE_M landed in gets no negative vote from that view.
GOAL_HIT, GOAL_MISS, GOAL_MISS_RANGE_M = 2.5, 0.5, 3.5
#: The goal's centre is where the evidence, blurred with a Gaussian of this sigma (metres), is largest.
GOAL_CENTRE_M = 0.4


class NavigationMap:
    """Occupancy and goal evidence around ``center_xy`` (see the module doc).

    Args:
        center_xy: ``(2,)`` world xy the map is centred on (the robot's first pose).
        size_m: side of the square map, metres.
        resolution: metres per cell.
        floor_m, body_height_m: points between these heights (metres above the floor, z = 0)
            are obstacles for a robot this tall.
        max_range_m: depth beyond this is not used (too uncertain to map).
        pixel_stride: every ``pixel_stride``-th pixel of the depth image is used.
    """

    def __init__(self, center_xy: np.ndarray, size_m: float = 24.0, resolution: float = 0.1, floor_m: float = 0.08,
                 body_height_m: float = 1.3, max_range_m: float = 6.0, pixel_stride: int = 4) -> None:
        n = int(round(size_m / resolution))
        self.resolution = float(resolution)
        self.origin = np.asarray(center_xy, dtype=np.float64)[:2] - size_m / 2.0
        self.occupancy = np.zeros((n, n), np.float32)  # log-odds, > 0 occupied
        self.seen = np.zeros((n, n), bool)
        self.goal = np.zeros((n, n), np.float32)  # log-odds that the cell holds the goal
        self.floor_m, self.body_height_m = floor_m, body_height_m
        self.max_range_m, self.pixel_stride = max_range_m, pixel_stride

    # ---------------------------------------------------------------- cells
    def cells(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World ``(..., 2)`` -> (row, col, inside) int arrays (clipped) and the in-map mask."""
        rc = np.floor((np.asarray(xy, dtype=np.float64) - self.origin) / self.resolution).astype(np.int64)
        n = self.occupancy.shape[0]
        inside = (rc >= 0).all(axis=-1) & (rc < n).all(axis=-1)
        rc = np.clip(rc, 0, n - 1)
        return rc[..., 1], rc[..., 0], inside

    def center_of(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Cell indices -> ``(..., 2)`` world xy of their centres."""
        return np.stack([self.origin[0] + (np.asarray(cols) + 0.5) * self.resolution,
                         self.origin[1] + (np.asarray(rows) + 0.5) * self.resolution], axis=-1)

    # ---------------------------------------------------------------- update
    def update(self, depth: np.ndarray, K: np.ndarray, T_wc: np.ndarray, goal_probability: Optional[np.ndarray] = None,
               depth_rel_error: float = 0.0, max_range_m: Optional[float] = None) -> None:
        """Add one view.

        Args:
            depth: ``(H, W)`` metres along the optical axis (0 or non-finite: no return).
            K: ``(3, 3)`` intrinsics of ``depth``'s pixels.
            T_wc: ``(4, 4)`` camera-to-world pose (OpenCV optical axes; world z up, floor z = 0).
            goal_probability: ``(h, w)`` per-pixel probability that the pixel shows the goal (any
                resolution of the same view), or None.
            depth_rel_error: the depth's typical relative error (0: measured; a model's depth is
                off by 10-20 %). A floor point whose depth is a factor ``1 - e`` short lands ``e``
                times the camera's height above the floor, so points up to ``floor_m + e * height``
                count as floor: without it the far floor of a predicted depth maps as a wall.
            max_range_m: depth up to this range is used (default the map's ``max_range_m``); a
                point beyond it only frees its line of sight up to the range.
        """
        H, W = depth.shape
        s = self.pixel_stride
        v, u = np.mgrid[s // 2:H:s, s // 2:W:s]
        z = depth[v, u].astype(np.float64)
        ok = np.isfinite(z) & (z > 0.05)
        u, v, z = u[ok], v[ok], z[ok]
        # a point beyond the range says only that its line of sight is free up to the range
        beyond = z > min(self.max_range_m, max_range_m or self.max_range_m)
        z = np.where(beyond, min(self.max_range_m, max_range_m or self.max_range_m), z)
        rays = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=-1)
        pts = rays @ T_wc[:3, :3].T + T_wc[:3, 3]
        height = pts[:, 2]
        floor_m = self.floor_m + max(float(depth_rel_error), 0.0) * max(float(T_wc[2, 3]), 0.0)
        obstacle = (height > floor_m) & (height < self.body_height_m) & ~beyond
        cam = T_wc[:2, 3]
        # free space: the cells each line of sight crosses before its end (0.1 m steps)
        d = pts[:, :2] - cam
        length = np.linalg.norm(d, axis=1)
        steps = np.arange(0.0, self.max_range_m, self.resolution)
        t = steps[None, :] / np.maximum(length[:, None], 1e-6)
        before = t < 1.0 - self.resolution / np.maximum(length[:, None], 1e-6)
        samples = cam + t[..., None] * d[:, None, :]
        r, c, inside = self.cells(samples[before])
        free = np.zeros_like(self.seen)
        free[r[inside], c[inside]] = True
        r, c, inside = self.cells(pts[:, :2])
        hit = np.zeros_like(self.seen)
        hit[r[inside & obstacle], c[inside & obstacle]] = True
        floor = np.zeros_like(self.seen)
        on_floor = inside & (height <= floor_m) & ~beyond
        floor[r[on_floor], c[on_floor]] = True
        free |= floor
        free &= ~hit
        self.occupancy[free] += _MISS
        self.occupancy[hit] += _HIT
        np.clip(self.occupancy, -_LIMIT, _LIMIT, out=self.occupancy)
        self.seen |= free | hit
        if goal_probability is not None:
            gp = np.asarray(goal_probability, dtype=np.float64)
            gv = np.clip(((v + 0.5) * gp.shape[0] / H).astype(np.int64), 0, gp.shape[0] - 1)
            gu = np.clip(((u + 0.5) * gp.shape[1] / W).astype(np.int64), 0, gp.shape[1] - 1)
            p = np.clip(gp[gv, gu], 1e-3, 1 - 1e-3)
            best = np.zeros(self.goal.shape, np.float64)
            touched = np.zeros_like(self.seen)
            keep = inside & (height > floor_m) & ~beyond  # the goal is an object: not the floor
            np.maximum.at(best, (r[keep], c[keep]), p[keep])
            touched[r[keep], c[keep]] = True
            logit = np.clip(np.log(best[touched] / (1 - best[touched])), -GOAL_MISS, GOAL_HIT)
            # a goal too far to be recognised is no evidence against it: no votes against cells seen far
            far = np.zeros_like(self.seen)
            far[r[keep & (z > GOAL_MISS_RANGE_M)], c[keep & (z > GOAL_MISS_RANGE_M)]] = True
            logit = np.where((logit < 0) & far[touched], 0.0, logit)
            self.goal[touched] = np.clip(self.goal[touched] + logit, -_GOAL_LIMIT, _GOAL_LIMIT)

    def mark_blocked(self, xy: np.ndarray) -> None:
        """A bump: the cell at world ``xy`` is an obstacle (something the camera did not see)."""
        r, c, inside = self.cells(np.asarray(xy)[None])
        if inside[0]:
            self.occupancy[r[0], c[0]] = _LIMIT
            self.seen[r[0], c[0]] = True

    # ---------------------------------------------------------------- queries
    def goal_cells(self, threshold: float = 1.5, extent_m: float = 1.2) -> Optional[np.ndarray]:
        """``(G, 2)`` world xy of the goal's cells: those with positive evidence within
        ``extent_m`` of the goal's centre and connected to it, strongest first (the centre first
        among equals); None while no cell reaches ``threshold``.

        The centre is the cell at or above ``threshold`` with the most evidence around it (a
        Gaussian of ``GOAL_CENTRE_M`` sigma), not the single strongest cell: evidence saturates at
        the limit on every cell of an object seen a few times, and the first of many equal cells
        is an arbitrary corner, often the wall just behind the object, that only a detour reaches."""
        strong = self.goal >= threshold
        if not strong.any():
            return None
        sigma = GOAL_CENTRE_M / self.resolution
        around = cv2.GaussianBlur(np.maximum(self.goal, 0.0), (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        k = int(np.argmax(np.where(strong, around, -np.inf)))
        n = self.goal.shape[0]
        r0, c0 = divmod(k, n)
        reach = max(1, int(round(extent_m / self.resolution)))
        rs, cs = slice(max(0, r0 - reach), r0 + reach + 1), slice(max(0, c0 - reach), c0 + reach + 1)
        rows, cols = np.mgrid[rs, cs]
        near = (np.hypot(rows - r0, cols - c0) <= reach) & (self.goal[rs, cs] > 0.5)
        near[r0 - rs.start, c0 - cs.start] = True
        # only what touches the centre: the goal heatmap's spill onto a chair in front of the desk
        # is no part of the desk, and stopping beside the chair is 1 m from the desk
        _, labels = cv2.connectedComponents(near.astype(np.uint8), connectivity=8)
        near &= labels == labels[r0 - rs.start, c0 - cs.start]
        # strongest first, and among equals the nearest to the centre (the centre itself first)
        order = np.lexsort((np.hypot(rows - r0, cols - c0)[near], -self.goal[rs, cs][near]))
        return self.center_of(rows[near], cols[near])[order]

    def planning_grid(self, unknown_free: bool = False, robot_xy: Optional[np.ndarray] = None,
                      robot_radius: float = 0.0, occupied_above: float = 0.0) -> OccupancyGrid:
        """The map as an :class:`OccupancyGrid` for the planner: cells with occupancy log-odds above
        ``occupied_above`` (0: more hits than misses), and unknown ones unless ``unknown_free``,
        are obstacles; clearance by distance transform. The disc of ``robot_radius`` around
        ``robot_xy`` is free (the robot stands there: an obstacle mapped inside it is a depth
        error, and would leave the robot no way out)."""
        occ = self.occupancy > occupied_above
        if not unknown_free:
            occ |= ~self.seen
        if robot_xy is not None and robot_radius > 0:
            n = occ.shape[0]
            reach = int(math.ceil(robot_radius / self.resolution))
            r0, c0, _ = self.cells(np.asarray(robot_xy, dtype=np.float64)[None])
            rows, cols = np.mgrid[max(0, r0[0] - reach):min(n, r0[0] + reach + 1),
                                  max(0, c0[0] - reach):min(n, c0[0] + reach + 1)]
            inside = np.linalg.norm(self.center_of(rows, cols) - robot_xy, axis=-1) <= robot_radius
            occ[rows[inside], cols[inside]] = False
        free = (~occ).astype(np.uint8)
        clearance = cv2.distanceTransform(free, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float32) * self.resolution
        return OccupancyGrid(self.origin.copy(), self.resolution, occ, clearance)

    def frontier(self) -> np.ndarray:
        """``(F, 2)`` world xy of known-free cells next to unknown ones (where to look next)."""
        free = self.seen & (self.occupancy < 0.0)
        # unknown regions, not the single unseen cells between the rays of a far view
        unknown = cv2.morphologyEx((~self.seen).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        near_unknown = cv2.dilate(unknown, np.ones((3, 3), np.uint8)) > 0
        rows, cols = np.nonzero(free & near_unknown)
        return self.center_of(rows, cols)

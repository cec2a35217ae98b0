"""Occupancy grid of a scene, clearance, grid search (A* / Dijkstra) and path shortcutting.

The world frame is the odom frame (z up). Grid cell ``(row, col)`` covers world
``x in [ox + col * res, ox + (col + 1) * res)``, ``y in [oy + row * res, ...)``.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import cv2
import numpy as np

from vln_core.sim.scene import Scene, SceneObject

__all__ = ["OccupancyGrid", "build_occupancy_grid", "grid_search", "plan_path", "shortcut_path", "segment_is_free"]


@dataclass
class OccupancyGrid:
    """Obstacles seen by a ground robot and the distance to the nearest one.

    Attributes:
        origin: ``(2,)`` world xy of the corner of cell (0, 0).
        resolution: metres per cell.
        occupied: ``(H, W)`` bool, True where walls, furniture (below ``body_height``) or the
            outside of the building are.
        clearance: ``(H, W)`` float32 metres from each cell centre to the nearest occupied cell
            (0 inside obstacles). A disc robot of radius ``r`` fits where ``clearance >= r``.
    """

    origin: np.ndarray
    resolution: float
    occupied: np.ndarray
    clearance: np.ndarray

    def cell_of(self, xy: np.ndarray) -> np.ndarray:
        """``(..., 2)`` world xy -> ``(..., 2)`` int (row, col), clipped into the grid."""
        xy = np.asarray(xy, dtype=np.float64)
        col = np.floor((xy[..., 0] - self.origin[0]) / self.resolution).astype(np.int64)
        row = np.floor((xy[..., 1] - self.origin[1]) / self.resolution).astype(np.int64)
        H, W = self.occupied.shape
        return np.stack([np.clip(row, 0, H - 1), np.clip(col, 0, W - 1)], axis=-1)

    def center_of(self, rc: np.ndarray) -> np.ndarray:
        """``(..., 2)`` (row, col) -> ``(..., 2)`` world xy of the cell centres."""
        rc = np.asarray(rc)
        x = self.origin[0] + (rc[..., 1] + 0.5) * self.resolution
        y = self.origin[1] + (rc[..., 0] + 0.5) * self.resolution
        return np.stack([x, y], axis=-1)

    def clearance_at(self, xy: np.ndarray) -> np.ndarray:
        """Clearance (metres) at world points ``(..., 2)``."""
        rc = self.cell_of(xy)
        return self.clearance[rc[..., 0], rc[..., 1]]


def build_occupancy_grid(scene: Scene, resolution: float = 0.05, body_height: float = 1.3) -> OccupancyGrid:
    """Rasterise what a robot up to ``body_height`` metres tall would collide with.

    Args:
        scene: the scene.
        resolution: cell size in metres.
        body_height: primitives starting above this height (paintings, upper cabinets) are ignored.

    Returns:
        :class:`OccupancyGrid` over the scene's room raster extent.
    """
    gh0, gw0 = scene.room_labels.shape
    scale = scene.grid_res / resolution
    H, W = int(round(gh0 * scale)), int(round(gw0 * scale))
    origin = scene.grid_origin.copy()
    labels = cv2.resize(scene.room_labels.astype(np.float32), (W, H), interpolation=cv2.INTER_NEAREST)
    occ = (labels < 0).astype(np.uint8)
    for prim in scene.primitives:
        z0 = prim.center[2] - prim.half[2]
        z1 = prim.center[2] + prim.half[2]
        if z0 >= body_height or z1 < 0.05:
            continue
        if prim.object_index >= 0 and not scene.objects[prim.object_index].obstacle:
            continue
        tmp = SceneObject(-1, "", "", -1, prim.center.copy(), prim.yaw, np.array([2 * prim.half[0], 2 * prim.half[1], 0.0]))
        corners = tmp.footprint_corners()
        pts = np.round((corners - origin) / resolution * 16.0 - 8.0).astype(np.int32)
        cv2.fillPoly(occ, [pts], 1, lineType=cv2.LINE_8, shift=4)
        # thin primitives (table legs) must not fall between cell centres
        c = np.floor((prim.center[:2] - origin) / resolution).astype(int)
        if 0 <= c[1] < H and 0 <= c[0] < W:
            occ[c[1], c[0]] = 1
    free = (occ == 0).astype(np.uint8)
    clearance = cv2.distanceTransform(free, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float32) * resolution
    return OccupancyGrid(origin, resolution, occ.astype(bool), clearance)


_NEIGHBOURS = [(-1, 0, 1.0), (1, 0, 1.0), (0, -1, 1.0), (0, 1, 1.0),
               (-1, -1, math.sqrt(2)), (-1, 1, math.sqrt(2)), (1, -1, math.sqrt(2)), (1, 1, math.sqrt(2))]


def grid_search(
    grid: OccupancyGrid,
    source_xy: np.ndarray,
    min_clearance: float,
    target_xy: np.ndarray | None = None,
    preferred_clearance: float = 0.6,
    step: int = 2,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A* from ``source_xy`` to ``target_xy`` (or Dijkstra over the whole free space if None).

    Search runs on a coarsened lattice (every ``step``-th cell) whose cells are free when their
    clearance is at least ``min_clearance``; each move costs its length times a penalty that grows
    as clearance drops below ``preferred_clearance`` (paths keep to the middle of doors/corridors).

    Returns:
        ``(cost, parent, shape)``: ``cost`` ``(h, w)`` float64 path cost in metres-equivalent
        (inf unreached), ``parent`` ``(h, w)`` int64 flat index of the predecessor (-1 none),
        ``shape`` of the coarse lattice.
    """
    clear = grid.clearance[::step, ::step]
    h, w = clear.shape
    res = grid.resolution * step
    free = clear >= min_clearance
    penalty = 1.0 + 3.0 * np.clip((preferred_clearance - clear) / preferred_clearance, 0.0, 1.0)

    def coarse(xy):
        rc = grid.cell_of(np.asarray(xy)) // step
        return int(min(rc[0], h - 1)), int(min(rc[1], w - 1))

    s = coarse(source_xy)
    t = coarse(target_xy) if target_xy is not None else None
    cost = np.full((h, w), np.inf)
    parent = np.full((h, w), -1, np.int64)
    if not free[s]:
        return cost, parent, (h, w)
    cost[s] = 0.0
    heap = [(0.0, 0.0, s[0], s[1])]
    done = np.zeros((h, w), bool)
    free_l = free.tolist()
    pen_l = penalty.tolist()
    while heap:
        _, g, r, c = heapq.heappop(heap)
        if done[r, c]:
            continue
        done[r, c] = True
        if t is not None and (r, c) == t:
            break
        for dr, dc, L in _NEIGHBOURS:
            rr, cc = r + dr, c + dc
            if rr < 0 or cc < 0 or rr >= h or cc >= w or not free_l[rr][cc] or done[rr, cc]:
                continue
            if dr and dc and not (free_l[r][cc] and free_l[rr][c]):
                continue  # no corner cutting
            ng = g + L * res * 0.5 * (pen_l[r][c] + pen_l[rr][cc])
            if ng < cost[rr, cc]:
                cost[rr, cc] = ng
                parent[rr, cc] = r * w + c
                hcost = 0.0 if t is None else res * math.hypot(rr - t[0], cc - t[1])
                heapq.heappush(heap, (ng + hcost, ng, rr, cc))
    return cost, parent, (h, w)


def _trace(parent: np.ndarray, shape: tuple[int, int], end_rc: tuple[int, int]) -> list[tuple[int, int]]:
    h, w = shape
    out = [end_rc]
    cur = parent[end_rc]
    while cur >= 0:
        out.append((int(cur // w), int(cur % w)))
        cur = parent[out[-1]]
    return out


def path_from_field(grid: OccupancyGrid, parent: np.ndarray, shape: tuple[int, int], start_xy: np.ndarray, step: int = 2) -> np.ndarray:
    """World polyline ``(M, 2)`` from ``start_xy`` back to the search source along ``parent``."""
    rc = grid.cell_of(np.asarray(start_xy)) // step
    cells = _trace(parent, shape, (int(rc[0]), int(rc[1])))
    fine = np.array(cells) * step + step / 2.0 - 0.5
    x = grid.origin[0] + (fine[:, 1] + 0.5) * grid.resolution
    y = grid.origin[1] + (fine[:, 0] + 0.5) * grid.resolution
    return np.stack([x, y], axis=1)


def segment_is_free(grid: OccupancyGrid, a: np.ndarray, b: np.ndarray, min_clearance: float) -> bool:
    """Whether every point of segment ``a``-``b`` (world xy) has clearance >= ``min_clearance``."""
    n = max(2, int(math.ceil(np.linalg.norm(b - a) / (grid.resolution * 0.5))) + 1)
    pts = a[None, :] + (b - a)[None, :] * np.linspace(0, 1, n)[:, None]
    return bool((grid.clearance_at(pts) >= min_clearance).all())


def shortcut_path(grid: OccupancyGrid, path: np.ndarray, min_clearance: float) -> np.ndarray:
    """Greedy line-of-sight shortcutting ("string pulling") of a grid path, then resampling
    every 0.1 m. Keeps ``min_clearance`` everywhere. Returns ``(M, 2)`` world xy."""
    if len(path) < 3:
        return path.copy()
    keep = [0]
    i = 0
    while i < len(path) - 1:
        j = len(path) - 1
        while j > i + 1 and not segment_is_free(grid, path[i], path[j], min_clearance):
            j -= 1
        keep.append(j)
        i = j
    pts = path[keep]
    out = [pts[0]]
    for a, b in zip(pts[:-1], pts[1:]):
        n = max(1, int(math.ceil(np.linalg.norm(b - a) / 0.1)))
        for k in range(1, n + 1):
            out.append(a + (b - a) * k / n)
    return np.array(out)


def plan_path(grid: OccupancyGrid, start_xy: np.ndarray, goal_xy: np.ndarray, min_clearance: float) -> np.ndarray | None:
    """Shortcut A* path ``(M, 2)`` from start to goal (world xy), or None when unreachable."""
    cost, parent, shape = grid_search(grid, np.asarray(goal_xy), min_clearance, target_xy=np.asarray(start_xy))
    rc = grid.cell_of(np.asarray(start_xy)) // 2
    rc = (int(min(rc[0], shape[0] - 1)), int(min(rc[1], shape[1] - 1)))
    if not np.isfinite(cost[rc]):
        return None
    raw = path_from_field(grid, parent, shape, start_xy)
    raw = np.concatenate([np.asarray(start_xy)[None, :], raw[1:-1], np.asarray(goal_xy)[None, :]])
    return shortcut_path(grid, raw, min_clearance)

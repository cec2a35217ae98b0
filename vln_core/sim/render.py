"""Vectorised CPU ray caster over analytic primitives: exact z-depth, object ids and shaded colour.

Why a ray caster of our own (see ``docs/simulator.md``): it runs in numpy on any CPU (no GPU, no
EGL/OpenGL context, no simulator install), and depth is *exact*: every pixel's depth is the
analytic intersection of the pixel-centre ray with a plane, box, cylinder or ellipsoid, so the
ground-truth inter-frame heatmaps computed from depth + poses carry no rasterisation or
depth-buffer quantisation error.

Geometry:
  * Camera rays use the OpenCV optical convention. The ray of pixel ``(u, v)`` has camera-frame
    direction ``d_c = ((u - cx) / fx, (v - cy) / fy, 1)``, i.e. *unit z*, so the ray parameter
    ``t`` of a hit ``p = o + t * R_wc d_c`` **is** the z-depth along the optical axis (not the
    ray length).
  * The floor ``z = 0`` and ceiling ``z = ceiling_height`` are infinite planes; walls and
    furniture are primitives.
  * Culling: each primitive's world bounding box is clipped against the near plane and
    projected; the primitive is intersected only with the rays inside that screen rectangle
    (empty rectangle: skipped). Small or off-screen objects thus cost (almost) nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vln_core.errors import InputError
from vln_core.geometry.camera import PinholeCamera
from vln_core.sim.scene import BOX, CYLINDER, Scene
from vln_core.sim.textures import evaluate_texture

__all__ = ["RenderResult", "RayCaster", "FLOOR_ID", "CEILING_ID", "NO_HIT_ID"]

FLOOR_ID = -2
CEILING_ID = -3
NO_HIT_ID = -1

_BOX_EDGES = np.array(
    [[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7], [0, 4], [1, 5], [2, 6], [3, 7]]
)


@dataclass
class RenderResult:
    """One rendered view.

    Attributes:
        radiance: ``(H, W, 3)`` float32 linear RGB scene radiance (before the sensor model).
        depth: ``(H, W)`` float32 z-depth in metres along the optical axis (0 where nothing was hit).
        primitive_id: ``(H, W)`` int32 index into ``scene.primitives``; FLOOR_ID, CEILING_ID or NO_HIT_ID.
        object_id: ``(H, W)`` int32 index into ``scene.objects``; -1 for structure (walls, floor...).
    """

    radiance: np.ndarray
    depth: np.ndarray
    primitive_id: np.ndarray
    object_id: np.ndarray


class RayCaster:
    """Renders a :class:`Scene` through a pinhole camera.

    Args:
        scene: the scene.
        camera: intrinsics and image size (:class:`PinholeCamera`).
        near_m: hits closer than this along the optical axis are ignored.
    """

    def __init__(self, scene: Scene, camera: PinholeCamera, near_m: float = 0.05) -> None:
        self.scene = scene
        self.camera = camera
        self.near = float(near_m)
        H, W = camera.height, camera.width
        u = (np.arange(W, dtype=np.float64) - camera.cx) / camera.fx
        v = (np.arange(H, dtype=np.float64) - camera.cy) / camera.fy
        self._u = np.broadcast_to(u[None, :], (H, W))
        self._v = np.broadcast_to(v[:, None], (H, W))
        prims = scene.primitives
        n = len(prims)
        self._kind = np.array([p.kind for p in prims], dtype=np.int64)
        self._center = np.array([p.center for p in prims], dtype=np.float64).reshape(n, 3)
        self._half = np.array([p.half for p in prims], dtype=np.float64).reshape(n, 3)
        self._yaw = np.array([p.yaw for p in prims], dtype=np.float64)
        self._object = np.array([p.object_index for p in prims], dtype=np.int32)
        aabb = np.array([p.world_aabb() for p in prims], dtype=np.float64).reshape(n, 2, 3)
        ix = np.array([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)])
        # (N, 8, 3) corners of every world AABB
        self._corners = np.where(ix[None, :, :] == 1, aabb[:, None, 1, :], aabb[:, None, 0, :])
        self._room_rects = np.array([r.rect for r in scene.rooms], dtype=np.float64)
        # shadow casters: furniture primitives grouped by room, with bounding-sphere radii
        self._bound_radius = np.where(
            self._kind == BOX, np.linalg.norm(self._half, axis=1),
            np.where(self._kind == CYLINDER, np.hypot(self._half[:, 0], self._half[:, 2]), self._half.max(axis=1)))
        # per room: (object bounding-sphere centre, radius, primitive indices) of shadow casters
        self._casters: dict[int, list[tuple[np.ndarray, float, np.ndarray]]] = {r.index: [] for r in scene.rooms}
        for obj in scene.objects:
            idx = np.array([i for i in obj.primitives if prims[i].material is not None and prims[i].material.emissive == 0],
                           dtype=np.int64)
            if not obj.obstacle or idx.size == 0 or obj.room_index not in self._casters:
                continue
            lo, hi = aabb[idx, 0].min(axis=0), aabb[idx, 1].max(axis=0)
            self._casters[obj.room_index].append(((lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2), idx))
        self._room_ambient = np.array([r.ambient for r in scene.rooms], dtype=np.float64)

    # ------------------------------------------------------------------ geometry pass
    def _world_dirs(self, R_wc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World ray directions (unit camera z) as three ``(H, W)`` float64 planes."""
        u, v = self._u, self._v
        dx = R_wc[0, 0] * u + R_wc[0, 1] * v + R_wc[0, 2]
        dy = R_wc[1, 0] * u + R_wc[1, 1] * v + R_wc[1, 2]
        dz = R_wc[2, 0] * u + R_wc[2, 1] * v + R_wc[2, 2]
        return dx, dy, dz

    def screen_rects(self, T_wc: np.ndarray) -> np.ndarray:
        """Pixel rectangles ``(N, 4)`` int ``[u0, v0, u1, v1)`` that bound each primitive's image.

        Empty rectangles (u1 <= u0) mean the primitive is behind the camera or off-screen.
        """
        n = len(self._kind)
        if n == 0:
            return np.zeros((0, 4), np.int64)
        R_wc, o = T_wc[:3, :3], T_wc[:3, 3]
        pc = (self._corners - o) @ R_wc  # (N, 8, 3) camera coordinates (R_cw = R_wc^T)
        z = pc[..., 2]
        a = pc[:, _BOX_EDGES[:, 0]]
        b = pc[:, _BOX_EDGES[:, 1]]
        za, zb = a[..., 2], b[..., 2]
        cross = (za - self.near) * (zb - self.near) < 0
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(cross, (self.near - za) / (zb - za), 0.0)
        pts_e = a + (b - a) * t[..., None]
        pts = np.concatenate([pc, pts_e], axis=1)  # (N, 20, 3)
        valid = np.concatenate([z >= self.near, cross], axis=1)
        zz = np.where(valid, pts[..., 2], 1.0)
        uu = self.camera.fx * pts[..., 0] / zz + self.camera.cx
        vv = self.camera.fy * pts[..., 1] / zz + self.camera.cy
        big = 1e9
        u0 = np.where(valid, uu, big).min(axis=1)
        u1 = np.where(valid, uu, -big).max(axis=1)
        v0 = np.where(valid, vv, big).min(axis=1)
        v1 = np.where(valid, vv, -big).max(axis=1)
        W, H = self.camera.width, self.camera.height
        rect = np.stack([
            np.clip(np.floor(u0), 0, W), np.clip(np.floor(v0), 0, H),
            np.clip(np.ceil(u1) + 1, 0, W), np.clip(np.ceil(v1) + 1, 0, H),
        ], axis=1).astype(np.int64)
        rect[~valid.any(axis=1)] = 0
        return rect

    def cast(self, T_wc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest hit per pixel.

        Args:
            T_wc: ``(4, 4)`` camera-to-world pose (OpenCV optical camera axes).

        Returns:
            ``depth`` ``(H, W)`` float64 z-depth (metres; inf where nothing was hit) and
            ``primitive_id`` ``(H, W)`` int32 (FLOOR_ID / CEILING_ID / primitive index / NO_HIT_ID).
        """
        T_wc = np.asarray(T_wc, dtype=np.float64)
        if T_wc.shape != (4, 4) or not np.isfinite(T_wc).all():
            raise InputError(f"T_wc must be a finite (4, 4) pose, got shape {T_wc.shape}")
        R_wc, o = T_wc[:3, :3], T_wc[:3, 3]
        dx, dy, dz = self._world_dirs(R_wc)
        H, W = dx.shape
        depth = np.full((H, W), np.inf)
        ids = np.full((H, W), NO_HIT_ID, np.int32)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_floor = np.where(dz < 0, -o[2] / dz, np.inf)
            t_ceil = np.where(dz > 0, (self.scene.ceiling_height - o[2]) / dz, np.inf)
        for t_plane, pid in ((t_floor, FLOOR_ID), (t_ceil, CEILING_ID)):
            better = (t_plane > self.near) & (t_plane < depth)
            np.copyto(depth, t_plane, where=better)
            np.copyto(ids, np.int32(pid), where=better)
        rects = self.screen_rects(T_wc)
        live = np.nonzero((rects[:, 2] > rects[:, 0]) & (rects[:, 3] > rects[:, 1]))[0]
        for i in live:
            u0, v0, u1, v1 = rects[i]
            win = (slice(v0, v1), slice(u0, u1))
            t = self._intersect(i, o, dx[win], dy[win], dz[win])
            cur = depth[win]
            better = t < cur
            np.copyto(cur, t, where=better)
            np.copyto(ids[win], np.int32(i), where=better)
        return depth, ids

    def _intersect(self, i: int, o: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray,
                   near: float | None = None) -> np.ndarray:
        """Ray parameter of the entry hit with primitive ``i`` (rays ``o + t * d``; for camera rays
        ``t`` is the z-depth); inf where missed or where the entry lies at ``t <= near``."""
        c, s = math.cos(self._yaw[i]), math.sin(self._yaw[i])
        rel = o - self._center[i]
        ox, oy, oz = c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2]
        lx = c * dx + s * dy
        ly = -s * dx + c * dy
        lz = dz
        hx, hy, hz = self._half[i]
        kind = self._kind[i]
        near = self.near if near is None else near
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if kind == BOX:
                tmin = np.full(dx.shape, -np.inf)
                tmax = np.full(dx.shape, np.inf)
                for oc, d, h in ((ox, lx, hx), (oy, ly, hy), (oz, lz, hz)):
                    inv = 1.0 / d
                    t1 = (-h - oc) * inv
                    t2 = (h - oc) * inv
                    np.maximum(tmin, np.minimum(t1, t2), out=tmin)
                    np.minimum(tmax, np.maximum(t1, t2), out=tmax)
                # a ray parallel to a slab gives +-inf bounds (inside/outside it); NaN only when the
                # origin lies exactly on the slab plane, and NaN compares False: counted as a miss
                hit = (tmax >= tmin) & (tmin > near)
                return np.where(hit, tmin, np.inf)
            if kind == CYLINDER:
                r = hx
                a = lx * lx + ly * ly
                b = ox * lx + oy * ly
                cc = ox * ox + oy * oy - r * r
                disc = b * b - a * cc
                t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
                zs = oz + t_side * lz
                ok = (disc >= 0) & (a > 0) & (np.abs(zs) <= hz) & (t_side > near)
                t = np.where(ok, t_side, np.inf)
                if abs(oz) > hz:
                    cap = hz if oz > 0 else -hz
                    t_cap = (cap - oz) / lz
                    px = ox + t_cap * lx
                    py = oy + t_cap * ly
                    okc = (t_cap > near) & (px * px + py * py <= r * r)
                    t = np.where(okc & (t_cap < t), t_cap, t)
                return t
            # ellipsoid
            ex, ey, ez = ox / hx, oy / hy, oz / hz
            ux, uy, uz = lx / hx, ly / hy, lz / hz
            a = ux * ux + uy * uy + uz * uz
            b = ex * ux + ey * uy + ez * uz
            cc = ex * ex + ey * ey + ez * ez - 1.0
            disc = b * b - a * cc
            t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
            return np.where((disc >= 0) & (t > near), t, np.inf)

    # ------------------------------------------------------------------ shading pass
    def render(self, T_wc: np.ndarray) -> RenderResult:
        """Cast and shade one view.

        Args:
            T_wc: ``(4, 4)`` camera-to-world pose (world = odom, z up; camera OpenCV optical).

        Returns:
            :class:`RenderResult` with linear radiance, z-depth, primitive and object ids.
        """
        T_wc = np.asarray(T_wc, dtype=np.float64)
        depth, ids = self.cast(T_wc)
        H, W = depth.shape
        R_wc, o = T_wc[:3, :3], T_wc[:3, 3]
        dx, dy, dz = self._world_dirs(R_wc)
        hit = np.isfinite(depth)
        depth_out = np.where(hit, depth, 0.0).astype(np.float32)
        flat_ids = ids.reshape(-1)
        flat_depth = np.where(hit, depth, 0.0).reshape(-1)
        D = np.stack([dx.reshape(-1), dy.reshape(-1), dz.reshape(-1)], axis=1)
        P = o[None, :] + flat_depth[:, None] * D
        N = np.zeros_like(P)
        albedo = np.zeros_like(P)
        gloss = np.zeros(P.shape[0])
        emissive = np.zeros(P.shape[0])
        U = np.zeros(P.shape[0])
        V = np.zeros(P.shape[0])
        order = np.argsort(flat_ids, kind="stable")
        sorted_ids = flat_ids[order]
        uniq, starts = np.unique(sorted_ids, return_index=True)
        ends = np.append(starts[1:], len(sorted_ids))
        wall_groups: list[np.ndarray] = []
        mat_of_segment = []
        for pid, s0, s1 in zip(uniq, starts, ends):
            idx = order[s0:s1]
            if pid == NO_HIT_ID:
                continue
            if pid in (FLOOR_ID, CEILING_ID):
                N[idx, 2] = 1.0 if pid == FLOOR_ID else -1.0
                U[idx], V[idx] = P[idx, 0], P[idx, 1]
                wall_groups.append(idx)
                mat_of_segment.append(("floor" if pid == FLOOR_ID else "ceiling", idx))
                continue
            n_w, u_s, v_s = self._surface(int(pid), P[idx])
            N[idx], U[idx], V[idx] = n_w, u_s, v_s
            mat = self.scene.primitives[pid].material
            mat_of_segment.append(("wall", idx) if mat is None else (mat, idx))
        # pixel footprint on the surface (metres) for texture anti-aliasing
        dnorm = np.linalg.norm(D, axis=1)
        cos_inc = np.abs((N * D).sum(axis=1)) / np.maximum(dnorm, 1e-9)
        footprint = flat_depth * dnorm / self.camera.fx / np.maximum(cos_inc, 0.15)
        room_px = self.scene.room_at((P + 0.05 * N)[:, :2])
        for mat, idx in mat_of_segment:
            if isinstance(mat, str):
                rooms_here = room_px[idx]
                for r in np.unique(rooms_here):
                    sub = idx[rooms_here == r]
                    room = self.scene.rooms[int(r)] if r >= 0 else self.scene.rooms[0]
                    m = {"floor": room.floor, "ceiling": room.ceiling, "wall": room.wall}[mat]
                    albedo[sub] = evaluate_texture(m, U[sub], V[sub], footprint[sub])
                    gloss[sub] = m.gloss
                    emissive[sub] = m.emissive
                    if mat == "wall" and self.scene.skirting_height > 0:
                        base = sub[P[sub, 2] < self.scene.skirting_height]
                        albedo[base] = np.asarray(self.scene.skirting_color)
                        gloss[base] = 0.3
            else:
                albedo[idx] = evaluate_texture(mat, U[idx], V[idx], footprint[idx])
                gloss[idx] = mat.gloss
                emissive[idx] = mat.emissive
        radiance = self._light(P, N, D, albedo, gloss, emissive, room_px, flat_ids)
        radiance[flat_ids == NO_HIT_ID] = 0.0
        obj = np.full(flat_ids.shape, -1, np.int32)
        is_prim = flat_ids >= 0
        obj[is_prim] = self._object[flat_ids[is_prim]]
        return RenderResult(
            radiance.reshape(H, W, 3).astype(np.float32), depth_out, ids, obj.reshape(H, W)
        )

    def _surface(self, i: int, P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World normals ``(M, 3)`` and texture coordinates ``u, v`` ``(M,)`` at hits on primitive ``i``."""
        c, s = math.cos(self._yaw[i]), math.sin(self._yaw[i])
        rel = P - self._center[i]
        lx = c * rel[:, 0] + s * rel[:, 1]
        ly = -s * rel[:, 0] + c * rel[:, 1]
        lz = rel[:, 2]
        hx, hy, hz = self._half[i]
        # coordinates in the yawed frame without removing the centre: continuous across
        # coplanar primitives (wall segments), so textures line up at seams
        cx_r = c * self._center[i, 0] + s * self._center[i, 1]
        cy_r = -s * self._center[i, 0] + c * self._center[i, 1]
        kind = self._kind[i]
        nl = np.zeros((len(P), 3))
        if kind == BOX:
            q = np.abs(np.stack([lx / hx, ly / hy, lz / hz], axis=1))
            axis = np.argmax(q, axis=1)
            sign = np.sign(np.choose(axis, [lx, ly, lz]))
            nl[np.arange(len(P)), axis] = sign
            u = np.where(axis == 0, ly + cy_r, lx + cx_r)
            v = np.where(axis == 2, ly + cy_r, lz + hz)
        elif kind == CYLINDER:
            radial = np.sqrt(lx * lx + ly * ly)
            cap = (np.abs(lz) > hz - 1e-6) & (radial < hx - 1e-6)
            nl[:, 0] = np.where(cap, 0.0, lx / np.maximum(radial, 1e-12))
            nl[:, 1] = np.where(cap, 0.0, ly / np.maximum(radial, 1e-12))
            nl[:, 2] = np.where(cap, np.sign(lz), 0.0)
            ang = np.arctan2(ly, lx)
            u = np.where(cap, lx, ang * hx)
            v = np.where(cap, ly, lz + hz)
        else:
            g = np.stack([lx / hx**2, ly / hy**2, lz / hz**2], axis=1)
            nl = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
            u = np.arctan2(ly, lx) * (hx + hy) / 2
            v = lz + hz
        n_w = np.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], axis=1)
        return n_w, u, v

    def _shadowed(self, light_pos: np.ndarray, P: np.ndarray, N: np.ndarray, room: int) -> np.ndarray:
        """``(M,)`` bool: the segment from ``light_pos`` to each surface point ``P`` ``(M, 3)`` is
        blocked by a furniture primitive of ``room``.

        Culling is hierarchical: the cone from the light around each object's bounding sphere
        selects the pixels that object can shadow, the cone around each primitive's sphere
        narrows them further, and only those rays are intersected exactly."""
        dirs = ((P + 0.01 * N) - light_pos[None, :]).astype(np.float32)
        shadow = np.zeros(len(P), bool)
        casters = self._casters.get(room) or []
        if not casters or len(P) == 0:
            return shadow
        len2 = np.einsum("ij,ij->i", dirs, dirs)

        def in_cone(center: np.ndarray, r: float, d: np.ndarray, l2: np.ndarray) -> np.ndarray | None:
            CL = (center - light_pos).astype(np.float32)
            dcl2 = float(CL @ CL)
            if dcl2 <= r * r:
                return None  # light inside the bounds (a lamp's own shade): no cone
            proj = d @ CL
            near_side = math.sqrt(dcl2) - r
            return (proj > 0) & ((l2 * dcl2 - proj * proj) * (dcl2 - r * r) <= r * r * proj * proj) & (l2 >= near_side**2)

        for center, radius, prim_idx in casters:
            obj_mask = in_cone(center, radius, dirs, len2)
            cand_obj = np.nonzero(~shadow if obj_mask is None else obj_mask & ~shadow)[0]
            if cand_obj.size == 0:
                continue
            d_obj, l2_obj = dirs[cand_obj], len2[cand_obj]
            for i in prim_idx:
                m = in_cone(self._center[i], float(self._bound_radius[i]), d_obj, l2_obj)
                if m is None:
                    continue
                sel = np.nonzero(m)[0]
                if sel.size == 0:
                    continue
                d = d_obj[sel].astype(np.float64)
                t = self._intersect(int(i), light_pos, d[:, 0], d[:, 1], d[:, 2], near=1e-6)
                shadow[cand_obj[sel[t < 0.999]]] = True
        return shadow

    def _light(self, P, N, D, albedo, gloss, emissive, room_px, ids) -> np.ndarray:
        """Linear radiance ``(M, 3)``: ambient x occlusion + room-gated point lights (Lambert and
        Blinn-Phong, inverse-square-like falloff) + emission."""
        scene = self.scene
        M = len(P)
        known = room_px >= 0
        amb = np.where(known[:, None], self._room_ambient[np.clip(room_px, 0, None)], self._room_ambient.mean(axis=0))
        # ambient occlusion: darken near the room's walls, floor and ceiling (corners, skirting)
        half_t = scene.wall_thickness / 2
        rect = self._room_rects[np.clip(room_px, 0, None)]
        dxw = np.clip(np.minimum(P[:, 0] - (rect[:, 0] + half_t), (rect[:, 2] - half_t) - P[:, 0]), 0, None)
        dyw = np.clip(np.minimum(P[:, 1] - (rect[:, 1] + half_t), (rect[:, 3] - half_t) - P[:, 1]), 0, None)
        dzw = np.clip(np.minimum(P[:, 2], scene.ceiling_height - P[:, 2]), 0, None)
        ao = np.ones(M)
        for dist, ncomp in ((dxw, N[:, 0]), (dyw, N[:, 1]), (dzw, N[:, 2])):
            term = 1.0 - 0.45 * np.exp(-dist / 0.22)
            ao *= np.where((np.abs(ncomp) < 0.7) & known, term, 1.0)
        floor = ids == FLOOR_ID
        if floor.any():
            ao[floor] *= scene.floor_occlusion_at(P[floor, :2])
        # slight up-facing bias of indirect light (floor bounce is weaker than ceiling bounce)
        hemi = 0.85 + 0.15 * N[:, 2]
        radiance = albedo * (amb * (ao * hemi)[:, None])
        direct_occ = 0.55 + 0.45 * ao
        # group pixels by room once; each light then works on a contiguous slice of its room.
        # Structure-of-arrays float32 keeps the per-light arithmetic cheap.
        order = np.argsort(room_px, kind="stable")
        rooms_sorted = room_px[order]
        f32 = np.float32
        Px, Py, Pz = (np.ascontiguousarray(P[order, k], dtype=f32) for k in range(3))
        Nx, Ny, Nz = (np.ascontiguousarray(N[order, k], dtype=f32) for k in range(3))
        Ds = D[order].astype(f32)
        Ds /= np.maximum(np.linalg.norm(Ds, axis=1, keepdims=True), 1e-12)
        Vx, Vy, Vz = (np.ascontiguousarray(-Ds[:, k]) for k in range(3))
        occ_s = direct_occ[order].astype(f32)
        g_s = gloss[order].astype(f32)
        diffuse_s = np.zeros((len(order), 3), f32)  # multiplies the albedo
        spec_s = np.zeros((len(order), 3), f32)  # added as is
        for light in scene.lights:
            a = int(np.searchsorted(rooms_sorted, light.room_index, side="left"))
            b = int(np.searchsorted(rooms_sorted, light.room_index, side="right"))
            if b <= a:
                continue
            sl = slice(a, b)
            lx, ly, lz = (f32(v) for v in light.position)
            Lx, Ly, Lz = lx - Px[sl], ly - Py[sl], lz - Pz[sl]
            d2 = Lx * Lx + Ly * Ly + Lz * Lz
            inv_d = 1.0 / np.sqrt(np.maximum(d2, f32(1e-12)))
            Lx *= inv_d
            Ly *= inv_d
            Lz *= inv_d
            ndl = np.maximum(Nx[sl] * Lx + Ny[sl] * Ly + Nz[sl] * Lz, f32(0))
            att = 1.0 / (1.0 + d2 * f32(1.0 / light.falloff_m**2))
            w = ndl * att * occ_s[sl]
            if light.casts_shadows:
                lit = np.nonzero(w > 1e-4)[0]  # surfaces facing away need no shadow ray
                if lit.size:
                    px = order[a + lit]
                    blocked = self._shadowed(light.position, P[px], N[px], light.room_index)
                    w[lit[blocked]] *= f32(0.15)
            # one-bounce approximation: the floor and walls lit by this light light the ceiling
            # and the undersides of things (otherwise only the weak ambient would)
            w += f32(0.25) * np.maximum(-Nz[sl], f32(0)) / (1.0 + d2 * f32(1.0 / (2.0 * light.falloff_m) ** 2))
            diffuse_s[sl] += w[:, None] * light.color.astype(f32)[None, :]
            glossy = np.nonzero(g_s[sl] > 0)[0]
            if glossy.size:
                gi = glossy + a
                hx, hy, hz = Lx[glossy] + Vx[gi], Ly[glossy] + Vy[gi], Lz[glossy] + Vz[gi]
                inv_h = 1.0 / np.sqrt(np.maximum(hx * hx + hy * hy + hz * hz, f32(1e-12)))
                x = np.maximum((Nx[gi] * hx + Ny[gi] * hy + Nz[gi] * hz) * inv_h, f32(0))
                x2 = x * x
                x4 = x2 * x2
                x16 = x4 * x4
                x16 *= x16
                spec = x16 * x16 * x16 * x16 * x16 * (ndl[glossy] > 0)  # x ** 80
                spec_s[gi] += (g_s[gi] * spec * att[glossy] * f32(0.35))[:, None] * light.color.astype(f32)[None, :]
        direct = np.empty_like(diffuse_s)
        direct[order] = diffuse_s
        spec_all = np.empty_like(spec_s)
        spec_all[order] = spec_s
        radiance += albedo * direct + spec_all
        radiance += albedo * emissive[:, None]
        return radiance

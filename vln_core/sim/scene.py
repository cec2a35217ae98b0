"""Procedural indoor scenes: rooms joined by doors and corridors, furnished with named objects.

A :class:`Scene` is a list of analytic primitives (yawed boxes, vertical cylinders, ellipsoids)
plus an implicit floor plane ``z = 0`` and ceiling plane ``z = ceiling_height``, rooms with their
materials, lights, and the semantic objects ("red chair", "blue sofa") that instructions refer to.

Frames: the world frame is the odom frame (REP 103, z up, metres). Object yaw is about +z,
0 = the object's front faces +x.

Everything is drawn from one ``numpy.random.Generator``, so a seed fixes the whole scene.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from vln_core.sim.textures import Material

__all__ = [
    "BOX", "CYLINDER", "ELLIPSOID", "Primitive", "Room", "Door", "SceneObject", "Light", "Scene",
    "generate_scene", "COLORS", "ROOM_KINDS",
]

BOX, CYLINDER, ELLIPSOID = 0, 1, 2

#: Named object colours (sRGB 0..255); instructions use these names.
COLORS_SRGB: dict[str, tuple[int, int, int]] = {
    "red": (175, 32, 30), "blue": (38, 72, 165), "green": (48, 125, 62), "yellow": (222, 186, 40),
    "white": (232, 232, 226), "black": (28, 28, 30), "grey": (125, 125, 128), "brown": (112, 72, 42),
    "orange": (215, 110, 35), "purple": (105, 52, 135), "pink": (225, 140, 165), "beige": (212, 192, 158),
}


def srgb_to_linear(c: tuple[float, float, float]) -> tuple[float, float, float]:
    """sRGB 0..255 triple -> linear RGB 0..1 triple."""
    out = []
    for x in c:
        x = x / 255.0
        out.append(x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4)
    return (out[0], out[1], out[2])


COLORS: dict[str, tuple[float, float, float]] = {k: srgb_to_linear(v) for k, v in COLORS_SRGB.items()}

ROOM_KINDS = ("kitchen", "living room", "bedroom", "office", "dining room")

WALL_PAINTS_SRGB = [
    (236, 232, 222), (225, 218, 200), (210, 212, 214), (196, 212, 226), (200, 214, 190), (236, 224, 180),
    (222, 196, 178), (238, 238, 236), (190, 180, 200), (170, 190, 185), (230, 210, 215),
]
WOOD_SRGB = [((150, 100, 60), (105, 65, 35)), ((190, 150, 105), (150, 110, 70)), ((110, 70, 45), (75, 45, 28)),
             ((205, 175, 135), (170, 135, 95)), ((90, 60, 45), (60, 38, 28))]


@dataclass
class Primitive:
    """One analytic solid.

    Attributes:
        kind: BOX, CYLINDER (vertical axis) or ELLIPSOID.
        center: ``(3,)`` world centre (metres).
        half: ``(3,)`` half extents in the primitive's yawed frame: box half sizes; cylinder
            ``(radius, radius, half height)``; ellipsoid radii.
        yaw: rotation about world +z (radians).
        material: its :class:`Material`; ``None`` for walls, whose faces take the paint of the
            room they face.
        object_index: index into ``Scene.objects``; -1 for structure (walls, fixtures).
    """

    kind: int
    center: np.ndarray
    half: np.ndarray
    yaw: float
    material: Material | None
    object_index: int = -1

    def world_aabb(self) -> np.ndarray:
        """``(2, 3)`` world axis-aligned bounds ``[min, max]`` enclosing the primitive."""
        c, s = abs(math.cos(self.yaw)), abs(math.sin(self.yaw))
        hx, hy, hz = self.half
        if self.kind == BOX:
            ex, ey = c * hx + s * hy, s * hx + c * hy
        elif self.kind == CYLINDER:
            ex = ey = hx
        else:
            ex = ey = max(hx, hy)
        e = np.array([ex, ey, hz])
        return np.stack([self.center - e, self.center + e])


@dataclass
class Room:
    """A rectangular room; ``rect`` = (x0, y0, x1, y1) on wall centre lines (metres)."""

    index: int
    kind: str
    rect: tuple[float, float, float, float]
    floor: Material
    wall: Material
    ceiling: Material
    ambient: np.ndarray  # (3,) linear RGB ambient light

    @property
    def center(self) -> np.ndarray:
        x0, y0, x1, y1 = self.rect
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2])

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.rect
        return (x1 - x0) * (y1 - y0)


@dataclass
class Door:
    """A door opening of ``width`` centred at ``center`` (x, y) in a wall along ``axis`` ('x' or 'y')."""

    center: np.ndarray
    width: float
    axis: str
    rooms: tuple[int, int]


@dataclass
class SceneObject:
    """A named thing instructions can refer to ("the red chair in the kitchen").

    ``position`` is the centre of its footprint on the floor (z = 0), ``size`` its (depth along
    its front axis, width, height), ``primitives`` the indices of its primitives.
    """

    index: int
    category: str
    color: str
    room_index: int
    position: np.ndarray
    yaw: float
    size: np.ndarray
    primitives: list[int] = field(default_factory=list)
    obstacle: bool = True

    @property
    def name(self) -> str:
        return f"{self.color} {self.category}" if self.color else self.category

    def footprint_corners(self, margin: float = 0.0) -> np.ndarray:
        """``(4, 2)`` world xy corners of the (yawed) footprint rectangle grown by ``margin``."""
        d, w = self.size[0] / 2 + margin, self.size[1] / 2 + margin
        local = np.array([[d, w], [-d, w], [-d, -w], [d, -w]])
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        R = np.array([[c, -s], [s, c]])
        return local @ R.T + self.position[:2]


@dataclass
class Light:
    """A point light (``room_index`` = the room it lights; light does not pass through walls)."""

    position: np.ndarray
    color: np.ndarray  # (3,) linear RGB times intensity
    room_index: int
    falloff_m: float  # distance at which intensity has halved (1 / (1 + (d / falloff)^2))
    casts_shadows: bool = False  # shadow rays against the room's furniture (ceiling lights)


@dataclass
class Scene:
    seed: int
    rooms: list[Room]
    doors: list[Door]
    objects: list[SceneObject]
    primitives: list[Primitive]
    lights: list[Light]
    ceiling_height: float
    wall_thickness: float
    grid_origin: np.ndarray  # (2,) world xy of cell (0, 0)'s corner
    grid_res: float  # metres per cell
    room_labels: np.ndarray  # (Hg, Wg) int16 room index per cell, -1 outside
    floor_occlusion: np.ndarray  # (Hg, Wg) float32 ambient factor on the floor (contact shadows)
    sensor: dict = field(default_factory=dict)  # per-scene camera parameters (white balance...)
    skirting_height: float = 0.0  # baseboard height on every wall (0 = none)
    skirting_color: tuple[float, float, float] = (0.8, 0.8, 0.78)

    def room_at(self, xy: np.ndarray) -> np.ndarray:
        """Room index at world points ``xy`` ``(..., 2)`` (int array ``(...)``, -1 outside)."""
        ij = np.floor((xy - self.grid_origin) / self.grid_res).astype(np.int64)
        h, w = self.room_labels.shape
        inside = (ij[..., 0] >= 0) & (ij[..., 0] < w) & (ij[..., 1] >= 0) & (ij[..., 1] < h)
        col = np.clip(ij[..., 0], 0, w - 1)
        row = np.clip(ij[..., 1], 0, h - 1)
        out = self.room_labels[row, col].astype(np.int64)
        return np.where(inside, out, -1)

    def floor_occlusion_at(self, xy: np.ndarray) -> np.ndarray:
        """Contact-shadow factor (0..1) at world points ``xy`` ``(..., 2)``."""
        ij = np.floor((xy - self.grid_origin) / self.grid_res).astype(np.int64)
        h, w = self.floor_occlusion.shape
        col = np.clip(ij[..., 0], 0, w - 1)
        row = np.clip(ij[..., 1], 0, h - 1)
        return self.floor_occlusion[row, col]

    def room_name(self, index: int) -> str:
        return self.rooms[index].kind if index >= 0 else "outside"

    def summary(self) -> dict:
        """JSON-ready description: rooms, doors, objects (for the episode's ``scene`` record)."""
        return {
            "generator": "vln_core.sim.scene",
            "seed": int(self.seed),
            "ceiling_height_m": round(float(self.ceiling_height), 3),
            "rooms": [
                {"index": r.index, "kind": r.kind, "rect": [round(float(v), 3) for v in r.rect],
                 "floor": r.floor.texture, "wall": r.wall.texture}
                for r in self.rooms
            ],
            "doors": [{"center": [round(float(v), 3) for v in d.center], "width": round(d.width, 3),
                       "rooms": list(d.rooms)} for d in self.doors],
            "objects": [
                {"index": o.index, "category": o.category, "color": o.color, "room": self.room_name(o.room_index),
                 "position": [round(float(v), 3) for v in o.position], "yaw": round(float(o.yaw), 4),
                 "size": [round(float(v), 3) for v in o.size]}
                for o in self.objects
            ],
            "lights": len(self.lights),
        }


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def kelvin_to_rgb(kelvin: float) -> np.ndarray:
    """Approximate linear RGB of a black body at ``kelvin`` (normalised to max 1)."""
    t = kelvin / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * ((t - 60) ** -0.1332047592)
    g = 99.4708025861 * math.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * ((t - 60) ** -0.0755148492)
    b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927307)
    rgb = np.array(srgb_to_linear(tuple(float(np.clip(x, 0, 255)) for x in (r, g, b))))
    return rgb / rgb.max()


def _jitter_color(rng: np.random.Generator, c: tuple[float, float, float], amount: float = 0.08) -> tuple:
    f = 1.0 + rng.uniform(-amount, amount, size=3)
    return tuple(float(np.clip(x * y, 0.0, 1.0)) for x, y in zip(c, f))


def _lin(c: tuple[int, int, int]) -> tuple[float, float, float]:
    return srgb_to_linear(c)


class _Builder:
    """Collects primitives of one object in its local frame (x forward, y left, z up, floor = 0)."""

    def __init__(self) -> None:
        self.parts: list[tuple[int, np.ndarray, np.ndarray, float, Material]] = []

    def box(self, center, size, material, yaw: float = 0.0) -> None:
        self.parts.append((BOX, np.asarray(center, float), np.asarray(size, float) / 2, yaw, material))

    def cylinder(self, center_xy, z0, z1, radius, material) -> None:
        c = np.array([center_xy[0], center_xy[1], (z0 + z1) / 2])
        self.parts.append((CYLINDER, c, np.array([radius, radius, (z1 - z0) / 2]), 0.0, material))

    def ellipsoid(self, center, radii, material) -> None:
        self.parts.append((ELLIPSOID, np.asarray(center, float), np.asarray(radii, float), 0.0, material))


def _mat(rng, texture, color, color2=(0.0, 0.0, 0.0), **kw) -> Material:
    return Material(texture, tuple(float(x) for x in color), tuple(float(x) for x in color2),
                    seed=int(rng.integers(0, 1 << 30)), **kw)


def _wood_mat(rng, texture="wood") -> Material:
    a, b = WOOD_SRGB[rng.integers(len(WOOD_SRGB))]
    return _mat(rng, texture, _lin(a), _lin(b), scale=float(rng.uniform(0.8, 1.3)), gloss=0.15)


# --------------------------------------------------------------------------------------------
# Furniture: each builder returns (parts builder, size (depth, width, height), colour name)
# --------------------------------------------------------------------------------------------


def _clutter(b: "_Builder", rng, top_z: float, half_d: float, half_w: float, n_max: int = 3) -> None:
    """Small unnamed items on a surface at ``top_z``: vases with flowers, bowls, cups, book stacks, laptops."""
    n = int(rng.integers(0, n_max + 1))
    placed: list[tuple[float, float, float]] = []
    for _ in range(n):
        kind = int(rng.integers(5))
        r = 0.12 if kind in (3, 4) else 0.08
        if half_d < r + 0.03 or half_w < r + 0.03:
            return
        x = float(rng.uniform(-half_d + r + 0.02, half_d - r - 0.02))
        y = float(rng.uniform(-half_w + r + 0.02, half_w - r - 0.02))
        if any((x - px) ** 2 + (y - py) ** 2 < (r + pr + 0.03) ** 2 for px, py, pr in placed):
            continue
        placed.append((x, y, r))
        col = _lin(tuple(int(v) for v in rng.integers(20, 235, 3)))
        if kind == 0:  # vase with flowers
            h = float(rng.uniform(0.15, 0.3))
            b.cylinder((x, y), top_z, top_z + h, float(rng.uniform(0.04, 0.07)), _mat(rng, "plain", col, gloss=0.6))
            b.ellipsoid((x, y, top_z + h + 0.06), (0.09, 0.09, 0.08), _mat(rng, "leaves", _lin((200, 60, 80)), _lin((40, 110, 50))))
        elif kind == 1:  # bowl
            b.ellipsoid((x, y, top_z + 0.02), (0.1, 0.1, 0.05), _mat(rng, "plain", col, gloss=0.5))
        elif kind == 2:  # cup
            b.cylinder((x, y), top_z, top_z + 0.1, 0.04, _mat(rng, "plain", col, gloss=0.5))
        elif kind == 3:  # stack of books
            z = top_z
            for _k in range(int(rng.integers(1, 4))):
                th = float(rng.uniform(0.025, 0.05))
                bc = _lin(tuple(int(v) for v in rng.integers(20, 200, 3)))
                b.box((x, y, z + th / 2), (0.16, 0.23, th), _mat(rng, "plain", bc), yaw=float(rng.uniform(-0.3, 0.3)))
                z += th
        else:  # laptop
            b.box((x, y, top_z + 0.01), (0.22, 0.32, 0.02), _mat(rng, "metal", (0.25, 0.25, 0.27), gloss=0.5))


def _pick_color(rng, options) -> str:
    return str(options[rng.integers(len(options))])


def build_chair(rng, color=None):
    color = color or _pick_color(rng, ["red", "blue", "green", "yellow", "black", "white", "brown", "orange", "grey"])
    b = _Builder()
    seat_h, sd, sw = rng.uniform(0.43, 0.48), rng.uniform(0.42, 0.5), rng.uniform(0.42, 0.5)
    main = _mat(rng, "fabric" if rng.random() < 0.5 else "plain", COLORS[color], gloss=0.1)
    leg = _wood_mat(rng) if rng.random() < 0.5 else _mat(rng, "metal", (0.5, 0.5, 0.52), gloss=0.5)
    b.box((0, 0, seat_h - 0.03), (sd, sw, 0.06), main)
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.box((sx * (sd / 2 - 0.03), sy * (sw / 2 - 0.03), (seat_h - 0.06) / 2), (0.035, 0.035, seat_h - 0.06), leg)
    back_h = rng.uniform(0.35, 0.5)
    b.box((-sd / 2 + 0.025, 0, seat_h + back_h / 2), (0.05, sw, back_h), main)
    return b, np.array([sd, sw, seat_h + back_h]), color


def build_sofa(rng, color=None):
    color = color or _pick_color(rng, ["blue", "grey", "green", "red", "beige", "brown", "black", "purple", "yellow"])
    b = _Builder()
    d, w = rng.uniform(0.85, 1.0), rng.uniform(1.7, 2.3)
    fab = _mat(rng, "fabric", COLORS[color], gloss=0.05)
    fab2 = _mat(rng, "fabric", tuple(x * 0.85 for x in COLORS[color]))
    b.box((0, 0, 0.22), (d, w - 0.4, 0.3), fab2)  # base
    for i, y in enumerate(np.linspace(-(w - 0.4) / 4, (w - 0.4) / 4, 2)):
        b.box((0.08, y, 0.42), (d - 0.16, (w - 0.4) / 2 - 0.02, 0.12), fab)  # cushions
    b.box((-d / 2 + 0.11, 0, 0.55), (0.22, w - 0.4, 0.7), fab)  # back
    for sy in (-1, 1):
        b.box((0, sy * (w / 2 - 0.1), 0.32), (d, 0.2, 0.62), fab2)  # arms
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.box((sx * (d / 2 - 0.06), sy * (w / 2 - 0.06), 0.035), (0.05, 0.05, 0.07), _mat(rng, "plain", (0.03, 0.02, 0.02)))
    return b, np.array([d, w, 0.9]), color


def build_table(rng, color=None, kind=None):
    color = color or _pick_color(rng, ["brown", "white", "black", "grey", "beige"])
    kind = kind or _pick_color(rng, ["rect", "rect", "round"])
    b = _Builder()
    top = _wood_mat(rng) if color in ("brown", "beige") else _mat(rng, "plain", COLORS[color], gloss=0.35)
    if color in ("brown", "beige"):
        top = Material("wood", COLORS[color], tuple(x * 0.7 for x in COLORS[color]), 1.0, 0.25, 0.0, top.seed)
    h = rng.uniform(0.72, 0.77)
    if kind == "round":
        r = rng.uniform(0.45, 0.6)
        b.cylinder((0, 0), h - 0.04, h, r, top)
        b.cylinder((0, 0), 0.02, h - 0.04, 0.05, top)
        b.cylinder((0, 0), 0.0, 0.03, 0.28, top)
        _clutter(b, rng, h, r * 0.65, r * 0.65, 2)
        return b, np.array([2 * r, 2 * r, h]), color
    d, w = rng.uniform(0.75, 0.95), rng.uniform(1.1, 1.7)
    b.box((0, 0, h - 0.02), (d, w, 0.04), top)
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.box((sx * (d / 2 - 0.05), sy * (w / 2 - 0.05), (h - 0.04) / 2), (0.05, 0.05, h - 0.04), top)
    _clutter(b, rng, h, d / 2, w / 2, 3)
    return b, np.array([d, w, h]), color


def build_desk(rng, color=None):
    """A rectangular work table with a drawer block under one side."""
    b, size, color = build_table(rng, color, kind="rect")
    d, w, h = size
    drawers = Material("cabinet_front", COLORS[color], tuple(x * 0.8 for x in COLORS[color]), 0.6, 0.2, 0.0,
                       int(rng.integers(1 << 30)))
    b.box((0.0, w / 2 - 0.25, (h - 0.04) / 2), (d - 0.12, 0.4, h - 0.06), drawers)
    return b, size, color


def build_coffee_table(rng, color=None):
    color = color or _pick_color(rng, ["brown", "white", "black", "beige"])
    b = _Builder()
    top = Material("wood", COLORS[color], tuple(x * 0.7 for x in COLORS[color]), 1.0, 0.3, 0.0, int(rng.integers(1 << 30)))
    d, w, h = rng.uniform(0.5, 0.7), rng.uniform(0.9, 1.3), rng.uniform(0.38, 0.46)
    b.box((0, 0, h - 0.03), (d, w, 0.06), top)
    b.box((0, 0, 0.12), (d - 0.08, w - 0.08, 0.03), top)
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.box((sx * (d / 2 - 0.04), sy * (w / 2 - 0.04), (h - 0.06) / 2), (0.04, 0.04, h - 0.06), top)
    _clutter(b, rng, h, d / 2, w / 2, 2)
    return b, np.array([d, w, h]), color


def build_bed(rng, color=None):
    color = color or _pick_color(rng, ["blue", "white", "grey", "green", "red", "pink", "beige", "purple", "yellow"])
    b = _Builder()
    L, W = rng.uniform(2.0, 2.15), rng.uniform(1.4, 1.8)
    frame = _wood_mat(rng)
    b.box((0, 0, 0.17), (L, W, 0.26), frame)
    b.box((0, 0, 0.4), (L - 0.06, W - 0.06, 0.2), _mat(rng, "fabric", (0.85, 0.85, 0.83)))
    blanket = _mat(rng, "fabric", COLORS[color])
    b.box((0.22, 0, 0.46), (L - 0.5, W - 0.02, 0.12), blanket)
    for sy in ((-W / 4, W / 4) if W > 1.3 else (0.0,)):
        b.ellipsoid((-L / 2 + 0.28, sy, 0.55), (0.17, min(0.32, W / 4 - 0.02), 0.08), _mat(rng, "fabric", (0.9, 0.9, 0.88)))
    b.box((-L / 2 - 0.03, 0, 0.55), (0.06, W + 0.04, 1.1), frame)  # headboard (back = -x)
    return b, np.array([L + 0.06, W + 0.04, 1.1]), color


def build_lamp(rng, color=None):
    color = color or _pick_color(rng, ["white", "beige", "yellow", "orange", "red", "black"])
    b = _Builder()
    metal = _mat(rng, "metal", (0.12, 0.12, 0.12) if rng.random() < 0.5 else (0.55, 0.5, 0.4), gloss=0.6)
    H = rng.uniform(1.45, 1.7)
    b.cylinder((0, 0), 0.0, 0.03, 0.15, metal)
    b.cylinder((0, 0), 0.03, H - 0.25, 0.015, metal)
    shade = _mat(rng, "fabric", COLORS[color], emissive=0.9)
    r = rng.uniform(0.16, 0.22)
    b.cylinder((0, 0), H - 0.3, H, r, shade)
    return b, np.array([0.36, 0.36, H]), color


def build_plant(rng, color=None):
    color = color or _pick_color(rng, ["white", "brown", "grey", "black", "orange"])
    b = _Builder()
    pot_r, pot_h = rng.uniform(0.13, 0.2), rng.uniform(0.25, 0.4)
    pot = _mat(rng, "plain", COLORS[color] if color != "orange" else _lin((185, 95, 60)), gloss=0.2)
    b.cylinder((0, 0), 0.0, pot_h, pot_r, pot)
    b.cylinder((0, 0), pot_h - 0.02, pot_h + 0.005, pot_r - 0.015, _mat(rng, "plain", _lin((60, 42, 30))))
    g1 = _lin((int(rng.integers(30, 70)), int(rng.integers(90, 140)), int(rng.integers(30, 60))))
    g2 = _lin((20, 55, 25))
    leaves = _mat(rng, "leaves", g1, g2)
    tall = rng.uniform(0.5, 1.1)
    n = int(rng.integers(2, 5))
    for k in range(n):
        ang = 2 * math.pi * k / n + rng.uniform(0, 1)
        off = rng.uniform(0.02, 0.12)
        rr = rng.uniform(0.18, 0.3)
        z = pot_h + rr * 0.8 + rng.uniform(0, tall * 0.6)
        b.ellipsoid((off * math.cos(ang), off * math.sin(ang), z), (rr, rr, rr * rng.uniform(0.9, 1.4)), leaves)
    b.cylinder((0, 0), pot_h, pot_h + tall * 0.5, 0.015, _mat(rng, "plain", _lin((70, 55, 30))))
    top = pot_h + tall * 0.6 + 0.45
    return b, np.array([0.6, 0.6, top]), "green"


def build_cabinet(rng, color=None):
    color = color or _pick_color(rng, ["white", "brown", "grey", "black", "blue", "green", "beige"])
    b = _Builder()
    d, w, h = rng.uniform(0.4, 0.55), rng.uniform(0.6, 1.3), rng.uniform(0.6, 1.1)
    if color in ("brown", "beige"):
        body = Material("cabinet_front", COLORS[color], tuple(x * 0.7 for x in COLORS[color]), rng.uniform(0.8, 1.2), 0.2,
                        0.0, int(rng.integers(1 << 30)))
    else:
        body = _mat(rng, "cabinet_front", COLORS[color], scale=float(rng.uniform(0.8, 1.2)), gloss=0.25)
    b.box((0, 0, h / 2 + 0.04), (d, w, h - 0.08), body)
    b.box((0, 0, 0.02), (d - 0.04, w - 0.04, 0.04), _mat(rng, "plain", (0.03, 0.03, 0.03)))
    handle = _mat(rng, "metal", (0.6, 0.6, 0.62), gloss=0.7)
    n = max(1, int(round(w / 0.45)))
    for k in range(n):
        y = -w / 2 + (k + 0.5) * w / n
        b.box((d / 2 + 0.01, y, h - 0.15), (0.02, 0.12, 0.02), handle)
    if h < 1.0:
        _clutter(b, rng, h, d / 2, w / 2, 2)
    return b, np.array([d + 0.02, w, h]), color


def build_tv(rng, color=None):
    color = color or "black"
    b = _Builder()
    stand_h = rng.uniform(0.4, 0.55)
    sw = rng.uniform(1.2, 1.8)
    stand = _wood_mat(rng) if rng.random() < 0.6 else _mat(rng, "plain", COLORS["white"], gloss=0.3)
    b.box((0, 0, stand_h / 2), (0.42, sw, stand_h), stand)
    tw, th = rng.uniform(0.95, min(1.45, sw)), rng.uniform(0.58, 0.8)
    z0 = stand_h + 0.1
    frame = _mat(rng, "plain", COLORS[color], gloss=0.4)
    b.box((-0.05, 0, stand_h + 0.05), (0.15, 0.25, 0.1), frame)
    b.box((-0.05, 0, z0 + th / 2), (0.06, tw, th), frame)
    on = rng.random() < 0.5
    screen = Material("screen", (0.01, 0.012, 0.015), (0.5, 0.45, 0.6) if on else (0.0, 0.0, 0.0), 1.0, 0.9,
                      0.6 if on else 0.0, int(rng.integers(1 << 30)))
    b.box((-0.015, 0, z0 + th / 2), (0.005, tw - 0.04, th - 0.04), screen)
    return b, np.array([0.42, sw, z0 + th]), color


def build_bookshelf(rng, color=None):
    color = color or _pick_color(rng, ["brown", "white", "black", "grey", "beige"])
    b = _Builder()
    d, w, h = rng.uniform(0.3, 0.38), rng.uniform(0.8, 1.4), rng.uniform(1.5, 2.0)
    wood = Material("wood", COLORS[color], tuple(x * 0.75 for x in COLORS[color]), 1.0, 0.15, 0.0, int(rng.integers(1 << 30)))
    t = 0.025
    b.box((-d / 2 + 0.01, 0, h / 2), (0.02, w, h), wood)  # back
    for sy in (-1, 1):
        b.box((0, sy * (w / 2 - t / 2), h / 2), (d, t, h), wood)
    n = int(rng.integers(4, 6))
    gap = (h - t) / n
    for k in range(n + 1):
        b.box((0, 0, k * gap + t / 2), (d, w - 2 * t, t), wood)
    books = _mat(rng, "books", (0.3, 0.2, 0.1), COLORS[color])
    for k in range(n):
        if rng.random() < 0.85:
            fill = rng.uniform(0.4, 0.95)
            bw = (w - 2 * t) * fill
            y = -(w - 2 * t) / 2 + bw / 2 + rng.uniform(0, (w - 2 * t) - bw)
            bh = min(gap - 0.03, rng.uniform(0.2, 0.28))
            b.box((-0.01, y, k * gap + t + bh / 2), (d - 0.06, bw, bh), books)
    return b, np.array([d, w, h]), color


def build_fridge(rng, color=None):
    color = color or _pick_color(rng, ["white", "grey", "black"])
    b = _Builder()
    d, w, h = 0.68, rng.uniform(0.6, 0.75), rng.uniform(1.7, 1.9)
    body = _mat(rng, "metal" if color == "grey" else "plain", COLORS[color], gloss=0.5)
    b.box((0, 0, h / 2), (d, w, h), body)
    b.box((d / 2 + 0.002, 0, h * 0.62), (0.004, w - 0.01, 0.01), _mat(rng, "plain", (0.05, 0.05, 0.05)))
    handle = _mat(rng, "metal", (0.7, 0.7, 0.72), gloss=0.8)
    b.box((d / 2 + 0.03, w / 2 - 0.07, h * 0.8), (0.03, 0.03, 0.3), handle)
    b.box((d / 2 + 0.03, w / 2 - 0.07, h * 0.4), (0.03, 0.03, 0.35), handle)
    return b, np.array([d + 0.05, w, h]), color


def build_counter(rng, color=None):
    color = color or _pick_color(rng, ["white", "grey", "blue", "green", "brown", "beige", "black"])
    b = _Builder()
    d, w, h = 0.62, rng.uniform(1.8, 3.0), 0.9
    front = _mat(rng, "cabinet_front", COLORS[color], scale=float(rng.uniform(0.9, 1.3)), gloss=0.3)
    b.box((-0.01, 0, (h - 0.04) / 2 + 0.05), (d - 0.04, w, h - 0.09), front)
    b.box((-0.03, 0, 0.025), (d - 0.08, w, 0.05), _mat(rng, "plain", (0.02, 0.02, 0.02)))
    topc = _lin((int(rng.integers(40, 230)),) * 3)
    b.box((0, 0, h - 0.02), (d, w + 0.02, 0.04), _mat(rng, "tiles", topc, tuple(x * 0.8 for x in topc), scale=3.0, gloss=0.6))
    # upper cabinets
    b.box((-d / 2 + 0.18, 0, 1.75), (0.35, w, 0.7), front)
    _clutter(b, rng, h, d / 2 - 0.05, w / 2, 3)
    return b, np.array([d, w + 0.02, 2.1]), color


def build_armchair(rng, color=None):
    color = color or _pick_color(rng, ["red", "blue", "green", "grey", "brown", "yellow", "orange", "beige"])
    b = _Builder()
    fab = _mat(rng, "fabric", COLORS[color])
    d, w = rng.uniform(0.75, 0.9), rng.uniform(0.75, 0.9)
    b.box((0.05, 0, 0.25), (d - 0.1, w - 0.3, 0.3), fab)
    b.box((0.08, 0, 0.44), (d - 0.16, w - 0.32, 0.1), fab)
    b.box((-d / 2 + 0.1, 0, 0.5), (0.2, w, 0.8), fab)
    for sy in (-1, 1):
        b.box((0.05, sy * (w / 2 - 0.08), 0.32), (d - 0.1, 0.16, 0.6), fab)
    return b, np.array([d, w, 0.9]), color


def build_rug(rng, color=None):
    color = color or _pick_color(rng, ["red", "blue", "beige", "grey", "green", "purple", "orange"])
    b = _Builder()
    d, w = rng.uniform(1.4, 2.2), rng.uniform(1.8, 2.8)
    c2 = _jitter_color(rng, COLORS[_pick_color(rng, ["beige", "white", "black", "brown"])])
    b.box((0, 0, 0.006), (d, w, 0.012), _mat(rng, "rug", COLORS[color], c2, scale=float(rng.uniform(0.7, 1.5))))
    return b, np.array([d, w, 0.012]), color


def build_painting(rng, color=None):
    b = _Builder()
    w, h = rng.uniform(0.5, 1.1), rng.uniform(0.4, 0.8)
    frame = _mat(rng, "plain", COLORS[_pick_color(rng, ["black", "brown", "white"])], gloss=0.3)
    z = rng.uniform(1.35, 1.65)
    b.box((0, 0, z), (0.03, w, h), frame)
    c1 = _lin(tuple(int(x) for x in rng.integers(30, 230, 3)))
    c2 = _lin(tuple(int(x) for x in rng.integers(30, 230, 3)))
    b.box((0.016, 0, z), (0.002, w - 0.06, h - 0.06), _mat(rng, "painting", c1, c2))
    return b, np.array([0.03, w, z + h / 2]), ""


def build_door(rng, color=None):
    color = color or _pick_color(rng, ["white", "brown", "grey"])
    b = _Builder()
    mat = Material("cabinet_front" if color == "white" else "wood", COLORS[color], tuple(x * 0.8 for x in COLORS[color]),
                   2.5, 0.2, 0.0, int(rng.integers(1 << 30)))
    b.box((0, 0, 1.0), (0.04, 0.84, 2.0), mat)
    b.cylinder((0.04, 0.34, 0), 0.98, 1.02, 0.025, _mat(rng, "metal", (0.7, 0.65, 0.5), gloss=0.8))
    return b, np.array([0.04, 0.84, 2.0]), color


BUILDERS = {
    "chair": build_chair, "sofa": build_sofa, "table": build_table, "desk": build_desk, "coffee table": build_coffee_table,
    "bed": build_bed, "lamp": build_lamp, "plant": build_plant, "cabinet": build_cabinet, "tv": build_tv,
    "bookshelf": build_bookshelf, "fridge": build_fridge, "counter": build_counter, "armchair": build_armchair,
    "rug": build_rug, "painting": build_painting, "door": build_door,
}

# (category, placement, probability); placement: wall | center | corner | table_chairs | desk_chair
FURNISHING: dict[str, list[tuple[str, str, float]]] = {
    "living room": [("sofa", "wall", 1.0), ("tv", "wall", 0.85), ("rug", "center", 0.6), ("coffee table", "center", 0.8),
                    ("lamp", "corner", 0.7), ("plant", "corner", 0.8), ("bookshelf", "wall", 0.6), ("armchair", "wall", 0.5),
                    ("painting", "wall_high", 0.8), ("cabinet", "wall", 0.3)],
    "kitchen": [("counter", "wall", 1.0), ("fridge", "wall", 0.9), ("table", "table_chairs", 0.9), ("plant", "corner", 0.5),
                ("cabinet", "wall", 0.5), ("painting", "wall_high", 0.3)],
    "bedroom": [("bed", "wall", 1.0), ("cabinet", "wall", 0.9), ("lamp", "corner", 0.7), ("rug", "center", 0.4),
                ("plant", "corner", 0.5), ("chair", "wall", 0.4), ("bookshelf", "wall", 0.4), ("painting", "wall_high", 0.6)],
    "office": [("desk", "desk_chair", 1.0), ("bookshelf", "wall", 0.9), ("cabinet", "wall", 0.6), ("plant", "corner", 0.7),
               ("lamp", "corner", 0.5), ("armchair", "wall", 0.3), ("painting", "wall_high", 0.5)],
    "dining room": [("table", "table_chairs", 1.0), ("cabinet", "wall", 0.8), ("plant", "corner", 0.7), ("lamp", "corner", 0.5),
                    ("bookshelf", "wall", 0.3), ("painting", "wall_high", 0.7), ("rug", "center", 0.3)],
    "hallway": [("plant", "corner", 0.6), ("cabinet", "wall", 0.4), ("painting", "wall_high", 0.6), ("lamp", "corner", 0.3)],
}

FLOORS = {
    "kitchen": ["tiles", "tiles", "wood_planks"], "living room": ["wood_planks", "wood_planks", "carpet"],
    "bedroom": ["carpet", "wood_planks"], "office": ["carpet", "wood_planks", "tiles"],
    "dining room": ["wood_planks", "tiles"], "hallway": ["wood_planks", "tiles", "carpet"],
}
WALLS = {
    "kitchen": ["plaster", "plaster", "tiles", "brick"], "living room": ["plaster", "wallpaper", "brick", "plaster"],
    "bedroom": ["wallpaper", "plaster", "plaster"], "office": ["plaster", "plaster", "brick"],
    "dining room": ["wallpaper", "plaster", "brick"], "hallway": ["plaster", "plaster", "wallpaper"],
}


def _floor_material(rng, kind: str) -> Material:
    tex = _pick_color(rng, FLOORS[kind])
    if tex == "wood_planks":
        return _wood_mat(rng, "wood_planks")
    if tex == "tiles":
        c = _lin(tuple(int(x) for x in rng.integers(90, 235, 1).repeat(3) + rng.integers(-12, 12, 3)))
        grout = tuple(x * rng.uniform(0.5, 1.3) for x in c)
        return _mat(rng, "tiles", c, tuple(min(1.0, x) for x in grout), scale=float(rng.uniform(0.6, 1.4)), gloss=0.5)
    palette = [(120, 110, 100), (80, 90, 110), (140, 125, 100), (95, 70, 60), (110, 120, 100), (70, 70, 75)]
    return _mat(rng, "carpet", _jitter_color(rng, _lin(palette[rng.integers(len(palette))])), scale=float(rng.uniform(0.6, 1.5)))


def _wall_material(rng, kind: str) -> Material:
    tex = _pick_color(rng, WALLS[kind])
    paint = _lin(WALL_PAINTS_SRGB[rng.integers(len(WALL_PAINTS_SRGB))])
    if tex == "wallpaper":
        paint2 = tuple(x * rng.uniform(0.7, 0.9) for x in _jitter_color(rng, paint, 0.15))
        return _mat(rng, "wallpaper", paint, paint2, scale=float(rng.uniform(0.6, 1.6)))
    if tex == "brick":
        brick = _lin((int(rng.integers(130, 180)), int(rng.integers(60, 90)), int(rng.integers(45, 70))))
        if rng.random() < 0.3:
            brick = _lin((215, 210, 200))
        return _mat(rng, "brick", brick, _lin((190, 185, 175)), scale=float(rng.uniform(0.9, 1.2)))
    if tex == "tiles":
        return _mat(rng, "wall_tiles", paint, tuple(x * 0.8 for x in paint), scale=float(rng.uniform(0.3, 0.5)), gloss=0.4)
    return _mat(rng, "plaster", paint, scale=float(rng.uniform(0.5, 2.0)))


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


def _layout(rng: np.random.Generator, n_rooms: int) -> tuple[list[tuple[str, tuple]], list[tuple[int, int, str, float, float]]]:
    """Room rectangles and door candidates.

    Returns ``(rooms, doors)``: rooms as ``(kind, (x0, y0, x1, y1))``; doors as
    ``(room_a, room_b, axis, line_coordinate, centre_along_line)`` where ``axis`` is the
    direction the wall runs ('x': wall along x at y = line).
    """
    kinds = list(rng.permutation(ROOM_KINDS))
    while len(kinds) < n_rooms:
        kinds.append(str(rng.choice(["bedroom", "office", "living room"])))
    kinds = [str(k) for k in kinds[:n_rooms]]
    rooms: list[tuple[str, tuple]] = []
    doors: list[tuple[int, int, str, float, float]] = []

    def door_along(a0: float, a1: float) -> float:
        lo, hi = a0 + 0.75, a1 - 0.75
        return float(rng.uniform(lo, hi)) if hi > lo else (a0 + a1) / 2

    use_corridor = n_rooms >= 2 and rng.random() < 0.65
    if use_corridor:
        cw = float(rng.uniform(1.4, 2.0))
        north = [k for i, k in enumerate(kinds) if i % 2 == 0]
        south = [k for i, k in enumerate(kinds) if i % 2 == 1]
        side_rooms: list[tuple[int, float, float, str]] = []  # (room idx, x0, x1, side)
        ends = []
        for side, side_kinds in (("north", north), ("south", south)):
            x = float(rng.uniform(0.0, 1.0)) if side == "south" else 0.0
            prev = None
            for k in side_kinds:
                w = float(rng.uniform(3.2, 5.2))
                dpt = float(rng.uniform(3.2, 4.8))
                rect = (x, cw, x + w, cw + dpt) if side == "north" else (x, -dpt, x + w, 0.0)
                rooms.append((k, rect))
                idx = len(rooms) - 1
                side_rooms.append((idx, x, x + w, side))
                if prev is not None and rng.random() < 0.35:
                    pr = rooms[prev][1]
                    lo = max(rect[1], pr[1])
                    hi = min(rect[3], pr[3])
                    doors.append((prev, idx, "y", x, door_along(lo, hi)))
                prev = idx
                x += w
            ends.append(x)
        x_end = max(ends)
        rooms.append(("hallway", (0.0, 0.0, x_end, cw)))
        corridor = len(rooms) - 1
        for idx, x0, x1, side in side_rooms:
            doors.append((idx, corridor, "x", cw if side == "north" else 0.0, door_along(x0, x1)))
    else:
        x = 0.0
        prev = None
        for k in kinds:
            w = float(rng.uniform(3.2, 5.5))
            dpt = float(rng.uniform(3.2, 5.0))
            rect = (x, 0.0, x + w, dpt)
            rooms.append((k, rect))
            idx = len(rooms) - 1
            if prev is not None:
                lo, hi = 0.0, min(dpt, rooms[prev][1][3])
                doors.append((prev, idx, "y", x, door_along(lo, hi)))
            prev = idx
            x += w
    return rooms, doors


def _merge_intervals(iv: list[tuple[float, float]]) -> list[list[float]]:
    iv = sorted(iv)
    out: list[list[float]] = []
    for a, b in iv:
        if out and a <= out[-1][1] + 1e-6:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _wall_primitives(rooms: list[Room], doors: list[Door], height: float, thickness: float, door_height: float) -> list[Primitive]:
    """Wall boxes on the union of room edges, with gaps (and lintels) at doors."""
    lines: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for r in rooms:
        x0, y0, x1, y1 = r.rect
        for axis, c, a, b in (("x", y0, x0, x1), ("x", y1, x0, x1), ("y", x0, y0, y1), ("y", x1, y0, y1)):
            lines.setdefault((axis, round(c, 6)), []).append((a, b))
    prims: list[Primitive] = []
    for (axis, c), iv in sorted(lines.items()):
        merged = _merge_intervals(iv)
        gaps = sorted(
            (float(d.center[0] if axis == "x" else d.center[1]), d.width)
            for d in doors
            if d.axis == axis and abs((d.center[1] if axis == "x" else d.center[0]) - c) < 1e-6
        )
        for a, b in merged:
            pieces = []
            cur = a - thickness / 2
            for gc, gw in gaps:
                if a < gc < b:
                    pieces.append((cur, gc - gw / 2))
                    cur = gc + gw / 2
                    lintel_len = gw
                    zc = (door_height + height) / 2
                    if axis == "x":
                        prims.append(Primitive(BOX, np.array([gc, c, zc]), np.array([lintel_len / 2, thickness / 2, (height - door_height) / 2]), 0.0, None))
                    else:
                        prims.append(Primitive(BOX, np.array([c, gc, zc]), np.array([thickness / 2, lintel_len / 2, (height - door_height) / 2]), 0.0, None))
            pieces.append((cur, b + thickness / 2))
            for p0, p1 in pieces:
                if p1 - p0 < 1e-3:
                    continue
                mid, half = (p0 + p1) / 2, (p1 - p0) / 2
                if axis == "x":
                    prims.append(Primitive(BOX, np.array([mid, c, height / 2]), np.array([half, thickness / 2, height / 2]), 0.0, None))
                else:
                    prims.append(Primitive(BOX, np.array([c, mid, height / 2]), np.array([thickness / 2, half, height / 2]), 0.0, None))
    return prims


def _rect_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Axis-aligned rectangles (x0, y0, x1, y1) overlap."""
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def _aabb_of(corners: np.ndarray) -> np.ndarray:
    return np.array([corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()])


def generate_scene(seed: int, rooms_range: tuple[int, int] = (2, 4), ceiling_range: tuple[float, float] = (2.4, 3.0)) -> Scene:
    """Build a furnished multi-room scene from ``seed`` (same seed -> same scene).

    Args:
        seed: integer seed.
        rooms_range: (min, max) number of rooms besides the corridor.
        ceiling_range: (min, max) ceiling height in metres.
    """
    if rooms_range[0] < 1 or rooms_range[1] < rooms_range[0]:
        raise ValueError(f"rooms_range must be (min >= 1, max >= min), got {rooms_range}")
    rng = np.random.default_rng(seed)
    n_rooms = int(rng.integers(rooms_range[0], rooms_range[1] + 1))
    height = float(rng.uniform(*ceiling_range))
    thickness = 0.12
    door_height = float(rng.uniform(2.0, min(2.2, height - 0.2)))
    layout, door_specs = _layout(rng, n_rooms)

    kelvin = float(rng.uniform(2700, 6500))
    base_light = kelvin_to_rgb(kelvin)
    rooms: list[Room] = []
    ceiling_paint = _lin((int(rng.integers(225, 250)),) * 3)
    for i, (kind, rect) in enumerate(layout):
        amb_level = float(rng.uniform(0.05, 0.12))
        room_tint = kelvin_to_rgb(float(np.clip(kelvin + rng.uniform(-700, 700), 2500, 7000)))
        rooms.append(Room(i, kind, rect, _floor_material(rng, kind), _wall_material(rng, kind),
                          _mat(rng, "plaster", ceiling_paint, scale=2.0), amb_level * room_tint))
    doors: list[Door] = []
    for a, b, axis, line, along in door_specs:
        width = float(rng.uniform(0.95, 1.2))
        center = np.array([along, line]) if axis == "x" else np.array([line, along])
        doors.append(Door(center, width, axis, (a, b)))

    prims = _wall_primitives(rooms, doors, height, thickness, door_height)

    # grid rasters
    res = 0.05
    xs = [v for r in rooms for v in (r.rect[0], r.rect[2])]
    ys = [v for r in rooms for v in (r.rect[1], r.rect[3])]
    origin = np.array([min(xs) - 1.0, min(ys) - 1.0])
    gw = int(math.ceil((max(xs) + 1.0 - origin[0]) / res))
    gh = int(math.ceil((max(ys) + 1.0 - origin[1]) / res))
    labels = np.full((gh, gw), -1, np.int16)
    for r in reversed(rooms):  # first room wins on shared edges
        x0, y0, x1, y1 = r.rect
        c0, c1 = int(math.floor((x0 - origin[0]) / res)), int(math.ceil((x1 - origin[0]) / res))
        r0, r1 = int(math.floor((y0 - origin[1]) / res)), int(math.ceil((y1 - origin[1]) / res))
        labels[r0:r1, c0:c1] = r.index

    objects: list[SceneObject] = []
    occupied: list[np.ndarray] = []  # xy AABBs of placed obstacles + door keep-out zones
    for d in doors:
        along = 0.6 + d.width / 2
        if d.axis == "x":
            occupied.append(np.array([d.center[0] - along, d.center[1] - 1.1, d.center[0] + along, d.center[1] + 1.1]))
        else:
            occupied.append(np.array([d.center[0] - 1.1, d.center[1] - along, d.center[0] + 1.1, d.center[1] + along]))
    # for high wall items (paintings, windows): door openings (and their lintels) stay clear too
    wall_occupied: list[np.ndarray] = [zone.copy() for zone in occupied]

    def add_object(category: str, builder, size, color, room: Room, pos_xy, yaw, obstacle=True) -> SceneObject:
        obj = SceneObject(len(objects), category, color, room.index, np.array([pos_xy[0], pos_xy[1], 0.0]), float(yaw),
                          np.asarray(size, float), [], obstacle)
        c, s = math.cos(yaw), math.sin(yaw)
        for kind, center, half, local_yaw, material in builder.parts:
            wc = np.array([pos_xy[0] + c * center[0] - s * center[1], pos_xy[1] + s * center[0] + c * center[1], center[2]])
            obj.primitives.append(len(prims))
            prims.append(Primitive(kind, wc, half.copy(), float(yaw + local_yaw), material, obj.index))
        objects.append(obj)
        return obj

    def interior(room: Room) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = room.rect
        t = thickness / 2 + 0.01
        return (x0 + t, y0 + t, x1 - t, y1 - t)

    def try_place(room: Room, category: str, placement: str, color=None) -> SceneObject | None:
        ix0, iy0, ix1, iy1 = interior(room)
        for _attempt in range(25):
            builder, size, col = BUILDERS[category](rng, color)
            depth, width = size[0], size[1]
            jitter = float(rng.normal(0, 0.03)) if placement in ("center",) else 0.0
            if placement in ("wall", "wall_high", "corner"):
                side = int(rng.integers(4))
                yaw = [math.pi / 2, -math.pi / 2, 0.0, math.pi][side]  # facing +y, -y, +x, -x
                pick_end = int(rng.integers(2)) if placement == "corner" else None
                if side in (0, 1):
                    y = iy0 + depth / 2 + 0.01 if side == 0 else iy1 - depth / 2 - 0.01
                    lo, hi = ix0 + width / 2, ix1 - width / 2
                    if hi < lo:
                        continue
                    x = float(rng.uniform(lo, hi)) if pick_end is None else (lo + 0.05 if pick_end == 0 else hi - 0.05)
                    pos = (x, y)
                else:
                    x = ix0 + depth / 2 + 0.01 if side == 2 else ix1 - depth / 2 - 0.01
                    lo, hi = iy0 + width / 2, iy1 - width / 2
                    if hi < lo:
                        continue
                    y = float(rng.uniform(lo, hi)) if pick_end is None else (lo + 0.05 if pick_end == 0 else hi - 0.05)
                    pos = (x, y)
            else:
                yaw = float(rng.choice([0.0, math.pi / 2])) + jitter
                margin = max(depth, width) / 2 + 0.7
                if ix1 - ix0 < 2 * margin or iy1 - iy0 < 2 * margin:
                    continue
                pos = (float(rng.uniform(ix0 + margin, ix1 - margin)), float(rng.uniform(iy0 + margin, iy1 - margin)))
            tmp = SceneObject(-1, category, col, room.index, np.array([pos[0], pos[1], 0.0]), yaw, size)
            box = _aabb_of(tmp.footprint_corners())
            if placement == "wall_high":
                if any(_rect_overlap(box, o) for o in wall_occupied):
                    continue
                wall_occupied.append(box + np.array([-0.2, -0.2, 0.2, 0.2]))
                return add_object(category, builder, size, col, room, pos, yaw, obstacle=False)
            if category == "rug":
                return add_object(category, builder, size, col, room, pos, yaw, obstacle=False)
            grown = box + np.array([-0.08, -0.08, 0.08, 0.08])
            if any(_rect_overlap(grown, o) for o in occupied):
                continue
            occupied.append(box)
            if size[2] > 1.3:
                wall_occupied.append(box + np.array([-0.1, -0.1, 0.1, 0.1]))
            return add_object(category, builder, size, col, room, pos, yaw)
        return None

    def place_chairs_around(table: SceneObject, room: Room, n: int) -> None:
        color = None
        d, w = table.size[0], table.size[1]
        offsets = [((0, w / 2 + 0.35), -math.pi / 2), ((0, -w / 2 - 0.35), math.pi / 2),
                   ((d / 2 + 0.35, 0), math.pi), ((-d / 2 - 0.35, 0), 0.0)]
        order = rng.permutation(len(offsets))
        c, s = math.cos(table.yaw), math.sin(table.yaw)
        placed = 0
        for k in order:
            if placed >= n:
                break
            (ox, oy), local_yaw = offsets[k]
            pos = (table.position[0] + c * ox - s * oy, table.position[1] + s * ox + c * oy)
            builder, size, col = build_chair(rng, color)
            color = col
            yaw = table.yaw + local_yaw
            tmp = SceneObject(-1, "chair", col, room.index, np.array([pos[0], pos[1], 0.0]), yaw, size)
            box = _aabb_of(tmp.footprint_corners())
            ix0, iy0, ix1, iy1 = interior(room)
            if box[0] < ix0 or box[1] < iy0 or box[2] > ix1 or box[3] > iy1:
                continue
            if any(_rect_overlap(box, o) for o in occupied):
                continue
            occupied.append(box)
            add_object("chair", builder, size, col, room, pos, yaw)
            placed += 1

    for room in rooms:
        for category, placement, prob in FURNISHING[room.kind]:
            if rng.random() > prob:
                continue
            if placement == "table_chairs":
                table = try_place(room, category, "center")
                if table is not None:
                    # the table itself must keep room for chairs: grow its keep-out
                    place_chairs_around(table, room, int(rng.integers(1, 5)))
            elif placement == "desk_chair":
                desk = try_place(room, category, "wall")
                if desk is not None:
                    c, s = math.cos(desk.yaw), math.sin(desk.yaw)
                    off = desk.size[0] / 2 + 0.3
                    pos = (desk.position[0] + c * off, desk.position[1] + s * off)
                    builder, size, col = build_chair(rng)
                    yaw = desk.yaw + math.pi
                    tmp = SceneObject(-1, "chair", col, room.index, np.array([pos[0], pos[1], 0.0]), yaw, size)
                    box = _aabb_of(tmp.footprint_corners())
                    if not any(_rect_overlap(box, o) for o in occupied):
                        occupied.append(box)
                        add_object("chair", builder, size, col, room, pos, yaw)
            else:
                try_place(room, category, placement)

    # door leaves: swung open against the wall beside some openings
    for d in doors:
        if rng.random() > 0.6:
            continue
        side_room = rooms[d.rooms[int(rng.integers(2))]]
        builder, size, col = build_door(rng)
        sign_along = 1.0 if rng.random() < 0.5 else -1.0
        rc = side_room.center
        if d.axis == "x":
            into = 1.0 if rc[1] > d.center[1] else -1.0
            hinge = np.array([d.center[0] + sign_along * d.width / 2, d.center[1]])
            pos = hinge + np.array([sign_along * 0.03, into * (thickness / 2 + 0.43)])
            yaw = 0.0 if sign_along < 0 else math.pi
        else:
            into = 1.0 if rc[0] > d.center[0] else -1.0
            hinge = np.array([d.center[0], d.center[1] + sign_along * d.width / 2])
            pos = hinge + np.array([into * (thickness / 2 + 0.43), sign_along * 0.03])
            yaw = math.pi / 2 if sign_along < 0 else -math.pi / 2
        tmp = SceneObject(-1, "door", col, side_room.index, np.array([pos[0], pos[1], 0.0]), yaw, size)
        box = _aabb_of(tmp.footprint_corners())
        if any(_rect_overlap(box, o) for o in occupied[len(doors):]):
            continue
        occupied.append(box)
        add_object("door", builder, size, col, side_room, pos, yaw)

    # windows on exterior walls, each with daylight spilling in and sometimes curtains
    window_lights: list[Light] = []
    object_boxes = [prims[i].world_aabb() for o in objects for i in o.primitives]
    for room in rooms:
        if room.kind == "hallway" or rng.random() > 0.75:
            continue
        x0, y0, x1, y1 = room.rect
        for _ in range(6):
            side = int(rng.integers(4))
            w = float(rng.uniform(0.9, 1.8))
            zc = float(rng.uniform(1.35, 1.55))
            h = float(min(rng.uniform(1.0, 1.4), 2 * (height - zc) - 0.25))
            if side in (0, 1):
                lo, hi = x0 + w / 2 + 0.3, x1 - w / 2 - 0.3
                if hi <= lo:
                    continue
                cx = float(rng.uniform(lo, hi))
                cy = y0 if side == 0 else y1
                outside = room.center[1] > cy
                probe = np.array([[cx + t, cy + (-0.4 if outside else 0.4)] for t in np.linspace(-w / 2, w / 2, 7)])
                face = cy + (thickness / 2 + 0.005) * (1 if outside else -1)
                center = np.array([cx, face, zc])
                half = np.array([w / 2, 0.005, h / 2])
            else:
                lo, hi = y0 + w / 2 + 0.3, y1 - w / 2 - 0.3
                if hi <= lo:
                    continue
                cy = float(rng.uniform(lo, hi))
                cx = x0 if side == 2 else x1
                outside = room.center[0] > cx
                probe = np.array([[cx + (-0.4 if outside else 0.4), cy + t] for t in np.linspace(-w / 2, w / 2, 7)])
                face = cx + (thickness / 2 + 0.005) * (1 if outside else -1)
                center = np.array([face, cy, zc])
                half = np.array([0.005, w / 2, h / 2])
            ij = np.floor((probe - origin) / res).astype(int)
            if (labels[ij[:, 1], ij[:, 0]] != -1).any():
                continue
            box = np.array([center[0] - half[0] - 0.1, center[1] - half[1] - 0.1, center[0] + half[0] + 0.1, center[1] + half[1] + 0.1])
            if any(_rect_overlap(box, o) for o in wall_occupied):
                continue
            wall_occupied.append(box)
            sky = kelvin_to_rgb(float(rng.uniform(6500, 9000))) * float(rng.uniform(0.7, 1.0))
            greens = _lin((int(rng.integers(40, 90)), int(rng.integers(80, 130)), int(rng.integers(40, 80))))
            mat = Material("window", tuple(float(x) for x in sky), greens, 1.0, 0.0, 2.5, int(rng.integers(1 << 30)))
            prims.append(Primitive(BOX, center, half, 0.0, mat))
            inward = np.zeros(3)
            inward[1 if side in (0, 1) else 0] = 1.0 if outside else -1.0
            window_lights.append(Light(center + 0.7 * inward, sky * float(rng.uniform(0.3, 0.7)), room.index,
                                       float(rng.uniform(1.2, 2.0))))
            if rng.random() < 0.6:  # curtains on both sides, hanging over the window's height
                fabric = _mat(rng, "fabric", COLORS[_pick_color(rng, ["beige", "white", "grey", "blue", "green", "red", "brown"])])
                cw_ = float(rng.uniform(0.22, 0.4))
                top = min(height - 0.05, zc + h / 2 + 0.2)
                bottom = max(0.3, zc - h / 2 - 0.2)
                along_axis = 0 if side in (0, 1) else 1
                for sgn in (-1.0, 1.0):
                    c = center + 0.05 * inward
                    c[along_axis] += sgn * (half[along_axis] + cw_ / 2 - 0.08)
                    c[2] = (top + bottom) / 2
                    hc = np.array([0.0, 0.0, (top - bottom) / 2])
                    hc[along_axis] = cw_ / 2
                    hc[1 - along_axis] = 0.04
                    lo_c, hi_c = c - hc, c + hc
                    if any((lo_c < bb[1]).all() and (bb[0] < hi_c).all() for bb in object_boxes):
                        continue  # would cut through furniture standing there
                    prims.append(Primitive(BOX, c, hc, 0.0, fabric))
            break

    # lights: a ceiling fixture per room (visible disk) and the floor lamps
    lights: list[Light] = []
    for room in rooms:
        x0, y0, x1, y1 = room.rect
        n_fix = 2 if room.area > 18 and rng.random() < 0.6 else 1
        for k in range(n_fix):
            if n_fix == 1:
                p = room.center + rng.uniform(-0.3, 0.3, 2)
            else:
                long_x = (x1 - x0) >= (y1 - y0)
                frac = (k + 0.5) / n_fix
                p = np.array([x0 + frac * (x1 - x0), room.center[1]]) if long_x else np.array([room.center[0], y0 + frac * (y1 - y0)])
            tint = kelvin_to_rgb(float(np.clip(kelvin + rng.uniform(-500, 500), 2500, 7000)))
            power = float(rng.uniform(0.7, 1.4)) * (1.0 + room.area / 25.0) / n_fix
            lights.append(Light(np.array([p[0], p[1], height - 0.45]), tint * power, room.index, float(rng.uniform(1.5, 2.6)), True))
            fix_mat = Material("plain", tuple(float(x) for x in tint), (0, 0, 0), 1.0, 0.0, 3.0, 0)
            r = float(rng.uniform(0.15, 0.3))
            if rng.random() < 0.6:
                prims.append(Primitive(ELLIPSOID, np.array([p[0], p[1], height]), np.array([r, r, 0.06]), 0.0, fix_mat))
            else:
                prims.append(Primitive(CYLINDER, np.array([p[0], p[1], height - 0.04]), np.array([r, r, 0.04]), 0.0, fix_mat))
    lights.extend(window_lights)
    for obj in objects:
        if obj.category == "lamp":
            top = prims[obj.primitives[-1]].center
            warm = kelvin_to_rgb(float(rng.uniform(2400, 3200)))
            lights.append(Light(np.array([top[0], top[1], top[2] - 0.05]), warm * float(rng.uniform(0.3, 0.6)), obj.room_index, 1.0))

    # contact shadows: blurred obstacle footprints darken the floor
    mask = np.zeros((gh, gw), np.float32)
    for obj in objects:
        if obj.category in ("rug", "painting") or not obj.obstacle and obj.category != "door":
            continue
        for pi in obj.primitives:
            pr = prims[pi]
            if pr.center[2] - pr.half[2] > 0.6:
                continue
            tmp = SceneObject(-1, "", "", -1, pr.center.copy(), pr.yaw, np.array([2 * pr.half[0], 2 * pr.half[1], 0]))
            corners = tmp.footprint_corners()
            pts = np.round((corners - origin) / res * 4).astype(np.int32)
            strength = 1.0 if pr.center[2] - pr.half[2] < 0.15 else 0.5
            cv2.fillPoly(mask, [pts], float(strength), lineType=cv2.LINE_AA, shift=2)
    blurred = cv2.GaussianBlur(mask, (0, 0), sigmaX=0.12 / res)
    floor_occ = np.clip(1.0 - 0.6 * np.maximum(blurred, 0.8 * mask), 0.25, 1.0).astype(np.float32)

    sensor = {
        "white_balance": [float(x) for x in (1.0 + rng.normal(0, 0.04, 3))],
        "awb_strength": float(rng.uniform(0.55, 0.9)),
        "exposure_bias": float(rng.uniform(-0.4, 0.4)),
        "noise_std": float(rng.uniform(0.004, 0.015)),
        "vignette": float(rng.uniform(0.1, 0.35)),
        "blur_sigma_px": float(rng.uniform(0.35, 0.75)),
        "jpeg_quality": int(rng.integers(70, 96)) if rng.random() < 0.5 else 0,
        "contrast": float(rng.uniform(0.9, 1.1)),
        "saturation": float(rng.uniform(0.85, 1.15)),
    }
    skirting_h = float(rng.uniform(0.06, 0.12)) if rng.random() < 0.8 else 0.0
    skirting_c = _lin((235, 235, 230)) if rng.random() < 0.6 else _lin(WOOD_SRGB[rng.integers(len(WOOD_SRGB))][1])
    # door casings: trim around every opening, protruding a little from both wall faces
    trim = Material("plain", skirting_c, (0, 0, 0), 1.0, 0.3, 0.0, 0)
    cw, ct = 0.07, thickness / 2 + 0.015
    for d in doors:
        for side in (-1.0, 1.0):
            along = d.width / 2 + cw / 2
            if d.axis == "x":
                c = np.array([d.center[0] + side * along, d.center[1], door_height / 2])
                half = np.array([cw / 2, ct, door_height / 2])
            else:
                c = np.array([d.center[0], d.center[1] + side * along, door_height / 2])
                half = np.array([ct, cw / 2, door_height / 2])
            prims.append(Primitive(BOX, c, half, 0.0, trim))
        top_len = d.width / 2 + cw
        if d.axis == "x":
            prims.append(Primitive(BOX, np.array([d.center[0], d.center[1], door_height + cw / 2]), np.array([top_len, ct, cw / 2]), 0.0, trim))
        else:
            prims.append(Primitive(BOX, np.array([d.center[0], d.center[1], door_height + cw / 2]), np.array([ct, top_len, cw / 2]), 0.0, trim))
    return Scene(seed, rooms, doors, objects, prims, lights, height, thickness, origin, res, labels, floor_occ, sensor,
                 skirting_h, skirting_c)

"""Procedural surface textures for the indoor simulator.

Every texture is a pure function of surface coordinates ``(u, v)`` in metres (plus a per-material
seed), so it needs no image files, is identical from every viewpoint (stable under camera motion,
which the inter-frame heatmaps rely on) and can be evaluated only at the pixels that show it.

Anti-aliasing: each texture receives the pixel footprint in metres (``depth / fx`` divided by the
cosine of the incidence angle) and fades out pattern detail finer than about two pixels, the
way a mip-mapped texture would. Without it, distant tiles and grain would shimmer (moire) from
frame to frame, which a real camera does not show.

All colours are **linear** RGB in [0, 1] (the sensor model applies the sRGB curve).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Material", "TEXTURES", "evaluate_texture", "value_noise", "fbm", "hash01"]


@dataclass(frozen=True)
class Material:
    """Appearance of one surface.

    Attributes:
        texture: a key of :data:`TEXTURES` (``"plaster"``, ``"wood_planks"``, ``"tiles"``, ...).
        color: base colour, linear RGB in [0, 1].
        color2: secondary colour (stripes, grout, mortar, grain, book spines...).
        scale: pattern size multiplier (1 = the texture's natural size).
        gloss: Blinn-Phong specular strength (0 = matte).
        emissive: emitted radiance as a multiple of the albedo (lamp shades, screens, windows).
        seed: varies the noise of the pattern between surfaces that share a texture.
    """

    texture: str
    color: tuple[float, float, float]
    color2: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    gloss: float = 0.0
    emissive: float = 0.0
    seed: int = 0


# --------------------------------------------------------------------------------------------
# Noise primitives
# --------------------------------------------------------------------------------------------


def hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point.

    Args:
        ix, iy: integer arrays of one shape (lattice coordinates).
        seed: integer varying the sequence.

    Returns:
        float64 array of the same shape.
    """
    h = (ix.astype(np.int64) * 374761393 + iy.astype(np.int64) * 668265263 + (seed % 1000003) * 982451653)
    h &= 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    h ^= h >> 16
    return h.astype(np.float64) / 4294967296.0


def value_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1] with unit lattice spacing (same shape as ``x``)."""
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = x - x0
    fy = y - y0
    ix = x0.astype(np.int64)
    iy = y0.astype(np.int64)
    sx = fx * fx * (3.0 - 2.0 * fx)
    sy = fy * fy * (3.0 - 2.0 * fy)
    a = hash01(ix, iy, seed)
    b = hash01(ix + 1, iy, seed)
    c = hash01(ix, iy + 1, seed)
    d = hash01(ix + 1, iy + 1, seed)
    top = a + (b - a) * sx
    bottom = c + (d - c) * sx
    return top + (bottom - top) * sy


def fbm(x: np.ndarray, y: np.ndarray, seed: int, octaves: int, footprint: np.ndarray | None = None) -> np.ndarray:
    """Fractal sum of value noise in about [0, 1]; octaves finer than the pixel footprint fade out.

    ``x, y`` are in noise-lattice units; ``footprint`` is the pixel size in the same units.
    """
    total = np.zeros_like(x, dtype=np.float64)
    norm = 0.0
    amp = 1.0
    freq = 1.0
    for octave in range(octaves):
        layer = value_noise(x * freq, y * freq, seed + 131 * octave)
        weight = amp if footprint is None else amp * _detail(footprint * freq, 1.0)
        total += (layer - 0.5) * weight
        norm += amp
        amp *= 0.5
        freq *= 2.0
    return 0.5 + total / norm


def _detail(footprint: np.ndarray | float, period: float) -> np.ndarray:
    """1 where a pattern of ``period`` is resolved (>= 4 pixels per period), 0 below 2 pixels."""
    ratio = np.asarray(footprint, dtype=np.float64) / period
    return np.clip(2.0 - 4.0 * ratio, 0.0, 1.0)


def _line_mask(coord: np.ndarray, period: float, width: float, footprint: np.ndarray) -> np.ndarray:
    """Anti-aliased indicator (0..1) of thin lines of ``width`` every ``period`` along ``coord``.

    Where the lines are unresolved the mask tends to their average coverage ``width / period``.
    """
    f = np.mod(coord, period)
    dist = np.minimum(f, period - f)
    soft = np.maximum(footprint, 1e-6)
    sharp = np.clip((width / 2 - dist) / soft + 0.5, 0.0, 1.0)
    resolved = _detail(footprint, period)
    return sharp * resolved + (width / period) * (1.0 - resolved)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t[..., None]


def _col(c: tuple[float, float, float], n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(c, dtype=np.float64), (n, 3)).copy()


# --------------------------------------------------------------------------------------------
# Textures: f(u, v, footprint, material) -> (N, 3) linear albedo
# --------------------------------------------------------------------------------------------


def _plain(u, v, fp, m: Material):
    n = fbm(u * 2.0, v * 2.0, m.seed, 2)
    return _col(m.color, u.size) * (0.96 + 0.08 * n)[:, None]


def _plaster(u, v, fp, m: Material):
    s = 1.5 / m.scale
    low = fbm(u * s, v * s, m.seed, 3)
    fine = value_noise(u * 40.0, v * 40.0, m.seed + 7)
    fine = 0.5 + (fine - 0.5) * _detail(fp * 40.0, 1.0)
    shade = 0.9 + 0.14 * low + 0.05 * (fine - 0.5)
    return _col(m.color, u.size) * shade[:, None]


def _wallpaper(u, v, fp, m: Material):
    period = 0.22 * m.scale
    phase = np.mod(u, period) / period
    stripe = (np.abs(phase - 0.5) < 0.22).astype(np.float64)
    # soften and fade when unresolved
    res = _detail(fp, period * 0.3)
    stripe = stripe * res + 0.44 * (1 - res)
    base = _mix(_col(m.color, u.size), _col(m.color2, u.size), stripe)
    # small repeating motif (dots) between stripes
    dots_u = np.mod(u + period / 4, period / 2) - period / 4
    dots_v = np.mod(v, period / 2) - period / 4
    dot = (dots_u**2 + dots_v**2 < (period * 0.06) ** 2).astype(np.float64) * _detail(fp, period * 0.12)
    base = base * (1.0 - 0.12 * dot)[:, None]
    n = fbm(u * 1.5, v * 1.5, m.seed, 2)
    return base * (0.94 + 0.1 * n)[:, None]


def _brick(u, v, fp, m: Material):
    bw, bh, mortar = 0.23 * m.scale, 0.075 * m.scale, 0.012 * m.scale
    row = np.floor(v / bh)
    uu = u + (np.mod(row, 2.0)) * bw * 0.5
    col = np.floor(uu / bw)
    tone = hash01(col.astype(np.int64), row.astype(np.int64), m.seed)
    base = _col(m.color, u.size) * (0.75 + 0.45 * tone)[:, None]
    grain = fbm(u * 25.0, v * 25.0, m.seed + 3, 2, fp * 25.0)
    base *= (0.88 + 0.24 * grain)[:, None]
    joint = np.maximum(_line_mask(v, bh, mortar, fp), _line_mask(uu, bw, mortar, fp))
    return _mix(base, _col(m.color2, u.size), joint)


def _wood_planks(u, v, fp, m: Material):
    pw = 0.16 * m.scale  # plank width along v
    pl = 1.2 * m.scale  # plank length along u
    row = np.floor(v / pw)
    uu = u + hash01(row.astype(np.int64), np.zeros_like(row, dtype=np.int64), m.seed) * pl
    col = np.floor(uu / pl)
    tone = hash01(col.astype(np.int64), row.astype(np.int64), m.seed + 1)
    grain_coord = v * 60.0 + 3.0 * fbm(u * 0.8, v * 6.0 + row * 3.1, m.seed + 2, 2)
    grain = 0.5 + 0.5 * np.sin(grain_coord * 2 * np.pi / 6.0)
    grain = 0.5 + (grain - 0.5) * _detail(fp, 0.1 / 6.0 * 6.0)
    t = np.clip(0.35 * tone + 0.4 * grain, 0.0, 1.0)
    base = _mix(_col(m.color, u.size), _col(m.color2, u.size), t)
    seam = np.maximum(_line_mask(v, pw, 0.004, fp), _line_mask(uu, pl, 0.004, fp))
    return base * (1.0 - 0.55 * seam)[:, None]


def _wood(u, v, fp, m: Material):
    grain_coord = v * 35.0 / m.scale + 2.5 * fbm(u * 1.2, v * 4.0, m.seed, 2)
    grain = 0.5 + 0.5 * np.sin(grain_coord * 2 * np.pi / 4.0)
    grain = 0.5 + (grain - 0.5) * _detail(fp, 0.1 * m.scale)
    return _mix(_col(m.color, u.size), _col(m.color2, u.size), 0.45 * grain)


def _tiles(u, v, fp, m: Material, allow_checker: bool = True):
    size = 0.45 * m.scale
    iu = np.floor(u / size).astype(np.int64)
    iv = np.floor(v / size).astype(np.int64)
    tone = hash01(iu, iv, m.seed)
    checker = (np.mod(iu + iv, 2) == 0) & (m.seed % 3 == 0) & allow_checker
    base = _col(m.color, u.size) * (0.93 + 0.12 * tone)[:, None]
    base[checker] = base[checker] * 0.72
    speck = fbm(u * 30.0, v * 30.0, m.seed + 5, 2, fp * 30.0)
    base *= (0.94 + 0.12 * speck)[:, None]
    grout = np.maximum(_line_mask(u, size, 0.008, fp), _line_mask(v, size, 0.008, fp))
    return _mix(base, _col(m.color2, u.size), grout)


def _wall_tiles(u, v, fp, m: Material):
    """Tiles without the checkerboard variant (a chessboard wall looks unlike any real room)."""
    return _tiles(u, v, fp, m, allow_checker=False)


def _carpet(u, v, fp, m: Material):
    mottled = fbm(u * 2.0 / m.scale, v * 2.0 / m.scale, m.seed, 3)
    fibre = value_noise(u * 180.0, v * 180.0, m.seed + 9)
    fibre = 0.5 + (fibre - 0.5) * _detail(fp * 180.0, 1.0)
    shade = 0.85 + 0.25 * mottled + 0.18 * (fibre - 0.5)
    return _col(m.color, u.size) * shade[:, None]


def _fabric(u, v, fp, m: Material):
    weave = 0.5 + 0.25 * (np.sin(u * 2 * np.pi / 0.006) + np.sin(v * 2 * np.pi / 0.006))
    weave = 0.5 + (weave - 0.5) * _detail(fp, 0.006)
    mott = fbm(u * 3.0, v * 3.0, m.seed, 2)
    return _col(m.color, u.size) * (0.88 + 0.16 * mott + 0.08 * (weave - 0.5))[:, None]


def _rug(u, v, fp, m: Material):
    inner = _fabric(u, v, fp, m)
    period = 0.3 * m.scale
    pattern = 0.5 + 0.5 * np.sin(u * 2 * np.pi / period) * np.sin(v * 2 * np.pi / period)
    pattern = 0.5 + (pattern - 0.5) * _detail(fp, period)
    return _mix(inner, _col(m.color2, u.size), 0.55 * pattern)


def _books(u, v, fp, m: Material):
    """Rows of book spines: u along the shelf, v up."""
    idx = np.floor(u / 0.045).astype(np.int64)
    palette = np.array(
        [[0.45, 0.05, 0.04], [0.05, 0.12, 0.35], [0.08, 0.25, 0.08], [0.6, 0.5, 0.3], [0.05, 0.05, 0.05],
         [0.55, 0.35, 0.05], [0.3, 0.05, 0.25], [0.7, 0.7, 0.65], [0.15, 0.3, 0.4]]
    )
    pick = (hash01(idx, np.ones_like(idx), m.seed + 4) * len(palette)).astype(np.int64)
    col = palette[pick] * (0.7 + 0.5 * hash01(idx, idx, m.seed + 8))[:, None]
    height = 0.6 + 0.4 * hash01(idx, np.full_like(idx, 7), m.seed)
    frac_v = np.clip(v, 0.0, None)
    above = frac_v > height * 0.26  # shelf gap height ~0.26 m in local units
    gap = _line_mask(u, 0.045, 0.004, fp)
    col = col * (1.0 - 0.6 * gap)[:, None]
    col[above] = np.asarray(m.color2) * 0.5
    res = _detail(fp, 0.045)
    avg = palette.mean(axis=0)
    return col * res[:, None] + avg * (1 - res)[:, None]


def _cabinet_front(u, v, fp, m: Material):
    """Panel doors/drawers: grooves every 0.4 m along u, 0.3 m along v."""
    base = _wood(u, v, fp, m) if m.color2 != (0.0, 0.0, 0.0) else _plain(u, v, fp, m)
    groove = np.maximum(_line_mask(u, 0.4 * m.scale, 0.006, fp), _line_mask(v, 0.35 * m.scale, 0.006, fp))
    return base * (1.0 - 0.5 * groove)[:, None]


def _screen(u, v, fp, m: Material):
    """A TV screen: dark glass, or (when color2 is bright) a blurred colourful picture."""
    n1 = fbm(u * 2.5, v * 2.5, m.seed, 3)
    n2 = fbm(u * 2.5 + 17.0, v * 2.5, m.seed + 1, 3)
    pic = np.stack([n1, n2, 1.0 - n1], axis=-1) * np.asarray(m.color2)[None, :]
    return np.asarray(m.color)[None, :] + pic


def _painting(u, v, fp, m: Material):
    n1 = fbm(u * 3.0, v * 3.0, m.seed, 3)
    n2 = fbm(u * 3.0 + 9.0, v * 3.0 - 4.0, m.seed + 11, 3)
    horizon = 0.5 + 0.5 * np.tanh((v - 0.25 - 0.2 * n1) * 12)
    a = np.asarray(m.color)
    b = np.asarray(m.color2)
    return _mix(_col(tuple(a), u.size), _col(tuple(b), u.size), horizon) * (0.7 + 0.6 * n2)[:, None]


def _window(u, v, fp, m: Material):
    """Bright outdoor view (sky above, greenery below) behind a frame with mullions."""
    sky = np.asarray(m.color)[None, :] * (1.0 + 0.3 * np.clip(v, 0, 2)[:, None])
    trees = fbm(u * 2.0, v * 2.0, m.seed, 3)
    horizon = v < (0.45 + 0.4 * trees)
    col = sky.copy()
    col[horizon] = np.asarray(m.color2) * (0.5 + 0.8 * trees[horizon, None])
    mullion = np.maximum(_line_mask(u, 0.6, 0.05, fp), _line_mask(v - 0.3, 0.7, 0.05, fp))
    frame = np.array([0.8, 0.8, 0.78])
    return col * (1 - mullion)[:, None] + frame * mullion[:, None] * 0.25


def _leaves(u, v, fp, m: Material):
    n = fbm(u * 14.0, v * 14.0, m.seed, 3, fp * 14.0)
    cells = value_noise(u * 40.0, v * 40.0, m.seed + 2)
    cells = 0.5 + (cells - 0.5) * _detail(fp * 40.0, 1.0)
    t = np.clip(n * 0.8 + 0.4 * cells - 0.2, 0, 1)
    return _mix(_col(m.color, u.size), _col(m.color2, u.size), t)


def _metal(u, v, fp, m: Material):
    brushed = value_noise(u * 3.0, v * 200.0, m.seed)
    brushed = 0.5 + (brushed - 0.5) * _detail(fp * 200.0, 1.0)
    return _col(m.color, u.size) * (0.92 + 0.16 * brushed)[:, None]


TextureFn = Callable[[np.ndarray, np.ndarray, np.ndarray, Material], np.ndarray]

#: Texture name -> function ``(u (N,), v (N,), footprint (N,), material) -> (N, 3) linear albedo``.
TEXTURES: dict[str, TextureFn] = {
    "plain": _plain,
    "plaster": _plaster,
    "wallpaper": _wallpaper,
    "brick": _brick,
    "wood_planks": _wood_planks,
    "wood": _wood,
    "tiles": _tiles,
    "wall_tiles": _wall_tiles,
    "carpet": _carpet,
    "fabric": _fabric,
    "rug": _rug,
    "books": _books,
    "cabinet_front": _cabinet_front,
    "screen": _screen,
    "painting": _painting,
    "window": _window,
    "leaves": _leaves,
    "metal": _metal,
}


def evaluate_texture(material: Material, u: np.ndarray, v: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Albedo of ``material`` at surface coordinates.

    Args:
        material: the surface's :class:`Material`.
        u, v: ``(N,)`` surface coordinates in metres (horizontal, vertical on walls).
        footprint: ``(N,)`` pixel footprint on the surface in metres.

    Returns:
        ``(N, 3)`` float64 linear RGB albedo, clipped to [0, 1] (emissive textures may exceed 1).
    """
    fn = TEXTURES.get(material.texture)
    if fn is None:
        raise KeyError(f"unknown texture {material.texture!r}; known: {sorted(TEXTURES)}")
    if u.size == 0:
        return np.zeros((0, 3))
    out = fn(u.astype(np.float64), v.astype(np.float64), footprint.astype(np.float64), material)
    if material.emissive > 0:
        return np.clip(out, 0.0, None)
    return np.clip(out, 0.0, 1.0)

"""Space-aware keyframe sampling: pick the frames whose 3D content covers the most space.

Every frame's valid depth pixels are back-projected to world points (``T_wc`` camera-to-world
poses, OpenCV optical frames, metres; see ``docs/conventions.md``) and quantised to a voxel
grid. A frame is then the *set* of voxels it sees, and choosing ``k`` keyframes out of ``N_m``
frames is the maximum-coverage problem: maximise the number of voxels seen by at least one
chosen frame. Greedy selection (take the frame adding the most uncovered voxels, repeat) is
within ``1 - 1/e`` of the optimum because coverage is monotone submodular; the lazy variant
below gives the identical answer while re-evaluating only a few frames per pick.

Two forms:

* offline, a batch of ``N_m`` frames -> ``k`` indices: :func:`sample_keyframes` (depth in) or
  :func:`frame_voxel_keys` + :func:`greedy_max_coverage` (points in), with the baselines
  :func:`uniform_sample` / :func:`random_sample` and :func:`coverage_of` to score any choice;
* online, an unbounded stream -> a bounded memory: :class:`KeyframeMemory`, for the ROS node.

Voxel keys are int64 values packing the integer voxel coordinates ``(ix, iy, iz)`` with
``ix = floor(x / voxel_size)``, 21 bits per axis (see :func:`pack_voxel_coords`), so keys from
different calls with the same voxel size are comparable.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Sequence

import numpy as np
import torch

from vln_core.config import FrameSamplingConfig
from vln_core.errors import InputError
from vln_core.geometry.reproject import unproject_depth

__all__ = [
    "SamplingResult",
    "pack_voxel_coords",
    "unpack_voxel_keys",
    "estimate_voxel_size",
    "frame_voxel_keys",
    "greedy_max_coverage",
    "exhaustive_max_coverage",
    "uniform_sample",
    "random_sample",
    "coverage_of",
    "sample_keyframes",
    "confident_points",
    "bounding_box_voxel_size",
    "sample_keyframes_from_points",
    "KeyframeMemory",
]

_BITS_PER_AXIS = 21
_AXIS_OFFSET = 1 << (_BITS_PER_AXIS - 1)  # voxel coordinates in [-2^20, 2^20) fit
_AXIS_MASK = (1 << _BITS_PER_AXIS) - 1

#: Smallest voxel edge the automatic estimate returns (metres).
MIN_VOXEL_SIZE_M = 1e-3
#: Robust extent of the point cloud: this percentile range per axis (outliers ignored).
EXTENT_PERCENTILES = (2.0, 98.0)
#: A box side shorter than this fraction of the longest side is treated as degenerate
#: (a single wall, a floor) and replaced by that fraction of the longest side.
MIN_SIDE_FRACTION = 0.1

#: Points used (a regular subsample) for the percentile extent in ``estimate_voxel_size``.
_EXTENT_SAMPLE = 65_536

#: Points voxelised at once: ``frame_voxel_keys`` and ``estimate_voxel_size`` work through the
#: frames in chunks of about this many points, so their temporaries stay near 40 bytes x this
#: (~40 MB) however many frames come in (all 128 frames of 518x392 points at once took ~2 GB).
_CHUNK_POINTS = 1 << 20

#: ``exhaustive_max_coverage`` refuses problems with more subsets than this.
MAX_EXHAUSTIVE_SUBSETS = 200_000


@dataclass
class SamplingResult:
    """The frames a sampler chose and how much of the scene they cover.

    Attributes:
        indices: ``(k,)`` int64 frame indices, sorted ascending (time order).
        coverage: ``covered_voxels / total_voxels`` in [0, 1]; 1.0 when there are no voxels at
            all (nothing to cover).
        covered_voxels: voxels seen by at least one chosen frame.
        total_voxels: voxels seen by any frame (the union over all ``N`` frames).
        gains: ``(k,)`` int64 marginal gain (new voxels) of each pick, in pick order (for the
            baselines and :func:`coverage_of`, pick order is time order).
        method: which sampler produced it ("space_aware", "uniform", "random", "exhaustive", ...).
    """

    indices: np.ndarray
    coverage: float
    covered_voxels: int
    total_voxels: int
    gains: np.ndarray
    method: str


# ------------------------------------------------------------------------------------------
# Voxel keys
# ------------------------------------------------------------------------------------------


def pack_voxel_coords(coords: np.ndarray) -> np.ndarray:
    """Pack integer voxel coordinates into one int64 key each.

    Args:
        coords: ``(..., 3)`` integer voxel coordinates, each in ``[-2^20, 2^20)``.

    Returns:
        ``(...)`` int64 keys, non-negative; equal coordinates give equal keys.
    """
    coords = np.asarray(coords)
    if coords.shape[-1:] != (3,):
        raise InputError(f"voxel coordinates must have shape (..., 3), got {coords.shape}")
    coords = coords.astype(np.int64, copy=False)
    if coords.size and (coords.min() < -_AXIS_OFFSET or coords.max() >= _AXIS_OFFSET):
        raise InputError(
            f"voxel coordinates out of the packable range [-{_AXIS_OFFSET}, {_AXIS_OFFSET}): "
            f"got [{coords.min()}, {coords.max()}]; the voxel size is too small for the scene extent"
        )
    shifted = coords + _AXIS_OFFSET
    return (shifted[..., 0] << (2 * _BITS_PER_AXIS)) | (shifted[..., 1] << _BITS_PER_AXIS) | shifted[..., 2]


def unpack_voxel_keys(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_voxel_coords`: ``(...)`` int64 keys -> ``(..., 3)`` int64 coordinates."""
    keys = np.asarray(keys, dtype=np.int64)
    fields = [(keys >> (2 * _BITS_PER_AXIS)) & _AXIS_MASK, (keys >> _BITS_PER_AXIS) & _AXIS_MASK, keys & _AXIS_MASK]
    return np.stack(fields, axis=-1) - _AXIS_OFFSET


def _as_points_and_valid(points: Any, valid: Any, finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Numpy ``(N, P, 3)`` float points and ``(N, P)`` bool valid; non-finite points are invalid
    (``finite=False`` leaves that check to the caller, chunk by chunk: see :func:`_finite_valid`)."""
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    if isinstance(valid, torch.Tensor):
        valid = valid.detach().cpu().numpy()
    points = np.asarray(points)
    if points.dtype.kind != "f":
        points = points.astype(np.float64)
    if points.ndim != 3 or points.shape[-1] != 3:
        raise InputError(f"points must have shape (N, P, 3) (world metres), got {points.shape}")
    if valid is None:
        valid = np.ones(points.shape[:2], dtype=bool)
    valid = np.asarray(valid)
    if valid.shape != points.shape[:2]:
        raise InputError(f"valid must have shape {points.shape[:2]} to match points {points.shape}, got {valid.shape}")
    valid = valid.astype(bool, copy=False)
    if finite:
        valid = _finite_valid(points, valid)
    return points, valid


def _finite_valid(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``valid & all(isfinite(points), -1)`` (a new array; per component, which is several times
    faster than numpy's reduction over a last axis of 3)."""
    out = valid & np.isfinite(points[..., 0])
    out &= np.isfinite(points[..., 1])
    out &= np.isfinite(points[..., 2])
    return out


def _point_chunks(n: int, p: int) -> list[tuple[int, int]]:
    """Frame ranges ``[lo, hi)`` of about ``_CHUNK_POINTS`` points each (at least one frame)."""
    step = max(1, _CHUNK_POINTS // max(p, 1))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def estimate_voxel_size(points: Any, valid: Any = None, divisions: int = 20) -> float:
    """Voxel edge from the scene's extent: shortest side of a robust bounding box / ``divisions``.

    The box spans the 2nd-98th percentile of the valid points on each world axis, so a few
    outliers (depth noise, a far window) do not stretch it. A side shorter than
    ``MIN_SIDE_FRACTION`` of the longest one (a flat scene: one wall, a floor) is raised to
    that fraction, and the result is never below ``MIN_VOXEL_SIZE_M``.

    Args:
        points: ``(N, P, 3)`` world points in metres (numpy or torch); ``(P, 3)`` is accepted.
        valid: ``(N, P)`` (or ``(P,)``) bool mask of usable points, or None for all finite points.
        divisions: voxels along the shortest side of the box.

    Returns:
        voxel edge length in metres.
    """
    if int(divisions) != divisions or divisions < 1:
        raise InputError(f"voxel divisions must be a positive integer, got {divisions}")
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    points = np.asarray(points)
    if points.ndim == 2:
        points = points[None]
        if valid is not None:
            valid = np.asarray(valid.detach().cpu().numpy() if isinstance(valid, torch.Tensor) else valid)[None]
    points, valid = _as_points_and_valid(points, valid, finite=False)
    n, p = valid.shape
    chunks = _point_chunks(n, p)
    total = sum(int(np.count_nonzero(_finite_valid(points[lo:hi], valid[lo:hi]))) for lo, hi in chunks)
    if total == 0:
        raise InputError("cannot estimate a voxel size: no valid points (all depth invalid?)")
    # percentiles of a regular subsample (every step-th valid point) are as good and cheaper
    step = -(-total // _EXTENT_SAMPLE) if total > _EXTENT_SAMPLE else 1
    picked, seen = [], 0
    for lo, hi in chunks:
        index = np.flatnonzero(_finite_valid(points[lo:hi], valid[lo:hi]))
        first = (-seen) % step  # first position in this chunk whose global rank is a multiple of step
        picked.append(points[lo:hi].reshape(-1, 3)[index[first::step]])
        seen += index.size
    selected = np.concatenate(picked)
    low, high = np.percentile(selected, EXTENT_PERCENTILES, axis=0)
    sides = np.maximum(high - low, 0.0)
    longest = float(sides.max())
    shortest = max(float(sides.min()), MIN_SIDE_FRACTION * longest)
    return max(shortest / float(divisions), MIN_VOXEL_SIZE_M)


def frame_voxel_keys(
    points: Any,
    valid: Any,
    voxel_size: float | None = None,
    voxel_divisions: int = 20,
    max_points_per_frame: int | None = None,
    seed: int = 0,
) -> tuple[list[np.ndarray], float]:
    """The set of voxels each frame sees.

    Args:
        points: ``(N_m, P, 3)`` world points in metres (numpy or torch), e.g. the reshaped output
            of :func:`vln_core.geometry.reproject.unproject_depth`.
        valid: ``(N_m, P)`` bool, True where a point is a measurement (non-finite points are
            dropped regardless).
        voxel_size: voxel edge in metres; None estimates it from all valid points with
            :func:`estimate_voxel_size` (shortest robust box side / ``voxel_divisions``).
        voxel_divisions: see ``voxel_size``.
        max_points_per_frame: if set, each frame keeps at most this many valid points, drawn
            without replacement by a generator seeded with ``seed`` (deterministic).
        seed: seed of that subsampling.

    Returns:
        ``(keys, voxel_size_used)``: ``keys[i]`` is a sorted, duplicate-free int64 array of the
        packed voxel keys (:func:`pack_voxel_coords`) seen by frame ``i`` (empty when the frame
        has no valid point); ``voxel_size_used`` in metres.
    """
    points, valid = _as_points_and_valid(points, valid, finite=False)
    if max_points_per_frame is not None and (int(max_points_per_frame) != max_points_per_frame or max_points_per_frame < 1):
        raise InputError(f"max_points_per_frame must be a positive integer or None, got {max_points_per_frame}")
    if voxel_size is None:
        voxel_size = estimate_voxel_size(points, valid, voxel_divisions)
    elif not (math.isfinite(voxel_size) and voxel_size > 0):
        raise InputError(f"voxel_size must be a positive number of metres, got {voxel_size}")
    voxel_size = float(voxel_size)
    n, p = valid.shape
    subsample = max_points_per_frame is not None and max_points_per_frame < p and n > 0
    # one generator for all chunks: its stream continues across them, so the draw is the same
    # as one (n, p) draw would be, and the result does not depend on the chunk size
    rng = np.random.default_rng(seed) if subsample else None
    per_frame: list[np.ndarray] = []
    for lo, hi in _point_chunks(n, p):
        per_frame.extend(_chunk_voxel_keys(points[lo:hi], _finite_valid(points[lo:hi], valid[lo:hi]),
                                           1.0 / voxel_size, max_points_per_frame if subsample else None, rng))
    return per_frame, voxel_size


def _chunk_voxel_keys(points: np.ndarray, valid: np.ndarray, inv_voxel: float, max_points: int | None,
                      rng: np.random.Generator | None) -> list[np.ndarray]:
    """Sorted unique voxel keys of each frame of a chunk: ``points (c, P, 3)``, ``valid (c, P)``."""
    c, p = valid.shape
    if max_points is not None:
        # keep the max_points valid points of lowest random priority in every frame
        # (a uniform draw without replacement), all frames of the chunk in one vectorised partition
        priority = rng.random((c, p))
        priority[~valid] = 2.0  # after every valid point
        keep = np.argpartition(priority, int(max_points) - 1, axis=1)[:, : int(max_points)]
        del priority
        valid = np.take_along_axis(valid, keep, axis=1)
        points = np.take_along_axis(points, keep[..., None], axis=1)
    counts = valid.sum(axis=1)
    # only the valid points (frame-major), so invalid ones (NaN / inf too) are never scaled or sorted
    scaled = points[valid] * points.dtype.type(inv_voxel)  # (m, 3), a new array
    np.floor(scaled, out=scaled)
    keys = pack_voxel_coords(scaled.astype(np.int64))  # (m,) non-negative
    del scaled
    per_frame = []
    for frame_keys in np.split(keys, np.cumsum(counts)[:-1]) if c else []:
        frame_keys.sort()  # in place: a view of this chunk's keys
        if frame_keys.size:
            frame_keys = frame_keys[np.concatenate(([True], frame_keys[1:] != frame_keys[:-1]))]
        per_frame.append(frame_keys)
    return per_frame


# ------------------------------------------------------------------------------------------
# Offline selection
# ------------------------------------------------------------------------------------------


def _check_sets(voxel_sets: Sequence[Any]) -> list[np.ndarray]:
    if isinstance(voxel_sets, np.ndarray) and voxel_sets.dtype != object:
        raise InputError("voxel_sets must be a list of 1-D int64 arrays (one per frame), got one array")
    out = []
    for i, s in enumerate(voxel_sets):
        arr = np.asarray(s)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise InputError(f"voxel_sets[{i}] must be a 1-D integer array of voxel keys, got shape {arr.shape} dtype {arr.dtype}")
        out.append(arr.astype(np.int64, copy=False))
    return out


def _check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise InputError(f"k (frames to pick) must be a non-negative integer, got {k!r}")
    return int(k)


def _dense_sets(voxel_sets: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Map every key to a dense id ``0..U-1``, ordered like the keys; per-frame duplicates removed.

    Packed voxel keys (:func:`pack_voxel_coords`) of one scene span a small box of voxel
    coordinates, so the ids come from an occupancy table over that box (linear time); other
    keys fall back to one sort of all keys (``np.unique``). Numpy only: torch's threaded
    ``unique`` stalls badly on a loaded 2-core machine.

    Returns ``(ids, U)``: ``ids[i]`` int64 unique dense ids of frame ``i``; ``U`` = union size.
    """
    sizes = np.array([s.size for s in voxel_sets], dtype=np.int64)
    total_keys = int(sizes.sum())
    if total_keys == 0:
        return [np.zeros(0, dtype=np.int64) for _ in voxel_sets], 0
    concatenated = np.concatenate(voxel_sets)
    dense, union = None, 0
    if concatenated.min() >= 0:
        fields = [(concatenated >> (2 * _BITS_PER_AXIS)) & _AXIS_MASK,
                  (concatenated >> _BITS_PER_AXIS) & _AXIS_MASK, concatenated & _AXIS_MASK]
        lows = [int(f.min()) for f in fields]
        spans = [int(f.max()) - low + 1 for f, low in zip(fields, lows)]
        if spans[0] * spans[1] * spans[2] <= 4 * total_keys + 65536:
            linear = ((fields[0] - lows[0]) * spans[1] + (fields[1] - lows[1])) * spans[2] + (fields[2] - lows[2])
            occupied = np.zeros(spans[0] * spans[1] * spans[2], dtype=bool)
            occupied[linear] = True
            rank = np.cumsum(occupied, dtype=np.int64)
            dense, union = rank[linear] - 1, int(rank[-1])
    if dense is None:
        unique, dense = np.unique(concatenated, return_inverse=True)
        union = int(unique.size)
    ends = np.cumsum(sizes)
    ids = np.split(dense, ends[:-1])
    # inputs are normally sorted and duplicate-free already (frame_voxel_keys); check in one pass
    increasing = np.diff(concatenated) > 0
    boundaries = ends[:-1]
    increasing[boundaries[(boundaries > 0) & (boundaries < concatenated.size)] - 1] = True  # not compared
    if not increasing.all():
        ids = [np.unique(frame_ids) for frame_ids in ids]
    return ids, union


def _result(indices: Sequence[int], gains: Sequence[int], covered: int, total: int, method: str) -> SamplingResult:
    return SamplingResult(
        indices=np.sort(np.asarray(indices, dtype=np.int64)),
        coverage=float(covered) / total if total > 0 else 1.0,
        covered_voxels=int(covered),
        total_voxels=int(total),
        gains=np.asarray(gains, dtype=np.int64),
        method=method,
    )


def greedy_max_coverage(voxel_sets: Sequence[Any], k: int, lazy: bool = True) -> SamplingResult:
    """Pick ``k`` frames greedily by marginal voxel coverage (the space-aware sampler).

    Each step takes the frame adding the most not-yet-covered voxels; ties go to the earlier
    frame. The lazy form keeps a max-heap of stale gains (upper bounds, by submodularity) and
    re-evaluates only the top until a fresh gain beats every remaining bound; it returns
    exactly what the plain form (``lazy=False``, all gains recomputed each step) returns.

    Args:
        voxel_sets: ``N`` 1-D integer arrays, the voxel keys each frame sees (see
            :func:`frame_voxel_keys`); any integer ids work.
        k: frames to pick; ``k >= N`` returns all frames.
        lazy: use the lazy priority queue (default) or plain greedy.

    Returns:
        :class:`SamplingResult` with ``method="space_aware"``; ``gains`` in pick order.
    """
    sets = _check_sets(voxel_sets)
    n = len(sets)
    k = _check_k(k, n)
    ids, total = _dense_sets(sets)
    covered = np.zeros(total, dtype=bool)
    if k >= n:  # every frame; gains in time order
        gains = []
        for frame_ids in ids:
            gains.append(int(np.count_nonzero(~covered[frame_ids])))
            covered[frame_ids] = True
        return _result(range(n), gains, total, total, "space_aware")

    picks: list[int] = []
    gains = []
    if lazy:
        heap = [(-frame_ids.size, i) for i, frame_ids in enumerate(ids)]
        heapq.heapify(heap)
        while len(picks) < k:
            _, i = heapq.heappop(heap)
            gain = ids[i].size - int(np.count_nonzero(covered[ids[i]]))
            # fresh gain of i vs the best remaining bound, under the order (gain desc, index asc)
            if not heap or gain > -heap[0][0] or (gain == -heap[0][0] and i < heap[0][1]):
                picks.append(i)
                gains.append(gain)
                covered[ids[i]] = True
            else:
                heapq.heappush(heap, (-gain, i))
    else:
        available = np.ones(n, dtype=bool)
        for _ in range(k):
            current = np.array(
                [np.count_nonzero(~covered[f]) if available[i] else -1 for i, f in enumerate(ids)], dtype=np.int64
            )
            i = int(np.argmax(current))  # first maximum = earliest frame
            picks.append(i)
            gains.append(int(current[i]))
            covered[ids[i]] = True
            available[i] = False
    return _result(picks, gains, int(sum(gains)), total, "space_aware")


def exhaustive_max_coverage(voxel_sets: Sequence[Any], k: int) -> SamplingResult:
    """The optimal ``k`` frames by trying every subset (for tests and small problems).

    Ties go to the lexicographically first subset. Refuses (``InputError``) when
    ``C(N, k) > MAX_EXHAUSTIVE_SUBSETS``.

    Returns:
        :class:`SamplingResult` with ``method="exhaustive"``; ``gains`` in time order.
    """
    sets = _check_sets(voxel_sets)
    n = len(sets)
    k = min(_check_k(k, n), n)
    subsets = math.comb(n, k)
    if subsets > MAX_EXHAUSTIVE_SUBSETS:
        raise InputError(
            f"exhaustive search over C({n}, {k}) = {subsets} subsets exceeds the limit of "
            f"{MAX_EXHAUSTIVE_SUBSETS}; use greedy_max_coverage"
        )
    ids, total = _dense_sets(sets)
    masks = []
    for frame_ids in ids:  # Python ints as bitsets: OR + bit_count per subset
        mask = np.zeros(total, dtype=bool)
        mask[frame_ids] = True
        masks.append(int.from_bytes(np.packbits(mask, bitorder="little").tobytes(), "little"))
    best_cover, best_subset = -1, ()
    for subset in combinations(range(n), k):
        union = 0
        for i in subset:
            union |= masks[i]
        cover = union.bit_count()
        if cover > best_cover:
            best_cover, best_subset = cover, subset
    result = coverage_of(sets, best_subset, method="exhaustive")
    return result


def uniform_sample(n: int, k: int) -> np.ndarray:
    """``k`` evenly spaced frame indices out of ``n``, always including the newest (``n - 1``).

    ``k >= 2`` spans ``0 .. n-1``; ``k == 1`` gives ``[n - 1]``; ``k >= n`` gives all.

    Returns:
        ``(min(k, n),)`` int64, sorted ascending, distinct.
    """
    k = _check_k(k, n)
    if int(n) != n or n < 0:
        raise InputError(f"n (frames) must be a non-negative integer, got {n!r}")
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k == 1:
        return np.array([n - 1], dtype=np.int64)
    # floor(x + 0.5) keeps samples >= 1 apart distinct (np.round's half-to-even would not)
    return np.floor(np.linspace(0.0, n - 1, k) + 0.5).astype(np.int64)


def random_sample(n: int, k: int, seed: int = 0) -> np.ndarray:
    """``k`` distinct frame indices out of ``n`` drawn uniformly (seeded), sorted ascending, int64."""
    k = _check_k(k, n)
    if int(n) != n or n < 0:
        raise InputError(f"n (frames) must be a non-negative integer, got {n!r}")
    if k >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False)).astype(np.int64)


def coverage_of(voxel_sets: Sequence[Any], indices: Sequence[int], method: str = "given") -> SamplingResult:
    """Score any choice of frames with the same coverage measure the greedy sampler maximises.

    Args:
        voxel_sets: ``N`` 1-D integer arrays of voxel keys (one per frame).
        indices: chosen frame indices in ``[0, N)`` (duplicates are counted once).
        method: label stored in the result.

    Returns:
        :class:`SamplingResult`; ``gains`` are the marginal gains in time order.
    """
    sets = _check_sets(voxel_sets)
    chosen = np.unique(np.asarray(indices, dtype=np.int64))
    if chosen.size and (chosen[0] < 0 or chosen[-1] >= len(sets)):
        raise InputError(f"frame indices must be in [0, {len(sets)}), got {chosen.tolist()}")
    ids, total = _dense_sets(sets)
    covered = np.zeros(total, dtype=bool)
    gains = []
    for i in chosen:
        gains.append(int(np.count_nonzero(~covered[ids[i]])))
        covered[ids[i]] = True
    return _result(chosen, gains, int(sum(gains)), total, method)


def sample_keyframes(
    depths: Any,
    K: Any,
    T_wc: Any,
    k: int,
    cfg: FrameSamplingConfig | None = None,
    stride: int = 4,
) -> SamplingResult:
    """Choose ``k`` keyframes of a posed RGB-D batch with the sampler ``cfg.method`` names.

    All methods report the voxel coverage of their choice, so they can be compared.

    Args:
        depths: ``(N, H, W)`` depth in metres (0/NaN/inf invalid), numpy or torch.
        K: ``(N, 3, 3)`` or ``(3, 3)`` intrinsics of the depth grid.
        T_wc: ``(N, 4, 4)`` camera-to-world poses (OpenCV optical camera frames).
        k: keyframes to choose (``k >= N`` returns all).
        cfg: sampling settings (method, voxel size or divisions, points per frame, seed);
            None uses the defaults.
        stride: back-project every ``stride``-th pixel in x and y.

    Returns:
        :class:`SamplingResult` (``indices`` in time order).
    """
    cfg = cfg if cfg is not None else FrameSamplingConfig()
    depth_t = depths if isinstance(depths, torch.Tensor) else torch.as_tensor(np.asarray(depths))
    if depth_t.dim() != 3:
        raise InputError(f"depths must have shape (N, H, W) in metres, got {tuple(depth_t.shape)}")
    n = depth_t.shape[0]
    with torch.no_grad():
        points, valid = unproject_depth(depth_t, K, T_wc, stride=stride)
    points = points.reshape(n, -1, 3)
    valid = valid.reshape(n, -1)
    if cfg.voxel_size is None and not bool(valid.any()):
        raise InputError("sample_keyframes: no valid depth pixel in any frame; cannot build voxel sets")
    voxel_sets, _ = frame_voxel_keys(
        points, valid, voxel_size=cfg.voxel_size, voxel_divisions=cfg.voxel_divisions,
        max_points_per_frame=cfg.max_points_per_frame, seed=cfg.seed,
    )
    if cfg.method == "space_aware":
        return greedy_max_coverage(voxel_sets, k)
    if cfg.method == "uniform":
        return coverage_of(voxel_sets, uniform_sample(n, k), method="uniform")
    if cfg.method == "random":
        return coverage_of(voxel_sets, random_sample(n, k, cfg.seed), method="random")
    raise InputError(f"frame_sampling.method must be 'space_aware', 'uniform' or 'random', got {cfg.method!r}")


def confident_points(conf: Any, min_conf: float = 0.1, quantile: float = 0.5) -> np.ndarray:
    """The design's confidence filter for predicted point maps (VGGT): keep a point when its
    confidence is at least the ``quantile`` (median) of all confidences of the clip and above
    ``min_conf``.

    Args:
        conf: ``(N, ...)`` confidences (numpy or torch).

    Returns:
        bool mask of ``conf``'s shape.
    """
    if isinstance(conf, torch.Tensor):
        conf = conf.detach().float().cpu().numpy()
    conf = np.asarray(conf)
    if conf.size == 0:
        return np.zeros(conf.shape, dtype=bool)
    finite = np.isfinite(conf)
    # conf[finite] is a copy, so the quantile may partition it in place (no second copy)
    threshold = np.quantile(conf[finite], quantile, overwrite_input=True) if finite.any() else np.inf
    return finite & (conf >= threshold) & (conf > min_conf)


def bounding_box_voxel_size(points: Any, valid: Any, divisions: int = 20) -> float:
    """The design's voxel size for predicted point maps: the shortest side of the (plain min/max)
    bounding box of the valid points / ``divisions`` (never below ``MIN_VOXEL_SIZE_M``).

    Unlike :func:`estimate_voxel_size` (robust percentile box for depth sensors), this follows
    the design exactly; the points were already filtered by confidence. Works in chunks.

    Args:
        points: ``(N, P, 3)``; valid: ``(N, P)`` bool.
    """
    points, valid = _as_points_and_valid(points, valid, finite=False)
    low = np.full(3, np.inf)
    high = np.full(3, -np.inf)
    for lo, hi in _point_chunks(*valid.shape):
        keep = _finite_valid(points[lo:hi], valid[lo:hi])
        if not keep.any():
            continue
        for axis in range(3):  # per component: a reduction over (m, 3) along axis 0 is slow in numpy
            values = points[lo:hi, :, axis][keep]
            low[axis] = min(low[axis], float(values.min()))
            high[axis] = max(high[axis], float(values.max()))
    if not np.isfinite(low).all():
        raise InputError("cannot size voxels: no confident finite point in any frame")
    return max(float((high - low).min()) / float(divisions), MIN_VOXEL_SIZE_M)


def sample_keyframes_from_points(
    points: Any,
    conf: Any,
    k: int,
    cfg: FrameSamplingConfig | None = None,
    min_conf: float = 0.1,
) -> SamplingResult:
    """Keyframes from a predicted point map with confidence (VGGT), as the design samples them:
    points with confidence above the clip's median and above ``min_conf``
    (:func:`confident_points`), voxel edge = shortest bounding-box side / ``cfg.voxel_divisions``
    (:func:`bounding_box_voxel_size`; ``cfg.voxel_size`` overrides it), then ``cfg.method``.

    Args:
        points: ``(N, H, W, 3)`` or ``(N, P, 3)`` points in one frame for the whole clip (e.g. the
            current camera's), any unit.
        conf: ``(N, H, W)`` or ``(N, P)`` confidences.
        k: keyframes to choose.
        cfg: sampling settings (method, voxel size / divisions, points per frame, seed).

    Returns:
        :class:`SamplingResult` (``indices`` in time order).
    """
    cfg = cfg if cfg is not None else FrameSamplingConfig()
    if isinstance(points, torch.Tensor):
        points = points.detach().float().cpu().numpy()
    points = np.asarray(points)
    n = points.shape[0] if points.ndim >= 2 else 0
    points = points.reshape(n, -1, 3)
    valid = confident_points(conf, min_conf).reshape(n, -1)
    voxel_size = cfg.voxel_size or bounding_box_voxel_size(points, valid, cfg.voxel_divisions)
    voxel_sets, _ = frame_voxel_keys(points, valid, voxel_size=voxel_size,
                                     max_points_per_frame=cfg.max_points_per_frame, seed=cfg.seed)
    if cfg.method == "space_aware":
        return greedy_max_coverage(voxel_sets, k)
    if cfg.method == "uniform":
        return coverage_of(voxel_sets, uniform_sample(n, k), method="uniform")
    if cfg.method == "random":
        return coverage_of(voxel_sets, random_sample(n, k, cfg.seed), method="random")
    raise InputError(f"frame_sampling.method must be 'space_aware', 'uniform' or 'random', got {cfg.method!r}")


# ------------------------------------------------------------------------------------------
# Online memory
# ------------------------------------------------------------------------------------------


class KeyframeMemory:
    """A bounded set of keyframes that keeps as much of the seen space covered as it can.

    The online counterpart of :func:`greedy_max_coverage` for a stream of frames (the ROS
    node). Each frame arrives as its voxel keys at a fixed ``voxel_size`` (the world grows
    online, so the size cannot come from a bounding box of everything; take it from the config
    or :func:`estimate_voxel_size` on the first frames).

    :meth:`offer` admits a frame when the memory is not full, or when the fraction of its
    voxels that no member covers yet is at least ``min_novel_fraction``. Admitting into a full
    memory evicts the member whose removal loses the fewest voxels (voxels only it covers);
    the new frame is a candidate as well, and ties evict the oldest frame. A per-voxel
    reference count makes an offer cost O(frame size) plus an eviction scan over the members.

    Args:
        capacity: most frames held (>= 1).
        voxel_size: voxel edge in metres the keys were made with (informational, reported by
            :meth:`stats`; keys of different sizes must not be mixed).
        min_novel_fraction: in [0, 1].
    """

    def __init__(self, capacity: int, voxel_size: float, min_novel_fraction: float = 0.05) -> None:
        if isinstance(capacity, bool) or int(capacity) != capacity or capacity < 1:
            raise InputError(f"KeyframeMemory capacity must be a positive integer, got {capacity!r}")
        if not (math.isfinite(voxel_size) and voxel_size > 0):
            raise InputError(f"KeyframeMemory voxel_size must be > 0 metres, got {voxel_size!r}")
        if not 0.0 <= min_novel_fraction <= 1.0:
            raise InputError(f"KeyframeMemory min_novel_fraction must be in [0, 1], got {min_novel_fraction!r}")
        self.capacity = int(capacity)
        self.voxel_size = float(voxel_size)
        self.min_novel_fraction = float(min_novel_fraction)
        self.clear()

    def clear(self) -> None:
        """Forget every frame and reset the counters."""
        self._members: dict[int, np.ndarray] = {}  # frame_id -> sorted unique keys
        self._keys = np.zeros(0, dtype=np.int64)  # sorted known keys
        self._counts = np.zeros(0, dtype=np.int32)  # members covering each known key
        self._counters = {"offered": 0, "admitted": 0, "rejected": 0, "evicted": 0}
        self.last_novel_fraction = float("nan")

    # ---------------------------------------------------------------- reference counts
    def _positions(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``keys`` in ``self._keys`` and whether each is present there."""
        pos = np.searchsorted(self._keys, keys)
        inside = pos < self._keys.size
        found = np.zeros(keys.shape, dtype=bool)
        found[inside] = self._keys[pos[inside]] == keys[inside]
        return pos, found

    def _add(self, keys: np.ndarray) -> None:
        pos, found = self._positions(keys)
        self._counts[pos[found]] += 1
        missing = keys[~found]
        if missing.size:
            self._keys = np.insert(self._keys, pos[~found], missing)
            self._counts = np.insert(self._counts, pos[~found], np.ones(missing.size, dtype=np.int32))

    def _remove(self, keys: np.ndarray) -> None:
        pos, found = self._positions(keys)
        self._counts[pos[found]] -= 1
        keep = self._counts > 0
        if not keep.all():
            self._keys = self._keys[keep]
            self._counts = self._counts[keep]

    def _unique_loss(self, keys: np.ndarray) -> int:
        """Voxels that only this member covers (lost if it were evicted)."""
        pos, found = self._positions(keys)
        return int(np.count_nonzero(self._counts[pos[found]] == 1))

    # ---------------------------------------------------------------- public
    def novel_fraction(self, voxel_keys: np.ndarray) -> float:
        """Fraction of a frame's voxels no member covers yet (0.0 for a frame with no voxels)."""
        keys = self._check_keys(voxel_keys)
        if keys.size == 0:
            return 0.0
        _, found = self._positions(keys)
        return float(np.count_nonzero(~found)) / keys.size

    def offer(self, frame_id: int, voxel_keys: np.ndarray) -> bool:
        """Offer one frame; returns True when it is in the memory afterwards.

        Args:
            frame_id: the frame's id (integer; ids order the frames in time); must not be held.
            voxel_keys: ``(V,)`` integer voxel keys the frame sees (duplicates allowed), e.g.
                ``frame_voxel_keys(points[None], valid[None], voxel_size=memory.voxel_size)[0][0]``.
        """
        if isinstance(frame_id, bool) or int(frame_id) != frame_id:
            raise InputError(f"frame_id must be an integer, got {frame_id!r}")
        frame_id = int(frame_id)
        if frame_id in self._members:
            raise InputError(f"frame {frame_id} is already in the keyframe memory")
        keys = self._check_keys(voxel_keys)
        self._counters["offered"] += 1
        self.last_novel_fraction = self.novel_fraction(keys)
        if len(self._members) >= self.capacity and self.last_novel_fraction < self.min_novel_fraction:
            self._counters["rejected"] += 1
            return False
        self._members[frame_id] = keys
        self._add(keys)
        if len(self._members) <= self.capacity:
            self._counters["admitted"] += 1
            return True
        # over capacity: evict the least loss; ties -> oldest (smallest id)
        victim = min(self._members, key=lambda fid: (self._unique_loss(self._members[fid]), fid))
        self._remove(self._members.pop(victim))
        if victim == frame_id:
            self._counters["rejected"] += 1
            return False
        self._counters["admitted"] += 1
        self._counters["evicted"] += 1
        return True

    @staticmethod
    def _check_keys(voxel_keys: Any) -> np.ndarray:
        keys = np.asarray(voxel_keys)
        if keys.ndim != 1 or (keys.size and keys.dtype.kind not in "iu"):
            raise InputError(f"voxel_keys must be a 1-D integer array, got shape {keys.shape} dtype {keys.dtype}")
        return np.unique(keys.astype(np.int64, copy=False))

    @property
    def frame_ids(self) -> list[int]:
        """Ids of the held frames, ascending (time order)."""
        return sorted(self._members)

    @property
    def coverage_voxels(self) -> int:
        """Distinct voxels covered by the held frames."""
        return int(self._keys.size)

    def voxel_keys(self, frame_id: int) -> np.ndarray:
        """The (sorted, unique) voxel keys of a held frame."""
        if frame_id not in self._members:
            raise InputError(f"frame {frame_id} is not in the keyframe memory")
        return self._members[frame_id]

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, frame_id: object) -> bool:
        return frame_id in self._members

    def stats(self) -> dict[str, Any]:
        """Counters and state, e.g. for diagnostics."""
        return {
            "frames": len(self._members),
            "capacity": self.capacity,
            "coverage_voxels": self.coverage_voxels,
            "voxel_size": self.voxel_size,
            "min_novel_fraction": self.min_novel_fraction,
            "last_novel_fraction": self.last_novel_fraction,
            **self._counters,
        }

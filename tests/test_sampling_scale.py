"""The sampler at VGGT scale: voxelisation works through the frames in chunks (bounded memory)
and gives exactly what one pass over all frames gives."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from vln_core import sampling
from vln_core.sampling import estimate_voxel_size, frame_voxel_keys


def _cloud(n=12, p=5000, seed=0):
    rng = np.random.default_rng(seed)
    points = (rng.normal(size=(n, p, 3)) * [3.0, 1.0, 2.0]).astype(np.float32)
    valid = rng.random((n, p)) > 0.2
    points[2, :10] = np.nan  # non-finite points are dropped whatever valid says
    points[3, 5] = np.inf
    return points, valid


@pytest.mark.parametrize("max_points", [None, 700])
def test_chunked_voxelisation_equals_one_pass(monkeypatch, max_points):
    points, valid = _cloud()
    monkeypatch.setattr(sampling, "_CHUNK_POINTS", 1 << 30)  # one chunk: the former all-at-once pass
    whole, size_whole = frame_voxel_keys(points, valid, voxel_divisions=20, max_points_per_frame=max_points, seed=5)
    for chunk in (1, 5000, 12_000, 17_000):  # one frame per chunk, exact and ragged splits
        monkeypatch.setattr(sampling, "_CHUNK_POINTS", chunk)
        parts, size = frame_voxel_keys(points, valid, voxel_divisions=20, max_points_per_frame=max_points, seed=5)
        assert size == size_whole
        assert len(parts) == len(whole)
        assert all(np.array_equal(a, b) for a, b in zip(parts, whole))


def test_chunked_voxel_size_estimate_takes_the_same_subsample(monkeypatch):
    points, valid = _cloud(n=20, p=8000)
    monkeypatch.setattr(sampling, "_EXTENT_SAMPLE", 1000)  # force the regular subsample
    monkeypatch.setattr(sampling, "_CHUNK_POINTS", 1 << 30)
    whole = estimate_voxel_size(points, valid, 20)
    for chunk in (1, 3000, 8000, 50_000):
        monkeypatch.setattr(sampling, "_CHUNK_POINTS", chunk)
        assert estimate_voxel_size(points, valid, 20) == whole


def test_voxelisation_memory_is_bounded_by_the_chunk_not_the_frame_count(monkeypatch):
    """64 frames x 20k points: the temporaries of one pass were ~40 bytes per point (~50 MB);
    in chunks of 2^16 points they stay a few MB whatever the frame count."""
    rng = np.random.default_rng(1)
    points = rng.uniform(-2, 2, size=(64, 20_000, 3)).astype(np.float32)
    valid = np.ones(points.shape[:2], dtype=bool)
    monkeypatch.setattr(sampling, "_CHUNK_POINTS", 1 << 16)
    tracemalloc.start()
    try:
        frame_voxel_keys(points, valid, voxel_size=0.25)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    all_at_once = 40 * points.shape[0] * points.shape[1]
    assert peak < all_at_once / 5, f"peak {peak / 1e6:.1f} MB"

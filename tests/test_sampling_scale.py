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


def test_points_sampler_follows_the_design_confidence_and_voxel_rule():
    from vln_core.config import FrameSamplingConfig
    from vln_core.sampling import MIN_VOXEL_SIZE_M, bounding_box_voxel_size, confident_points, sample_keyframes_from_points

    conf = np.array([[0.05, 0.5, 2.0, 3.0], [1.0, 1.5, 4.0, np.nan]])
    mask = confident_points(conf)  # median of the finite values is 1.5
    assert mask.tolist() == [[False, False, True, True], [False, True, True, False]]
    assert not confident_points(np.full((2, 3), 0.05)).any()  # all at the median but below 0.1

    rng = np.random.default_rng(0)
    box = rng.uniform(0, 1, size=(3, 400, 3)) * [4.0, 2.0, 1.0]
    box[0, 0] = [-1.0, -1.0, -1.0]  # plain min/max box (no percentiles): one far point counts
    assert bounding_box_voxel_size(box, np.ones((3, 400), bool), 20) == pytest.approx(2.0 / 20, rel=0.01)
    flat = box.copy()
    flat[..., 2] = 3.0
    assert bounding_box_voxel_size(flat, np.ones((3, 400), bool), 20) == MIN_VOXEL_SIZE_M

    # walls seen by four frames: frames 0 and 2 see the same wall; frame 3 sees a new wall but
    # only with low confidence (below the clip median), so it adds nothing
    def wall(x0):
        return np.stack([x0 + rng.uniform(0, 2, 500), rng.uniform(0, 1, 500), np.full(500, 3.0)], -1)

    points = np.stack([wall(0.0), wall(4.0), wall(0.0), wall(8.0)]).reshape(4, 20, 25, 3)  # (N, H, W, 3)
    conf = np.full((4, 20, 25), 5.0)
    conf[3] = 0.5
    result = sample_keyframes_from_points(points, conf, 3, FrameSamplingConfig(voxel_size=0.25))
    assert result.indices.tolist()[:2] == [0, 1] and 3 not in result.indices.tolist()
    assert result.coverage == 1.0

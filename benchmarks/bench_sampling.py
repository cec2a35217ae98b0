"""Speed and coverage of the space-aware keyframe sampler (vln_core.sampling).

Prints:
1. greedy max-coverage time for N_m frames of ~P points each (synthetic room sweep), median of
   several runs, for several k; plus voxelisation and the full depth -> keyframes path;
2. coverage of greedy vs uniform vs random (mean over seeds) on the real posed RGB-D sequence
   (skipped with a message when absent);
3. KeyframeMemory.offer time per frame on a stream;
4. the design's scale (``--vggt-frames`` frames of 518x392 points with confidence, as VGGT
   predicts them): time and peak memory (RSS high-water mark above the start, Linux) of the
   VGGT keyframe path (confidence filter, bounding-box voxel size, voxelisation, greedy), chunked
   (now) vs one chunk of all frames (the former memory behaviour) vs the design's reference
   implementation (per-frame ``torch.unique`` of voxel coordinates into Python sets,
   set-difference greedy). ``--vggt-frames 0`` skips it (generating the 128 frames takes ~20 s,
   the reference ~1 min on a loaded core).

    .venv/bin/python benchmarks/bench_sampling.py [--frames 128] [--side 64] [--repeats 15] [--vggt-frames 128]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_sampling import REAL_DIR, _load_real, synthetic_room_sweep  # noqa: E402
from vln_core.config import FrameSamplingConfig  # noqa: E402
from vln_core.geometry.reproject import unproject_depth  # noqa: E402
from vln_core import sampling  # noqa: E402
from vln_core.sampling import (  # noqa: E402
    KeyframeMemory,
    coverage_of,
    frame_voxel_keys,
    greedy_max_coverage,
    random_sample,
    sample_keyframes,
    sample_keyframes_from_points,
    uniform_sample,
)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _proc_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return -1


def timed_peak(fn):
    """``(result, seconds, peak bytes above the RSS at the start)``; the peak is the kernel's
    RSS high-water mark, reset first (``/proc/self/clear_refs``), so it includes torch's and
    numpy's allocations alike. -1 where that is not available."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so earlier runs' leftovers do not hide a peak
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start_rss = _proc_bytes("VmRSS")
    except OSError:
        start_rss = -1
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = _proc_bytes("VmHWM") - start_rss if start_rss >= 0 else -1
    return result, seconds, peak


def reference_sampling(points: np.ndarray, conf: np.ndarray, k: int) -> list[int]:
    """The design's reference (Spatial-MLLM ``sa_sampling.py``), re-written here for timing:
    confidence >= median and > 0.1, voxel = shortest min/max box side / 20 from the box corner,
    one ``torch.unique(dim=0)`` per frame into a Python set of tuples, greedy by set difference."""
    pts = torch.from_numpy(points)  # (N, P, 3)
    c = torch.from_numpy(conf)  # (N, P)
    mask = (c >= float(np.percentile(conf, 50))) & (c > 0.1)
    chosen = pts[mask]
    low, high = chosen.min(dim=0).values, chosen.max(dim=0).values
    del chosen
    voxel = float((high - low).min()) / 20
    sets = []
    for t in range(pts.shape[0]):
        coords = ((pts[t][mask[t]] - low) / voxel).floor().long()
        sets.append(set(map(tuple, torch.unique(coords, dim=0).tolist())))
    selected, covered, remaining = [], set(), set(range(len(sets)))
    for _ in range(k):
        best, gain = None, -1
        for f in remaining:
            g = len(sets[f] - covered)
            if g > gain:
                best, gain = f, g
        if best is None or gain <= 0:
            break
        selected.append(best)
        covered |= sets[best]
        remaining.remove(best)
    return sorted(selected)


def vggt_scale(frames: int, k: int = 16) -> None:
    height, width = 392, 518
    start = time.perf_counter()
    depths, K, T_wc = synthetic_room_sweep(n_frames=frames, height=height, width=width)
    points, valid = unproject_depth(depths, K, T_wc)
    points = points.reshape(frames, -1, 3).numpy()
    del depths, valid
    rng = np.random.default_rng(0)
    conf = (1.0 + rng.gamma(2.0, 2.0, size=points.shape[:2])).astype(np.float32)  # VGGT-like: >= 1
    p = points.shape[1]
    print(f"[4] design scale: {frames} frames x {height}x{width} = {p} points each ({points.nbytes / 1e9:.2f} GB of "
          f"float32 points), confidence filter + box voxel size + voxelisation + greedy k={k} "
          f"(data made in {time.perf_counter() - start:.0f} s; one core)")
    cfg = FrameSamplingConfig(max_points_per_frame=p)  # every point, as the design does
    ours, t_ours, m_ours = timed_peak(lambda: sample_keyframes_from_points(points, conf, k, cfg))
    chunk = sampling._CHUNK_POINTS
    sampling._CHUNK_POINTS = 1 << 40  # all frames at once: the former voxelisation
    try:
        before, t_before, m_before = timed_peak(lambda: sample_keyframes_from_points(points, conf, k, cfg))
    finally:
        sampling._CHUNK_POINTS = chunk
    assert np.array_equal(ours.indices, before.indices)
    print(f"    ours, chunked (~{chunk / 1e6:.1f} M points per chunk): {t_ours:6.2f} s, peak +{m_ours / 1e6:6.0f} MB; "
          f"picks {ours.indices.tolist()}")
    print(f"    ours, one chunk of all frames:       {t_before:6.2f} s, peak +{m_before / 1e6:6.0f} MB "
          f"(the memory of the former all-at-once voxelisation)")
    ref, t_ref, m_ref = timed_peak(lambda: reference_sampling(points, conf, k))
    same = len(set(ref) & set(ours.indices.tolist()))
    valid = sampling.confident_points(conf)
    sets, _ = frame_voxel_keys(points, valid, voxel_size=sampling.bounding_box_voxel_size(points, valid))
    print(f"    reference implementation:            {t_ref:6.2f} s, peak +{m_ref / 1e6:6.0f} MB; "
          f"{same} of its {len(ref)} picks are ours too (its voxel grid starts at the box corner, ours at 0); "
          f"coverage on our grid: ours {ours.coverage:.3f}, its picks {coverage_of(sets, ref).coverage:.3f}")
    print(f"    speed vs reference: {t_ref / t_ours:.1f}x (chunked), {t_ref / t_before:.1f}x (one chunk)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=128, help="N_m frames in the batch")
    parser.add_argument("--side", type=int, default=64, help="synthetic image side: side*side points per frame")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--vggt-frames", type=int, default=128, help="frames for the design-scale section [4] (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    depths, K, T_wc = synthetic_room_sweep(n_frames=args.frames, height=args.side, width=args.side)
    points, valid = unproject_depth(depths, K, T_wc)
    n = depths.shape[0]
    points = points.reshape(n, -1, 3).numpy()
    valid = valid.reshape(n, -1).numpy()
    sets, voxel = frame_voxel_keys(points, valid, voxel_divisions=20)
    sizes = np.array([s.size for s in sets])
    print(f"[1] synthetic sweep: N_m={n} frames x {points.shape[1]} points, voxel {voxel:.3f} m, "
          f"voxels/frame median {int(np.median(sizes))} (min {sizes.min()}, max {sizes.max()}), "
          f"union {np.unique(np.concatenate(sets)).size}")
    for k in (8, 16, 32):
        lazy = median_ms(lambda: greedy_max_coverage(sets, k), args.repeats)
        plain = median_ms(lambda: greedy_max_coverage(sets, k, lazy=False), max(3, args.repeats // 3))
        g = greedy_max_coverage(sets, k)
        u = coverage_of(sets, uniform_sample(n, k))
        print(f"    k={k:2d}: lazy greedy {lazy:6.2f} ms (plain greedy {plain:6.2f} ms); "
              f"coverage greedy {g.coverage:.3f} uniform {u.coverage:.3f}")
    vox_ms = median_ms(lambda: frame_voxel_keys(points, valid, voxel_divisions=20, max_points_per_frame=4096), args.repeats)
    full_ms = median_ms(lambda: sample_keyframes(depths, K, T_wc, 16, FrameSamplingConfig(), stride=1), max(3, args.repeats // 3))
    print(f"    frame_voxel_keys (N_m={n}, auto voxel size): {vox_ms:.2f} ms; "
          f"sample_keyframes depth->indices (k=16, stride 1): {full_ms:.2f} ms")

    print(f"[2] real sequence {REAL_DIR}:")
    if not REAL_DIR.is_dir():
        print("    absent; skipped (set VLN_REAL_RGBD_DIR)")
    else:
        r_depths, r_K, r_T = _load_real()
        cfg = FrameSamplingConfig()
        rn = r_depths.shape[0]
        r_points, r_valid = unproject_depth(r_depths, r_K, r_T, stride=4)
        r_sets, r_voxel = frame_voxel_keys(r_points.reshape(rn, -1, 3), r_valid.reshape(rn, -1),
                                           voxel_divisions=cfg.voxel_divisions,
                                           max_points_per_frame=cfg.max_points_per_frame, seed=cfg.seed)
        total = np.unique(np.concatenate(r_sets)).size
        print(f"    {rn} frames, depth stride 4, voxel {r_voxel:.4f} m (divisions {cfg.voxel_divisions}), "
              f"{total} voxels in the union")
        for k in (2, 3, 4, 6, 8, 12, 16):
            g = sample_keyframes(r_depths, r_K, r_T, k, cfg, stride=4)
            u = coverage_of(r_sets, uniform_sample(rn, k))
            rand = [coverage_of(r_sets, random_sample(rn, k, seed=s)).coverage for s in range(20)]
            print(f"    k={k:2d}: greedy {g.coverage:.3f}  uniform {u.coverage:.3f}  "
                  f"random {np.mean(rand):.3f} +- {np.std(rand):.3f} (20 seeds)  greedy picks {g.indices.tolist()}")

    memory = KeyframeMemory(capacity=16, voxel_size=voxel, min_novel_fraction=0.05)
    start = time.perf_counter()
    for t, keys in enumerate(sets):
        memory.offer(t, keys)
    per_offer = 1e3 * (time.perf_counter() - start) / len(sets)
    stats = memory.stats()
    print(f"[3] KeyframeMemory(capacity 16) over the {len(sets)}-frame stream: {per_offer:.3f} ms per offer; "
          f"admitted {stats['admitted']}, rejected {stats['rejected']}, evicted {stats['evicted']}, "
          f"covers {stats['coverage_voxels']} voxels vs uniform-16 {coverage_of(sets, uniform_sample(len(sets), 16)).covered_voxels}")
    if args.vggt_frames > 0:
        vggt_scale(args.vggt_frames)


if __name__ == "__main__":
    main()

"""Speed and coverage of the space-aware keyframe sampler (vln_core.sampling).

Prints:
1. greedy max-coverage time for N_m frames of ~P points each (synthetic room sweep), median of
   several runs, for several k; plus voxelisation and the full depth -> keyframes path;
2. coverage of greedy vs uniform vs random (mean over seeds) on the real posed RGB-D sequence
   (skipped with a message when absent);
3. KeyframeMemory.offer time per frame on a stream.

    .venv/bin/python benchmarks/bench_sampling.py [--frames 128] [--side 64] [--repeats 15]
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
from vln_core.sampling import (  # noqa: E402
    KeyframeMemory,
    coverage_of,
    frame_voxel_keys,
    greedy_max_coverage,
    random_sample,
    sample_keyframes,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=128, help="N_m frames in the batch")
    parser.add_argument("--side", type=int, default=64, help="synthetic image side: side*side points per frame")
    parser.add_argument("--repeats", type=int, default=15)
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


if __name__ == "__main__":
    main()

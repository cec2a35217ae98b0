"""Geometry throughput on this machine: ground-truth heatmaps per second and greedy sampling time.

Figures printed (targets from issue 2, on a 2-core CPU):
  * keyframe-heatmaps per second for K=8 keyframes into a 224x224 current frame (>= 200/s);
  * lazy-greedy space-aware sampling of N_k of N_m=128 frames (< 20 ms), voxelisation excluded
    and included.

Data: the real posed RGB-D sequence when present (frames resized to 224x224 with intrinsics kept
right), otherwise a constructed room sweep. Usage::

    python benchmarks/geometry_throughput.py [--data DIR] [--repeats 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vln_core.data.posed_images import load_posed_sequence  # noqa: E402
from vln_core.geometry.camera import PinholeCamera  # noqa: E402
from vln_core.geometry.reproject import unproject_depth  # noqa: E402
from vln_core.heatmaps import frame_indexed_heatmaps  # noqa: E402
from vln_core.preprocess import preprocess_frames  # noqa: E402
from vln_core.sampling import frame_voxel_keys, greedy_max_coverage  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("VLN_REAL_RGBD_DIR", ROOT.parent / "shared/data/real_rgbd_box"))


def load_frames(data: Path, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Depth (N, size, size) metres, K (3, 3) at that size, poses (N, 4, 4) T_wc."""
    seq = load_posed_sequence(data)
    pre = preprocess_frames(seq.colors, seq.depths, seq.K, (size, size))
    return pre.depths.numpy(), pre.K.numpy(), seq.poses, f"real sequence {data.name} ({len(seq)} frames)"


def median_ms(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), float(np.percentile(times, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keyframes", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=128, help="N_m for the sampling benchmark")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        sys.exit(f"no posed RGB-D folder at {args.data}; pass --data DIR (see ../shared/data/real_rgbd_box/README.md)")

    depths, K, poses, what = load_frames(args.data, args.size)
    n = len(depths)
    print(f"data: {what}, torch threads={torch.get_num_threads()}")

    # --- heatmaps: current = last frame, K keyframes spread over the sequence -------------------
    k = args.keyframes
    key_idx = np.linspace(0, n - 2, k).round().astype(int)
    key_depth = torch.as_tensor(depths[key_idx])
    key_K = torch.as_tensor(K, dtype=torch.float32).expand(k, 3, 3)
    key_T = torch.as_tensor(poses[key_idx], dtype=torch.float32)
    cur_T = torch.as_tensor(poses[-1], dtype=torch.float32)
    cur_depth = torch.as_tensor(depths[-1])
    cur_K = torch.as_tensor(K, dtype=torch.float32)

    def one_call():
        return frame_indexed_heatmaps(key_depth, key_K, key_T, cur_K, cur_T, (args.size, args.size), cur_depth)

    med, p95 = median_ms(one_call, args.repeats)
    print(f"heatmaps: K={k} keyframes -> {args.size}x{args.size}: {med:.1f} ms/call median (p95 {p95:.1f}) "
          f"= {k * 1e3 / med:.0f} keyframe-heatmaps/s (target >= 200)")

    # --- sampling: N_m frames (the sequence repeated with jitter if shorter) -----------------
    reps = int(np.ceil(args.frames / n))
    idx = np.tile(np.arange(n), reps)[: args.frames]
    pts, valid = unproject_depth(torch.as_tensor(depths[idx]), torch.as_tensor(K, dtype=torch.float32).expand(len(idx), 3, 3),
                                 torch.as_tensor(poses[idx], dtype=torch.float32), stride=4)
    pts = pts.reshape(len(idx), -1, 3)
    valid = valid.reshape(len(idx), -1)

    def voxelise():
        return frame_voxel_keys(pts, valid, max_points_per_frame=4096)

    sets, voxel = voxelise()
    sizes = [len(s) for s in sets]
    vox_med, _ = median_ms(voxelise, max(3, args.repeats // 4))
    g_med, g_p95 = median_ms(lambda: greedy_max_coverage(sets, 16), args.repeats)
    res = greedy_max_coverage(sets, 16)
    print(f"sampling: N_m={args.frames} frames, {int(np.mean(sizes))} voxels/frame (voxel {voxel * 100:.1f} cm), "
          f"N_k=16: greedy {g_med:.2f} ms median (p95 {g_p95:.2f}) (target < 20 ms), coverage {res.coverage:.3f}; "
          f"voxelisation of all frames {vox_med:.1f} ms")


if __name__ == "__main__":
    main()

"""Latency of ``NavigationRuntime.step()`` at 640x480 input with K=8 keyframes (CPU).

Feeds the real posed RGB-D sequence (``/work/shared/data/real_rgbd_box`` or
``VLN_REAL_RGBD_DIR``; 640x480) through the runtime exactly as the node would (odometry, image,
depth, then one ``step()`` per image), first until the keyframe memory holds 8 frames, then
times ``--steps`` steps. Without the real sequence a synthetic 640x480 room of planes is used.
Prints median / p95 per stage for each configuration, e.g.::

    .venv/bin/python benchmarks/runtime_step.py --steps 60
    .venv/bin/python benchmarks/runtime_step.py --threads 4 heatmap.source_stride=4
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vln_core.config import add_config_arguments, config_from_args  # noqa: E402
from vln_core.runtime import NavigationRuntime  # noqa: E402

REAL = Path(os.environ.get("VLN_REAL_RGBD_DIR", Path(__file__).resolve().parents[2] / "shared/data/real_rgbd_box"))
H, W = 480, 640
K_SYN = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])


def synthetic_sequence(n: int, mount: np.ndarray):
    """n frames of a robot turning in a 10 x 6 m room: (rgb, depth, T_wc, T_odom_base) lists."""
    planes = [((0, 0, 1), 0.0), ((0, 0, -1), -2.6), ((1, 0, 0), 5.0), ((-1, 0, 0), 5.0), ((0, 1, 0), 3.0), ((0, -1, 0), 3.0)]
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K_SYN).T
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        yaw = 2 * math.pi * i / n
        T_ob = np.eye(4)
        T_ob[:3, :3] = [[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]]
        T_ob[:3, 3] = [0.5 * math.cos(yaw), 0.5 * math.sin(yaw), 0.0]
        T_wc = T_ob @ mount
        dirs = rays @ T_wc[:3, :3].T
        depth = np.full((H, W), np.inf)
        for n_vec, c in planes:
            n_vec = np.asarray(n_vec, dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                z = (c - T_wc[:3, 3] @ n_vec) / (dirs @ n_vec)
            depth = np.where((z > 1e-6) & (z < depth), z, depth)
        depth[~np.isfinite(depth)] = 0
        rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        out.append((rgb, depth.astype(np.float32), T_wc, T_ob))
    return out, K_SYN


def real_sequence(mount: np.ndarray):
    from vln_core.data.posed_images import load_posed_sequence

    seq = load_posed_sequence(REAL)
    mount_inv = np.linalg.inv(mount)
    return [(seq.colors[i], seq.depths[i], seq.poses[i], seq.poses[i] @ mount_inv) for i in range(len(seq))], seq.K


def run(cfg, frames, K, steps: int) -> dict[str, list[float]]:
    rt = NavigationRuntime(cfg)
    rt.set_camera_info(K, W, H)
    stamp = 1_000_000_000
    timings: dict[str, list[float]] = {}
    i = warm = 0
    while len(timings.get("step", [])) < steps:
        rgb, depth, _, T_ob = frames[i % len(frames)]
        i += 1
        stamp += 100_000_000
        rt.add_odometry(stamp, T_ob)
        rt.add_image(stamp, "camera", rgb)
        rt.add_depth(stamp, depth)
        t = time.perf_counter()
        out = rt.step()
        dt = (time.perf_counter() - t) * 1e3
        if out is None:
            raise SystemExit(f"step produced no output: {rt.waiting_reason} {rt.last_exception!r}")
        if len(out.keyframe_indices) < cfg.video.keyframes:  # warm-up until the memory is full
            warm += 1
            if warm > 500:
                raise SystemExit("keyframe memory never filled; the sequence is too static")
            continue
        timings.setdefault("step", []).append(dt)
        for stage, ms in out.latency_ms.items():
            timings.setdefault(stage, []).append(ms)
    rt.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_config_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = config_from_args(args)
    mount = NavigationRuntime(base).T_base_cam
    if (REAL / "intrinsics.K.txt").is_file():
        frames, K = real_sequence(mount)
        source = f"real sequence {REAL}"
    else:
        frames, K = synthetic_sequence(60, mount)
        source = "synthetic room (real sequence not found)"
    print(f"input {W}x{H}, keyframes K=8, {source}, torch threads {args.threads}, {args.steps} timed steps")
    print(f"{'configuration':46s} {'stage':10s} {'median ms':>10s} {'p95 ms':>10s}")
    for resolution in ("frame_size", "input"):
        for overlay in (False, True):
            overrides = list(args.overrides) + [
                "video.keyframes=8", f"node.geometry_resolution={resolution}", f"node.publish_overlay={str(overlay).lower()}",
            ]
            args_cfg = argparse.Namespace(config=args.config, overrides=overrides)
            cfg = config_from_args(args_cfg)
            grid = "x".join(map(str, cfg.video.frame_size)) if resolution == "frame_size" else f"{H}x{W}"
            name = f"heatmaps {grid}, overlay {'on' if overlay else 'off'}"
            timings = run(cfg, frames, K, args.steps)
            for stage in ("step", "pairing", "memory", "backend", "overlay"):
                values = np.asarray(timings[stage])
                print(f"{name:46s} {stage:10s} {np.median(values):10.1f} {np.percentile(values, 95):10.1f}")
                name = ""


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Time one update of the embedded model per mode on this CPU (prints figures; not a test).

    python benchmarks/embedded_update.py [--checkpoint models/embedded/checkpoint.pt] \\
        [--frames 16 --keyframes 8 --size 224 224 --threads 2 --repeats 10]

An *update* is what the node does for one current frame with N_m buffered frames and N_k
keyframes:

* ``rgb_pose`` (mode 2): depth of the frames, space-aware sampling on it with the known poses,
  reprojection of the N_k keyframes into the current view (+ goal heatmap and waypoints);
* ``rgb_only`` (mode 3): the same plus the relative poses of the N_m - 1 frames to the current one.

Two figures per mode: **cold** (all N_m frames encoded in this update) and **streaming** (the
node's case: each frame is encoded once when it arrives and cached, so an update encodes only the
new current frame). Each mode runs in its own process so peak memory (max RSS) is its own.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _run_one(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from vln_core.config import VLNConfig
    from vln_core.geometry.transforms import invert_pose
    from vln_core.models.reprojection_model import default_intrinsics
    from vln_core.models.shipped import load_model_checkpoint
    from vln_core.sampling import sample_keyframes

    cfg = VLNConfig()
    cfg.video.total_frames, cfg.video.keyframes = args.frames, args.keyframes
    cfg.video.frame_size = tuple(args.size)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model, _ = load_model_checkpoint(args.checkpoint, cfg)
    H, W = args.size
    N, Nk = args.frames, args.keyframes
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(N, 3, H, W, generator=g)
    K = default_intrinsics((H, W), 70.0)
    T_wc = torch.eye(4).repeat(N, 1, 1)
    T_wc[:, 0, 3] = torch.linspace(0, 0.8, N)
    T_known = invert_pose(T_wc[-1]) @ T_wc
    ids, mask = model.encode_instructions(["go to the red chair"])
    past = torch.zeros(1, 16, 4)
    intent = torch.ones(1, dtype=torch.long)
    mode2 = args.mode == "rgb_pose"

    def update(cached) -> None:
        if cached is None:
            enc = model.encode_frames(frames)
        else:
            enc = type(cached).cat([cached, model.encode_frames(frames[-1:])])
        enc, T = model.predict_geometry(frames, T_known if mode2 else None, encoding=enc)
        kf = sample_keyframes(enc.depth[:-1], K, T[:-1], Nk, cfg.frame_sampling).indices
        kf = torch.as_tensor(kf, dtype=torch.long)
        model.reproject(enc.depth[kf], K, T[kf], K, enc.depth[-1])
        model.goal_and_waypoints(enc.index(slice(N - 1, N)), ids, mask.bool(), past, intent, (H, W))

    with torch.no_grad():
        cached = model.encode_frames(frames[:-1])
        timings = {}
        for name, arg in (("cold", None), ("streaming", cached)):
            update(arg)  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                update(arg)
                times.append((time.perf_counter() - t0) * 1000)
            timings[name] = {"median_ms": statistics.median(times), "p90_ms": sorted(times)[int(0.9 * (len(times) - 1))]}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": args.mode, **timings, "params": sum(p.numel() for p in model.parameters()),
            "peak_rss_mb": peak_mb, "model_and_run_rss_mb": peak_mb - rss_before / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped models/embedded/checkpoint.pt")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--keyframes", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=[224, 224], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--mode", choices=("rgb_pose", "rgb_only"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(_run_one(args)))
        return 0
    print(f"embedded model update: N_m={args.frames}, N_k={args.keyframes}, {args.size[0]}x{args.size[1]}, batch 1, "
          f"{args.threads} threads, median of {args.repeats}")
    targets = {"rgb_pose": 100.0, "rgb_only": 250.0}
    for mode in ("rgb_pose", "rgb_only"):
        cmd = [sys.executable, __file__, "--mode", mode, "--frames", str(args.frames), "--keyframes", str(args.keyframes),
               "--size", *map(str, args.size), "--threads", str(args.threads), "--repeats", str(args.repeats)]
        if args.checkpoint:
            cmd += ["--checkpoint", args.checkpoint]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{mode}: failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            return 1
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {mode:<9} cold {r['cold']['median_ms']:7.1f} ms (p90 {r['cold']['p90_ms']:.1f})   streaming "
              f"{r['streaming']['median_ms']:7.1f} ms (p90 {r['streaming']['p90_ms']:.1f})   target {targets[mode]:.0f} ms   "
              f"params {r['params'] / 1e6:.2f} M   peak RSS {r['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

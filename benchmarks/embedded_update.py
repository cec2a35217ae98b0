#!/usr/bin/env python3
"""Time one update of the embedded model per mode on this CPU (prints figures; not a test).

    python benchmarks/embedded_update.py [--checkpoint models/embedded/checkpoint.pt] \\
        [--frames 16 --keyframes 8 --size 224 224 --threads 2 --repeats 10] [--no-refinement]

An *update* is what the node does for one current frame with N_m buffered frames and N_k
keyframes, through the node's own backend (``vln_core.backends.model_backend.ModelBackend``):
the predicted geometry of the frames (``frame_geometry``), space-aware sampling of N_k keyframes
on it, and ``infer`` (the match refinement of ``model.match_refinement``, the reprojection, goal
heatmap and waypoints):

* ``rgb_pose`` (mode 2): known poses, multi-view depth from the earlier frames (no scale search);
* ``rgb_only`` (mode 3): no poses: visual odometry between consecutive frames and PnP poses of
  the keyframes (the network's poses where matching fails).

Frames: a simulated episode (``vln_core.sim``, generated in a temporary folder: real textures,
so ORB finds what it would on a robot). Two figures per mode: **cold** (a fresh backend: all N_m
frames encoded and matched in this update) and **streaming** (the node's case: each frame is
encoded and its features found once, when it arrives; an update adds only the new current frame).
Each mode runs in its own process so peak memory (max RSS) is its own.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _run_one(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from vln_core.config import load_config
    from vln_core.data.episode import read_episode
    from vln_core.backends import CameraFrame, create_backend
    from vln_core.sampling import sample_keyframes
    from vln_core.sim.collect import generate_episode

    N, Nk, H, W = args.frames, args.keyframes, *args.size
    total = N + args.repeats + 1
    overrides = [f"node.learned_mode={args.mode}", f"video.total_frames={N}", f"video.keyframes={Nk}",
                 f"video.frame_size=[{H}, {W}]", f"model.match_refinement={str(not args.no_refinement).lower()}",
                 f"model.relative_pose={args.relative_pose}"]
    if args.depth_spread is not None:
        overrides.append(f"heatmap.predicted_depth_spread={args.depth_spread}")
    if args.checkpoint:
        overrides.append(f"node.model_path={args.checkpoint}")
    cfg = load_config(None, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        generate_episode(Path(tmp) / "ep", 8, load_config(None, [f"sim.frames_per_episode={total}",
                                                                 f"sim.image_size=[{H}, {W}]"]).sim)
        seq = read_episode(Path(tmp) / "ep").load_all()
    known = args.mode == "rgb_pose"
    frames = [CameraFrame(stamp_ns=int(1e9 + i * 2e8), frame_id="cam", rgb=np.ascontiguousarray(c), K=seq.K,
                          T_wc=seq.poses[i] if known else None, seq=i) for i, c in enumerate(seq.colors)]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    backend = create_backend("model", cfg)
    instruction = "go to the red chair"

    def update(t: int) -> None:
        window = frames[t - N + 1: t + 1]
        geo = [backend.frame_geometry(f) for f in window]
        depth = torch.from_numpy(np.stack([g[0] for g in geo]))
        K = torch.from_numpy(geo[-1][1]).float()
        T_wc = torch.from_numpy(np.stack([g[2] for g in geo]))
        T_cur = (torch.linalg.inv(T_wc[-1]) @ T_wc).float()
        kf = sample_keyframes(depth[:-1], K, T_cur[:-1], Nk, cfg.frame_sampling).indices
        backend.infer(window[-1], [window[int(i)] for i in kf], instruction)

    timings = {}
    with torch.no_grad():
        for name in ("cold", "streaming"):
            backend.close()
            times = []
            for t in range(N - 1, N + args.repeats):
                if name == "cold":
                    backend.close()  # nothing cached: every frame of the window is encoded and matched now
                elif t == N - 1:
                    for f in frames[: N - 1]:  # the buffered frames arrived before (each encoded on arrival)
                        backend.frame_geometry(f)
                t0 = time.perf_counter()
                update(t)
                times.append((time.perf_counter() - t0) * 1000)
            times = times[1:]  # the first update warms up
            timings[name] = {"median_ms": statistics.median(times), "p90_ms": sorted(times)[int(0.9 * (len(times) - 1))]}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = backend.engine.model
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
    parser.add_argument("--no-refinement", action="store_true", help="model.match_refinement=false (networks alone)")
    parser.add_argument("--relative-pose", default="pnp", choices=("pnp", "pnp_or_essential"),
                        help="model.relative_pose: how RGB-only poses come from matches (default pnp)")
    parser.add_argument("--depth-spread", type=float, default=None,
                        help="heatmap.predicted_depth_spread (default: the config's; 0: maps at the depth as given)")
    parser.add_argument("--mode", choices=("rgb_pose", "rgb_only"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(_run_one(args)))
        return 0
    print(f"embedded model update: N_m={args.frames}, N_k={args.keyframes}, {args.size[0]}x{args.size[1]}, batch 1, "
          f"{args.threads} threads, median of {args.repeats}, match refinement {'off' if args.no_refinement else 'on'}, "
          f"relative pose {args.relative_pose}, depth spread {'default' if args.depth_spread is None else args.depth_spread}")
    targets = {"rgb_pose": 100.0, "rgb_only": 150.0}  # streaming update targets (issue 15)
    for mode in ("rgb_pose", "rgb_only"):
        cmd = [sys.executable, __file__, "--mode", mode, "--frames", str(args.frames), "--keyframes", str(args.keyframes),
               "--size", *map(str, args.size), "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--relative-pose", args.relative_pose]
        if args.no_refinement:
            cmd.append("--no-refinement")
        if args.depth_spread is not None:
            cmd += ["--depth-spread", str(args.depth_spread)]
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

#!/usr/bin/env python3
"""Time the learned backend's update with the ``model`` (PyTorch) and ``onnx`` (onnxruntime)
engines on this CPU, streaming as in the node (prints figures; not a test).

    python benchmarks/onnx_backend_update.py [--export exports/embedded] [--checkpoint models/embedded/checkpoint.pt] \\
        [--keyframes 8 --updates 20 --threads 1 --mode rgb_only|rgb_pose]

Each update is ``LearnedBackend.infer``: encode the new current frame (keyframes are cached), the
relative-pose head on the keyframes (rgb_only), the reprojection into heatmaps (the same torch code
for both), the goal and waypoint heads. Also prints one frame's encoding alone. Frames are
simulated images of 640x480 (random texture; the cost does not depend on content).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", default=str(REPO / "exports/embedded"))
    parser.add_argument("--checkpoint", default=str(REPO / "models/embedded/checkpoint.pt"))
    parser.add_argument("--keyframes", type=int, default=8)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mode", choices=("rgb_only", "rgb_pose"), default="rgb_only")
    args = parser.parse_args()

    import torch

    from vln_core.config import load_config
    from vln_core.errors import InputError
    from vln_core.backends.onnx_backend import OnnxBackend, OnnxEngine
    from vln_core.backends.learned import LearnedBackend
    from vln_core.backends.model_backend import TorchEngine
    from vln_core.backends import CameraFrame

    torch.set_num_threads(args.threads)
    cfg = load_config(None, [f"node.learned_mode={args.mode}"])
    try:
        engines = {"model": TorchEngine(cfg, args.checkpoint),
                   "onnx": OnnxEngine(args.export, ("CPUExecutionProvider",), threads=args.threads)}
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    K = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
    n = args.keyframes + args.updates + 1
    frames = [CameraFrame(stamp_ns=int(1e9 + i * 1e8), frame_id="cam", K=K, seq=i,
                          rgb=rng.integers(0, 255, (480, 640, 3), dtype=np.uint8),
                          T_wc=np.eye(4) if args.mode == "rgb_pose" else None) for i in range(n)]
    print(f"{args.mode}, {args.keyframes} keyframes, 640x480 input -> 224x224, {args.threads} thread(s), "
          f"{args.updates} updates")
    for name, engine in engines.items():
        backend = OnnxBackend(cfg, engine) if name == "onnx" else LearnedBackend(cfg, engine)
        keyframes = frames[:args.keyframes]
        for f in keyframes:
            backend.encoding(f)  # in the node's keyframe memory: encoded once
        times = []
        for cur in frames[args.keyframes:]:
            start = time.perf_counter()
            backend.infer(cur, keyframes, "go to the red chair next to the table")
            times.append(time.perf_counter() - start)
        pre = torch.rand(1, 3, 224, 224)
        enc = []
        for _ in range(args.updates):
            start = time.perf_counter()
            engine.encode(pre)
            enc.append(time.perf_counter() - start)
        times = times[1:]  # the first includes warm-up
        print(f"{name:5s}: update median {statistics.median(times) * 1e3:.1f} ms, p95 "
              f"{np.percentile(times, 95) * 1e3:.1f} ms; encode one frame median {statistics.median(enc) * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

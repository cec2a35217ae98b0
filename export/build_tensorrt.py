#!/usr/bin/env python3
"""Build (or check) the TensorRT engines of an ONNX export for ``node.backend: tensorrt``. UNTESTED.

    python export/build_tensorrt.py [--export exports/embedded] [--fp16] [--force] [--check] [--runs N]

Needs TensorRT's Python package (``tensorrt``, or TensorRT-RTX's) and a CUDA GPU; neither was
available where this was written, so this script has never built an engine (see
export/README.md). For each graph of the export (encoder, pose_head, goal_waypoints) it writes
``<export>/engines/<graph>.<fp32|fp16>.trt<version>.<gpu>.<onnx sha256[:16]>.engine`` plus a
sidecar ``.json`` (TensorRT version, GPU name, ONNX sha256, engine sha256), atomically. An engine
that already matches is kept (``--force`` rebuilds). ``--check`` compares the engines with
onnxruntime (CPU) on random frames and prints the largest differences; ``--runs N`` times them.
Bad input (no export, no TensorRT, no GPU) exits with status 2 and one line.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vln_core.errors import InputError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from vln_core.config import ConfigError
    from vln_core.export.reprojection import DEFAULT_EXPORT_DIR, GRAPHS, load_export
    from vln_core.export.tensorrt_cache import (ENGINE_DIR, EngineKey, StaleEngineError, build_engine, find_engine,
                                                gpu_name, import_tensorrt, optimization_profiles, tensorrt_version,
                                                write_engine)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", default=str(DEFAULT_EXPORT_DIR), help="export folder of export_onnx.py")
    parser.add_argument("--fp16", action="store_true", help="FP16 engines (default FP32)")
    parser.add_argument("--force", action="store_true", help="rebuild engines that are already up to date")
    parser.add_argument("--device", default="cuda:0", help="GPU to build for and run on")
    parser.add_argument("--check", action="store_true", help="compare with onnxruntime (CPU) on random frames")
    parser.add_argument("--runs", type=int, default=0, help="timed runs per graph (median printed)")
    args = parser.parse_args(argv)
    precision = "fp16" if args.fp16 else "fp32"
    try:
        meta = load_export(args.export)
        trt = import_tensorrt()
        version, gpu = tensorrt_version(trt), gpu_name(args.device)
    except (InputError, ConfigError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    folder = Path(meta["folder"])
    cache = folder / ENGINE_DIR
    profiles = optimization_profiles(meta)
    print(f"TensorRT {version} on '{gpu}', {precision}, export {folder}")
    for name in GRAPHS:
        key = EngineKey(name, precision, version, gpu, meta["graphs"][name]["sha256"])
        if not args.force:
            try:
                path = find_engine(cache, key, folder)
                print(f"{name}: up to date ({path.name})")
                continue
            except StaleEngineError as exc:
                print(f"{name}: building ({str(exc).split(';')[0]})")
        start = time.perf_counter()
        try:
            data = build_engine(trt, meta["graphs"][name]["path"], profiles[name], fp16=args.fp16)
        except InputError as exc:
            print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 1
        path = write_engine(cache, key, data, extra={"onnx_file": GRAPHS[name].file,
                                                      "profile": {k: [list(s) for s in v] for k, v in profiles[name].items()}})
        print(f"{name}: wrote {path} ({len(data) / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    if args.check or args.runs:
        return check_and_time(folder, precision, args.device, args.check, args.runs)
    return 0


def check_and_time(folder: Path, precision: str, device: str, check: bool, runs: int) -> int:
    import torch

    from vln_core.backends.onnx_backend import OnnxEngine
    from vln_core.backends.tensorrt_backend import TensorRTEngine

    trt_engine = TensorRTEngine(folder, precision, device)
    ort_engine = OnnxEngine(folder)
    H, W = trt_engine.frame_size
    frames = torch.rand(4, 3, H, W, generator=torch.Generator().manual_seed(0))
    ref = ort_engine.encode(frames)
    ids, mask = ort_engine.tokenizer.encode(["go to the red chair next to the table"], 64)
    past = torch.zeros(1, 16, 4)
    intent = torch.ones(1, dtype=torch.long)
    cur = ref.pose_features[-1:].expand_as(ref.pose_features[:-1])
    calls = {
        "encoder": lambda e: e.encode(frames[:1]),
        "pose_head": lambda e: e.relative_poses(ref.pose_features[:-1], cur),
        "goal_waypoints": lambda e: e.goal_and_waypoints(ref.f8[-1:], ref.f32[-1:], ids, mask, past, intent),
    }
    status = 0
    if check:
        got = trt_engine.encode(frames)
        diffs = {f"encoder.{n}": float((getattr(got, n) - getattr(ref, n)).abs().max())
                 for n in ("depth", "depth_conf", "pose_features", "f8", "f32")}
        diffs["pose_head.T_cur_cam"] = float((calls["pose_head"](trt_engine) - calls["pose_head"](ort_engine)).abs().max())
        for n, g, w in zip(("goal_logits", "waypoints"), calls["goal_waypoints"](trt_engine),
                           calls["goal_waypoints"](ort_engine)):
            diffs[f"goal_waypoints.{n}"] = float((g - w).abs().max())
        print("max |TensorRT - onnxruntime|: " + ", ".join(f"{k}={v:.1e}" for k, v in diffs.items()))
        limit = 1e-3 if precision == "fp32" else 5e-2
        if not max(diffs.values()) <= limit:
            print(f"error: TensorRT differs from onnxruntime by more than {limit:g}", file=sys.stderr)
            status = 1
    for name, call in calls.items() if runs else ():
        times = []
        call(trt_engine)
        for _ in range(runs):
            start = time.perf_counter()
            call(trt_engine)
            times.append(time.perf_counter() - start)
        print(f"{name}: TensorRT {precision} median {statistics.median(times) * 1e3:.2f} ms over {runs} runs "
              "(including the copies to and from the GPU)")
    return status


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Export the embedded model to ONNX, check it against PyTorch and time both on the CPU.

    python export/export_onnx.py --config configs/train_embedded.yaml \\
        --checkpoint runs/embedded/best.pt --out exports/embedded.onnx [key=value ...]

Without ``--checkpoint`` it refuses unless ``--allow-random-init`` is given (an export of random
weights is only good for checking the pipeline and timing). ``--out`` defaults to
``<export.output_dir>/<model.name>.onnx``. Prints the file size, the largest difference per output
between onnxruntime and PyTorch on fresh inputs, the median CPU latency of onnxruntime and of
PyTorch eager, and the ``trtexec`` command that builds a TensorRT engine from the file
(``--fp16`` when ``export.fp16=true``; TensorRT is not installed here, see export/README.md).
The graph inputs and outputs are described in :mod:`vln_core.models.export`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vln_core.config import ConfigError, add_config_arguments, config_from_args  # noqa: E402
from vln_core.errors import InputError  # noqa: E402


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, default="configs/train_embedded.yaml")
    parser.add_argument("--checkpoint", help="training checkpoint (best.pt / last.pt) whose weights to export")
    parser.add_argument("--allow-random-init", action="store_true",
                        help="export randomly initialised weights when no --checkpoint is given")
    parser.add_argument("--out", help="ONNX file to write (default: <export.output_dir>/<model.name>.onnx)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per runtime (median is printed)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for PyTorch and onnxruntime")
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.allow_random_init:
        parser.error("no --checkpoint given: an export of untrained weights predicts nothing useful; "
                     "pass --checkpoint runs/embedded/best.pt, or --allow-random-init to export random weights "
                     "on purpose (pipeline check, timing)")
    if args.runs < 1 or args.threads < 1:
        parser.error("--runs and --threads must be >= 1")
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))

    import numpy as np
    import onnxruntime as ort

    from vln_core.models import build_model
    from vln_core.models.export import EXPORT_BATCH, INPUT_NAMES, OnnxExportWrapper, example_inputs, export_onnx, \
        verify_onnx
    from vln_core.train.checkpoint import load_model_weights

    torch.set_num_threads(args.threads)
    torch.manual_seed(cfg.training.seed)
    out_path = Path(args.out) if args.out else Path(cfg.export.output_dir) / f"{cfg.model.name}.onnx"
    try:
        model = build_model(cfg)
        if args.checkpoint:
            load_model_weights(model, args.checkpoint)
        model = model.cpu().eval()
        start = time.perf_counter()
        export_onnx(model, cfg, out_path)
        export_seconds = time.perf_counter() - start
        diffs = verify_onnx(model, out_path, cfg)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    weights = args.checkpoint if args.checkpoint else "random init (--allow-random-init)"
    print(f"model {cfg.model.name}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"weights: {weights}")
    print(f"wrote {out_path} ({out_path.stat().st_size / 2**20:.2f} MiB) in {export_seconds:.1f} s, "
          f"opset {cfg.export.opset}, batch {EXPORT_BATCH}, frames {cfg.video.total_frames}x{cfg.video.frame_size[0]}x"
          f"{cfg.video.frame_size[1]}, keyframes {cfg.video.keyframes}")
    print("max |onnxruntime - torch| per output: " + ", ".join(f"{k}={v:.2e}" for k, v in diffs.items()))

    inputs = example_inputs(model, cfg, batch=EXPORT_BATCH, seed=2)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(out_path), options, providers=["CPUExecutionProvider"])
    feeds = {name: np.ascontiguousarray(t.numpy()) for name, t in zip(INPUT_NAMES, inputs)}
    wrapper = OnnxExportWrapper(model)

    def run_torch() -> object:
        with torch.no_grad():
            return wrapper(*inputs)

    ort_s = median_seconds(lambda: session.run(None, feeds), args.runs)
    torch_s = median_seconds(run_torch, args.runs)
    print(f"CPU latency, median of {args.runs} runs, {args.threads} thread(s): onnxruntime {ort_s * 1e3:.1f} ms, "
          f"PyTorch eager {torch_s * 1e3:.1f} ms (x{torch_s / ort_s:.2f})")
    engine = out_path.with_suffix(".fp16.plan" if cfg.export.fp16 else ".plan")
    print(f"TensorRT (untested here, needs a TensorRT install): trtexec --onnx={out_path} --saveEngine={engine}"
          + (" --fp16" if cfg.export.fp16 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

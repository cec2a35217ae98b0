#!/usr/bin/env python3
"""Export the embedded (reprojection) model to ONNX for the ``onnx`` / ``tensorrt`` backends.

    python export/export_onnx.py --checkpoint models/embedded/checkpoint.pt --out exports/embedded

writes ``encoder.onnx``, ``pose_head.onnx``, ``goal_waypoints.onnx`` and ``meta.json`` into the
folder (atomically: a failed export never replaces a good one), after checking each graph with
``onnx.checker`` and against PyTorch with onnxruntime (batches 1 and 3, max abs difference <=
``--atol``, 1e-4). Then prints the CPU time of onnxruntime and PyTorch per encoded frame and per
update (``--runs``, ``--threads``). The graphs are described in
:mod:`vln_core.export.reprojection` and export/README.md.

The model and the frame size come from the checkpoint's own config unless ``--config`` or
``key=value`` overrides are given. ``--allow-random-init`` without ``--checkpoint`` exports random
weights on purpose (pipeline check, timing only). The pipeline models (``model.name=small``,
``base``, ``full``) export their geometry stage at fixed N_m as one file (``--out x.onnx``, see
:mod:`vln_core.export.geometry_stage`); the reprojection and the reasoning stage stay in PyTorch.
Bad input (missing or damaged checkpoint, unknown model, an ``--out`` that is not an export folder)
exits with status 2 and one line; a graph that differs from PyTorch exits with status 1. A run
first restores an export that a killed run left in ``.<name>.old-*`` (``--out`` missing) and
removes the ``.<name>.tmp-*`` / ``.old-*`` folders of killed runs, saying so.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vln_core.config import ConfigError, add_config_arguments, load_config  # noqa: E402
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


def _checkpoint_config(path: Path):
    """``(model name, the config the checkpoint records or None)``."""
    from vln_core.train.checkpoint import load_checkpoint

    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    saved = load_checkpoint(path).get("config")
    if not isinstance(saved, dict):
        return "", None
    return str((saved.get("model") or {}).get("name") or ""), load_config(None, dict(saved))


def time_reprojection(model, folder: Path, runs: int, threads: int, keyframes: int) -> dict[str, float]:
    """Median CPU seconds of onnxruntime and PyTorch: one frame's encoding, and one update's heads
    (the pose head on ``keyframes`` pairs + the goal / waypoint heads). The reprojection and the
    sampler (outside the graphs, the same code for both) are not included."""
    import onnxruntime as ort

    from vln_core.export.reprojection import GRAPHS, graph_inputs, load_export

    meta = load_export(folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sessions = {n: ort.InferenceSession(meta["graphs"][n]["path"], options, providers=["CPUExecutionProvider"])
                for n in GRAPHS}
    one = graph_inputs(model, batch=1, seed=5)
    pairs = graph_inputs(model, batch=keyframes, seed=6)["pose_head"]
    feeds = {"encoder": one["encoder"], "pose_head": pairs, "goal_waypoints": one["goal_waypoints"]}
    np_feeds = {n: {k: v.numpy() for k, v in f.items()} for n, f in feeds.items()}

    def ort_update():
        sessions["pose_head"].run(None, np_feeds["pose_head"])
        sessions["goal_waypoints"].run(None, np_feeds["goal_waypoints"])

    @torch.no_grad()
    def torch_update():
        model.pose_head(pairs["pose_frames"], pairs["pose_current"])
        g = feeds["goal_waypoints"]
        from vln_core.models.reprojection_model import FrameEncoding

        model.goal_and_waypoints(FrameEncoding(g["f8"], g["f8"], g["f8"], g["f8"], g["f32"]), g["instruction_ids"],
                                 g["instruction_mask"], g["past_trajectory"], g["intent"], model.frame_size)

    @torch.no_grad()
    def torch_encode():
        model.encode_frames(feeds["encoder"]["frames"])

    return {
        "ort_encode": median_seconds(lambda: sessions["encoder"].run(None, np_feeds["encoder"]), runs),
        "torch_encode": median_seconds(torch_encode, runs),
        "ort_heads": median_seconds(ort_update, runs),
        "torch_heads": median_seconds(torch_update, runs),
    }


def recover_interrupted_export(out: Path | None) -> None:
    """Before anything else: put back an export that a run killed between its two renames left
    in ``.<name>.old-*`` (``--out`` missing), and remove the ``.<name>.tmp-*`` / ``.<name>.old-*``
    folders killed runs left behind (only folders holding nothing but export files); one line each."""
    from vln_core.atomic import recover_folder_swap
    from vln_core.export.reprojection import DEFAULT_EXPORT_DIR, GRAPHS, MULTIVIEW_GRAPHS

    out = out if out is not None else DEFAULT_EXPORT_DIR
    if out.suffix == ".onnx":
        return
    for line in recover_folder_swap(out, [spec.file for spec in {**GRAPHS, **MULTIVIEW_GRAPHS}.values()]
                                    + ["meta.json", "engines"]):
        print(f"export: {line}", flush=True)


def export_reprojection_cli(args, cfg) -> int:
    from vln_core.models import build_model
    from vln_core.export.reprojection import DEFAULT_EXPORT_DIR, ExportMismatchError, export_reprojection
    from vln_core.models.shipped import load_model_checkpoint

    out = Path(args.out) if args.out else DEFAULT_EXPORT_DIR
    if out.suffix == ".onnx":
        raise InputError(f"--out {out}: the embedded model exports to a folder of graphs (e.g. exports/embedded), "
                         "not one .onnx file")
    if args.checkpoint:
        model, _ = load_model_checkpoint(args.checkpoint, cfg, device="cpu")
    else:
        torch.manual_seed(cfg.training.seed)
        model = build_model(cfg).cpu().eval()
    if getattr(model, "kind", "") != "reprojection":
        raise InputError(f"model '{model.cfg.model.name}' is not the reprojection model")
    start = time.perf_counter()
    try:
        meta = export_reprojection(model, out, opset=args.opset or model.cfg.export.opset,
                                   checkpoint=args.checkpoint, atol=args.atol)
    except ExportMismatchError as exc:
        print(f"error: {exc} (nothing written; {out} unchanged)", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    weights = args.checkpoint if args.checkpoint else "random init (--allow-random-init)"
    H, W = meta["frame_size"]
    print(f"model embedded (reprojection): {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"weights: {weights}")
    sizes = ", ".join(f"{g['file']} {(out / g['file']).stat().st_size / 2**20:.2f} MiB" for g in meta["graphs"].values())
    print(f"wrote {out}/ ({sizes}, meta.json) in {seconds:.1f} s: opset {meta['opset']}, frames {H}x{W}, "
          f"dynamic batch, vocabulary {meta['tokenizer']['vocab_size']}; checked with onnx.checker")
    diffs = meta["parity"]["max_abs_diff"]
    print(f"max |onnxruntime - torch| (batches 1 and 3, atol {args.atol:g}): "
          + ", ".join(f"{k}={v:.1e}" for k, v in diffs.items()))
    if args.runs:
        torch.set_num_threads(args.threads)
        t = time_reprojection(model, out, args.runs, args.threads, args.timing_keyframes)
        print(f"CPU, median of {args.runs} runs, {args.threads} thread(s): encode one frame: onnxruntime "
              f"{t['ort_encode'] * 1e3:.1f} ms, PyTorch {t['torch_encode'] * 1e3:.1f} ms; update heads "
              f"(pose head x{args.timing_keyframes} + goal/waypoints): onnxruntime {t['ort_heads'] * 1e3:.1f} ms, "
              f"PyTorch {t['torch_heads'] * 1e3:.1f} ms")
    print(f"TensorRT (untested here, needs TensorRT and a GPU): python export/build_tensorrt.py --export {out}")
    return 0


def export_geometry_cli(args, cfg) -> int:
    """The pipeline models (model.name=small/base/full): the geometry stage at fixed N_m, one graph."""
    import numpy as np
    import onnxruntime as ort

    from vln_core.export.geometry_stage import (EXPORT_BATCH, GeometryStageWrapper, example_frames,
                                                export_geometry_stage, verify_geometry_stage)
    from vln_core.models import build_model
    from vln_core.train.checkpoint import load_model_weights

    torch.set_num_threads(args.threads)
    torch.manual_seed(cfg.training.seed)
    out_path = Path(args.out) if args.out else Path(cfg.export.output_dir) / f"{cfg.model.name}_geometry.onnx"
    # pretrained parts load from model.*_path; with --allow-random-init and no checkpoint they are random
    model = build_model(cfg, random_init=bool(args.allow_random_init and not args.checkpoint))
    if args.checkpoint:
        load_model_weights(model, args.checkpoint)
    model = model.cpu().eval()
    start = time.perf_counter()
    export_geometry_stage(model, cfg, out_path, opset=args.opset)
    export_seconds = time.perf_counter() - start
    diffs = verify_geometry_stage(model, out_path, cfg, atol=max(args.atol, 1e-3))

    weights = args.checkpoint if args.checkpoint else "random init (--allow-random-init)"
    geometry_params = sum(p.numel() for p in model.geometry.parameters())
    print(f"model {cfg.model.name}: geometry stage {geometry_params / 1e6:.2f} M parameters, weights: {weights}")
    print(f"wrote {out_path} ({out_path.stat().st_size / 2**20:.2f} MiB) in {export_seconds:.1f} s, "
          f"opset {args.opset or cfg.export.opset}, batch {EXPORT_BATCH}, N_m {cfg.video.total_frames}, frames "
          f"{cfg.video.frame_size[0]}x{cfg.video.frame_size[1]}, rotary tables as constants")
    print("max |onnxruntime - torch| per output: " + ", ".join(f"{k}={v:.2e}" for k, v in diffs.items()))
    runs = max(args.runs, 1)
    frames = example_frames(cfg, seed=2)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(out_path), options, providers=["CPUExecutionProvider"])
    feeds = {"frames": np.ascontiguousarray(frames.numpy())}
    wrapper = GeometryStageWrapper(model.geometry)

    def run_torch() -> object:
        with torch.no_grad():
            return wrapper(frames)

    ort_s = median_seconds(lambda: session.run(None, feeds), runs)
    torch_s = median_seconds(run_torch, runs)
    print(f"CPU latency of the geometry stage, median of {runs} runs, {args.threads} thread(s): onnxruntime "
          f"{ort_s * 1e3:.1f} ms, PyTorch eager {torch_s * 1e3:.1f} ms (x{torch_s / ort_s:.2f})")
    engine = out_path.with_suffix(".fp16.plan" if cfg.export.fp16 else ".plan")
    print(f"TensorRT (untested here, needs a TensorRT install): trtexec --onnx={out_path} --saveEngine={engine}"
          + (" --fp16" if cfg.export.fp16 else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, default=None)
    parser.add_argument("--checkpoint", help="checkpoint to export (the shipped models/embedded/checkpoint.pt, or a "
                                             "training run's best.pt / last.pt)")
    parser.add_argument("--allow-random-init", action="store_true",
                        help="export randomly initialised weights when no --checkpoint is given")
    parser.add_argument("--out", help="export folder (default exports/embedded); for small/base/full the geometry stage's .onnx file")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default export.opset, 17)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest accepted |onnxruntime - torch| (1e-4)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per runtime, median printed (0: no timing)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for PyTorch and onnxruntime")
    parser.add_argument("--timing-keyframes", type=int, default=8, help="keyframes of the timed update (8)")
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    if not args.checkpoint and not args.allow_random_init:
        return fail("no --checkpoint given: an export of untrained weights predicts nothing useful; pass "
                    "--checkpoint models/embedded/checkpoint.pt, or --allow-random-init to export random weights on "
                    "purpose (pipeline check, timing)")
    if args.runs < 0 or args.threads < 1 or args.timing_keyframes < 1:
        return fail("--runs must be >= 0, --threads and --timing-keyframes >= 1")
    if not args.atol > 0:
        return fail(f"--atol must be > 0, got {args.atol}")
    if args.opset is not None and not 14 <= args.opset <= 20:
        return fail(f"--opset must be in [14, 20], got {args.opset}")
    try:
        recover_interrupted_export(Path(args.out) if args.out else None)
        explicit = bool(args.config or args.overrides)
        cfg = load_config(args.config or (str(REPO / "configs/train_embedded.yaml") if not args.checkpoint else None),
                          args.overrides) if (explicit or not args.checkpoint) else None
        name, saved_cfg = _checkpoint_config(Path(args.checkpoint)) if args.checkpoint else ("", None)
        cfg = cfg if cfg is not None else saved_cfg  # the checkpoint's own sizes unless told otherwise
        name = name or (cfg.model.name if cfg is not None else "")
        if name in ("small", "base", "full"):
            if cfg is None:
                cfg = load_config(str(REPO / "configs/train_embedded.yaml"), [f"model.name={name}"])
            cfg.model.name = name
            return export_geometry_cli(args, cfg)
        if name != "embedded":
            return fail(f"model '{name or '?'}' cannot be exported: export_onnx.py exports model.name=embedded "
                        "(its graphs) and small/base/full (their geometry stage)")
        return export_reprojection_cli(args, cfg)
    except (InputError, ConfigError, OSError) as exc:
        return fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


if __name__ == "__main__":
    sys.exit(main())

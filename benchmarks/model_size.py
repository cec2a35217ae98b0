"""Parameter counts (total and trainable per training stage) and forward time per model configuration.

    .venv/bin/python benchmarks/model_size.py                       # embedded only
    .venv/bin/python benchmarks/model_size.py --random-init         # + base and full architectures
    .venv/bin/python benchmarks/model_size.py --models base --random-init --frames 4 --keyframes 2

``embedded`` is built as registered (its weights are ours; untrained weights time the same).
``base`` and ``full`` need pretrained checkpoints (``model.dinov3_path``, ``model.llm_path``);
with ``--random-init`` their DINOv3 / Qwen architectures are built with random weights ONLY to
count parameters and time a forward. ``full`` is counted on the ``meta`` device (no memory, no
timing) unless ``--time-full`` is given, since a 3B-parameter LLM in float32 needs ~13 GB of RAM
and minutes per forward on a CPU. Every line says what was measured: configuration, device,
frames, keyframes, input size, threads.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vln_core.config import ConfigError, load_config  # noqa: E402
from vln_core.models import STAGES, ModelInputs, build_model  # noqa: E402


def _millions(n: int) -> str:
    return f"{n / 1e6:9.2f}M"


def _count(model) -> dict[str, int]:
    counts = {"total": sum(p.numel() for p in model.parameters())}
    for name, params in model._groups().items():
        counts[f"group:{name}"] = sum(p.numel() for p in params)
    for stage in STAGES:
        counts[f"trainable:{stage}"] = sum(p.numel() for p in model.trainable_parameters(stage))
    return counts


def _inputs(model, frames: int, size: tuple[int, int], batch: int, device: torch.device) -> ModelInputs:
    ids, mask = model.tokenizer.encode(["walk past the sofa and stop at the door on the left"] * batch, 32)
    g = torch.Generator().manual_seed(0)
    return ModelInputs(
        frames=torch.rand(batch, frames, 3, *size, generator=g).to(device),
        instruction_ids=ids.to(device),
        instruction_mask=mask.to(device),
        past_trajectory=torch.zeros(batch, 16, 4, device=device),
        intent=torch.ones(batch, dtype=torch.long, device=device),
    )


def _time_forward(model, inputs: ModelInputs, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds per forward. On a shared, loaded machine the CPU time
    (summed over threads) is the steadier figure; with one thread it approximates an idle wall time."""
    model.eval()
    wall, cpu = [], []
    with torch.no_grad():
        model(inputs)  # warm-up (allocator, oneDNN kernels)
        for _ in range(repeats):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start, start_cpu = time.perf_counter(), time.process_time()
            model(inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help="configurations (default: embedded, "
                        "plus base and full with --random-init)")
    parser.add_argument("--random-init", action="store_true",
                        help="build base/full pretrained parts with random weights (counting/timing only)")
    parser.add_argument("--frames", type=int, default=8, help="N_m buffered frames per forward")
    parser.add_argument("--keyframes", type=int, default=4, help="N_k keyframes")
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--lora-rank", type=int, default=0, help="count with LoRA adapters of this rank")
    parser.add_argument("--count-only", action="store_true", help="count on the meta device, time nothing")
    parser.add_argument("--time-full", action="store_true", help="really build and time `full` (needs RAM)")
    parser.add_argument("--device", default="cpu", help="device for every stage (cpu, cuda, auto)")
    args = parser.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    models = args.models or (["embedded", "base", "full"] if args.random_init else ["embedded"])
    size = tuple(args.size)
    for name in models:
        on_meta = args.count_only or (name == "full" and not args.time_full)
        device = "meta" if on_meta else args.device
        overrides = [
            f"model.name={name}", f"video.total_frames={args.frames}", f"video.keyframes={args.keyframes}",
            f"video.frame_size=[{size[0]}, {size[1]}]", f"model.lora_rank={args.lora_rank}",
            f"model.geometry_device={device}", f"model.semantic_device={device}", f"model.llm_device={device}",
        ]
        cfg = load_config(None, overrides)
        start = time.perf_counter()
        try:
            if on_meta:
                with torch.device("meta"):
                    model = build_model(cfg, random_init=args.random_init)
            else:
                model = build_model(cfg, random_init=args.random_init)
        except ConfigError as exc:
            print(f"[{name}] not built: {exc}")
            continue
        build_s = time.perf_counter() - start
        weights = "random-init architecture" if name != "embedded" else "own weights (untrained)"
        print(f"[{name}] {weights}; built in {build_s:.1f} s on {'meta' if on_meta else model.device_map}")
        counts = _count(model)
        print(f"  total parameters         {_millions(counts['total'])}")
        for key, value in counts.items():
            if key.startswith("group:") and value:
                print(f"    {key[6:]:<22} {_millions(value)}")
        for stage in STAGES:
            print(f"  trainable in {stage:<11} {_millions(counts['trainable:' + stage])}")
        if on_meta:
            print("  forward: not timed (counted on the meta device; drop --count-only / pass --time-full to time it)")
            continue
        inputs = _inputs(model, args.frames, size, args.batch, model.geometry_device)
        times, cpu_times = _time_forward(model, inputs, args.repeats)
        dev = str(model.geometry_device)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"  forward on {dev}: wall median {statistics.median(times) * 1000:.0f} ms (min {min(times) * 1000:.0f}), "
              f"process CPU median {statistics.median(cpu_times) * 1000:.0f} ms, over {len(times)} runs (batch {args.batch}, N_m={args.frames}, N_k={args.keyframes}, "
              f"{size[0]}x{size[1]}, {torch.get_num_threads()} CPU threads, keyframes sampled from predicted geometry; "
              f"1-min load average {load:.1f} on {os.cpu_count()} cores)")
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())

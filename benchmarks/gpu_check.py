"""GPU check of the ``full`` model's speed: one script, one GPU (an H100), under 8 minutes.

What it measures (random weights at the real sizes, batch 1, bf16 on CUDA; ``--runs`` timed
runs after ``--warmup`` warm-up runs, each between ``torch.cuda.synchronize()`` calls, the
median reported; peak memory is ``torch.cuda.max_memory_allocated`` since a reset before each
measurement, so it includes every model resident at that moment):

1. geometry: VGGT-1B (``vln_core.models.vggt.VGGT(VGGT_1B)``) on N_m = 8, 16, 32 frames of the
   size ``vggt_input_size`` gives (518x518), as the ``full`` model runs it: aggregator in bf16,
   camera / depth / point heads in float32 (``set_compute_dtype``). Anchor printed beside it:
   the VGGT README reports 0.14 s for 10 frames and 0.31 s for 20 frames on one H100.
2. the ``full`` update as three standalone stages, all resident on the one GPU and run back to
   back: VGGT-1B on N_m = 32 frames, DINOv3 ViT-L (``model_spec("full").dinov3_config``) on the
   N_k = 16 keyframes plus the current view (17 frames, resized to 512x512 for its patch 16, as
   ``SemanticEncoder`` does), and the Qwen2.5-VL-3B language model
   (``Qwen2_5_VLTextModel(model_spec("full").llm_config)``) over the tokens the model feeds it:
   a 32-token instruction + 17 frames x (37x37 VGGT grid average-pooled by ``reasoning_pool`` = 2
   to 19x19 = 361) = 6169 tokens. The LLM is also timed over 32 + 17 x 64 = 1120 tokens (a
   coarser pooling) for comparison. Target: total <= 1 s at N_m = 32, N_k = 16 (met / missed).
3. ``torch.compile`` of VGGT's aggregator at N_m = 16, regionally (each transformer block
   compiled; identical blocks share one compiled graph) after freezing its rotary tables with
   :func:`vln_core.export.rotary.freeze_rotary_tables` (same results; no ``pos.max()`` sync):
   compile time and speed-up over eager, or the exception in one line. A compile that takes
   longer than ``--compile-limit-s`` (120 s) is abandoned and reported as skipped.
4. the repo's own model: ``build_model(cfg, random_init=True)`` with ``model.name=full``,
   ``video.total_frames=32``, ``video.keyframes=16``, ``video.frame_size=[518, 518]``,
   ``model.dtype=bfloat16``, then ``model(ModelInputs(...))`` end to end (keyframes sampled on
   VGGT's point map, and again with given keyframes). Any error is reported in the JSON, not raised.

Versions (torch, transformers, CUDA), the GPU's name, and the attention kernels (flash-attn when
importable, otherwise PyTorch SDPA) are reported too.

How to run::

    bash benchmarks/gpu_check.sh                   # on the GPU machine; JSON to outputs/gpu_check.json
    bash benchmarks/gpu_check.sh --out /tmp/g.json --runs 7
    bash benchmarks/gpu_check.sh --dry-run         # any machine: the same code on CPU, tiny sizes

Without CUDA (and without ``--dry-run``) it prints one line and exits 2. ``--dry-run`` runs every
step on the CPU with tiny VGGT / DINOv3 / Qwen2.5-VL configurations (56x56 frames, N_m = 4/6/8)
to check the plumbing in well under a minute; its timings are not figures of anything and are
marked as such (``"figures_valid": false`` in the JSON): figures without a GPU are not reported.

The results are printed as tables and written (atomically: a temporary file, then
``os.replace``) to ``--out`` after every step, so a run cut short still leaves what it measured.
"""
from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

TARGET_S = 1.0
#: VGGT README (facebookresearch/vggt), runtime on one H100: frames -> seconds
VGGT_README_ANCHORS = {10: 0.14, 20: 0.31}
INSTRUCTION = ("walk past the grey sofa and the small table then turn left at the open door and stop "
               "next to the red chair by the window in the far corner of the room")


# ----------------------------------------------------------------------------------- plumbing


class CompileTimeout(BaseException):
    """Raised by SIGALRM inside a compile that overruns (a BaseException, so that no
    ``except Exception`` inside the compiler swallows it)."""


@contextmanager
def alarm(seconds: float) -> Iterator[None]:
    def handler(signum, frame):  # noqa: ARG001
        raise CompileTimeout(f"compile took longer than {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(1.0, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_line(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= 400 else text[:397] + "..."


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic: a temporary file in the same folder, flushed and fsynced, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def print_table(title: str, headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  " + "  ".join("-" * w for w in widths))
    for r in cells:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)))
    sys.stdout.flush()


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def gib(n: int | float) -> float:
    return round(n / 2 ** 30, 3)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return gib(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed(fn: Callable[[], Any], device: torch.device, warmup: int, runs: int) -> list[float]:
    """Seconds per call of ``fn`` (``runs`` calls after ``warmup``), synchronised around each."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(runs):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def summary(times: list[float]) -> dict[str, Any]:
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4), "runs_s": [round(t, 4) for t in times]}


def anchor_s(n_frames: int) -> float:
    """The README's two points joined by a line (attention is partly quadratic in N: a lower bound at 32)."""
    (n0, t0), (n1, t1) = sorted(VGGT_README_ANCHORS.items())
    return round(t0 + (n_frames - n0) * (t1 - t0) / (n1 - n0), 3)


# ------------------------------------------------------------------------------------- sizes


@dataclass
class Plan:
    """What to build and at which sizes: the real ``full`` model on CUDA, or tiny ones on the CPU."""

    dry_run: bool
    device: torch.device
    dtype: torch.dtype
    vggt: Any  # VGGTConfig
    dinov3: dict[str, Any]
    llm: dict[str, Any]
    image_hw: tuple[int, int]
    sweep: tuple[int, ...]
    n_frames: int  # N_m of the full update
    n_keyframes: int  # N_k
    compile_frames: int
    reasoning_pool: int
    instruction_tokens: int = 32
    alt_tokens_per_frame: int = 64
    build_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def semantic_hw(self) -> tuple[int, int]:
        p = int(self.dinov3.get("patch_size", 16))
        return max(1, self.image_hw[0] // p) * p, max(1, self.image_hw[1] // p) * p

    @property
    def semantic_frames(self) -> int:
        return self.n_keyframes + 1  # the keyframes and the current view

    @property
    def visual_tokens_per_frame(self) -> int:
        p = self.vggt.patch_size
        h, w = self.image_hw[0] // p, self.image_hw[1] // p
        pool = max(1, min(self.reasoning_pool, h, w))
        return math.ceil(h / pool) * math.ceil(w / pool)


def make_plan(dry_run: bool) -> Plan:
    from vln_core.models.registry import model_spec
    from vln_core.models.vggt import VGGT_1B, VGGTConfig, vggt_input_size

    spec = model_spec("full")
    if not dry_run:
        return Plan(False, torch.device("cuda", 0), torch.bfloat16, VGGT_1B, dict(spec.dinov3_config or {}),
                    dict(spec.llm_config or {}), vggt_input_size((518, 518), 518, VGGT_1B.patch_size),
                    (8, 16, 32), 32, 16, 16, spec.arch.reasoning_pool)
    tiny_vggt = VGGTConfig(img_size=56, embed_dim=32, depth=2, num_heads=2, patch_embed_depth=1, patch_embed_heads=2,
                           camera_trunk_depth=1, camera_heads=2, dpt_features=16, dpt_out_channels=(8, 16, 32, 32),
                           dpt_layers=(0, 1, 1, 1))
    tiny_dino = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, patch_size=8,
                     num_register_tokens=2, image_size=56)
    tiny_llm = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=1, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                    bos_token_id=1, eos_token_id=2)
    return Plan(True, torch.device("cpu"), torch.bfloat16, tiny_vggt, tiny_dino, tiny_llm,
                vggt_input_size((56, 56), 56, tiny_vggt.patch_size), (4, 6, 8), 8, 4, 6, spec.arch.reasoning_pool,
                instruction_tokens=32, alt_tokens_per_frame=4,
                build_overrides=dict(fusion_dim=32, decoder_heads=2, decoder_layers=1, waypoint_hidden=32))


# ------------------------------------------------------------------------------------ models


def build_vggt(plan: Plan):
    from vln_core.models.vggt import VGGT
    from vln_core.models.vggt.api import set_compute_dtype

    torch.manual_seed(0)
    with torch.device(plan.device):
        net = VGGT(plan.vggt)
    set_compute_dtype(net, plan.dtype)  # aggregator in bf16, heads float32: as the full model runs it
    return net.eval().requires_grad_(False)


def attention_kernel(plan: Plan) -> str:
    from vln_core.models.placement import llm_attn_implementation

    return llm_attn_implementation("bfloat16" if plan.dtype == torch.bfloat16 else "float32", plan.device)


def build_dinov3(plan: Plan):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    with torch.device(plan.device):
        model = DINOv3ViTModel._from_config(DINOv3ViTConfig(**plan.dinov3), dtype=plan.dtype)
    return model.eval().requires_grad_(False)


def build_llm(plan: Plan):
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    torch.manual_seed(0)
    with torch.device(plan.device):
        model = Qwen2_5_VLTextModel._from_config(Qwen2_5_VLTextConfig(**plan.llm), dtype=plan.dtype,
                                                 attn_implementation=attention_kernel(plan))
    return model.eval().requires_grad_(False)


def llm_call(llm, tokens: int, device: torch.device, dtype: torch.dtype) -> Callable[[], Any]:
    """A forward as ``LLMReasoner`` makes it: embeddings in, mask, 1-D positions, no cache."""
    g = torch.Generator(device=device).manual_seed(0)
    embeds = (torch.randn(1, tokens, llm.config.hidden_size, generator=g, device=device) * 0.02).to(dtype)
    mask = torch.ones(1, tokens, dtype=torch.long, device=device)
    position_ids = torch.arange(tokens, device=device)[None]

    def run():
        return llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False)

    return run


def frames(plan: Plan, n: int, hw: tuple[int, int] | None = None) -> torch.Tensor:
    g = torch.Generator(device=plan.device).manual_seed(n)
    return torch.rand(1, n, 3, *(hw or plan.image_hw), generator=g, device=plan.device)


# ------------------------------------------------------------------------------------- steps


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = make_plan(args.dry_run)
        self.start = time.perf_counter()
        self.out = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
        self.result: dict[str, Any] = {"meta": self.meta(), "figures_valid": not args.dry_run}
        self._vggt = None

    @property
    def vggt(self):
        """VGGT built by step 1 (or now, when step 1 failed after building nothing)."""
        if self._vggt is None:
            self._vggt = build_vggt(self.plan)
        return self._vggt

    @vggt.setter
    def vggt(self, net) -> None:
        self._vggt = net

    def remaining(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.start)

    def save(self) -> None:
        self.result["meta"]["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        write_json(self.out, self.result)

    def meta(self) -> dict[str, Any]:
        from vln_core.models.placement import flash_attn_available

        plan = self.plan

        def version(pkg: str) -> str | None:
            try:
                return importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                return None

        flash = flash_attn_available()
        meta = {
            "dry_run": plan.dry_run,
            "device": str(plan.device),
            "gpu": torch.cuda.get_device_name(plan.device) if plan.device.type == "cuda" else None,
            "gpu_memory_gib": gib(torch.cuda.get_device_properties(plan.device).total_memory)
            if plan.device.type == "cuda" else None,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "transformers": version("transformers"),
            "python": platform.python_version(),
            "flash_attn": version("flash-attn") or version("flash_attn") if flash else None,
            "llm_attention": attention_kernel(plan),
            "vggt_attention": "torch SDPA (F.scaled_dot_product_attention; PyTorch picks its flash / "
                              "memory-efficient kernel)",
            "dinov3_attention": "transformers default (SDPA)",
            "dtype": dtype_name(plan.dtype),
            "image_hw": list(plan.image_hw),
            "semantic_hw": list(plan.semantic_hw),
            "warmup": self.args.warmup,
            "runs": self.args.runs,
        }
        return meta

    # -- 1. geometry sweep
    def geometry(self) -> None:
        plan, args = self.plan, self.args
        net = build_vggt(plan)
        rows, entries = [], []
        for n in plan.sweep:
            x = frames(plan, n)
            free_memory(plan.device)
            reset_peak(plan.device)
            with torch.no_grad():
                times = timed(lambda: net(x, with_points=True), plan.device, args.warmup, args.runs)
            entry = {"n_frames": n, "image_hw": list(plan.image_hw), **summary(times),
                     "peak_mem_gib": peak_gib(plan.device),
                     "readme_h100_linear_s": None if plan.dry_run else anchor_s(n)}
            entries.append(entry)
            rows.append([n, f"{plan.image_hw[0]}x{plan.image_hw[1]}", entry["median_s"], entry["min_s"],
                         round(n / entry["median_s"], 1), entry["peak_mem_gib"], entry["readme_h100_linear_s"]])
        self.result["geometry"] = {
            "what": "VGGT forward (aggregator bf16, camera/depth/point heads float32), batch 1",
            "params": sum(p.numel() for p in net.parameters()),
            "readme_anchor_h100_s": {str(k): v for k, v in VGGT_README_ANCHORS.items()},
            "sizes": entries,
        }
        print_table(f"1. geometry: VGGT ({self._size_note()}), {dtype_name(plan.dtype)}, batch 1 "
                    f"[VGGT README, one H100: 10 frames 0.14 s, 20 frames 0.31 s]",
                    ["N_m", "image", "median s", "min s", "frames/s", "peak GiB", "README line s"], rows)
        self.vggt = net

    # -- 2. full update, stage by stage
    def stages(self) -> None:
        plan, args = self.plan, self.args
        net = self.vggt
        dino, llm = build_dinov3(plan), build_llm(plan)
        x_geo = frames(plan, plan.n_frames)
        x_sem = frames(plan, plan.semantic_frames, plan.semantic_hw)[0].to(plan.dtype)
        tokens = plan.instruction_tokens + plan.semantic_frames * plan.visual_tokens_per_frame
        alt_tokens = plan.instruction_tokens + plan.semantic_frames * plan.alt_tokens_per_frame
        run_llm, run_llm_alt = llm_call(llm, tokens, plan.device, plan.dtype), \
            llm_call(llm, alt_tokens, plan.device, plan.dtype)
        stage_fns = {
            "geometry": lambda: net(x_geo, with_points=True),
            "semantic": lambda: dino(pixel_values=x_sem),
            "llm": run_llm,
        }
        per_stage: dict[str, list[float]] = {k: [] for k in stage_fns}
        totals: list[float] = []
        free_memory(plan.device)
        reset_peak(plan.device)
        with torch.no_grad():
            for i in range(args.warmup + args.runs):
                sync(plan.device)
                t_total = time.perf_counter()
                for name, fn in stage_fns.items():
                    t0 = time.perf_counter()
                    fn()
                    sync(plan.device)
                    if i >= args.warmup:
                        per_stage[name].append(time.perf_counter() - t0)
                if i >= args.warmup:
                    totals.append(time.perf_counter() - t_total)
            peak = peak_gib(plan.device)
            alt = timed(run_llm_alt, plan.device, 1, args.runs)
        total = summary(totals)
        met = None if plan.dry_run else total["median_s"] <= TARGET_S
        self.result["full_stages"] = {
            "what": "VGGT-1B on N_m frames -> DINOv3 ViT-L on N_k keyframes + the current view -> Qwen2.5-VL-3B "
                    "language model, standalone modules resident together on one GPU, run back to back",
            "n_frames": plan.n_frames, "n_keyframes": plan.n_keyframes, "semantic_frames": plan.semantic_frames,
            "semantic_hw": list(plan.semantic_hw),
            "llm_tokens": tokens,
            "llm_tokens_note": f"{plan.instruction_tokens} instruction + {plan.semantic_frames} frames x "
                               f"{plan.visual_tokens_per_frame} pooled visual tokens (VGGT grid, reasoning_pool="
                               f"{plan.reasoning_pool}), what the full model feeds its LLM",
            "llm_params": sum(p.numel() for p in llm.parameters()),
            "dinov3_params": sum(p.numel() for p in dino.parameters()),
            "stages": {k: summary(v) for k, v in per_stage.items()},
            "total": total,
            "peak_mem_gib": peak,
            "target_s": TARGET_S,
            "target_met": met,
            "llm_alt": {"tokens": alt_tokens, "note": f"{plan.instruction_tokens} + {plan.semantic_frames} x "
                        f"{plan.alt_tokens_per_frame} tokens", **summary(alt),
                        "total_with_it_s": round(statistics.median(per_stage["geometry"])
                                                 + statistics.median(per_stage["semantic"])
                                                 + statistics.median(alt), 4)},
        }
        rows = [["geometry", f"VGGT, {plan.n_frames} frames {plan.image_hw[0]}x{plan.image_hw[1]}",
                 summary(per_stage["geometry"])["median_s"]],
                ["semantic", f"DINOv3, {plan.semantic_frames} frames {plan.semantic_hw[0]}x{plan.semantic_hw[1]}",
                 summary(per_stage["semantic"])["median_s"]],
                ["llm", f"Qwen2.5-VL text, {tokens} tokens", summary(per_stage["llm"])["median_s"]],
                ["total", f"peak {_fmt(peak)} GiB", total["median_s"]],
                ["(llm alt)", f"{alt_tokens} tokens; total would be "
                 f"{self.result['full_stages']['llm_alt']['total_with_it_s']}", summary(alt)["median_s"]]]
        print_table(f"2. full update by stages (N_m={plan.n_frames}, N_k={plan.n_keyframes}), "
                    f"{dtype_name(plan.dtype)}",
                    ["stage", "what", "median s"], rows)
        print(f"  target total <= {TARGET_S} s: " + ("n/a (dry run: not a measurement)" if met is None
                                                     else ("MET" if met else "MISSED")))

    # -- 3. torch.compile
    def compile(self) -> None:
        from vln_core.export.rotary import freeze_rotary_tables

        plan, args = self.plan, self.args
        net = self.vggt
        n = plan.compile_frames
        limit = min(args.compile_limit_s, max(10.0, self.remaining() - 90))
        res: dict[str, Any] = {"n_frames": n, "scope": "regional: every block of the aggregator (patch embed, "
                               "frame and global attention) compiled, rotary tables frozen",
                               "backend": args.compile_backend, "limit_s": round(limit, 1)}
        self.result["compile"] = res
        x = frames(plan, n)
        agg = net.aggregator
        lists = [agg.patch_embed.blocks, agg.frame_blocks, agg.global_blocks]
        originals = [list(blocks) for blocks in lists]
        try:
            freeze_rotary_tables(net, plan.image_hw)  # bit-equal tables; nothing data-dependent left
            with torch.no_grad():
                eager = timed(lambda: net(x, with_points=True), plan.device, args.warmup, args.runs)
                ref = net(x, with_points=True).depth.float()
            res["eager_frozen_rope"] = summary(eager)
            for blocks in lists:
                for i, block in enumerate(blocks):
                    blocks[i] = torch.compile(block, backend=args.compile_backend, dynamic=False)
            with torch.no_grad():
                t0 = time.perf_counter()
                with alarm(limit):
                    out = net(x, with_points=True)  # compiles (each distinct graph once)
                    sync(plan.device)
                res["compile_s"] = round(time.perf_counter() - t0, 2)
                res["max_abs_depth_diff"] = float((out.depth.float() - ref).abs().max())
                compiled = timed(lambda: net(x, with_points=True), plan.device, 1, args.runs)
            res["compiled"] = summary(compiled)
            res["speedup"] = round(res["eager_frozen_rope"]["median_s"] / res["compiled"]["median_s"], 3)
            res["status"] = "ok"
        except CompileTimeout as exc:
            res["status"] = f"skipped: {exc}"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            res["status"] = "error"
            res["error"] = one_line(exc)
        finally:
            for blocks, orig in zip(lists, originals):
                for i, block in enumerate(orig):
                    blocks[i] = block
            try:
                torch._dynamo.reset()
            except Exception:  # noqa: BLE001
                pass
        rows = [[f"eager (frozen rope), N_m={n}", res.get("eager_frozen_rope", {}).get("median_s")],
                [f"compiled ({args.compile_backend}), N_m={n}", res.get("compiled", {}).get("median_s")],
                ["compile time s", res.get("compile_s")], ["speed-up", res.get("speedup")],
                ["max |depth diff|", res.get("max_abs_depth_diff")],
                ["status", res["status"] + (f": {res['error']}" if "error" in res else "")]]
        print_table("3. torch.compile of the VGGT aggregator (per block)", ["", "value"], rows)

    # -- 4. the repo's own full model
    def full_model(self) -> None:
        from vln_core.config import load_config
        from vln_core.models import ModelInputs, build_model

        plan, args = self.plan, self.args
        res: dict[str, Any] = {"status": "started"}
        self.result["full_model"] = res
        self._vggt = None  # the standalone VGGT is done with: its memory goes to the full model
        free_memory(plan.device)
        model = None
        try:
            overrides = ["model.name=full", f"video.total_frames={plan.n_frames}",
                         f"video.keyframes={plan.n_keyframes}",
                         f"video.frame_size=[{plan.image_hw[0]}, {plan.image_hw[1]}]",
                         f"model.dtype={dtype_name(plan.dtype)}"]
            if plan.device.type == "cpu":
                overrides += ["model.geometry_device=cpu", "model.semantic_device=cpu", "model.llm_device=cpu"]
            cfg = load_config(None, overrides)
            res["overrides"] = overrides
            t0 = time.perf_counter()
            if plan.dry_run:
                from transformers import DINOv3ViTConfig, DINOv3ViTModel, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel
                from vln_core.models.vggt import VGGT

                torch.manual_seed(0)
                model = build_model(cfg, semantic_backbone=DINOv3ViTModel(DINOv3ViTConfig(**plan.dinov3)),
                                    llm=Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(**plan.llm)),
                                    geometry_backbone=VGGT(plan.vggt), arch_overrides=plan.build_overrides)
            else:
                with torch.device(plan.device):  # random init straight on the GPU (seconds, not minutes)
                    model = build_model(cfg, random_init=True)
            model.eval()
            res["build_s"] = round(time.perf_counter() - t0, 1)
            res["params"] = sum(p.numel() for p in model.parameters())
            res["model_class"] = type(model).__name__
            ids, mask = model.tokenizer.encode([INSTRUCTION], plan.instruction_tokens)
            dev = plan.device
            inputs = ModelInputs(frames=frames(plan, plan.n_frames), instruction_ids=ids.to(dev),
                                 instruction_mask=mask.to(dev), past_trajectory=torch.zeros(1, 16, 4, device=dev),
                                 intent=torch.ones(1, dtype=torch.long, device=dev))
            res["instruction_tokens"] = int(ids.shape[1])
            free_memory(dev)
            reset_peak(dev)
            with torch.no_grad():
                times = timed(lambda: model(inputs), dev, 1, args.full_runs)
                res["sampled_keyframes"] = summary(times)
                res["peak_mem_gib"] = peak_gib(dev)
                keyframes = torch.linspace(0, plan.n_frames - 2, plan.n_keyframes, device=dev).round().long()[None]
                given = ModelInputs(**{**vars(inputs), "keyframe_indices": keyframes})
                res["given_keyframes"] = summary(timed(lambda: model(given), dev, 1, args.full_runs))
            res["target_met"] = None if plan.dry_run else res["sampled_keyframes"]["median_s"] <= TARGET_S
            res["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - the model is being rewritten: report, do not crash
            res["status"] = "error"
            res["error"] = one_line(exc)
            res["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
        finally:
            model = inputs = given = None  # noqa: F841 - frees the GPU memory before the report
            free_memory(plan.device)
        rows = [["build s", res.get("build_s")], ["params", res.get("params")],
                ["forward, keyframes sampled, median s", res.get("sampled_keyframes", {}).get("median_s")],
                ["forward, keyframes given, median s", res.get("given_keyframes", {}).get("median_s")],
                ["peak GiB", res.get("peak_mem_gib")],
                ["target <= 1 s", "n/a (dry run)" if plan.dry_run or res["status"] != "ok"
                 else ("MET" if res["target_met"] else "MISSED")],
                ["status", res["status"] + (f": {res['error']}" if "error" in res else "")]]
        how = "tiny parts passed in" if plan.dry_run else "random_init=True"
        print_table(f"4. build_model(full, {how}) end to end (N_m={plan.n_frames}, N_k={plan.n_keyframes})",
                    ["", "value"], rows)

    def _size_note(self) -> str:
        cfg = self.plan.vggt
        return "tiny config" if self.plan.dry_run else f"VGGT-1B, dim {cfg.embed_dim}, depth {cfg.depth}"

    def run(self) -> None:
        plan = self.plan
        m = self.result["meta"]
        what = "DRY RUN on CPU, tiny sizes: timings below check the plumbing, they are NOT figures"
        print(f"gpu_check: {what if plan.dry_run else m['gpu']}")
        print(f"  torch {m['torch']} (CUDA {m['cuda']}), transformers {m['transformers']}, python {m['python']}")
        print(f"  attention: LLM {m['llm_attention']}"
              + (f" (flash-attn {m['flash_attn']})" if m["flash_attn"] else " (flash-attn not importable: SDPA)")
              + "; VGGT torch SDPA; DINOv3 transformers SDPA")
        print(f"  output: {self.out}")
        steps = [("geometry", self.geometry, 0), ("full_stages", self.stages, 60),
                 ("compile", self.compile, 100), ("full_model", self.full_model, 60)]
        if self.args.skip_compile:
            steps = [s for s in steps if s[0] != "compile"]
        for name, fn, need_s in steps:
            if self.remaining() < need_s:
                self.result[name] = {"status": f"skipped: {self.remaining():.0f} s of the budget left"}
                print(f"\n{name}: skipped ({self.remaining():.0f} s of the {self.args.budget_s:.0f} s budget left)")
                continue
            t0 = time.perf_counter()
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - one broken step must not lose the others
                self.result.setdefault(name, {})
                self.result[name].update(status="error", error=one_line(exc),
                                         traceback_tail=traceback.format_exc().strip().splitlines()[-6:])
                print(f"\n{name}: ERROR {one_line(exc)}")
            self.result.setdefault(name, {})["step_s"] = round(time.perf_counter() - t0, 1)
            free_memory(self.plan.device)  # the step's locals are gone now
            self.save()
        self.vggt = None
        print(f"\ndone in {time.perf_counter() - self.start:.1f} s; JSON: {self.out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/gpu_check.json", help="JSON path (relative: to the repo root)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check the plumbing, no figures")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--full-runs", type=int, default=3, help="timed forwards of the build_model full model")
    ap.add_argument("--compile-limit-s", type=float, default=120.0)
    ap.add_argument("--compile-backend", default=None,
                    help="torch.compile backend (default inductor; eager with --dry-run, to stay fast on a CPU)")
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="steps that would start with less than they need left are skipped (the .sh kills at 480 s)")
    args = ap.parse_args(argv)
    if args.compile_backend is None:
        args.compile_backend = "eager" if args.dry_run else "inductor"
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here; run it on the GPU machine, or pass --dry-run to check the "
              "plumbing on the CPU (no figures)")
        return 2
    if args.dry_run:
        torch.set_num_threads(min(2, torch.get_num_threads()))

    def on_term(signum, frame):  # noqa: ARG001 - `timeout` sends SIGTERM: keep what was measured
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    check = Check(args)
    try:
        check.run()
    finally:
        check.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())

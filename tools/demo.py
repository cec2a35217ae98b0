#!/usr/bin/env python3
"""`make demo`: the vln_heatmap node on real ROS 2 middleware, fed a simulated episode.

By default the node runs the learned backend (``--backend model``, the shipped checkpoint) from
colour, CameraInfo and odometry alone (the replay publishes no depth topic), and every overlay
written shows the node's learned heatmaps beside the exact ones the geometry core computes from
the episode's recorded depth and poses for the same current frame and keyframes; ``summary.json``
adds their correlation coefficient per output. ``--backend geometry`` (``make demo-geometry``) is
the RGB-D demo: depth published, the node's exact heatmaps.

Steps (each printed as it happens):

1. make a simulated episode with ``training/collect.py`` (30 Hz camera), or reuse one already in
   ``<out>/sim``; if the simulator fails, fall back to the real posed RGB-D sequence
   (``VLN_REAL_RGBD_DIR`` or ``../shared/data/real_rgbd_box``), or use ``--episode DIR``;
2. start the node (``python -m vln_heatmap.node --ros-args --params-file ...``) as its own process
   on the ``ROS_DOMAIN_ID`` set in the environment, else on a random domain (localhost only);
3. replay the episode into it (``python -m vln_heatmap.replay``, another process) while this
   process collects heatmaps, keyframe arrays, overlays and /diagnostics;
4. stop both cleanly and write ``<out>/overlay_*.png`` and ``<out>/summary.json`` (input and output
   rates, latency median/p95, keyframes, drops, errors; learned backends: CC against the exact
   heatmaps per output).

Usage::

    python tools/demo.py [--out outputs/demo] [--frames 240] [--size 240x320] [--episode DIR]
    python tools/demo.py --backend geometry --out outputs/demo_geometry     # make demo-geometry
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
PACKAGE_SRC = REPO / "ros2_ws" / "src" / "vln_heatmap"
sys.path[:0] = [str(REPO), str(PACKAGE_SRC)]

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from vln_core.atomic import atomic_write_text  # noqa: E402
from vln_core.config import load_config  # noqa: E402
from vln_core.data.episode import is_complete_episode, read_episode  # noqa: E402
from vln_core.train.streaming_eval import ExactHeatmaps, keyframe_cc  # noqa: E402
from vln_heatmap.session import (  # noqa: E402
    OutputCollector,
    percentile_summary,
    pick_domain_id,
    start_node,
    start_replay,
)

PARAMS_FILE = PACKAGE_SRC / "config" / "vln_heatmap.yaml"
MAX_OVERLAYS = 24


def step(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def real_rgbd_dir() -> Path:
    import os

    env = os.environ.get("VLN_REAL_RGBD_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "real_rgbd_box"


def make_episode(out: Path, frames: int, size: str) -> Path:
    """A simulated 30 Hz episode under ``out/sim`` (reused if complete), else the real sequence."""
    sim_dir = out / "sim"
    episode = sim_dir / "ep_000000"
    if is_complete_episode(episode):
        step(f"reusing simulated episode {episode}")
        return episode
    step(f"simulating one episode: {frames} frames at {size}, 30 Hz camera (training/collect.py)")
    proc = subprocess.run(
        [sys.executable, str(REPO / "training" / "collect.py"), "--episodes", "1", "--out", str(sim_dir),
         "--frames", str(frames), "--size", size, "--workers", "1", "sim.camera_rate_hz=30"],
        cwd=REPO, capture_output=True, text=True,
    )
    if proc.returncode == 0 and is_complete_episode(episode):
        return episode
    fallback = real_rgbd_dir()
    step(f"simulator failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-400:]}")
    if not fallback.is_dir():
        raise SystemExit(f"demo: no simulated episode and no real sequence at {fallback}")
    step(f"falling back to the real posed RGB-D sequence {fallback}")
    return fallback


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "demo")
    parser.add_argument("--episode", type=Path, default=None, help="replay this episode instead of simulating one")
    parser.add_argument("--frames", type=int, default=240, help="simulated frames (30 Hz camera: 8 s)")
    parser.add_argument("--size", default="240x320", help="simulated image size HxW")
    parser.add_argument("--params-file", type=Path, default=PARAMS_FILE)
    parser.add_argument("--inference-rate", type=float, default=None, help="override node.inference_rate_hz")
    parser.add_argument("--backend", default="model",
                        help="node.backend (default model: the learned backend from colour + odometry; geometry: RGB-D)")
    parser.add_argument("--depth", choices=["auto", "yes", "no"], default="auto",
                        help="publish depth (auto: only for the geometry and auto backends)")
    args = parser.parse_args(argv)
    publish_depth = args.depth == "yes" or (args.depth == "auto" and args.backend in ("geometry", "auto"))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("overlay_*.png"):
        old.unlink()

    episode_dir = args.episode or make_episode(out, args.frames, args.size)
    episode = read_episode(episode_dir)
    step(f"episode {episode_dir}: {len(episode)} frames {episode.image_size[1]}x{episode.image_size[0]}, "
         f"instruction: {episode.instruction or '(none)'}")

    overrides: dict = {}
    if args.inference_rate is not None:
        overrides["node.inference_rate_hz"] = float(args.inference_rate)
    if args.backend:
        overrides["node.backend"] = args.backend
    cfg = load_config(args.params_file, {k: v for k, v in overrides.items()})
    try:
        domain_id = pick_domain_id()  # the user's ROS_DOMAIN_ID when set, else a random free-looking one
    except ValueError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    origin = "from the environment" if os.environ.get("ROS_DOMAIN_ID", "").strip() else "picked at random"
    step(f"starting vln_heatmap_node (backend {cfg.node.backend}, {cfg.node.inference_rate_hz:g} Hz, "
         f"ROS_DOMAIN_ID={domain_id} {origin}, localhost only)")
    node = start_node(args.params_file, overrides, domain_id, out / "node.log")
    collector = OutputCollector(domain_id)
    replay = None
    try:
        if not collector.spin_until(lambda: bool(collector.diagnostics) or not node.running(), 120):
            raise SystemExit(f"demo: node did not come up:\n{node.log_text()[-2000:]}")
        if not node.running():
            raise SystemExit(f"demo: node exited:\n{node.log_text()[-2000:]}")
        step("node is up; replaying the episode into it (vln_heatmap_replay)")
        manifest_path = out / "replay_manifest.json"
        step("replay publishes colour, CameraInfo and odometry" + (" and depth" if publish_depth else " (no depth topic)"))
        replay = start_replay(episode_dir, args.params_file, domain_id, out / "replay.log", manifest_path,
                              [] if publish_depth else ["--no-depth"])
        last_report = time.monotonic()
        while replay.running():
            collector.spin_for(0.2)
            if time.monotonic() - last_report > 2.0:
                step(f"  {len(collector.outputs)} heatmap outputs so far")
                last_report = time.monotonic()
        collector.spin_for(2.0 / cfg.node.inference_rate_hz + 1.5)  # the last outputs and diagnostics
        if replay.proc.returncode != 0:
            raise SystemExit(f"demo: replay failed:\n{replay.log_text()[-2000:]}")
        step(f"replay done: {replay.log_text().strip().splitlines()[-1]}")
    finally:
        if replay is not None:
            replay.stop()
        node_exit = node.stop()
        collector.close()
    step(f"node stopped (exit code {node_exit})")

    manifest = json.loads((out / "replay_manifest.json").read_text())["frames"]
    stamp_to_index = {f["stamp_ns"]: f["index"] for f in manifest}
    summary = summarize(collector, manifest, stamp_to_index, cfg, episode_dir, node_exit)
    summary["depth_published"] = publish_depth
    exact = None
    if args.backend != "geometry" and episode.has_depth and len(collector.outputs):
        step("computing the exact heatmaps (geometry core, recorded depth + poses) for every output")
        exact = ExactHeatmaps(episode, cfg)
        summary["learned_vs_exact"] = compare_with_exact(collector, stamp_to_index, exact)
        cc = summary["learned_vs_exact"]["cc_mean_over_outputs"]
        step(f"learned vs exact heatmaps: CC mean {cc:.3f} over {len(collector.outputs)} outputs")
    written = write_overlays(collector, stamp_to_index, out, exact)
    summary["overlays"] = written
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    step(f"wrote {len(written)} overlay PNGs and summary.json to {out}")
    lat = summary["latency_stamp_to_output_ms"]
    step(f"input {summary['input_rate_hz']:.1f} Hz -> output {summary['output_rate_hz']:.2f} Hz "
         f"(configured {cfg.node.inference_rate_hz:g}); latency median {lat['median_ms']:.0f} ms, "
         f"p95 {lat['p95_ms']:.0f} ms; {summary['frames']['dropped_total']} frames dropped (newest wins)")
    return 0 if summary["outputs"] > 0 and node_exit == 0 else 1


def summarize(collector: OutputCollector, manifest: list[dict], stamp_to_index: dict[int, int], cfg, episode_dir: Path,
              node_exit: int) -> dict:
    outputs = collector.outputs
    stamps = [f["stamp_ns"] for f in manifest]
    duration_s = (stamps[-1] - stamps[0]) * 1e-9 if len(stamps) > 1 else 0.0
    received = [o.received_ns for o in outputs]
    output_rate = (len(received) - 1) / ((received[-1] - received[0]) * 1e-9) if len(received) > 1 else 0.0
    inputs_history = collector.status_history("inputs")
    node_rates = [float(s["values"].get("image_rate_hz", 0)) for s in inputs_history]
    streaming = [r for r in node_rates if r > 0]
    output_status = collector.latest_status("output") or {"values": {}}
    frames_status = collector.latest_status("frames") or {"values": {}}
    errors_status = collector.latest_status("errors") or {"values": {}, "message": ""}
    last = outputs[-1] if outputs else None
    return {
        "episode": str(episode_dir),
        "backend": cfg.node.backend,
        "frames_published": len(manifest),
        "frames_received_by_node": int((collector.latest_status("inputs") or {"values": {}})["values"].get("image_count", 0)),
        # frames a busy node could not take from its subscription queue (node.sensor_qos_depth)
        "frames_lost_before_node": len(manifest) - int((collector.latest_status("inputs") or {"values": {}})["values"].get("image_count", 0)),
        "input_rate_hz": (len(stamps) - 1) / duration_s if duration_s > 0 else 0.0,
        "node_measured_input_rate_hz_median": float(np.median(streaming)) if streaming else 0.0,
        "outputs": len(outputs),
        "output_rate_hz": output_rate,
        "configured_output_rate_hz": cfg.node.inference_rate_hz,
        # image stamp -> heatmap received here (stamps are wall-clock; includes the replay's
        # modelled camera latency and the DDS transfer)
        "latency_stamp_to_output_ms": percentile_summary([(o.received_ns - o.stamp_ns) * 1e-6 for o in outputs]),
        "node_stage_latency": {k: v for k, v in output_status["values"].items() if k.startswith("latency_")},
        "keyframes": {
            "count_last_output": len(last.keyframe_stamps) if last else 0,
            "configured": cfg.video.keyframes,
            "last_output_frame": stamp_to_index.get(last.stamp_ns) if last else None,
            "last_output_keyframe_frames": [stamp_to_index.get(s) for s in last.keyframe_stamps] if last else [],
            "last_output_keyframe_seqs": last.keyframe_indices if last else [],
        },
        "frames": {k: int(v) for k, v in frames_status["values"].items() if k.startswith("dropped")} or {"dropped_total": 0},
        "errors": errors_status["values"],
        "node_exit_code": node_exit,
    }


def compare_with_exact(collector: OutputCollector, stamp_to_index: dict[int, int], exact: ExactHeatmaps) -> dict:
    """Per output: Pearson CC (vln_core.metrics.correlation_coefficient) of each learned keyframe
    heatmap with the exact one, and their mean (NaN maps, e.g. a keyframe out of view in both, skipped)."""
    per_output = []
    for o in collector.outputs:
        if o.stamp_ns not in stamp_to_index or not all(s in stamp_to_index for s in o.keyframe_stamps):
            continue
        _, _, result = exact.result(o, stamp_to_index)
        per_output.append({
            "frame": stamp_to_index[o.stamp_ns],
            "keyframe_frames": [stamp_to_index[s] for s in o.keyframe_stamps],
            **keyframe_cc(o.heatmaps, result.heatmaps.heatmap),
        })
    means = [p["cc_mean"] for p in per_output if p["cc_mean"] is not None]
    return {
        "metric": "Pearson CC per keyframe heatmap, learned (node) vs exact (geometry core on recorded depth + poses)",
        "cc_mean_over_outputs": float(np.mean(means)) if means else float("nan"),
        "cc_median_over_outputs": float(np.median(means)) if means else float("nan"),
        "outputs_compared": len(per_output),
        "per_output": per_output,
    }


def _titled(rgb: np.ndarray, title: str) -> np.ndarray:
    bar = np.full((28, rgb.shape[1], 3), 32, np.uint8)
    cv2.putText(bar, title, (8, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, rgb], axis=0)


def side_by_side(learned_rgb: np.ndarray, exact_rgb: np.ndarray, cc: Optional[float]) -> np.ndarray:
    """The node's learned overlay beside the exact one (same current frame and keyframes)."""
    cc_text = "n/a" if cc is None else f"{cc:.2f}"
    left = _titled(learned_rgb, f"learned (node, colour + odometry), CC vs exact {cc_text}")
    right = _titled(exact_rgb, "exact (geometry core, recorded depth + poses)")
    h = max(left.shape[0], right.shape[0])
    pad = lambda im: np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0)))  # noqa: E731
    return np.concatenate([pad(left), np.full((h, 8, 3), 255, np.uint8), pad(right)], axis=1)


def exact_overlay(output, stamp_to_index: dict[int, int], exact: ExactHeatmaps) -> np.ndarray:
    """The mosaic the node would draw for the exact heatmaps (same labels, thumbnails and size)."""
    from vln_core.runtime.output import OVERLAY_MAX_WIDTH
    from vln_core.viz import overlay_mosaic

    current, keys, result = exact.result(output, stamp_to_index)
    rgb = current.rgb
    h, w = rgb.shape[:2]
    if w > OVERLAY_MAX_WIDTH:
        rgb = cv2.resize(rgb, (OVERLAY_MAX_WIDTH, max(1, round(h * OVERLAY_MAX_WIDTH / w))), interpolation=cv2.INTER_AREA)
    labels = ["current" if k.stamp_ns == current.stamp_ns else f"kf #{k.seq} ({(current.stamp_ns - k.stamp_ns) * 1e-9:.1f} s ago)"
              for k in keys]
    return overlay_mosaic(rgb, result.heatmaps, labels, [k.rgb for k in keys])


def write_overlays(collector: OutputCollector, stamp_to_index: dict[int, int], out: Path,
                   exact: Optional[ExactHeatmaps] = None) -> list[str]:
    """At most MAX_OVERLAYS overlay mosaics, evenly spaced over the run, plus the last one; with
    ``exact`` each is the node's (learned) mosaic beside the exact one."""
    overlays = collector.overlays
    if not overlays:
        return []
    by_stamp = {o.stamp_ns: o for o in collector.outputs}

    def picture(stamp: int, rgb: np.ndarray) -> np.ndarray:
        output = by_stamp.get(stamp)
        if exact is None or output is None or stamp not in stamp_to_index:
            return rgb
        _, _, result = exact.result(output, stamp_to_index)
        cc = keyframe_cc(output.heatmaps, result.heatmaps.heatmap)["cc_mean"]
        return side_by_side(rgb, exact_overlay(output, stamp_to_index, exact), cc)

    picks = sorted(set(np.linspace(0, len(overlays) - 1, min(MAX_OVERLAYS, len(overlays))).round().astype(int)))
    written = []
    for n, i in enumerate(picks):
        stamp, rgb = overlays[i]
        name = f"overlay_{n:02d}_frame{stamp_to_index.get(stamp, -1):04d}.png"
        cv2.imwrite(str(out / name), cv2.cvtColor(picture(stamp, rgb), cv2.COLOR_RGB2BGR))
        written.append(name)
    cv2.imwrite(str(out / "overlay_last.png"), cv2.cvtColor(picture(*overlays[-1]), cv2.COLOR_RGB2BGR))
    written.append("overlay_last.png")
    return written


if __name__ == "__main__":
    sys.exit(main())

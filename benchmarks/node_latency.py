#!/usr/bin/env python3
"""End-to-end latency and output rate of the vln_heatmap node on real ROS 2 middleware.

A replay process feeds 640x480 colour + 16UC1 depth + CameraInfo + odometry at 30 Hz (the real
posed RGB-D sequence, looped; ``--episode`` for another one) into the node process (geometry
backend by default; for the learned backends ``model`` / ``onnx`` / ``tensorrt`` colour +
CameraInfo + odometry only, no depth topic, as on a colour-only robot); this process subscribes
to the outputs and prints:

* end-to-end latency: image stamp -> heatmap message received here (the replay stamps images
  with the wall clock when it publishes them, camera latency 0), median and p95;
* output rate against the configured ``node.inference_rate_hz``; input rate seen by the node;
* frames received by the node / published, frames dropped (newest frame wins);
* the node's own per-stage latency (pairing, keyframe memory, backend, overlay).

Usage::

    python benchmarks/node_latency.py [--seconds 20] [--rate-hz 5] [--no-overlay] [--episode DIR]
    python benchmarks/node_latency.py --backend model      # colour + odometry only

The learned backends are judged against the targets of issue 9 (output >= 5 Hz, p95 < 250 ms);
``<out>/summary.json`` keeps the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_SRC = REPO / "ros2_ws" / "src" / "vln_heatmap"
sys.path[:0] = [str(REPO), str(PACKAGE_SRC)]

import numpy as np  # noqa: E402

from vln_core.config import load_config  # noqa: E402
from vln_heatmap.session import OutputCollector, percentile_summary, pick_domain_id, start_node, start_replay  # noqa: E402

PARAMS_FILE = PACKAGE_SRC / "config" / "vln_heatmap.yaml"
LEARNED_BACKENDS = ("model", "onnx", "tensorrt")
TARGET_RATE_HZ, TARGET_P95_MS = 5.0, 250.0  # issue 9, learned backends


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_episode = Path(os.environ.get("VLN_REAL_RGBD_DIR", REPO.parent / "shared" / "data" / "real_rgbd_box"))
    parser.add_argument("--episode", type=Path, default=default_episode)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to stream")
    parser.add_argument("--rate-hz", type=float, default=None, help="node.inference_rate_hz (default: params file)")
    parser.add_argument("--backend", default="geometry")
    parser.add_argument("--depth", choices=["auto", "yes", "no"], default="auto",
                        help="publish depth (auto: not for the learned backends model/onnx/tensorrt)")
    parser.add_argument("--no-overlay", action="store_true", help="node.publish_overlay=false")
    parser.add_argument("--overlay-subscriber", action="store_true",
                        help="subscribe to ~/overlay (the node draws the mosaic only for a subscriber, e.g. RViz)")
    parser.add_argument("--qos-depth", type=int, default=None, help="node.sensor_qos_depth")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_node_latency")
    args = parser.parse_args(argv)
    learned = args.backend in LEARNED_BACKENDS
    depth = args.depth == "yes" or (args.depth == "auto" and not learned)
    if not args.episode.is_dir():
        print(f"episode {args.episode} not found (set VLN_REAL_RGBD_DIR or pass --episode)", file=sys.stderr)
        return 2

    overrides: dict = {"node.backend": args.backend}
    if args.rate_hz is not None:
        overrides["node.inference_rate_hz"] = args.rate_hz
    if args.no_overlay:
        overrides["node.publish_overlay"] = False
    if args.qos_depth is not None:
        overrides["node.sensor_qos_depth"] = args.qos_depth
    cfg = load_config(PARAMS_FILE, overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    domain_id = pick_domain_id()
    overlay = "off" if not cfg.node.publish_overlay else "drawn (subscriber)" if args.overlay_subscriber else "not drawn (no subscriber)"
    print(f"node: backend {cfg.node.backend}, {cfg.node.inference_rate_hz:g} Hz, overlay {overlay}, heatmap grid {cfg.video.frame_size}, "
          f"{cfg.video.keyframes} keyframes, sensor queue {cfg.node.sensor_qos_depth}, inputs: colour + CameraInfo + "
          f"odometry{' + depth' if depth else ' (no depth topic)'}; CPU cores: {os.cpu_count()}, "
          f"load average: {os.getloadavg()[0]:.1f}", flush=True)
    node = start_node(PARAMS_FILE, overrides, domain_id, args.out / "node.log")
    collector = OutputCollector(domain_id, keep_overlays=False, subscribe_overlay=args.overlay_subscriber)
    replay = None
    try:
        if not collector.spin_until(lambda: bool(collector.diagnostics) or not node.running(), 120) or not node.running():
            print(f"node did not come up:\n{node.log_text()[-2000:]}", file=sys.stderr)
            return 1
        manifest = args.out / "manifest.json"
        replay = start_replay(args.episode, PARAMS_FILE, domain_id, args.out / "replay.log", manifest,
                              ["--loop", "--camera-latency", "0"] + ([] if depth else ["--no-depth"]))
        collector.spin_until(lambda: "replay: publishing" in replay.log_text() or not replay.running(), 120)
        # discard the first 2 s (keyframe memory filling, caches warming)
        collector.spin_for(2.0)
        warm = len(collector.outputs)
        t0 = time.monotonic()
        collector.spin_for(args.seconds)
        elapsed = time.monotonic() - t0
        outputs = collector.outputs[warm:]
        replay.stop()
        collector.spin_for(1.5)
    finally:
        if replay is not None:
            replay.stop()
        node.stop()
        collector.close()

    frames = json.loads(manifest.read_text())["frames"]
    latency = percentile_summary([(o.received_ns - o.stamp_ns) * 1e-6 for o in outputs])
    # outputs per second between the first and the last one in the window (n / window would be
    # biased by where the window boundaries fall between outputs)
    span_s = (outputs[-1].received_ns - outputs[0].received_ns) * 1e-9 if len(outputs) > 1 else 0.0
    output_rate = (len(outputs) - 1) / span_s if span_s > 0 else 0.0
    inputs = collector.latest_status("inputs") or {"values": {}}
    output_status = collector.latest_status("output") or {"values": {}}
    frames_status = collector.latest_status("frames") or {"values": {}}
    node_rates = [float(s["values"].get("image_rate_hz", 0)) for s in collector.status_history("inputs")]
    streaming = [r for r in node_rates if r > 0]
    received = int(inputs["values"].get("image_count", 0))

    print(f"streamed {elapsed:.1f} s: {len(frames)} frames published at 30 Hz, {received} received by the node "
          f"(input rate seen by the node: median {np.median(streaming) if streaming else 0:.1f} Hz)")
    # the replay publishes one odometry message per frame (best effort at the node): what share arrived
    odometry_received = int(inputs["values"].get("odometry_count", 0))
    odometry_share = odometry_received / len(frames) if frames else float("nan")
    print(f"odometry: {len(frames)} published at 30 Hz, {odometry_received} received by the node "
          f"({100 * odometry_share:.1f} %)")
    print(f"end-to-end latency (image stamp -> heatmap received): median {latency['median_ms']:.1f} ms, "
          f"p95 {latency['p95_ms']:.1f} ms, max {latency['max_ms']:.1f} ms (n={latency['n']})")
    print(f"output rate: {output_rate:.2f} Hz (configured {cfg.node.inference_rate_hz:g} Hz)")
    print("inputs as the node saw them last: " + ", ".join(
        f"{k}={v}" for k, v in inputs["values"].items() if k.endswith(("_rate_hz", "_count", "_age_s", "_lag_s"))))
    print(f"frames dropped (newest wins): {frames_status['values'].get('dropped_total', '?')} "
          f"({', '.join(f'{k}={v}' for k, v in frames_status['values'].items() if k.startswith('dropped_') and k != 'dropped_total')})")
    print("node stages:")
    for key, value in output_status["values"].items():
        if key.startswith("latency_"):
            print(f"  {key[len('latency_'):]:<18} {value}")
    backend_status = collector.latest_status("backend") or {"message": "", "values": {}}
    print(f"backend: {backend_status['message']}")
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.1f} (figures are only comparable on an idle machine)")
    summary = {
        "backend": args.backend, "depth_published": depth, "overlay": overlay, "seconds": elapsed, "outputs": len(outputs),
        "output_rate_hz": output_rate, "configured_rate_hz": cfg.node.inference_rate_hz,
        "latency_stamp_to_output_ms": latency, "frames_published": len(frames), "frames_received": received,
        "odometry_published": len(frames), "odometry_received": odometry_received, "odometry_received_share": odometry_share,
        "node_stages": {k[len("latency_"):]: v for k, v in output_status["values"].items() if k.startswith("latency_")},
        "backend_status": backend_status["message"], "load_average_end": load, "cpu_cores": os.cpu_count(),
    }
    if learned:
        # a node timed at exactly the target rate measures a hair under it (timer jitter over ~100
        # periods: 4.99 Hz at 5 Hz), so keeping up means within 2% of it; run --rate-hz 10 for headroom
        ok = (output_rate >= 0.98 * TARGET_RATE_HZ and cfg.node.inference_rate_hz >= TARGET_RATE_HZ
              and latency["p95_ms"] < TARGET_P95_MS)
        summary["targets"] = {"rate_hz": TARGET_RATE_HZ, "rate_tolerance": 0.02, "p95_ms": TARGET_P95_MS, "met": ok}
        print(f"targets (learned backends): output >= {TARGET_RATE_HZ:g} Hz (2% timer tolerance) and p95 < "
              f"{TARGET_P95_MS:g} ms: {'met' if ok else 'NOT met'} ({output_rate:.2f} Hz at a "
              f"{cfg.node.inference_rate_hz:g} Hz timer, p95 {latency['p95_ms']:.0f} ms)")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0 if outputs else 1


if __name__ == "__main__":
    sys.exit(main())

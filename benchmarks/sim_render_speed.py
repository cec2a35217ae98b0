#!/usr/bin/env python3
"""Frames per second of the simulator's CPU ray caster at 224x224 and 640x480.

Renders real episode viewpoints (planned trajectories in procedural scenes) and reports, per
image size: ray casting only (depth + ids), full render (casting + texturing + lighting and
shadows), and full render + sensor model (what ``training/collect.py`` does per frame, minus
PNG writing). Single process, single thread.

Usage::

    python benchmarks/sim_render_speed.py [--scenes 3] [--frames 10] [--sizes 224x224 480x640]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from vln_core.config import load_config  # noqa: E402
from vln_core.geometry.camera import PinholeCamera  # noqa: E402
from vln_core.sim.collect import build_episode  # noqa: E402
from vln_core.sim.render import RayCaster  # noqa: E402
from vln_core.sim.sensor import SensorState, apply_sensor  # noqa: E402
from vln_core.sim.trajectory import base_poses, camera_mount, camera_poses  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--frames", type=int, default=10, help="frames timed per scene and size")
    parser.add_argument("--sizes", nargs="+", default=["224x224", "480x640"], help="HxW")
    args = parser.parse_args()
    cfg = load_config(None, ["sim.frames_per_episode=100"]).sim
    plans = [build_episode(seed, cfg) for seed in range(args.scenes)]
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; numpy {np.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}")
    for text in args.sizes:
        H, W = (int(v) for v in text.split("x"))
        camera = PinholeCamera.from_hfov(cfg.hfov_deg, W, H)
        t_cast = t_render = t_sensor = 0.0
        n = 0
        prims = []
        for seed, plan in enumerate(plans):
            caster = RayCaster(plan.scene, camera)
            prims.append(len(plan.scene.primitives))
            T_wc = camera_poses(base_poses(plan.trajectory.xy, plan.trajectory.yaw), camera_mount(cfg.camera_height_m))
            pick = np.linspace(0, len(T_wc) - 1, args.frames).round().astype(int)
            rng = np.random.default_rng(seed)
            state = SensorState()
            caster.render(T_wc[0])  # warm-up
            for i in pick:
                t0 = time.perf_counter()
                caster.cast(T_wc[i])
                t1 = time.perf_counter()
                res = caster.render(T_wc[i])
                t2 = time.perf_counter()
                apply_sensor(res.radiance, plan.scene.sensor, rng, state)
                t3 = time.perf_counter()
                t_cast += t1 - t0
                t_render += t2 - t1
                t_sensor += t3 - t2
                n += 1
        print(f"{H}x{W}: {n} frames over {len(plans)} scenes ({min(prims)}-{max(prims)} primitives): "
              f"cast {n / t_cast:6.1f} fps ({1000 * t_cast / n:6.1f} ms) | render {n / t_render:6.1f} fps "
              f"({1000 * t_render / n:6.1f} ms) | render+sensor {n / (t_render + t_sensor):6.1f} fps "
              f"({1000 * (t_render + t_sensor) / n:6.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

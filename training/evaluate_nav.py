#!/usr/bin/env python3
"""Closed-loop navigation in unseen simulated homes: does a robot that follows the node reach the goal?

    python training/evaluate_nav.py --episodes 50 --seed 900000 --out outputs/nav
    python training/evaluate_nav.py --episodes 50 --seed 900000 --out outputs/nav_rgbd --backend auto --depth

Homes come from seeds no training episode used (``training/collect.py`` drew the training,
validation and evaluation sets from seeds 0, 400000 and 500000 on; the default here is 900000);
each episode's instruction names a goal object (and the rooms on the way), and its start is at
least 3 m of planner path from the goal. Every ``--dt`` seconds the simulator renders the camera
(``sim.image_size``, colour + odometry; depth too with ``--depth``), and each method decides:

* ``model``: the node's runtime and backend (``--backend``, the node's settings) give waypoints;
  the robot follows them and stops when they end at the robot;
* ``memory``: the same runtime's goal heatmap and the view's depth (measured with ``--depth``,
  else the backend's) build a map of what the robot has seen and where the goal was seen
  (``vln_core/nav``); the robot looks around once, explores the map's frontier until the goal
  shows, plans to it on the map and stops near it. Needs a goal head that gives per-pixel
  probabilities (``model.arch_overrides.goal_head: mask``, ``training/train_goal.py``);
* ``goal_heatmap_greedy``: the same runtime's goal heatmap: turn toward its peak, go forward;
* ``random_walk``, ``forward_explorer`` (straight until blocked, then turn): baselines;
* ``shortest_path_oracle``: the planner's path on the true map.

A collision stops the motion of that step and is counted. Metrics (VLN-CE): success (ended
within 1 m of the goal object), SPL, navigation error, oracle success, stop rate, collisions,
steps, time per step (render vs policy), per goal category (``vln_core/sim/closed_loop.py``).

Writes ``--out/nav.json`` (settings, every metric per method, every episode) and ``--out/nav.md``
(the table), and ``--out/episode_<seed>[_<method>].gif`` for the first ``--gifs`` episodes of the
``--gif-methods`` (default ``model``): the top-down map with the path and the goal beside the camera with the goal heatmap and
the waypoints. Bad input exits with status 2 and one line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vln_core.atomic import atomic_write_text  # noqa: E402
from vln_core.config import ConfigError, add_config_arguments, config_from_args  # noqa: E402
from vln_core.errors import InputError  # noqa: E402

NODE_PARAMS = REPO / "ros2_ws" / "src" / "vln_heatmap" / "config" / "vln_heatmap.yaml"
METHODS = ("model", "memory", "goal_heatmap_greedy", "random_walk", "forward_explorer", "shortest_path_oracle")
#: Seeds from here on are not used by any training, validation or evaluation set of collect.py.
DEFAULT_SEED = 900000


def _table(summaries: dict) -> str:
    head = ("| method | success | SPL | nav. error m | oracle success | stop rate | collisions | steps | "
            "render ms/step | policy ms/step |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    rows = []
    for name, s in summaries.items():
        rows.append(f"| {name} | {s['success']:.2f} | {s['spl']:.2f} | {s['navigation_error_m']:.2f} | "
                    f"{s['oracle_success']:.2f} | {s['stop_rate']:.2f} | {s['collisions_per_episode']:.1f} | "
                    f"{s['steps']:.1f} | {s['render_ms_per_step']:.0f} | {s['policy_ms_per_step']:.0f} |")
    cats = sorted({c for s in summaries.values() for c in s.get("per_category", {})})
    lines = ["", "Success per goal category (episodes):", "",
             "| category | " + " | ".join(summaries) + " |", "| --- |" + " --- |" * len(summaries)]
    for cat in cats:
        cells = []
        for s in summaries.values():
            c = s["per_category"].get(cat)
            cells.append(f"{c['success']:.2f} ({c['episodes']})" if c else "-")
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default=str(NODE_PARAMS))
    parser.add_argument("--episodes", type=int, default=50, help="episodes (default 50)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"first home seed (default {DEFAULT_SEED})")
    parser.add_argument("--out", required=True, help="output folder for nav.json, nav.md and the GIFs")
    parser.add_argument("--backend", default="model", help="node.backend for model / goal_heatmap_greedy (default model)")
    parser.add_argument("--checkpoint", default=None, help="node.model_path (default: the shipped model)")
    parser.add_argument("--depth", action="store_true", help="an RGB-D robot: depth goes to the node too")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--max-steps", type=int, default=60, help="decisions per episode (default 60)")
    parser.add_argument("--dt", type=float, default=0.5, help="seconds between decisions (default 0.5)")
    parser.add_argument("--gifs", type=int, default=3, help="first episodes drawn as GIFs (default 3)")
    parser.add_argument("--gif-methods", default="model", help="methods whose episodes are drawn (default model)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"evaluate_nav: {message}", file=sys.stderr)
        return 2

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    gif_methods = {m.strip() for m in args.gif_methods.split(",") if m.strip()}
    unknown = sorted((set(methods) | gif_methods) - set(METHODS))
    if unknown or not methods:
        return fail(f"unknown method(s) {unknown or args.methods!r}; choose from {','.join(METHODS)}")
    if args.episodes < 1 or args.max_steps < 1 or not 0.05 <= args.dt <= 2.0 or args.gifs < 0 or args.seed < 0:
        return fail("--episodes and --max-steps must be >= 1, --dt in [0.05, 2] s, --gifs and --seed >= 0")
    try:
        args.overrides = [f"node.backend={args.backend}", "node.publish_overlay=false", "node.learned_mode=rgb_pose",
                          *([f"node.model_path={args.checkpoint}"] if args.checkpoint else []), *args.overrides]
        cfg = config_from_args(args)
    except (InputError, ConfigError) as exc:
        return fail(str(exc).splitlines()[0])

    import copy
    import math

    import numpy as np
    from tqdm import tqdm

    from vln_core.backends import BackendUnavailableError, create_backend
    from vln_core.runtime import NavigationRuntime
    from vln_core.sim import closed_loop as cl

    sim = cfg.sim
    cfg.node.camera_mount = tuple(cl.node_camera_mount(sim))  # the runtime sees the simulated robot's camera
    max_speed, max_turn = sim.max_speed_mps, math.radians(sim.max_turn_rate_dps)
    backend = None
    if {"model", "memory", "goal_heatmap_greedy"} & set(methods):
        try:
            backend = create_backend(cfg.node.backend, cfg)
        except (BackendUnavailableError, InputError, ConfigError) as exc:
            return fail(str(exc).splitlines()[0])

    def runtime():
        return NavigationRuntime(cfg, backend=backend)

    memory_cfg = copy.deepcopy(cfg)
    memory_cfg.node.waypoint_source = "memory"
    memory_cfg.node.robot_radius_m = sim.robot_radius_m

    def memory_runtime():
        return NavigationRuntime(memory_cfg, backend=backend)

    policies = {
        "model": lambda: cl.WaypointPolicy(runtime, max_speed, max_turn),
        "memory": lambda: cl.WaypointPolicy(memory_runtime, max_speed, max_turn, name="memory"),
        "goal_heatmap_greedy": lambda: cl.GoalHeatmapGreedy(runtime, max_speed, max_turn),
        "random_walk": lambda: cl.RandomWalk(max_speed, max_turn, seed=args.seed),
        "forward_explorer": lambda: cl.ForwardExplorer(max_speed, max_turn, sim.robot_radius_m + 0.02, seed=args.seed),
        "shortest_path_oracle": lambda: cl.ShortestPathOracle(max_speed, max_turn),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list] = {m: [] for m in methods}
    skipped: list[int] = []
    gifs: list[str] = []
    t_start = time.monotonic()
    bar = tqdm(total=args.episodes * len(methods), unit="run", disable=args.no_progress, desc="closed loop")
    seed = args.seed
    done = 0
    built = {m: policies[m]() for m in methods}
    while done < args.episodes:
        try:
            episode = cl.make_nav_episode(seed, sim)
        except RuntimeError:  # no feasible goal in this home
            episode = None
        if episode is None:
            skipped.append(seed)
            seed += 1
            continue
        for name in methods:
            frames: list = []
            driven: list = []

            def draw(sim_state, obs, policy, frames=frames, driven=driven):
                from vln_core.sim.nav_viz import nav_frame

                driven.append(sim_state.xy.copy())
                last = getattr(policy, "last_output", None)
                frames.append(nav_frame(episode, np.array(driven), sim_state.yaw, obs.rgb, obs.K, sim_state.T_base_cam,
                                        None if last is None else last.goal_heatmap,
                                        None if last is None else last.waypoints,
                                        f"{name}, seed {episode.seed}, t={obs.t:.1f}s: {episode.instruction}"))

            record = name in gif_methods and done < args.gifs
            result = cl.run_episode(built[name], episode, sim, args.max_steps, args.dt, with_depth=args.depth,
                                    on_step=draw if record else None)
            results[name].append(result)
            if record and frames:
                from vln_core.sim.nav_viz import write_gif

                suffix = "" if name == "model" else f"_{name}"
                gifs.append(str(write_gif(frames, out / f"episode_{episode.seed}{suffix}.gif")))
            bar.update(1)
            bar.set_postfix_str(f"{name} {'ok' if result.success else 'miss'}")
        done += 1
        seed += 1
    bar.close()
    for policy in built.values():
        if hasattr(policy, "close"):
            policy.close()

    summaries = {name: cl.summarize(rs) for name, rs in results.items()}
    report = {
        "settings": {"episodes": args.episodes, "first_seed": args.seed, "seeds_skipped": skipped,
                     "backend": cfg.node.backend if backend is not None else None, "depth": args.depth,
                     "max_steps": args.max_steps, "dt_s": args.dt, "image_size": list(sim.image_size),
                     "success_m": cl.SUCCESS_M, "robot_radius_m": sim.robot_radius_m,
                     "model_path": cfg.node.model_path or "shipped", "seconds": round(time.monotonic() - t_start, 1)},
        "methods": summaries,
        "episodes": {name: [r.as_dict() for r in rs] for name, rs in results.items()},
        "gifs": gifs,
    }
    atomic_write_text(out / "nav.json", json.dumps(report, indent=1))
    table = _table(summaries)
    atomic_write_text(out / "nav.md", f"# Closed-loop navigation, {args.episodes} unseen homes (seeds {args.seed}+)\n\n"
                      + table)
    print(table)
    print(f"wrote {out / 'nav.json'}, {out / 'nav.md'} and {len(gifs)} GIF(s) in {report['settings']['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Closed-loop navigation (vln_core/sim/closed_loop.py, training/evaluate_nav.py).

Real parts throughout: the procedural homes, the ray caster, the occupancy grid, the node's
runtime with the shipped model. The oracle that follows the planner's path must reach the goal
without a collision; a policy that does not look gets no rendered image; a robot driven into a
wall must stop there and count the collision; the
metrics follow their definitions; the CLI writes nav.json, nav.md and a GIF, and exits 2 with one
line on bad input.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vln_core.config import SimConfig
from vln_core.sim import closed_loop as cl

REPO = Path(__file__).resolve().parents[1]
SEED = 900000
CFG = SimConfig(image_size=(96, 96))


@pytest.fixture(scope="module")
def episode():
    seed = SEED
    while (ep := cl.make_nav_episode(seed, CFG)) is None:
        seed += 1
    return ep


def test_episode_is_from_an_unseen_seed_with_a_named_goal_and_a_long_enough_path(episode):
    assert episode.shortest_m >= 3.0
    assert cl.path_length(episode.shortest_path) == pytest.approx(episode.shortest_m)
    assert episode.goal.category in episode.instruction or episode.goal.category.split()[-1] in episode.instruction
    assert cl.goal_distance(episode.goal, episode.start_xy) > cl.SUCCESS_M
    assert cl.goal_distance(episode.goal, episode.goal.position[:2]) == 0.0  # inside the footprint


def test_the_shortest_path_oracle_reaches_the_goal_without_collisions(episode):
    max_turn = math.radians(CFG.max_turn_rate_dps)
    result = cl.run_episode(cl.ShortestPathOracle(CFG.max_speed_mps, max_turn), episode, CFG, max_steps=80, dt=0.5)
    assert result.success and result.stopped and result.collisions == 0, result
    assert result.navigation_error_m <= cl.SUCCESS_M
    # SPL: the oracle drives about the planner's length (pure pursuit cuts corners a little)
    assert 0.7 <= result.spl <= 1.0 and result.path_m >= 0.8 * episode.shortest_m
    assert len(result.trajectory) == result.steps


def test_a_policy_that_does_not_look_gets_no_image_and_one_that_looks_does(episode):
    class Recorder:
        name = "recorder"

        def __init__(self, uses_camera):
            self.uses_camera, self.images = uses_camera, []

        def reset(self, episode, sim):
            pass

        def act(self, obs):
            self.images.append(obs.rgb)
            return cl.Command(w=1.0)

    blind, looking = Recorder(False), Recorder(True)
    for policy in (blind, looking):
        cl.run_episode(policy, episode, CFG, max_steps=3, dt=0.5, with_depth=True)
    assert all(image is None for image in blind.images)
    assert all(image.shape == (96, 96, 3) for image in looking.images)
    # a GIF frame shows the view: with on_step the blind policy's episode is rendered too
    drawn = []
    cl.run_episode(Recorder(False), episode, CFG, max_steps=2, dt=0.5, on_step=lambda s, o, p: drawn.append(o.rgb))
    assert all(image is not None for image in drawn) and len(drawn) == 2


def test_driving_into_a_wall_stops_there_and_counts_collisions(episode):
    sim = cl.NavSimulator(episode, CFG)
    collisions = sum(sim.move(cl.Command(v=CFG.max_speed_mps), 0.5) for _ in range(200))
    assert collisions > 0
    assert float(episode.grid.clearance_at(sim.xy)) >= CFG.robot_radius_m  # never inside an obstacle
    before = sim.xy.copy()
    assert sim.move(cl.Command(v=CFG.max_speed_mps), 0.5)  # still against the wall
    assert np.allclose(sim.xy, before)
    assert not sim.move(cl.Command(w=1.0), 0.5)  # turning in place is free


def test_summary_metrics_follow_their_definitions():
    def result(success, spl, cat):
        return cl.EpisodeResult(seed=0, policy="p", goal_category=cat, instruction="", success=success, spl=spl,
                                navigation_error_m=0.5, oracle_success=True, stopped=success, collisions=1, steps=10,
                                path_m=4.0, shortest_m=3.0, render_ms=5.0, policy_ms=7.0)

    s = cl.summarize([result(True, 0.75, "chair"), result(False, 0.0, "chair"), result(True, 1.0, "bed")])
    assert s["success"] == pytest.approx(2 / 3) and s["spl"] == pytest.approx(1.75 / 3)
    assert s["per_category"] == {"bed": {"episodes": 1, "success": 1.0, "spl": 1.0},
                                 "chair": {"episodes": 2, "success": 0.5, "spl": 0.375}}
    assert s["collisions_per_episode"] == 1.0 and s["policy_ms_per_step"] == 7.0


def test_cli_runs_the_model_and_the_baselines_and_writes_the_report(tmp_path):
    out = tmp_path / "nav"
    done = subprocess.run([sys.executable, str(REPO / "training" / "evaluate_nav.py"), "--episodes", "1", "--seed",
                           str(SEED), "--out", str(out), "--max-steps", "4", "--gifs", "1", "--no-progress",
                           "sim.image_size=[96, 96]"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "nav.json").read_text())
    assert set(report["methods"]) == {"model", "memory", "goal_heatmap_greedy", "random_walk", "forward_explorer",
                                      "shortest_path_oracle"}
    for name, summary in report["methods"].items():
        assert summary["episodes"] == 1 and 0.0 <= summary["success"] <= 1.0, name
        assert report["episodes"][name][0]["steps"] <= 4
    assert report["methods"]["model"]["policy_ms_per_step"] > 0  # the node's runtime ran
    # the shipped goal head gives no per-pixel probabilities: the memory navigator turns to look, then explores
    assert report["episodes"]["memory"][0]["steps"] == 4 and not report["episodes"]["memory"][0]["stopped"]
    rows = [line for line in (out / "nav.md").read_text().splitlines() if line.startswith("| model |")]
    assert len(rows) == 1 and "Success per goal category" in (out / "nav.md").read_text()
    gif = out / f"episode_{report['episodes']['model'][0]['seed']}.gif"
    assert report["gifs"] == [str(gif)] and gif.read_bytes()[:6] == b"GIF89a"


@pytest.mark.parametrize("args,message", [
    (["--methods", "model,teleport"], "unknown method"),
    (["--episodes", "0"], "--episodes"),
    (["--backend", "no_such_backend"], "no_such_backend"),
])
def test_cli_bad_input_is_exit_2_and_one_line(tmp_path, args, message):
    done = subprocess.run([sys.executable, str(REPO / "training" / "evaluate_nav.py"), "--out", str(tmp_path / "x"),
                           "--no-progress", *args], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ imitation of the planner
def test_planner_waypoints_walk_the_path_in_the_base_frame():
    from vln_core.sim.trajectory import base_poses
    from vln_core.train.nav_imitation import WAYPOINT_SPACING_M, planner_waypoints

    # the robot at (1, 2) facing +y (yaw 90 deg); the path goes 0.5 m along +y, then 0.3 m along -x
    T = base_poses(np.array([[1.0, 2.0]]), np.array([math.pi / 2]))[0]
    path = np.array([[1.0, 2.0], [1.0, 2.5], [0.7, 2.5]])
    wp = planner_waypoints(path, T)
    assert wp.shape == (20, 2)
    assert np.allclose(wp[0], [WAYPOINT_SPACING_M, 0.0], atol=1e-6)  # straight ahead first
    assert np.allclose(wp[9], [0.5, 0.0], atol=1e-6)  # the corner, 10 x 0.05 m along
    assert np.allclose(wp[15], [0.5, 0.3], atol=1e-6)  # then to the left (-x world = +y base)
    assert np.allclose(wp[16:], [0.5, 0.3], atol=1e-6)  # the end repeats: stop there


def test_the_visual_waypoint_head_reads_the_view_not_the_past_and_loads_at_its_recorded_size(tmp_path):
    import torch

    from vln_core.config import config_to_dict, load_config
    from vln_core.models import build_model
    from vln_core.models.shipped import load_model_checkpoint
    from vln_core.train.checkpoint import save_checkpoint

    cfg = load_config(None, ["model.arch_overrides.waypoint_head=visual", "video.frame_size=[64, 64]"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    head = model.waypoint_head
    torch.nn.init.normal_(head.mlp[-1].weight, std=0.1)
    f32 = torch.randn(2, 128, 2, 2)
    instr = torch.randn(2, 64)
    intent = torch.ones(2, dtype=torch.long)
    with torch.no_grad():
        a = head(torch.zeros(2, 16, 4), intent, instr, f32)
        b = head(torch.randn(2, 16, 4), intent, instr, f32)  # another past: the same waypoints
        c = head(torch.zeros(2, 16, 4), intent, instr, f32.flip(-1))  # the view mirrored: other waypoints
    assert torch.equal(a, b) and not torch.allclose(a, c)
    save_checkpoint(tmp_path / "v.pt", {"model": model.state_dict(), "config": config_to_dict(cfg)})
    plain = load_config(None, ["video.frame_size=[64, 64]"])  # a node config without the override
    loaded, _ = load_model_checkpoint(tmp_path / "v.pt", plain)
    assert loaded.waypoint_head.kind == "visual"
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_imitate_nav_cli_trains_the_visual_head_and_keeps_everything_else(tmp_path):
    import torch

    from vln_core.models.shipped import SHIPPED_CHECKPOINT, load_model_checkpoint

    out = tmp_path / "head"
    done = subprocess.run([sys.executable, str(REPO / "training" / "imitate_nav.py"), "--out", str(out), "--homes", "2",
                           "--val-homes", "1", "--states-per-home", "6", "--epochs", "3", "--threads", "1",
                           "--dagger-homes", "1", "--dagger-steps", "3", "--no-progress"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads((out / "imitation.json").read_text())
    assert stats["train_states"] >= 6 and stats["val_l1"] <= stats["val_l1_before"]
    assert stats["dagger_homes"] == 1 and 1 <= stats["dagger_states"] <= 3  # the states its own rollout visited
    trained, meta = load_model_checkpoint(out / "checkpoint.pt")
    shipped, shipped_meta = load_model_checkpoint(SHIPPED_CHECKPOINT)
    assert meta["train_median_depth_m"] == shipped_meta["train_median_depth_m"] > 0
    assert trained.waypoint_head.kind == "visual" and shipped.waypoint_head.kind == "cv_residual"
    for key, value in shipped.state_dict().items():  # heatmaps, depth, poses and goal: the shipped weights
        if not key.startswith("waypoint_head."):
            assert torch.equal(trained.state_dict()[key], value), key
    bad = subprocess.run([sys.executable, str(REPO / "training" / "imitate_nav.py"), "--out", str(tmp_path / "x"),
                          "--init", str(tmp_path / "missing.pt")], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert bad.returncode == 2 and "missing.pt" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

"""Waypoints worth following: the embedded model's waypoint head imitates the planner.

The shipped waypoint head learned the driven trajectories of the collector as a residual on
constant velocity; in closed loop it extrapolates the robot's own motion (from rest: rest), so a
robot following it never leaves the start (``training/evaluate_nav.py``). Here a ``visual`` head
(:class:`vln_core.models.reprojection_model.WaypointHead`: the view's features on a 2x4 grid and
the instruction, no past trajectory) is trained to give, at a robot pose, the next 20 positions
of the planner's shortest path from that pose to the goal (0.05 m apart: 0.1 s at 0.5 m/s; the
path's end repeated when it is shorter: stop).

States (:func:`collect_states`): the homes of training seeds, poses along the planner's path from
the episode's start, each with a lateral offset and a heading error (so the head also learns to
come back: the states a policy that drifts visits, a first DAgger step without rollouts), kept
where the robot fits. The frozen encoder's 1/32 features of each rendered view and the
instruction's embedding are computed once; only the head trains (:func:`train_head`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from vln_core.config import SimConfig
from vln_core.preprocess import preprocess_frames
from vln_core.nav.navigator import WAYPOINT_SPACING_M
from vln_core.nav.navigator import path_waypoints as planner_waypoints
from vln_core.sim.closed_loop import LOOKAHEAD_M, NavSimulator, make_nav_episode, pursue, shortest_path_to_goal

__all__ = ["ImitationStates", "training_homes", "planner_waypoints", "collect_states", "collect_rollout_states", "merge_states", "subset",
           "train_head", "WAYPOINT_SPACING_M"]

@dataclass
class ImitationStates:
    """Inputs and targets of the head for ``S`` states."""

    f32: torch.Tensor  # (S, C, h, w) the frozen encoder's 1/32 features of the rendered view
    instruction: torch.Tensor  # (S, I) the instruction's embedding
    waypoints: torch.Tensor  # (S, 20, 2) the planner's next positions, base frame (x forward, y left)
    seeds: np.ndarray  # (S,) the home of each state


def training_homes(first_seed: int, homes_wanted: int, sim_cfg: SimConfig, skip: Iterable[int] = ()):
    """``(seed, episode)`` for ``homes_wanted`` homes from ``first_seed`` on; seeds in ``skip``
    (e.g. the validation homes) and seeds without an episode are skipped, at most 3x as many
    tried."""
    used = 0
    skip = set(skip)
    for seed in range(first_seed, first_seed + 3 * homes_wanted + len(skip)):
        if used >= homes_wanted:
            return
        if seed in skip:
            continue
        try:
            episode = make_nav_episode(seed, sim_cfg)
        except RuntimeError:  # no feasible goal in this home
            continue
        if episode is not None:
            used += 1
            yield seed, episode


def collect_states(first_seed: int, homes_wanted: int, sim_cfg: SimConfig, model: torch.nn.Module,
                   states_per_home: int = 20, rng: Optional[np.random.Generator] = None,
                   progress: Optional[Callable[[int], None]] = None) -> ImitationStates:
    """Render states in ``homes_wanted`` homes from seed ``first_seed`` on (see the module doc;
    seeds without an episode are skipped, at most 3x as many tried) and encode them with
    ``model`` (the embedded model, frozen)."""
    rng = rng or np.random.default_rng(0)
    clearance = sim_cfg.robot_radius_m + sim_cfg.clearance_margin_m
    f32s, instructions, targets, homes = [], [], [], []
    for seed, episode in training_homes(first_seed, homes_wanted, sim_cfg):
        sim = NavSimulator(episode, sim_cfg, seed=seed)
        path = episode.shortest_path
        ids, mask = model.tokenizer.encode([episode.instruction], model.cfg.model.max_instruction_length)
        with torch.no_grad():
            instruction = model.instruction_vector(ids, mask.bool())[0]
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
        for _ in range(states_per_home):
            s = rng.uniform(0.0, arc[-1])
            i = int(np.searchsorted(arc, s, side="right") - 1)
            i = min(i, len(path) - 2)
            heading = math.atan2(path[i + 1, 1] - path[i, 1], path[i + 1, 0] - path[i, 0])
            base = path[i] + (s - arc[i]) * np.array([math.cos(heading), math.sin(heading)])
            xy = base + rng.normal(0.0, 0.25) * np.array([-math.sin(heading), math.cos(heading)])
            if float(episode.grid.clearance_at(xy)) < clearance:
                xy = base
            yaw = heading + rng.normal(0.0, math.radians(35.0))
            route = shortest_path_to_goal(episode.grid, xy, episode.goal, clearance)
            if route is None:
                continue
            sim.xy, sim.yaw = xy.copy(), float(yaw)
            obs = sim.observe(0.0)
            pre = preprocess_frames([obs.rgb], None, obs.K, model.frame_size)
            with torch.no_grad():
                f32s.append(model.encode_frames(pre.frames).f32[0])
            instructions.append(instruction)
            targets.append(torch.from_numpy(planner_waypoints(route, obs.T_odom_base)))
            homes.append(seed)
        if progress is not None:
            progress(1)
    if not f32s:
        raise RuntimeError("no imitation state could be made from the given seeds")
    return ImitationStates(torch.stack(f32s), torch.stack(instructions), torch.stack(targets), np.asarray(homes))


def subset(states: ImitationStates, keep: np.ndarray) -> ImitationStates:
    """The states where ``keep`` (bool ``(S,)``) is True."""
    idx = torch.from_numpy(np.flatnonzero(keep))
    return ImitationStates(states.f32[idx], states.instruction[idx], states.waypoints[idx], states.seeds[keep])


def merge_states(a: ImitationStates, b: ImitationStates) -> ImitationStates:
    """Both sets of states in one."""
    return ImitationStates(torch.cat([a.f32, b.f32]), torch.cat([a.instruction, b.instruction]),
                           torch.cat([a.waypoints, b.waypoints]), np.concatenate([a.seeds, b.seeds]))


def collect_rollout_states(first_seed: int, homes_wanted: int, sim_cfg: SimConfig, model: torch.nn.Module,
                           steps: int = 30, dt: float = 0.5,
                           progress: Optional[Callable[[int], None]] = None) -> ImitationStates:
    """DAgger: drive ``model``'s own waypoint head (pure pursuit, as ``training/evaluate_nav.py``
    does) in ``homes_wanted`` homes from ``first_seed`` on, and label every state it visits with
    the planner's waypoints from there: the states a drifting, wall-scraping policy gets into are
    the ones it must learn to leave."""
    # the planner keeps robot radius + margin; a robot scraping a wall has less, yet still fits:
    # its route out is planned with the radius alone (those are the states that need a label most)
    clearance = sim_cfg.robot_radius_m + sim_cfg.clearance_margin_m
    tight = sim_cfg.robot_radius_m - 0.05
    max_speed, max_turn = sim_cfg.max_speed_mps, math.radians(sim_cfg.max_turn_rate_dps)
    past, intent = torch.zeros(1, 16, 4), torch.ones(1, dtype=torch.long)
    f32s, instructions, targets, homes = [], [], [], []
    for seed, episode in training_homes(first_seed, homes_wanted, sim_cfg):
        sim = NavSimulator(episode, sim_cfg, seed=seed)
        ids, mask = model.tokenizer.encode([episode.instruction], model.cfg.model.max_instruction_length)
        with torch.no_grad():
            instruction = model.instruction_vector(ids, mask.bool())
        for step in range(steps):
            obs = sim.observe(step * dt)
            pre = preprocess_frames([obs.rgb], None, obs.K, model.frame_size)
            with torch.no_grad():
                f32 = model.encode_frames(pre.frames).f32
                wp = model.waypoint_head(past, intent, instruction, f32)[0].numpy()
            route = shortest_path_to_goal(episode.grid, sim.xy, episode.goal, clearance)
            if route is None:
                route = shortest_path_to_goal(episode.grid, sim.xy, episode.goal, tight)
            if route is not None:
                f32s.append(f32[0])
                instructions.append(instruction[0])
                targets.append(torch.from_numpy(planner_waypoints(route, obs.T_odom_base)))
                homes.append(seed)
            far = np.flatnonzero(np.linalg.norm(wp, axis=1) >= LOOKAHEAD_M)
            sim.move(pursue(wp[far[0]] if len(far) else wp[-1], max_speed, max_turn), dt)
        if progress is not None:
            progress(1)
    if not f32s:
        raise RuntimeError("no rollout state could be labelled")
    return ImitationStates(torch.stack(f32s), torch.stack(instructions), torch.stack(targets), np.asarray(homes))


def train_head(head: torch.nn.Module, train: ImitationStates, val: ImitationStates, epochs: int = 60,
               lr: float = 2e-3, batch: int = 64, seed: int = 0,
               progress: Optional[Callable[[int, float, float], None]] = None) -> dict[str, float]:
    """Fit ``head`` (a ``visual`` :class:`WaypointHead`) to the planner's waypoints (mean L1 per
    point, metres); keeps the weights of the epoch with the lowest validation error. Returns
    ``{"train_l1", "val_l1", "val_l1_before", "best_epoch"}``."""
    gen = torch.Generator().manual_seed(seed)
    past = torch.zeros(1, 16, 4)
    intent = torch.ones(1, dtype=torch.long)

    def error(states: ImitationStates) -> float:
        head.eval()
        with torch.no_grad():
            n = len(states.f32)
            pred = head(past.expand(n, 16, 4), intent.expand(n), states.instruction, states.f32)
        head.train()
        return float((pred - states.waypoints).abs().mean())

    for p in head.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    before = error(val)
    best, best_state, best_epoch, train_l1 = before, {k: v.clone() for k, v in head.state_dict().items()}, -1, float("nan")
    n = len(train.f32)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            pred = head(past.expand(len(idx), 16, 4), intent.expand(len(idx)), train.instruction[idx], train.f32[idx])
            loss = F.l1_loss(pred, train.waypoints[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        train_l1 = total / n
        val_l1 = error(val)
        if val_l1 < best:
            best, best_epoch = val_l1, epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        if progress is not None:
            progress(epoch, train_l1, val_l1)
    head.load_state_dict(best_state)
    head.eval()
    return {"train_l1": train_l1, "val_l1": best, "val_l1_before": before, "best_epoch": best_epoch}

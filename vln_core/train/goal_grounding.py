"""Teach the ``mask`` goal head (:mod:`vln_core.models.goal_grounding`) which pixels show the goal.

Views (:func:`collect_views`): in homes of training seeds, the robot's camera at free poses
(a third along the planner's route of the home's episode, the rest anywhere the robot fits,
half of them turned toward some object), rendered with the object id of every pixel. The frozen
encoder's 1/8 and 1/32 features of each view are computed once, with the share of every 1/8
cell each object covers.

Training (:func:`train_goal_head`): each sample pairs a view with a goal object of its home,
two times in three one that is in view, else any; its instruction is drawn anew every time
(:func:`vln_core.sim.instructions.sample_goal_instruction`: the goal named as the collector names
it, with other objects of the home passed on the way), and the target is the goal's share of
each cell (zero when it is out of view). Loss: binary cross-entropy per cell, plus a probe
that reads the goal's category, colour and room back from the goal vector (:class:`GoalNameProbe`,
on instructions alone, also for ``text_steps`` steps before the pixels). Only the phrase encoder
and the mask head are kept.

Scores (:func:`grounding_scores`), on views of held-out homes with each goal object of the view
and one instruction each: the peak's hit rate (the most probable cell shows the goal), the
in-view detection (max probability > 0.5) against goals out of view, and both per goal category
and on colour + category + room combinations no training sample named.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from vln_core.config import SimConfig
from vln_core.models.reprojection_model import FrameEncoding
from vln_core.preprocess import preprocess_frames
from vln_core.sim.closed_loop import NavSimulator
from vln_core.sim.instructions import GOAL_CATEGORIES, goal_instruction, sample_goal_instruction
from vln_core.sim.scene import COLORS, ROOM_KINDS, Scene
from vln_core.train.nav_imitation import training_homes

__all__ = ["GroundingViews", "collect_views", "train_goal_head", "grounding_scores", "held_out", "combination",
           "GOAL_VISIBLE_SHARE"]

#: A goal is "in view" when it covers at least this share of the image.
GOAL_VISIBLE_SHARE = 0.003


@dataclass
class GroundingViews:
    """``N`` rendered views of ``homes`` with their encoder features and object coverage."""

    f8: torch.Tensor  # (N, C8, H/8, W/8) float16
    f32: torch.Tensor  # (N, C32, H/32, W/32) float16
    coverage: list[dict[int, np.ndarray]]  # per view: object index -> (H/8, W/8) float32 share of each cell
    home: np.ndarray  # (N,) index into scenes
    scenes: list[Scene] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.home)


def _cell_share(object_id: np.ndarray, cells: tuple[int, int]) -> dict[int, np.ndarray]:
    """``(H, W)`` object ids -> {object: (h, w) share of each cell} for the objects in view."""
    H, W = object_id.shape
    h, w = cells
    out = {}
    for obj in np.unique(object_id):
        if obj < 0:
            continue
        share = (object_id == obj).reshape(h, H // h, w, W // w).mean(axis=(1, 3))
        out[int(obj)] = share.astype(np.float32)
    return out


def _view_poses(episode, sim_cfg: SimConfig, n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
    clearance = sim_cfg.robot_radius_m + sim_cfg.clearance_margin_m
    grid, scene, path = episode.grid, episode.scene, episode.shortest_path
    free = np.argwhere(grid.clearance >= clearance)
    free_xy = grid.center_of(free)
    free_xy = free_xy[scene.room_at(free_xy) >= 0]
    goals = [o for o in scene.objects if o.category in GOAL_CATEGORIES]
    poses = []
    for k in range(n):
        if k % 3 == 0 and len(path) > 1:
            i = int(rng.integers(len(path) - 1))
            xy = path[i].astype(np.float64)
            yaw = math.atan2(*(path[i + 1] - path[i])[::-1]) + rng.normal(0.0, math.radians(40))
        else:
            xy = free_xy[int(rng.integers(len(free_xy)))]
            if goals and rng.random() < 0.5:
                d = goals[int(rng.integers(len(goals)))].position[:2] - xy
                yaw = math.atan2(d[1], d[0]) + rng.normal(0.0, math.radians(20))
            else:
                yaw = rng.uniform(-math.pi, math.pi)
        poses.append((np.asarray(xy, dtype=np.float64), float(yaw)))
    return poses


def collect_views(first_seed: int, homes_wanted: int, sim_cfg: SimConfig, model: torch.nn.Module,
                  views_per_home: int = 16, view_seed: int = 0, skip: tuple[int, ...] = (),
                  progress: Optional[Callable[[int], None]] = None) -> GroundingViews:
    """Render and encode ``views_per_home`` views in each of ``homes_wanted`` homes from seed
    ``first_seed`` on, none of the seeds in ``skip`` (see the module doc); ``model`` is the
    embedded model (frozen). A home's views depend on its seed and ``view_seed`` alone."""
    f8s, f32s, coverage, home, scenes, seeds = [], [], [], [], [], []
    for seed, episode in training_homes(first_seed, homes_wanted, sim_cfg, skip=skip):
        sim = NavSimulator(episode, sim_cfg, seed=seed)
        frames = []
        rng = np.random.default_rng([view_seed, seed])
        for xy, yaw in _view_poses(episode, sim_cfg, views_per_home, rng):
            sim.xy, sim.yaw = xy, yaw
            obs = sim.observe(0.0, with_objects=True)
            frames.append(obs.rgb)
            H, W = obs.object_id.shape
            coverage.append(_cell_share(obs.object_id, (H // 8, W // 8)))
            home.append(len(scenes))
        pre = preprocess_frames(frames, None, obs.K, model.frame_size)
        with torch.no_grad():
            enc = model.encode_frames(pre.frames)
        f8s.append(enc.f8.half())
        f32s.append(enc.f32.half())
        scenes.append(episode.scene)
        seeds.append(seed)
        if progress is not None:
            progress(1)
    if not scenes:
        raise RuntimeError("no home could be made from the given seeds")
    return GroundingViews(torch.cat(f8s), torch.cat(f32s), coverage, np.asarray(home), scenes, seeds)


def _goal_objects(scene: Scene) -> list[int]:
    return [o.index for o in scene.objects if o.category in GOAL_CATEGORIES]


def _in_view(cov: dict[int, np.ndarray]) -> list[int]:
    return [k for k, share in cov.items() if share.mean() >= GOAL_VISIBLE_SHARE]


def combination(scene: Scene, index: int) -> tuple[str, str, str]:
    """(colour, category, room kind) of a scene object: what an instruction can name."""
    obj = scene.objects[index]
    return obj.color, obj.category, scene.room_name(obj.room_index)


def held_out(combo: tuple[str, str, str]) -> bool:
    """One (colour, category, room) combination in ten never names the goal in training (fixed
    by a checksum of the words), so validation can score combinations the head never saw."""
    return zlib.crc32(" ".join(combo).encode()) % 10 == 0


_COLOURS = tuple(sorted(COLORS))
_CATEGORIES = tuple(GOAL_CATEGORIES)


def name_labels(goal_name: str) -> tuple[int, int, int]:
    """(category, colour, room) class indices of a goal's name as an instruction gives it
    ("red chair in the kitchen"); colour and room are 0 when the name leaves them out."""
    name, _, room = goal_name.partition(" in the ")
    words = name.split(" ", 1)
    colour = _COLOURS.index(words[0]) + 1 if len(words) == 2 and words[0] in _COLOURS else 0
    category = (words[1] if colour else name).replace("TV", "tv")
    return _CATEGORIES.index(category), colour, (ROOM_KINDS.index(room) + 1 if room in ROOM_KINDS else 0)


class GoalNameProbe(torch.nn.Module):
    """Training only: the goal's category, colour and room read back from the goal vector. Its
    loss tells the phrase encoder directly which words name the goal (the landmarks passed on the
    way are not it), many more times per step than the pixels can."""

    def __init__(self, goal_dim: int) -> None:
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(goal_dim, n) for n in
                                         (len(_CATEGORIES), len(_COLOURS) + 1, len(ROOM_KINDS) + 1))

    def loss(self, goal: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return sum(F.cross_entropy(head(goal), labels[:, i]) for i, head in enumerate(self.heads)) / 3


def _texts(views: GroundingViews, n: int, model: torch.nn.Module, rng: np.random.Generator):
    """``n`` instructions naming random goals of random training homes, with their name labels."""
    texts, labels = [], []
    for h in rng.integers(len(views.scenes), size=n):
        scene = views.scenes[h]
        goals = [k for k in _goal_objects(scene) if not held_out(combination(scene, k))] or _goal_objects(scene)
        text, name = goal_instruction(scene, scene.objects[goals[int(rng.integers(len(goals)))]], rng)
        texts.append(text)
        labels.append(name_labels(name))
    ids, mask = model.tokenizer.encode(texts, model.cfg.model.max_instruction_length)
    return ids, mask.bool(), torch.tensor(labels)


def _confusable(scene: Scene, allowed: list[int], in_view: list[int]) -> list[int]:
    """Goals out of view that share a category or a colour with an object in view."""
    shown = [scene.objects[j] for j in in_view]
    return [k for k in allowed if k not in in_view
            and any(o.category == scene.objects[k].category or o.color == scene.objects[k].color for o in shown)]


def _batch(views: GroundingViews, idx: np.ndarray, model: torch.nn.Module, rng: np.random.Generator,
           seen: Optional[set] = None, hard_negatives: float = 0.0, in_view_share: float = 2 / 3):
    texts, targets = [], []
    for i in idx:
        scene, cov = views.scenes[views.home[i]], views.coverage[i]
        in_view = _in_view(cov)
        allowed = [k for k in _goal_objects(scene) if not held_out(combination(scene, k))]
        candidates = [k for k in in_view if k in allowed]
        confusable = _confusable(scene, allowed, in_view) if hard_negatives > 0 else []
        if confusable and rng.random() < hard_negatives:
            pool = confusable  # "the red chair" over a view of a blue chair: the head must stay dark
        else:
            pool = candidates if candidates and rng.random() < in_view_share else allowed
        if not pool:
            pool = _goal_objects(scene)
        goal = pool[int(rng.integers(len(pool)))]
        if seen is not None:
            seen.add(combination(scene, goal))
        # the landmarks passed on the way are mostly objects in view: the head learns not to light them
        texts.append(sample_goal_instruction(scene, scene.objects[goal], rng, prefer=tuple(in_view)))
        targets.append(cov.get(goal, np.zeros(tuple(views.f8.shape[-2:]), np.float32)))
    ids, mask = model.tokenizer.encode(texts, model.cfg.model.max_instruction_length)
    return ids, mask.bool(), torch.from_numpy(np.stack(targets))


def _logits(model, views: GroundingViews, idx, ids, mask) -> torch.Tensor:
    """Goal logits ``(B, h8, w8)`` of views ``idx`` through :meth:`goal_logits` (either head kind)."""
    t = torch.as_tensor(idx)
    return model.goal_logits(FrameEncoding(None, None, None, views.f8[t].float(), views.f32[t].float()), ids, mask)


def train_goal_head(model: torch.nn.Module, train: GroundingViews, val: GroundingViews, steps: int = 3000,
                    batch: int = 64, lr: float = 2e-3, seed: int = 0, text_steps: int = 1500,
                    progress: Optional[Callable[[int, float, float], None]] = None,
                    eval_every: int = 250, hard_negatives: float = 0.0, pos_weight: float = 3.0,
                    in_view_share: float = 2 / 3, false_alarm_weight: float = 0.0) -> dict:
    """Fit ``model.goal_phrase`` and ``model.goal_head`` (see the module doc); keeps the weights
    with the best validation ``peak_hit - false_alarm_weight * false_alarm``. ``hard_negatives``:
    the share of samples that name a goal out of view sharing a category or colour with an object
    in view (all-zero target); ``in_view_share``: of the other samples, the share that name a goal
    in view (the rest name any goal of the home); ``pos_weight``: the weight of goal pixels in the
    binary cross-entropy (above 1 trades false alarms for detections).
    Returns the last training loss, the best validation scores and the (colour, category, room)
    combinations the training named."""
    rng = np.random.default_rng(seed)
    probe = GoalNameProbe(model.goal_phrase.out[-1].out_features)
    params = list(model.goal_phrase.parameters()) + list(model.goal_head.parameters())
    for p in params:
        p.requires_grad_(True)
    params += list(probe.parameters())
    # the phrase encoder first learns from text alone which words name the goal (cheap: no pixels)
    text_optimizer = torch.optim.AdamW(list(model.goal_phrase.parameters()) + list(probe.parameters()), lr=lr)
    for _ in range(text_steps):
        ids, mask, labels = _texts(train, 128, model, rng)
        loss = probe.loss(model.goal_phrase(ids, mask), labels)
        text_optimizer.zero_grad()
        loss.backward()
        text_optimizer.step()
    text_loss = loss.item() if text_steps else float("nan")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    seen: set = set()
    best, best_state, loss_value = -1.0, None, float("nan")
    scores: dict = {}
    for step in range(steps):
        model.goal_phrase.train()
        model.goal_head.train()
        idx = rng.integers(len(train), size=batch)
        ids, mask, target = _batch(train, idx, model, rng, seen, hard_negatives, in_view_share)
        logits = _logits(model, train, idx, ids, mask)
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(float(pos_weight)))
        t_ids, t_mask, labels = _texts(train, 32, model, rng)
        loss = loss + 0.3 * probe.loss(model.goal_phrase(t_ids, t_mask), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            scores = grounding_scores(model, val)
            score = scores["peak_hit"] - false_alarm_weight * scores["false_alarm"]
            if score > best:
                best = score
                best_state = {k: v.detach().clone() for k, v in
                              {**{f"p.{k}": v for k, v in model.goal_phrase.state_dict().items()},
                               **{f"h.{k}": v for k, v in model.goal_head.state_dict().items()}}.items()}
                best_scores = scores
            if progress is not None:
                progress(step + 1, loss_value, scores["peak_hit"])
    if best_state is not None:
        model.goal_phrase.load_state_dict({k[2:]: v for k, v in best_state.items() if k.startswith("p.")})
        model.goal_head.load_state_dict({k[2:]: v for k, v in best_state.items() if k.startswith("h.")})
        scores = best_scores
    model.goal_phrase.eval()
    model.goal_head.eval()
    return {"train_loss": loss_value, "text_loss": text_loss, "val": scores, "seen_combinations": seen}


@torch.no_grad()
def grounding_scores(model: torch.nn.Module, views: GroundingViews, seed: int = 1,
                     seen: Optional[set] = None) -> dict:
    """Goal grounding on ``views`` (see the module doc): ``peak_hit`` (views with the goal in
    view whose most probable cell shows it), ``detected`` (max probability > 0.5 with the goal in
    view), ``false_alarm`` (the same with the goal out of view), ``chance`` (the goal's share of
    the view: a peak drawn at random hits this often), per goal category, and on combinations not
    in ``seen``. Scores either head kind (the ``film`` head's logits through a sigmoid: only its
    ``peak_hit`` means anything)."""
    rng = np.random.default_rng(seed)
    parts = [m for m in (model.goal_phrase, model.goal_head) if m is not None]
    was_training = model.goal_head.training
    for m in parts:
        m.eval()
    rows = []  # (view, goal, in_view)
    for i in range(len(views)):
        scene, cov = views.scenes[views.home[i]], views.coverage[i]
        visible = [k for k in _in_view(cov) if scene.objects[k].category in GOAL_CATEGORIES]
        rows += [(i, k, True) for k in visible]
        hidden = [k for k in _goal_objects(scene) if k not in cov]
        if hidden:
            rows.append((i, hidden[int(rng.integers(len(hidden)))], False))
    hits, detected, chance, cats, combos, alarms = [], [], [], [], [], []
    for start in range(0, len(rows), 128):
        chunk = rows[start:start + 128]
        idx = np.array([r[0] for r in chunk])
        texts = [sample_goal_instruction(views.scenes[views.home[i]], views.scenes[views.home[i]].objects[k], rng,
                                         prefer=tuple(_in_view(views.coverage[i])))
                 for i, k, _ in chunk]
        ids, mask = model.tokenizer.encode(texts, model.cfg.model.max_instruction_length)
        prob = torch.sigmoid(_logits(model, views, idx, ids, mask.bool())).numpy()
        for (i, k, in_view), p in zip(chunk, prob):
            scene = views.scenes[views.home[i]]
            if not in_view:
                alarms.append(float(p.max() > 0.5))
                continue
            share = views.coverage[i][k]
            hits.append(float(share.flat[int(np.argmax(p))] > 0))
            detected.append(float(p.max() > 0.5))
            chance.append(float((share > 0).mean()))
            cats.append(scene.objects[k].category)
            combos.append(combination(scene, k))
    if was_training:
        for m in parts:
            m.train()
    hits_a = np.array(hits)
    out = {"views": len(views), "goals_in_view": len(hits), "goals_out_of_view": len(alarms),
           "peak_hit": float(hits_a.mean()) if hits else 0.0, "chance": float(np.mean(chance)) if chance else 0.0,
           "detected": float(np.mean(detected)) if detected else 0.0,
           "false_alarm": float(np.mean(alarms)) if alarms else 0.0,
           "per_category": {c: {"goals": int(sum(1 for x in cats if x == c)),
                                "peak_hit": float(np.mean([h for h, x in zip(hits, cats) if x == c]))}
                            for c in sorted(set(cats))}}
    novel = [h for h, c in zip(hits, combos) if held_out(c) and (seen is None or c not in seen)]
    out["held_out_combinations"] = {"goals": len(novel), "peak_hit": float(np.mean(novel)) if novel else None}
    return out

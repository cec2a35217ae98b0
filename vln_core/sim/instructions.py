"""Natural-language instructions from what the robot actually drove past and saw.

Inputs are the scene semantics, the base trajectory and per-frame visibility of objects (pixel
counts from the renderer's object-id buffer), so a landmark is only named when it was both
near the path and visible in the video. Wording varies: several templates, synonyms for the
verbs, room names, optional turn hints, goal disambiguation by colour and room.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vln_core.sim.scene import Scene, SceneObject
from vln_core.sim.trajectory import BaseTrajectory, wrap_angle

__all__ = ["GOAL_CATEGORIES", "LANDMARK_CATEGORIES", "describe_object", "frame_intents", "make_instruction",
           "sample_goal_instruction", "goal_instruction"]

GOAL_CATEGORIES = ("chair", "sofa", "table", "desk", "coffee table", "bed", "lamp", "plant", "cabinet", "tv", "bookshelf",
                   "fridge", "counter", "armchair", "door")
LANDMARK_CATEGORIES = GOAL_CATEGORIES + ("rug", "painting")

_LEAVE = ["leave the {room}", "exit the {room}", "go out of the {room}", "walk out of the {room}", "get out of the {room}"]
_ENTER = ["go into the {room}", "enter the {room}", "head into the {room}", "walk into the {room}"]
_THROUGH = ["go down the hallway", "follow the corridor", "walk along the hallway", "go through the hallway"]
_PASS = ["pass the {lm}", "walk past the {lm}", "go by the {lm}", "continue past the {lm}", "move past the {lm}"]
_STOP = ["stop at the {goal}", "stop next to the {goal}", "go to the {goal}", "walk up to the {goal}",
         "approach the {goal}", "stop in front of the {goal}", "head to the {goal} and stop", "wait by the {goal}"]
_TURN = {"left": ["turn left", "go left", "head left"], "right": ["turn right", "go right", "head right"]}
_GOAL_FIRST = ["Find the {goal}.", "Go to the {goal}.", "Navigate to the {goal}.", "Your goal is the {goal}."]
_NO_NAME = {"tv": "TV"}


@dataclass
class Landmark:
    obj: SceneObject
    frame: int  # frame of closest approach


def _cat(category: str) -> str:
    return _NO_NAME.get(category, category)


def describe_object(scene: Scene, obj: SceneObject, rng: np.random.Generator | None = None) -> str:
    """Shortest unambiguous name: "red chair", "red chair in the kitchen", "chair" (if unique)."""
    same_cat = [o for o in scene.objects if o.category == obj.category]
    same_name = [o for o in same_cat if o.color == obj.color]
    cat = _cat(obj.category)
    use_color = bool(obj.color) and (len(same_cat) > 1 or (rng is not None and rng.random() < 0.6))
    name = f"{obj.color} {cat}" if use_color else cat
    if len(same_name if use_color else same_cat) > 1:
        rooms = [o.room_index for o in (same_name if use_color else same_cat)]
        if rooms.count(obj.room_index) == 1:
            name += f" in the {scene.room_name(obj.room_index)}"
    return name


def frame_intents(traj: BaseTrajectory, horizon_s: float, rate_hz: float) -> list[str]:
    """Per-frame intent: where the robot will be ``horizon_s`` ahead, seen from its current pose.

    Bearing of the future position in the current base frame (REP 103, positive = left) beyond
    +-25 degrees -> "left"/"right", else "straight"; when the robot hardly moves over the horizon
    the heading change decides (rotating in place towards the goal is a turn).
    """
    n = len(traj.yaw)
    k = max(1, int(round(horizon_s * rate_hz)))
    out = []
    for i in range(n):
        j = min(n - 1, i + k)
        d = traj.xy[j] - traj.xy[i]
        if float(np.hypot(*d)) > 0.3:
            ang = wrap_angle(math.atan2(d[1], d[0]) - traj.yaw[i])
        else:
            ang = traj.yaw[j] - traj.yaw[i]
        out.append("left" if ang > math.radians(25) else "right" if ang < -math.radians(25) else "straight")
    return out


def passed_landmarks(
    scene: Scene, traj: BaseTrajectory, visible_pixels: np.ndarray, goal: SceneObject, image_pixels: int,
    max_distance: float = 2.0,
) -> list[Landmark]:
    """Objects the robot passed (closest approach < ``max_distance``) and saw (>= 1 % of the image
    in at least 3 frames), ordered by when they were closest; the goal is excluded.

    Args:
        visible_pixels: ``(F, num_objects)`` pixel count of each object in each frame.
    """
    end = traj.arrived_frame if traj.arrived_frame > 0 else len(traj.xy)
    out: list[Landmark] = []
    for obj in scene.objects:
        if obj.index == goal.index or obj.category not in LANDMARK_CATEGORIES:
            continue
        seen = (visible_pixels[:end, obj.index] >= 0.01 * image_pixels).sum()
        if seen < 3:
            continue
        d = np.linalg.norm(traj.xy[:end] - obj.position[:2], axis=1) - max(obj.size[0], obj.size[1]) / 2
        k = int(np.argmin(d))
        if d[k] > max_distance or k >= end - 5:
            continue
        # the goal's own neighbours (chairs at the goal table) are not "passed"
        if np.linalg.norm(obj.position[:2] - goal.position[:2]) < 1.0:
            continue
        out.append(Landmark(obj, k))
    out.sort(key=lambda lm: lm.frame)
    return out


def make_instruction(
    scene: Scene,
    traj: BaseTrajectory,
    goal: SceneObject,
    visible_pixels: np.ndarray,
    image_pixels: int,
    intent: str,
    rng: np.random.Generator,
) -> tuple[str, dict]:
    """Compose the instruction.

    Args:
        scene, traj, goal: the episode.
        visible_pixels: ``(F, num_objects)`` per-frame object pixel counts.
        image_pixels: H * W.
        intent: the episode's initial intent (left/straight/right).
        rng: random generator (wording choices).

    Returns:
        ``(instruction, details)``; details lists rooms traversed and landmarks named.
    """
    rooms_seq: list[int] = []
    room_frames: list[int] = []  # frame at which each room of rooms_seq is entered
    end = traj.arrived_frame if traj.arrived_frame > 0 else len(traj.xy)
    for f, r in enumerate(scene.room_at(traj.xy[:end])):
        r = int(r)
        if r >= 0 and (not rooms_seq or rooms_seq[-1] != r):
            rooms_seq.append(r)
            room_frames.append(f)
    start_room = rooms_seq[0] if rooms_seq else goal.room_index
    goal_room = goal.room_index
    goal_name = describe_object(scene, goal, rng)
    landmarks = passed_landmarks(scene, traj, visible_pixels, goal, image_pixels)
    named = []
    if landmarks:
        k = int(rng.integers(1, min(2, len(landmarks)) + 1))
        idx = sorted(rng.choice(len(landmarks), size=k, replace=False).tolist())
        named = [landmarks[i] for i in idx]
        names = {describe_object(scene, lm.obj) for lm in named}
        if len(names) < len(named) or goal_name in names:
            named = named[:1] if describe_object(scene, named[0].obj) != goal_name else []

    def pick(options: list[str], **kw) -> str:
        return options[int(rng.integers(len(options)))].format(**kw)

    # (frame, clause) events, told in the order they happen along the drive
    events: list[tuple[int, str]] = []
    if start_room != goal_room and len(rooms_seq) > 1:
        if scene.rooms[start_room].kind == "hallway":
            if rng.random() < 0.4:
                events.append((room_frames[1] - 1, pick(_THROUGH)))
        else:
            events.append((room_frames[1], pick(_LEAVE, room=scene.room_name(start_room))))
            for r, f in zip(rooms_seq[1:-1], room_frames[1:-1]):
                if scene.rooms[r].kind == "hallway" and rng.random() < 0.5:
                    events.append((f + 1, pick(_THROUGH)))
                    break
        if scene.rooms[goal_room].kind != "hallway" and goal_room in rooms_seq and rng.random() < 0.6:
            events.append((room_frames[rooms_seq.index(goal_room)], pick(_ENTER, room=scene.room_name(goal_room))))
    for lm in named:
        # tell a landmark inside the room the drive leaves before leaving it, and one inside the
        # goal room after entering it, even if the closest approach happened at the doorway
        frame = lm.frame
        room = lm.obj.room_index
        if room == start_room and len(room_frames) > 1:
            frame = min(frame, room_frames[1] - 1)
        elif room == goal_room and goal_room in rooms_seq and rooms_seq.index(goal_room) > 0:
            frame = max(frame, room_frames[rooms_seq.index(goal_room)] + 1)
        events.append((frame, pick(_PASS, lm=describe_object(scene, lm.obj))))
    events.sort(key=lambda e: e[0])
    clauses = [c for _, c in events]
    if intent in _TURN and rng.random() < 0.5:
        clauses.insert(0, pick(_TURN[intent]))
    turn_only = len(clauses) == 1 and intent in _TURN and clauses[0] in _TURN[intent]
    text = _compose(clauses, goal_name, not turn_only, rng)
    details = {
        "rooms": [scene.room_name(r) for r in rooms_seq],
        "landmarks": [{"object": describe_object(scene, lm.obj), "index": lm.obj.index, "frame": lm.frame} for lm in named],
        "goal_name": goal_name,
    }
    return text, details


def _compose(clauses: list[str], goal_name: str, goal_first_allowed: bool, rng: np.random.Generator) -> str:
    """The route ``clauses`` and the stop at ``goal_name`` as one instruction (sometimes the goal
    first: "Find the red chair. Leave the office and ..."), sentences capitalised."""
    stop = _STOP[int(rng.integers(len(_STOP)))].format(goal=goal_name)
    if clauses and goal_first_allowed and rng.random() < 0.2:
        text = _GOAL_FIRST[int(rng.integers(len(_GOAL_FIRST)))].format(goal=goal_name) + " " + _join(clauses, rng) + "."
    elif clauses:
        text = _join(clauses + [stop], rng) + "."
    else:
        text = stop + "."
    return ". ".join(part[:1].upper() + part[1:] for part in text.split(". "))


def sample_goal_instruction(scene: Scene, goal: SceneObject, rng: np.random.Generator,
                            prefer: tuple[int, ...] = ()) -> str:
    """See :func:`goal_instruction` (the text alone)."""
    return goal_instruction(scene, goal, rng, prefer)[0]


def goal_instruction(scene: Scene, goal: SceneObject, rng: np.random.Generator,
                     prefer: tuple[int, ...] = ()) -> tuple[str, str]:
    """An instruction naming ``goal`` in :func:`make_instruction`'s grammar, without a drive: the
    route clauses (leave / enter a room, go down the hallway, pass 0-2 other objects of the home)
    are drawn at random, the passed objects from ``prefer`` (object indices, e.g. those in view:
    the landmarks a goal head must not light up) when it has any. Used to teach the goal head
    which phrase names the goal (:mod:`vln_core.train.goal_grounding`). Returns ``(instruction,
    the goal's name in it)``."""
    goal_name = describe_object(scene, goal, rng)
    clauses: list[str] = []
    others = [o for o in scene.objects if o.index != goal.index and o.category in LANDMARK_CATEGORIES
              and describe_object(scene, o) != goal_name]
    preferred = [o for o in others if o.index in prefer]
    if preferred and rng.random() < 0.7:
        others = preferred
    elsewhere = [r for r in scene.rooms if r.index != goal.room_index]
    if rng.random() < 0.5 and elsewhere:
        start = elsewhere[int(rng.integers(len(elsewhere)))]
        if start.kind == "hallway":
            clauses.append(_THROUGH[int(rng.integers(len(_THROUGH)))])
        else:
            clauses.append(_LEAVE[int(rng.integers(len(_LEAVE)))].format(room=scene.room_name(start.index)))
    if others:
        for k in sorted(rng.choice(len(others), size=min(len(others), int(rng.integers(0, 3))), replace=False).tolist()):
            clauses.append(_PASS[int(rng.integers(len(_PASS)))].format(lm=describe_object(scene, others[k])))
    if rng.random() < 0.4 and scene.rooms[goal.room_index].kind != "hallway":
        clauses.insert(int(rng.integers(len(clauses) + 1)),
                       _ENTER[int(rng.integers(len(_ENTER)))].format(room=scene.room_name(goal.room_index)))
    if rng.random() < 0.2:
        turn = _TURN["left" if rng.random() < 0.5 else "right"]
        clauses.insert(0, turn[int(rng.integers(len(turn)))])
    return _compose(clauses, goal_name, True, rng), goal_name


def _join(clauses: list[str], rng: np.random.Generator) -> str:
    if len(clauses) == 1:
        return clauses[0]
    if rng.random() < 0.5:
        return ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return ", then ".join(clauses) if rng.random() < 0.5 else ", ".join(clauses[:-1]) + ", then " + clauses[-1]

"""Robot motion as a differential-drive ground robot drives a planned path, and the camera mount.

The base pose is ``(x, y, yaw)`` on the floor of the odom frame (REP 103). The controller is a
pure-pursuit follower with turn-in-place for large heading errors, speed and turn-rate limits
and acceleration limits, simulated at ``substeps`` per camera frame. On top of plain driving it
inserts the things real recordings contain: pauses, look-arounds (rotate in place to one side
and back) and a final turn towards the goal object.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from vln_core.geometry.transforms import R_BODY_FROM_OPTICAL, camera_pose_from_base, make_pose

__all__ = ["DriveLimits", "BaseTrajectory", "camera_mount", "base_poses", "camera_poses", "drive_path", "wrap_angle"]


def wrap_angle(a):
    """Angle(s) in radians wrapped to (-pi, pi] (float in, float out; array in, array out)."""
    wrapped = math.pi - np.mod(math.pi - np.asarray(a, dtype=np.float64), 2 * math.pi)
    return float(wrapped) if np.ndim(wrapped) == 0 else wrapped


def camera_mount(height_m: float, forward_m: float = 0.1, pitch_down_deg: float = 0.0) -> np.ndarray:
    """``T_base_cam`` ``(4, 4)`` float64: camera optical frame -> base_link.

    Optical axes in the base frame: z forward = base +x, x right = base -y, y down = base -z,
    then pitched down by ``pitch_down_deg`` about the base y axis. The optical centre sits
    ``forward_m`` ahead of the base origin at ``height_m`` above the floor.
    """
    p = math.radians(pitch_down_deg)
    # rotation about base +y by +p tilts base +x (forward) towards -z (down)
    R_pitch = torch.tensor([[math.cos(p), 0.0, math.sin(p)], [0.0, 1.0, 0.0], [-math.sin(p), 0.0, math.cos(p)]],
                           dtype=torch.float64)
    R = R_pitch @ R_BODY_FROM_OPTICAL.to(torch.float64)
    return make_pose(R, torch.tensor([forward_m, 0.0, height_m], dtype=torch.float64)).numpy()


def base_poses(xy: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """``T_odom_base`` ``(N, 4, 4)`` from positions ``(N, 2)`` and yaws ``(N,)`` (base on the floor)."""
    n = len(yaw)
    T = np.zeros((n, 4, 4))
    c, s = np.cos(yaw), np.sin(yaw)
    T[:, 0, 0], T[:, 0, 1], T[:, 1, 0], T[:, 1, 1] = c, -s, s, c
    T[:, 2, 2] = 1.0
    T[:, 0, 3], T[:, 1, 3] = xy[:, 0], xy[:, 1]
    T[:, 3, 3] = 1.0
    return T


def camera_poses(T_odom_base: np.ndarray, T_base_cam: np.ndarray) -> np.ndarray:
    """``T_wc`` ``(N, 4, 4)`` = ``T_odom_base @ T_base_cam`` (via the geometry core)."""
    return camera_pose_from_base(torch.as_tensor(T_odom_base, dtype=torch.float64),
                                 torch.as_tensor(T_base_cam, dtype=torch.float64)).numpy()


@dataclass
class DriveLimits:
    """Kinematic limits and behaviour of the simulated robot."""

    rate_hz: float = 10.0
    max_speed: float = 0.5  # m/s
    max_turn_rate: float = math.radians(60.0)  # rad/s
    max_accel: float = 0.6  # m/s^2
    max_turn_accel: float = math.radians(180.0)  # rad/s^2
    lookahead: float = 0.4  # m, pure pursuit
    substeps: int = 5


@dataclass
class BaseTrajectory:
    """The base at every camera frame.

    Attributes:
        xy: ``(F, 2)`` positions, yaw ``(F,)`` radians, v ``(F,)`` m/s, w ``(F,)`` rad/s,
        t ``(F,)`` seconds; arrived_frame: first frame at the goal pose (-1 if never);
        events: list of ``(frame, name)`` for pauses / look-arounds.
    """

    xy: np.ndarray
    yaw: np.ndarray
    v: np.ndarray
    w: np.ndarray
    t: np.ndarray
    arrived_frame: int
    events: list[tuple[int, str]] = field(default_factory=list)


def _approach(cur: float, target: float, max_delta: float) -> float:
    return cur + float(np.clip(target - cur, -max_delta, max_delta))


def drive_path(
    path: np.ndarray,
    start_yaw: float,
    face_xy: np.ndarray,
    limits: DriveLimits,
    n_frames: int,
    rng: np.random.Generator,
    pause_prob: float = 0.3,
    lookaround_prob: float = 0.35,
) -> BaseTrajectory:
    """Simulate the robot following ``path`` for ``n_frames`` camera frames.

    Args:
        path: ``(M, 2)`` world xy polyline from the start to the goal's approach point.
        start_yaw: initial heading (radians, world).
        face_xy: ``(2,)`` point to face after arriving (the goal object's centre).
        limits: :class:`DriveLimits`.
        n_frames: frames to produce (the robot waits at the goal once there).
        rng: random generator for pauses and look-arounds.
        pause_prob, lookaround_prob: chance of one pause / one look-around during the drive.

    Returns:
        :class:`BaseTrajectory` sampled at ``limits.rate_hz``.
    """
    dt = 1.0 / limits.rate_hz / limits.substeps
    seg = np.diff(path, axis=0)
    seg_len = np.linalg.norm(seg, axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg_len)])
    total = float(arc[-1])
    # the path resampled every centimetre: point_at and the progress search become lookups
    ds = 0.01
    s_dense = np.linspace(0.0, total, max(2, int(math.ceil(total / ds)) + 1))
    dense = np.stack([np.interp(s_dense, arc, path[:, 0]), np.interp(s_dense, arc, path[:, 1])], axis=1)
    step_s = s_dense[1] - s_dense[0] if len(s_dense) > 1 else ds

    def index_of(s: float) -> int:
        return int(min(max(round(s / step_s), 0), len(dense) - 1)) if step_s > 0 else 0

    def point_at(s: float) -> np.ndarray:
        return dense[index_of(s)]

    x, y = float(path[0, 0]), float(path[0, 1])
    yaw, v, w = float(start_yaw), 0.0, 0.0
    progress = 0.0
    # schedule behaviour events by travelled distance
    pause_at = float(rng.uniform(0.25, 0.7)) * total if rng.random() < pause_prob else None
    look_at = float(rng.uniform(0.2, 0.75)) * total if rng.random() < lookaround_prob else None
    mode = "drive"
    mode_until = 0.0
    look_targets: list[float] = []
    events: list[tuple[int, str]] = []
    arrived_frame = -1
    out_xy, out_yaw, out_v, out_w = [], [], [], []
    time = 0.0
    frame = 0
    step_i = 0
    while frame < n_frames:
        if step_i % limits.substeps == 0:
            out_xy.append((x, y))
            out_yaw.append(yaw)
            out_v.append(v)
            out_w.append(w)
            frame += 1
            if frame >= n_frames:
                break
        step_i += 1
        # advance progress to the closest path point near the current one
        i0 = index_of(progress)
        pts = dense[i0:i0 + 61]
        d2 = (pts[:, 0] - x) ** 2 + (pts[:, 1] - y) ** 2
        progress = float(s_dense[i0 + int(np.argmin(d2))])
        remaining = total - progress + float(np.hypot(*(point_at(total) - (x, y))))
        v_cmd, w_cmd = 0.0, 0.0
        if mode == "drive":
            if pause_at is not None and progress >= pause_at:
                pause_at = None
                mode, mode_until = "pause", time + float(rng.uniform(0.6, 1.5))
                events.append((frame, "pause"))
            elif look_at is not None and progress >= look_at and abs(v) < limits.max_speed * 1.01:
                look_at = None
                side = 1.0 if rng.random() < 0.5 else -1.0
                ang = math.radians(float(rng.uniform(30, 70)))
                look_targets = [yaw + side * ang, yaw]
                mode = "look"
                events.append((frame, "look_around"))
            elif remaining < 0.08:
                mode = "face"
        if mode == "drive":
            target = point_at(progress + limits.lookahead)
            if remaining < limits.lookahead:
                target = point_at(total)
            err = float(wrap_angle(math.atan2(target[1] - y, target[0] - x) - yaw))
            if abs(err) > math.radians(45):
                v_cmd = 0.0
                w_cmd = math.copysign(limits.max_turn_rate, err)
            else:
                dist = max(float(np.hypot(target[0] - x, target[1] - y)), 1e-3)
                kappa = 2.0 * math.sin(err) / dist
                v_cmd = limits.max_speed * min(1.0, remaining / 0.7 + 0.15) * max(0.3, math.cos(err))
                if abs(kappa) * v_cmd > limits.max_turn_rate:
                    v_cmd = limits.max_turn_rate / abs(kappa)
                w_cmd = v_cmd * kappa
        elif mode == "pause":
            if time >= mode_until:
                mode = "drive"
        elif mode in ("look", "face"):
            if mode == "face":
                goal_yaw = math.atan2(face_xy[1] - y, face_xy[0] - x)
            else:
                goal_yaw = look_targets[0]
            err = float(wrap_angle(goal_yaw - yaw))
            # brake early enough for the turn-acceleration limit
            w_stop = math.sqrt(2 * limits.max_turn_accel * abs(err) * 0.8)
            w_cmd = math.copysign(min(limits.max_turn_rate, w_stop, 3.0 * abs(err)), err)
            if abs(err) < math.radians(2) and abs(w) < math.radians(5):
                if mode == "look":
                    look_targets.pop(0)
                    if not look_targets:
                        mode = "drive"
                elif arrived_frame < 0:
                    arrived_frame = frame
                    mode = "done"
        elif mode == "done":
            w_cmd = 0.0
        v = _approach(v, v_cmd, limits.max_accel * dt)
        w = _approach(w, w_cmd, limits.max_turn_accel * dt)
        v = float(np.clip(v, 0.0, limits.max_speed))
        w = float(np.clip(w, -limits.max_turn_rate, limits.max_turn_rate))
        # exact unicycle integration over the substep
        if abs(w) > 1e-9:
            x += v / w * (math.sin(yaw + w * dt) - math.sin(yaw))
            y -= v / w * (math.cos(yaw + w * dt) - math.cos(yaw))
        else:
            x += v * dt * math.cos(yaw)
            y += v * dt * math.sin(yaw)
        yaw = float(wrap_angle(yaw + w * dt))
        time += dt
    return BaseTrajectory(np.array(out_xy), np.unwrap(np.array(out_yaw)), np.array(out_v), np.array(out_w),
                          np.arange(n_frames) / limits.rate_hz, arrived_frame, events)

"""The relative pose of two frames from their matches when one frame's depth is only predicted.

PnP (:func:`~vln_core.geometry.matching.pose_from_depth_matches`) lifts the keyframe's matches
with its depth and fits the current camera to them. That is right when the depth is: in the
simulator the monocular network's depth gives PnP a median rotation error of 0.9 deg. On the
real box the same PnP is off by 10.6 deg (no rotation at all: 11.9 deg), while PnP on the depth
camera's depth is off by 1.5 deg: the network's errors bend the pose.

The essential matrix needs no depth: the matches alone fix the rotation and the direction of
travel (on the box 2.5 deg median). Its weakness is the converse: a short baseline or a flat
scene leaves it badly conditioned (in simulation 1.6 deg median with a long tail of gross errors).

``model.relative_pose`` chooses:

* ``pnp`` (default; chosen on ``data/sim_val``): PnP alone, as before.
* ``pnp_or_essential``: both, and the essential matrix's pose where it explains the matches and
  the depth clearly better together (:func:`depth_prior_costs`, below ``ESSENTIAL_COST_RATIO`` of
  PnP's): each match may move its depth along the ray at a log-normal cost (the depth is a prior,
  not a constraint) and must land on its sighting in the current frame. A pose bent by wrong
  depths pays reprojection error where the depth is right; a pose that ignores a right depth pays
  depth moves. Where PnP fails, so does this (an essential pose alone lost in simulation). Used
  for the visual odometry that places the frames for the cost volume and for each keyframe's pose
  against the current frame.

Measured (model card, "RGB-only poses"; ``training/evaluate.py``): on the real box at 1 s
``pnp_or_essential`` lowers the keyframe rotation error from 7.9 to 4.9 deg and raises RGB-only CC
from 0.614 to 0.630; on ``data/sim_val`` it scores 0.706 against 0.704, on ``data/sim_eval`` 0.655
against 0.663.
``training/adapt.py`` chooses between the two on a robot's own recording.

Conventions as in :mod:`vln_core.geometry.matching`: pixels ``(u, v)``, ``K (3, 3)``,
``T_cur_key (4, 4)`` maps keyframe-camera points into the current camera (OpenCV optical axes),
depth in metres along +z.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from vln_core.errors import InputError
from vln_core.geometry.matching import (
    MIN_MATCHES,
    lift_pixels,
    pose_from_depth_matches,
    sample_depth,
    triangulate_matches,
)

__all__ = [
    "RELATIVE_POSE_METHODS",
    "ESSENTIAL_COST_RATIO",
    "essential_pose_from_matches",
    "depth_prior_costs",
    "relative_pose_from_matches",
]

#: ``model.relative_pose`` values.
RELATIVE_POSE_METHODS = ("pnp", "pnp_or_essential")
#: How far (log depth, 1 sigma) a match may move along its ray from the predicted depth at unit
#: cost. Chosen on ``data/sim_val`` between 0.3 and 0.6 (median rotation error 0.86 / 0.91 deg).
LOG_DEPTH_SIGMA = 0.3
#: Reprojection error (pixels, 1 sigma) of a match in the current frame.
REPROJECTION_SIGMA_PX = 1.0
#: A match's cost is capped here (3 sigma squared): an outlier counts, but no more than this.
MAX_MATCH_COST = 9.0
#: The depth moves tried along each ray: factors exp(-1.5) .. exp(1.5).
_DEPTH_FACTORS = np.exp(np.linspace(-1.5, 1.5, 61))
#: Triangulated points needed to give the essential matrix's translation the depth's scale.
MIN_TRIANGULATED_FOR_SCALE = 5
#: Sampson distance (pixels) of an essential-matrix inlier.
ESSENTIAL_THRESHOLD_PX = 1.0
#: ``pnp_or_essential`` takes the essential matrix's pose only where its cost is below this share of
#: PnP's: where both explain the data about as well, PnP's (better in simulation) stands. Chosen
#: on ``data/sim_val`` (RGB-only CC; PnP alone 0.704): ratio 1.0 -> 0.680, 0.9 -> 0.692,
#: 0.8 -> 0.699, 0.7 -> 0.698, 0.6 -> 0.697 while an essential pose could also stand in for a PnP
#: that failed, and 0.8 -> **0.706** once it could not (those stand-ins were the simulated loss).
ESSENTIAL_COST_RATIO = 0.8


def essential_pose_from_matches(pk: np.ndarray, pc: np.ndarray, depth_key: np.ndarray, K: np.ndarray
                                ) -> tuple[Optional[np.ndarray], np.ndarray]:
    """``T_cur_key`` from the essential matrix of the matches (MAGSAC), its translation in the
    scale of ``depth_key (H, W)``: the median ratio of that depth to the points triangulated at
    unit baseline. Without the parallax to triangulate, the translation is zero (a turn in place).

    Args:
        pk / pc: ``(M, 2)`` keyframe / current pixels of the matches.

    Returns:
        ``(T_cur_key (4, 4) float64 or None, inliers)``: ``inliers`` index the matches that fit the
        essential matrix in front of both cameras; None when fewer than ``MIN_MATCHES`` do.
    """
    none = (None, np.zeros(0, dtype=np.int64))
    if len(pk) < MIN_MATCHES:
        return none
    pk = pk.astype(np.float64)
    pc = pc.astype(np.float64)
    Kd = K.astype(np.float64)
    try:
        E, mask = cv2.findEssentialMat(pk, pc, Kd, cv2.USAC_MAGSAC, 0.999, ESSENTIAL_THRESHOLD_PX)
    except cv2.error:  # a degenerate configuration (all matches on a line, ...)
        return none
    if E is None or E.shape != (3, 3):  # several solutions stacked: degenerate
        return none
    count, R, t, mask = cv2.recoverPose(E, pk, pc, Kd, mask=mask)
    if count < MIN_MATCHES:
        return none
    inliers = np.flatnonzero(mask[:, 0] > 0)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t[:, 0]
    keep, z_unit, _ = triangulate_matches(pk[inliers], pc[inliers], Kd, T)
    z_pred = sample_depth(depth_key, pk[inliers])
    ok = keep & (z_pred > 0)
    T[:3, 3] *= float(np.median(z_pred[ok] / z_unit[ok])) if ok.sum() >= MIN_TRIANGULATED_FOR_SCALE else 0.0
    return T, inliers


def depth_prior_costs(poses: list[np.ndarray], pk: np.ndarray, pc: np.ndarray, depth_key: np.ndarray,
                      K: np.ndarray) -> list[float]:
    """How badly each pose ``T_cur_key (4, 4)`` in ``poses`` explains the matches ``pk, pc (M, 2)``
    given the keyframe's predicted depth ``(H, W)``: over the matches with a depth, the sum of
    ``min over z of (reprojection error / 1 px)^2 + (log(z / predicted) / LOG_DEPTH_SIGMA)^2``,
    each capped at ``MAX_MATCH_COST``. Lower is better; comparable between poses for the same
    matches. The matches are lifted along their rays once, for all the poses."""
    z = sample_depth(depth_key, pk)
    ok = z > 0
    if not ok.any():
        return [float("inf")] * len(poses)
    points = lift_pixels(pk[ok], z[ok], K)[:, None, :] * _DEPTH_FACTORS[None, :, None]  # (M, F, 3)
    depth_moves = (np.log(_DEPTH_FACTORS)[None] / LOG_DEPTH_SIGMA) ** 2
    costs = []
    for T_cur_key in poses:
        cam = points @ T_cur_key[:3, :3].T + T_cur_key[:3, 3]
        front = cam[..., 2] > 1e-3
        uv = (cam @ K.T)[..., :2] / np.where(front, cam[..., 2], 1.0)[..., None]
        reprojection = ((uv - pc[ok][:, None, :]) ** 2).sum(-1) / REPROJECTION_SIGMA_PX ** 2
        cost = np.where(front, reprojection, np.inf) + depth_moves
        costs.append(float(np.minimum(cost.min(axis=1), MAX_MATCH_COST).sum()))
    return costs


def relative_pose_from_matches(pk: np.ndarray, pc: np.ndarray, depth_key: np.ndarray, K: np.ndarray,
                               method: str = "pnp") -> tuple[Optional[np.ndarray], np.ndarray]:
    """The keyframe camera-to-current pose from matches and the keyframe's predicted depth by
    ``method`` (``model.relative_pose``, see the module doc).

    Returns:
        ``(T_cur_key (4, 4) float64 or None, inliers)`` as
        :func:`~vln_core.geometry.matching.pose_from_depth_matches`; the translation is in the
        depth's scale either way.
    """
    if method not in RELATIVE_POSE_METHODS:
        raise InputError(f"relative pose method must be one of {list(RELATIVE_POSE_METHODS)}, got {method!r}")
    pnp = pose_from_depth_matches(pk, pc, depth_key, K)
    if method == "pnp" or pnp[0] is None:  # the essential matrix only ever replaces a PnP pose
        return pnp
    essential = essential_pose_from_matches(pk, pc, depth_key, K)
    if essential[0] is None:
        return pnp
    cost_pnp, cost_essential = depth_prior_costs([pnp[0], essential[0]], pk, pc, depth_key, K.astype(np.float64))
    return essential if cost_essential < ESSENTIAL_COST_RATIO * cost_pnp else pnp

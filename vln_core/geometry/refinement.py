"""Multi-view refinement of the learned model's per-frame geometry with sparse matches.

The embedded model predicts depth one frame at a time. A monocular network cannot know the metric
scale of a scene it has never seen (the sim-trained model puts a box 0.6 m away at room depths),
and its RGB-only pose head regresses toward the mean motion. Two frames that see the same
content settle both, with the classical tools a robotics engineer would use:

* **RGB + pose** (``poses_known``): with the known relative poses, ORB matches between each
  keyframe and the current frame say how far the predicted depth must be scaled for the matched
  points to land on each other (:func:`depth_scale_from_matches`: one scale for the window;
  per-frame scales were noisier and broke the frames' mutual consistency on the validation
  episodes). Without parallax (the camera only turned) the scale is not observable and the
  prediction is kept -- then depth barely moves the reprojection.
* **RGB only**: each keyframe's matches are lifted to 3D with its predicted depth and the current
  camera is found by PnP + RANSAC; the keyframe is then brought to the current frame's depth
  scale. Where matching fails (little overlap left) the pose comes from ``fallback_T_cur_key``:
  visual odometry chained through the frames in between (:func:`chain_visual_odometry`), or
  the network's direct prediction.

Depth stays dense and learned (it fills textureless walls and decides what is hidden); the
matches only fix what one image cannot know. Everything downstream -- the reprojection, the
shares, the bearings -- is the geometry core's, unchanged.

Shapes: ``key_depth (K, H, W)``, ``cur_depth (H, W)`` metres; ``K (3, 3)`` on that grid;
``T_cur_key (K, 4, 4)`` keyframe camera-to-current (OpenCV optical axes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from vln_core.geometry.matching import (
    OrbFeatures,
    lift_pixels,
    match_features,
    sample_depth,
)
from vln_core.geometry.two_view import relative_pose_from_matches

__all__ = ["RefinedGeometry", "refine_learned_geometry", "depth_scale_from_matches", "refine_window_geometry", "chain_visual_odometry", "odometry_step", "MIN_SCALE_POINTS"]

#: A frame needs this many triangulated points for its own scale (else the window's is used).
MIN_SCALE_POINTS = 8
#: Scales outside this range are implausible (a failed triangulation) and are ignored.
SCALE_RANGE = (0.05, 20.0)


@dataclass
class RefinedGeometry:
    """The refined depth and poses (shapes in the module doc) and what the matches decided.

    ``depth_scale (K + 1,)`` is the factor applied to each keyframe's and the current frame's
    predicted depth (1 where unobservable; RGB only: the keyframes are brought to the current
    frame's scale); ``scale_points`` the matches that fit and constrain the scale (RGB + pose) or
    the PnP inliers (RGB only) behind it; ``pose_from_matches (K,)`` which keyframe poses came from PnP.
    """

    key_depth: torch.Tensor
    cur_depth: torch.Tensor
    T_cur_key: torch.Tensor
    depth_scale: np.ndarray
    scale_points: int = 0
    pose_from_matches: list[bool] = field(default_factory=list)


def _robust_scale(ratios: list[np.ndarray]) -> tuple[float, int]:
    r = np.concatenate(ratios) if ratios else np.zeros(0)
    r = r[np.isfinite(r) & (r > 0)]
    if len(r) < MIN_SCALE_POINTS:
        return float("nan"), int(len(r))
    s = float(np.exp(np.median(np.log(r))))
    if not SCALE_RANGE[0] <= s <= SCALE_RANGE[1]:
        return float("nan"), int(len(r))
    return s, int(len(r))


#: Candidate depth scales searched (log-spaced) and the truncation of the reprojection cost (px).
SCALE_GRID = np.exp(np.linspace(np.log(SCALE_RANGE[0]), np.log(SCALE_RANGE[1]), 241))
SCALE_COST_PX = 3.0
SCALE_COARSE_STEP = 6  # the search visits every 6th grid scale, then the fine grid around the best
#: A match informs the scale when doubling or halving it moves its reprojection this far (px).
SCALE_SENSITIVITY_PX = 2.0


def _project_at_scales(A: np.ndarray, t: np.ndarray, K: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``(S, M, 2)`` pixels of the points ``scale * A + t`` (``A, t (M, 3)`` in the target camera);
    points behind the camera land at infinity."""
    X = scales[:, None, None] * A[None] + t[None]  # (S, M, 3)
    z = X[..., 2]
    front = z > 1e-6
    uv = (X @ K[:2].T) / np.where(front, z, 1.0)[..., None]
    return np.where(front[..., None], uv, np.inf)


def depth_scale_from_matches(matches: Sequence[tuple[np.ndarray, np.ndarray]], key_depth: np.ndarray,
                             cur_depth: np.ndarray, K: np.ndarray, T_cur_key: np.ndarray) -> tuple[float, int]:
    """The one factor for predicted depth that makes matches agree under known poses.

    Each keyframe match is lifted with ``scale * key_depth`` and projected into the current view
    with the known pose, and each current match the other way; the scale minimises the summed
    truncated squared reprojection error (:data:`SCALE_COST_PX`) over a log-spaced grid
    (coarse to fine, with a parabola through the minimum). This
    weighs every match by how much it says: with little parallax a match's error hardly changes
    with the scale (triangulating it instead would give a wild depth).

    Args:
        matches: per keyframe ``(pk (M, 2), pc (M, 2))``; key_depth ``(K, H, W)``, cur_depth
            ``(H, W)`` predicted (metres); K ``(3, 3)``; T_cur_key ``(K, 4, 4)``.

    Returns:
        ``(scale, informative inliers)``; the scale is NaN when fewer than
        :data:`MIN_SCALE_POINTS` matches both fit it and constrain it (a pure rotation).
    """
    A, t, targets = [], [], []
    for k, (pk, pc) in enumerate(matches):
        if len(pk) == 0:
            continue
        T = T_cur_key[k]
        for src, dst, depth, pose in ((pk, pc, key_depth[k], T), (pc, pk, cur_depth, np.linalg.inv(T))):
            z = sample_depth(depth, src)
            ok = z > 0
            if ok.any():
                A.append(lift_pixels(src[ok], z[ok], K) @ pose[:3, :3].T)  # rotated into the target camera
                t.append(np.broadcast_to(pose[:3, 3], (int(ok.sum()), 3)))
                targets.append(dst[ok])
    if not A:
        return float("nan"), 0
    A, t, target = np.concatenate(A), np.concatenate(t), np.concatenate(targets)

    def total(indices: np.ndarray) -> np.ndarray:  # (S,) truncated cost at SCALE_GRID[indices]
        e = np.linalg.norm(_project_at_scales(A, t, K, SCALE_GRID[indices]) - target[None], axis=-1)
        return (np.minimum(np.where(np.isfinite(e), e, 1e9), SCALE_COST_PX) ** 2).sum(1)

    last = len(SCALE_GRID) - 1
    coarse = np.arange(0, len(SCALE_GRID), SCALE_COARSE_STEP)
    best = int(coarse[np.argmin(total(coarse))])  # coarse to fine
    fine = np.arange(max(best - SCALE_COARSE_STEP, 0), min(best + SCALE_COARSE_STEP, last) + 1)
    fine_cost = total(fine)
    best = int(fine[np.argmin(fine_cost)])
    # informative inliers: fit at the best scale, and move when the scale doubles or halves
    step = int(round(np.log(2.0) / (np.log(SCALE_GRID[1]) - np.log(SCALE_GRID[0]))))
    proj = _project_at_scales(A, t, K, SCALE_GRID[[max(best - step, 0), best, min(best + step, last)]])
    fit = np.linalg.norm(proj[1] - target, axis=-1) < SCALE_COST_PX  # inf (behind the camera) never fits
    # a point behind the camera at two of the scales is inf - inf there: NaN, which never counts
    # as informative (and must not print numpy's RuntimeWarning on every update)
    with np.errstate(invalid="ignore"):
        moves = np.maximum(np.linalg.norm(proj[0] - proj[1], axis=-1), np.linalg.norm(proj[2] - proj[1], axis=-1))
    moves = np.where(np.isnan(moves), 0.0, moves)
    informative = int((fit & (moves >= SCALE_SENSITIVITY_PX)).sum())
    if informative < MIN_SCALE_POINTS or best in (0, last):
        return float("nan"), informative
    i = int(np.searchsorted(fine, best))
    if 0 < i < len(fine) - 1:  # parabola through the grid minimum
        c0, c1, c2 = fine_cost[i - 1], fine_cost[i], fine_cost[i + 1]
        curvature = c0 - 2 * c1 + c2
        offset = 0.5 * (c0 - c2) / curvature if curvature > 0 else 0.0
    else:
        offset = 0.0
    log_step = np.log(SCALE_GRID[1]) - np.log(SCALE_GRID[0])
    return float(SCALE_GRID[best] * np.exp(np.clip(offset, -0.5, 0.5) * log_step)), informative


def refine_learned_geometry(key_features: Sequence[OrbFeatures], cur_features: OrbFeatures,
                            key_depth: torch.Tensor, cur_depth: torch.Tensor, K: torch.Tensor,
                            T_cur_key: torch.Tensor, poses_known: bool,
                            fallback_T_cur_key: Optional[torch.Tensor] = None,
                            relative_pose: str = "pnp") -> RefinedGeometry:
    """Refine predicted geometry with ORB matches (see the module doc).

    Args:
        key_features / cur_features: :func:`~vln_core.geometry.matching.orb_features` of each
            keyframe and of the current frame, on the depth grid.
        key_depth, cur_depth: predicted depth (metres).
        K: ``(3, 3)`` intrinsics on that grid.
        T_cur_key: known poses (``poses_known``) or the model's predicted ones.
        fallback_T_cur_key: RGB only: ``(K, 4, 4)`` poses for keyframes whose direct matching
            fails (chained odometry); default ``T_cur_key``.
        relative_pose: RGB only, ``model.relative_pose``
            (:func:`~vln_core.geometry.two_view.relative_pose_from_matches`).
    """
    n = len(key_features)
    Kn = K.detach().cpu().double().numpy()
    kd = key_depth.detach().cpu().double().numpy()
    cd = cur_depth.detach().cpu().double().numpy()
    T = T_cur_key.detach().cpu().double().numpy().copy()
    if fallback_T_cur_key is not None and not poses_known:
        T = fallback_T_cur_key.detach().cpu().double().numpy().copy()
    matches = [match_features(f, cur_features) for f in key_features]
    scale = np.ones(n + 1)
    used = 0
    from_matches = [False] * n
    if poses_known:
        window, used = depth_scale_from_matches(matches, kd, cd, Kn, T)
        if np.isfinite(window):
            scale[:] = window
    else:
        for k, (pk, pc) in enumerate(matches):
            T_pnp, inliers = relative_pose_from_matches(pk, pc, kd[k], Kn, relative_pose)
            if T_pnp is None:
                continue
            T[k] = T_pnp
            from_matches[k] = True
            used += len(inliers)
            # bring the keyframe (depth and translation) to the current frame's depth scale, so
            # that the hidden/visible test compares like with like
            z_c = lift_pixels(pk[inliers], sample_depth(kd[k], pk[inliers]), Kn) @ T_pnp[2, :3] + T_pnp[2, 3]
            pred_c = sample_depth(cd, pc[inliers])
            s_k, _ = _robust_scale([pred_c / np.where(z_c > 0, z_c, np.nan)])
            if np.isfinite(s_k):
                scale[k] = s_k
                T[k, :3, 3] *= s_k
    dtype = key_depth.dtype
    s = torch.from_numpy(scale).to(dtype)
    return RefinedGeometry(
        key_depth=key_depth * s[:n, None, None].to(key_depth.device),
        cur_depth=cur_depth * s[n].to(cur_depth.device),
        T_cur_key=torch.from_numpy(T).to(T_cur_key.dtype).to(T_cur_key.device),
        depth_scale=scale, scale_points=used, pose_from_matches=from_matches,
    )


def odometry_step(prev: OrbFeatures, cur: OrbFeatures, prev_depth: np.ndarray, K: np.ndarray,
                  relative_pose: str = "pnp") -> Optional[np.ndarray]:
    """``T_cur_prev (4, 4)`` between two frames from their matches and the previous frame's
    (predicted) depth ``(H, W)`` (``model.relative_pose``: PnP, or PnP or the essential matrix),
    or None when matching fails."""
    pk, pc = match_features(prev, cur)
    T, _ = relative_pose_from_matches(pk, pc, prev_depth, K, relative_pose)
    return T


def chain_visual_odometry(features: Sequence[OrbFeatures], depth: torch.Tensor, K: torch.Tensor,
                          learned_steps: Optional[torch.Tensor] = None, relative_pose: str = "pnp") -> torch.Tensor:
    """Camera-to-current poses of ``N`` frames in time order (the current frame last) by chaining
    the motion between consecutive frames: PnP on the predicted depth, else ``learned_steps``
    (``(N-1, 4, 4)``, step ``i`` = ``T_{i+1, i}``), else no motion. Drifts with the number of
    steps, but needs only neighbouring frames to overlap.

    Args:
        features: ORB features of each frame; depth: ``(N, H, W)`` predicted depth; K: ``(3, 3)``.
        relative_pose: ``model.relative_pose`` for each step (:func:`odometry_step`).

    Returns:
        ``T_cur_cam (N, 4, 4)`` float64 (the last is the identity).
    """
    n = len(features)
    Kn = K.detach().cpu().double().numpy()
    d = depth.detach().cpu().double().numpy()
    out = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n - 2, -1, -1):
        step = odometry_step(features[i], features[i + 1], d[i], Kn, relative_pose)
        if step is None:
            step = learned_steps[i].detach().cpu().double().numpy() if learned_steps is not None else np.eye(4)
        out[i] = out[i + 1] @ step
    return torch.from_numpy(out)


def refine_window_geometry(features: Sequence[OrbFeatures], depth: torch.Tensor, K: torch.Tensor,
                           T_cur_cam: torch.Tensor, poses_known: bool, learned_steps: Optional[torch.Tensor] = None,
                           match_indices: Optional[Sequence[int]] = None, relative_pose: str = "pnp"
                           ) -> tuple[torch.Tensor, torch.Tensor, RefinedGeometry]:
    """:func:`refine_learned_geometry` for a whole window of ``N`` frames in time order, the current
    frame last (evaluation windows, a video).

    Args:
        features: ORB features of every frame; depth: ``(N, H, W)`` predicted; K: ``(3, 3)``.
        T_cur_cam: ``(N, 4, 4)`` known (``poses_known``) or predicted camera-to-current poses.
        learned_steps: RGB only: the network's ``T_{i+1, i}`` ``(N-1, 4, 4)`` for odometry steps
            that do not match.
        match_indices: frames matched directly against the current one (default all others):
            their matches set the depth scale (RGB + pose) or their PnP poses (RGB only); every
            other frame keeps its chained-odometry pose (RGB only).
        relative_pose: RGB only, ``model.relative_pose`` for the odometry and the matched frames.

    Returns:
        ``(depth (N, H, W), T_cur_cam (N, 4, 4), refinement of the matched frames)``: with known
        poses every frame's depth takes the window's scale; without, the matched frames get
        their PnP pose and scale, the others the chained odometry.
    """
    n = len(features)
    idx = list(range(n - 1)) if match_indices is None else [int(i) for i in match_indices]
    chained = None
    if not poses_known:
        chained = chain_visual_odometry(features, depth, K, learned_steps, relative_pose).to(T_cur_cam.dtype)
    refined = refine_learned_geometry([features[i] for i in idx], features[-1], depth[idx], depth[-1], K,
                                      T_cur_cam[idx], poses_known,
                                      fallback_T_cur_key=None if chained is None else chained[idx],
                                      relative_pose=relative_pose)
    out_depth = depth.clone()
    out_T = T_cur_cam.clone() if chained is None else chained.clone()
    if poses_known:
        out_depth = depth * float(refined.depth_scale[-1])  # one scale for the window
    else:
        out_depth[idx] = refined.key_depth
        out_depth[-1] = refined.cur_depth
    out_T[idx] = refined.T_cur_key
    out_T[-1] = torch.eye(4, dtype=out_T.dtype)
    return out_depth, out_T, refined

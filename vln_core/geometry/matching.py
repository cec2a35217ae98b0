"""Sparse feature matching and two-view geometry: ORB matches, triangulation with a known pose,
and the relative pose from matches plus a depth map (PnP).

These are the classical tools that the baselines use on their own
(:mod:`vln_core.baselines`) and that the learned model's geometry refinement uses to give its
monocular depth a metric scale and its RGB-only poses a geometric check
(:mod:`vln_core.geometry.refinement`).

Conventions: images ``(H, W, 3)`` uint8 RGB or ``(3, H, W)`` float in [0, 1]; pixels ``(u, v)``
with the centre of the top-left pixel at (0, 0); ``K (3, 3)``; poses ``T_cur_key (4, 4)`` map
keyframe-camera points into the current camera (OpenCV optical axes); depth in metres along +z.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
import torch

__all__ = [
    "MIN_MATCHES",
    "MIN_PARALLAX_DEG",
    "OrbFeatures",
    "orb_features",
    "match_features",
    "orb_matches",
    "triangulate_matches",
    "sample_depth",
    "lift_pixels",
    "pose_from_depth_matches",
]

#: Fewer matches (or RANSAC inliers) than this: matching failed.
MIN_MATCHES = 12
#: ORB keypoints per image: enough for 224x224 frames; matching cost grows with its square.
ORB_FEATURES = 500
#: Triangulated points need at least this parallax angle (degrees) to be trusted.
MIN_PARALLAX_DEG = 1.0


def gray_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(H, W)`` uint8 grey image of an ``(H, W, 3)`` uint8 RGB or ``(3, H, W)`` [0, 1] image."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


@dataclass
class OrbFeatures:
    """ORB keypoints ``uv (M, 2)`` float64 and descriptors ``(M, 32)`` uint8 (``M`` may be 0)."""

    uv: np.ndarray
    descriptors: Optional[np.ndarray]

    def __len__(self) -> int:
        return int(self.uv.shape[0])


def orb_features(image, max_features: int = ORB_FEATURES) -> OrbFeatures:
    """ORB keypoints of one image (computed once per frame and cached by the runtime)."""
    orb = cv2.ORB_create(nfeatures=max_features, scaleFactor=1.2, nlevels=6, edgeThreshold=15,
                         patchSize=15, fastThreshold=7)
    keypoints, descriptors = orb.detectAndCompute(gray_image(image), None)
    uv = np.array([kp.pt for kp in keypoints], dtype=np.float64).reshape(-1, 2)
    return OrbFeatures(uv, descriptors)


def match_features(a: OrbFeatures, b: OrbFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Cross-checked Hamming matches with Lowe's ratio 0.8: ``(pts_a (M, 2), pts_b (M, 2))``."""
    if a.descriptors is None or b.descriptors is None or len(a) < 2 or len(b) < 2:
        return np.zeros((0, 2)), np.zeros((0, 2))
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = matcher.knnMatch(a.descriptors, b.descriptors, k=2)
    reverse = {m.queryIdx: m.trainIdx for m in matcher.match(b.descriptors, a.descriptors)}
    ia, ib = [], []
    for pair in pairs:
        if len(pair) < 2:
            continue
        m, n = pair
        if m.distance < 0.8 * n.distance and reverse.get(m.trainIdx) == m.queryIdx:
            ia.append(m.queryIdx)
            ib.append(m.trainIdx)
    return a.uv[ia].reshape(-1, 2), b.uv[ib].reshape(-1, 2)


def orb_matches(image_a, image_b, max_features: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """ORB matches between two images: ``(pts_a (M, 2), pts_b (M, 2))`` float64 pixels."""
    return match_features(orb_features(image_a, max_features), orb_features(image_b, max_features))


def triangulate_matches(pk: np.ndarray, pc: np.ndarray, K: np.ndarray, T_cur_key: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangulate matches (keyframe pixels ``pk (M, 2)``, current pixels ``pc (M, 2)``) with the
    known pose ``T_cur_key (4, 4)``.

    Returns:
        ``(keep (M,) bool, z_key (M,), z_cur (M,))``: depths in both cameras; ``keep`` marks points
        in front of both cameras with reprojection error < 2 px and parallax >= ``MIN_PARALLAX_DEG``.
    """
    if len(pk) == 0:
        empty = np.zeros(0)
        return empty.astype(bool), empty, empty
    P_k = K @ np.hstack([np.eye(3), np.zeros((3, 1))])
    P_c = K @ T_cur_key[:3, :]
    X = cv2.triangulatePoints(P_k, P_c, pk.T.astype(np.float64), pc.T.astype(np.float64))  # (4, M)
    w = X[3]
    ok_w = np.abs(w) > 1e-9
    Xk = X[:3] / np.where(ok_w, w, 1.0)
    Xc = T_cur_key[:3, :3] @ Xk + T_cur_key[:3, 3:4]
    z_k, z_c = Xk[2], Xc[2]
    front = ok_w & (z_k > 0.05) & (z_c > 0.05) & (z_k < 30) & (z_c < 30)
    proj_k = (K @ Xk)[:2] / np.where(front, z_k, 1.0)
    proj_c = (K @ Xc)[:2] / np.where(front, z_c, 1.0)
    err = np.maximum(np.linalg.norm(proj_k.T - pk, axis=1), np.linalg.norm(proj_c.T - pc, axis=1))
    centre_c = -T_cur_key[:3, :3].T @ T_cur_key[:3, 3]  # current camera centre in keyframe coordinates
    ray_k = Xk / np.maximum(np.linalg.norm(Xk, axis=0), 1e-9)
    ray_c = Xk - centre_c[:, None]
    ray_c = ray_c / np.maximum(np.linalg.norm(ray_c, axis=0), 1e-9)
    parallax = np.degrees(np.arccos(np.clip((ray_k * ray_c).sum(0), -1.0, 1.0)))
    keep = front & (err < 2.0) & (parallax >= MIN_PARALLAX_DEG)
    return keep, z_k, z_c


def sample_depth(depth: np.ndarray, uv: np.ndarray, window: int = 3) -> np.ndarray:
    """Depth ``(M,)`` of ``depth (H, W)`` at ``uv (M, 2)``: the nearest valid (> 0) depth in the
    ``window x window`` pixels around each point (0 where none, or outside the image).

    Corners -- where ORB finds its keypoints -- sit on depth edges, and the point that was
    matched is the near surface's: the nearest depth around it, not the rounded pixel's, which
    may be the background's (on the simulated episodes this halved the worst PnP error with true
    depth).
    """
    H, W = depth.shape
    u = np.rint(uv[:, 0]).astype(np.int64)
    v = np.rint(uv[:, 1]).astype(np.int64)
    out = np.full(len(uv), np.inf)
    r = window // 2
    for dv in range(-r, r + 1):
        for du in range(-r, r + 1):
            uu, vv = u + du, v + dv
            inside = (uu >= 0) & (uu < W) & (vv >= 0) & (vv < H)
            d = np.zeros(len(uv))
            d[inside] = depth[vv[inside], uu[inside]]
            out = np.where(d > 0, np.minimum(out, d), out)
    centre_inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    return np.where(np.isfinite(out) & centre_inside, out, 0.0)


def lift_pixels(uv: np.ndarray, z: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``(M, 3)`` camera points of pixels ``uv (M, 2)`` at depths ``z (M,)`` (metres along +z)."""
    rays = np.linalg.inv(K) @ np.vstack([uv.T, np.ones(len(uv))])
    return (rays * z).T


def pose_from_depth_matches(pk: np.ndarray, pc: np.ndarray, depth_key: np.ndarray, K: np.ndarray,
                            reprojection_px: float = 3.0, min_inliers: int = MIN_MATCHES
                            ) -> tuple[Optional[np.ndarray], np.ndarray]:
    """The keyframe camera-to-current pose from matches and the keyframe's depth (PnP + RANSAC).

    Each keyframe match ``pk (M, 2)`` is lifted to 3D with ``depth_key (H, W)`` (metres; a
    predicted depth sets the translation's scale), and the current camera is found from its 2D
    sightings ``pc (M, 2)``.

    Returns:
        ``(T_cur_key (4, 4) float64 or None, inliers)``: ``inliers`` are indices into the matches;
        the pose is None (and ``inliers`` empty) when fewer than ``min_inliers`` matches agree.
    """
    none = (None, np.zeros(0, dtype=np.int64))
    if len(pk) < min_inliers:
        return none
    z = sample_depth(depth_key, pk)
    ok = np.flatnonzero(z > 0)
    if len(ok) < min_inliers:
        return none
    obj = lift_pixels(pk[ok], z[ok], K).astype(np.float64)
    img = pc[ok].astype(np.float64)
    Kd = K.astype(np.float64)
    found, rvec, tvec, inliers = cv2.solvePnPRansac(obj, img, Kd, None, reprojectionError=reprojection_px,
                                                    iterationsCount=1000, confidence=0.9999, flags=cv2.SOLVEPNP_AP3P)
    if not found or inliers is None or len(inliers) < min_inliers:
        return none
    idx = inliers[:, 0]
    rvec, tvec = cv2.solvePnPRefineLM(obj[idx], img[idx], Kd, None, rvec, tvec)
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec[:, 0]
    return T, ok[idx]

"""The learned geometry of a whole window of frames: monocular depth, multi-view depth, matches.

One function for the offline paths that see a window at once (``training/evaluate.py`` and
``tools/infer_video.py``); the node's backend does the same per frame, streaming
(:mod:`vln_core.backends.learned`), with the same parts:

* **known poses** (RGB + pose): each wanted frame's depth from the plane-sweep cost volume over its
  neighbours (:func:`vln_core.models.multiview.window_depth`), metric by construction, so no
  scale search; with ``model.depth_source: monocular`` the monocular depth takes the match scale
  (:func:`vln_core.geometry.refinement.refine_window_geometry`). The sources are chosen for
  parallax at the poses' scale: the current frame's cost volume first measures how far off the
  monocular depth's scale is (:func:`~vln_core.models.multiview.monocular_to_pose_scale`).
* **RGB only**: visual odometry chained through the window on the monocular depth
  (:func:`~vln_core.geometry.refinement.chain_visual_odometry`) places the frames for the cost
  volume (in the odometry's scale); then PnP on the multi-view depth places the matched frames
  against the current one, as before.

Shapes: ``depth (N, H, W)`` metres, ``K (3, 3)`` on that grid, ``T_cur_cam (N, 4, 4)`` camera-to-
current (OpenCV optical axes), the current frame last.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from vln_core.geometry.matching import OrbFeatures
from vln_core.geometry.refinement import RefinedGeometry, chain_visual_odometry, refine_window_geometry
from vln_core.models.multiview import monocular_to_pose_scale, window_depth

__all__ = ["window_geometry"]


def window_geometry(depth: torch.Tensor, conf: torch.Tensor, K: torch.Tensor, T_cur_cam: torch.Tensor,
                    poses_known: bool, *, depth_source: str, num_sources: int,
                    network: Optional[Callable[..., Any]] = None, features: Optional[torch.Tensor] = None,
                    orb: Optional[Sequence[OrbFeatures]] = None, learned_steps: Optional[torch.Tensor] = None,
                    match_indices: Optional[Sequence[int]] = None, relative_pose: str = "pnp"
                    ) -> tuple[torch.Tensor, torch.Tensor, Optional[RefinedGeometry]]:
    """Refine a window's predicted geometry (see the module doc).

    Args:
        depth / conf: ``(N, H, W)`` the monocular network's depth and confidence.
        K: ``(3, 3)``.
        T_cur_cam: ``(N, 4, 4)`` known poses, or the network's predicted ones (RGB only).
        poses_known: RGB + pose.
        depth_source: ``model.depth_source`` (``fused``, ``multiview``, ``monocular``).
        num_sources: ``model.multiview_sources``.
        network / features: the multi-view network (or an engine's ``multiview_depth``) and the
            frames' ``(N, C, h, w)`` features; None: monocular depth.
        orb: ORB features of every frame (``model.match_refinement``), or None.
        learned_steps: RGB only, the network's ``T_{i+1, i}`` ``(N-1, 4, 4)`` where odometry fails.
        match_indices: frames matched against the current one (default: all others); the frames
            whose depth is computed are these and the current frame.
        relative_pose: RGB only, ``model.relative_pose``: how the odometry and the matched frames'
            poses come from the matches (:mod:`vln_core.geometry.two_view`).

    Returns:
        ``(depth (N, H, W), T_cur_cam (N, 4, 4), the match refinement or None)``.
    """
    N = depth.shape[0]
    idx = list(range(N - 1)) if match_indices is None else [int(i) for i in match_indices]
    multiview = depth_source != "monocular" and network is not None and features is not None
    T = T_cur_cam
    if multiview:
        T_views = T
        if not poses_known and orb is not None:
            T_views = chain_visual_odometry(orb, depth, K, learned_steps, relative_pose).to(T.dtype)
        refs = idx + [N - 1]
        scale = 1.0
        if poses_known:  # metric poses: the current frame's cost volume measures the monocular depth's scale
            current, chosen = window_depth(network, depth, conf, features, K, T_views, [N - 1], "multiview", num_sources)
            if chosen[0]:
                scale = monocular_to_pose_scale(current[0], depth[N - 1])
        mv, _ = window_depth(network, depth, conf, features, K, T_views, refs, depth_source, num_sources,
                             mono_scale=scale)
        depth = depth.clone()
        depth[refs] = mv.to(depth.dtype)
        if not poses_known and orb is None:
            T = T_views
    refined = None
    if orb is not None and not (multiview and poses_known):  # known poses: the cost volume is metric already
        depth, T, refined = refine_window_geometry(orb, depth, K, T, poses_known=poses_known,
                                                   learned_steps=learned_steps, match_indices=match_indices,
                                                   relative_pose=relative_pose)
    return depth, T, refined

"""The node's learned backend with multi-view depth, on the real posed RGB-D sequence.

* each frame's depth is computed once, on arrival, from earlier frames, and equals the one
  window function (:func:`vln_core.models.multiview.window_depth`) on that frame and the sources
  the backend reports (the streaming path and the offline paths share the code);
* with known poses it is far closer to the real depth camera than the monocular network
  (a regression guard on real images: the figures are in the model card);
* the backend says in its description where its depth comes from.

Uses the shipped checkpoint, which must carry the multi-view weights.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vln_core.config import load_config
from vln_core.data.posed_images import load_posed_sequence
from vln_core.models.shipped import SHIPPED_CHECKPOINT, load_model_checkpoint
from vln_core.preprocess import preprocess_frames
from vln_core.backends.base import create_backend
from vln_core.backends import CameraFrame

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def real(real_rgbd_dir):
    return load_posed_sequence(real_rgbd_dir, stride=2, max_frames=14)


def _frames(seq, with_pose: bool) -> list[CameraFrame]:
    return [CameraFrame(stamp_ns=int(1e9 + i * 1e8), frame_id="cam", rgb=np.ascontiguousarray(c), K=seq.K,
                        T_wc=np.asarray(seq.poses[i]) if with_pose else None, seq=i) for i, c in enumerate(seq.colors)]


def _run(backend, frames, upto: int):
    for f in frames[:upto]:
        backend.frame_geometry(f)
    current = frames[upto - 1]
    keyframes = [frames[i] for i in range(0, upto - 1, 3)]
    return backend.infer(current, keyframes, "go to the box")


def test_shipped_checkpoint_has_multiview_weights():
    model, _ = load_model_checkpoint(SHIPPED_CHECKPOINT)
    assert model.has_multiview, "the shipped checkpoint must carry the multi-view depth network"
    assert model.cfg.model.depth_source == "fused"


def test_streaming_depth_is_the_window_function_of_its_sources(real):
    cfg = load_config(None, ["node.learned_mode=rgb_pose", f"node.model_path={SHIPPED_CHECKPOINT}"])
    backend = create_backend("model", cfg)
    frames = _frames(real, with_pose=True)
    result = _run(backend, frames, len(frames))
    assert result.heatmaps.heatmap.shape[0] == len(range(0, len(frames) - 1, 3))
    info = backend.describe()
    assert info["depth_source"].startswith("fused (") and "from multi-view" in info["depth_source"], info
    model = backend.engine.model
    checked = 0
    for f in frames[1:]:
        depth, sources = backend._mv_depth[f.seq]
        assert all(q < f.seq for q in sources) or f.seq in [k.seq for k in frames[:-1]]
        if not sources:
            continue
        rows = [f.seq, *sources]
        pre = preprocess_frames([frames[q].rgb for q in rows], None, real.K, cfg.video.frame_size)
        with torch.no_grad():
            enc = model.encode_frames(pre.frames)
            feats = model.multiview_features(pre.frames)
            T = torch.from_numpy(np.stack([frames[q].T_wc for q in rows]))
            want, chosen = model.window_depth(enc.depth, enc.depth_conf, feats, pre.K, T, [0],
                                              candidates=[list(range(1, len(rows)))])
        assert sorted(rows[i] for i in chosen[0]) == sorted(sources)
        assert torch.allclose(depth[0], want[0], rtol=1e-4, atol=1e-4)
        checked += 1
    assert checked >= len(frames) - 3


def test_multiview_depth_is_closer_to_the_real_depth_camera_than_monocular(real):
    def absrel(source: str) -> float:
        cfg = load_config(None, ["node.learned_mode=rgb_pose", f"node.model_path={SHIPPED_CHECKPOINT}",
                                 f"model.depth_source={source}"])
        backend = create_backend("model", cfg)
        frames = _frames(real, with_pose=True)
        errs = []
        for i, f in enumerate(frames):
            depth, K, _ = backend.frame_geometry(f)
            if i < 4:
                continue  # the first frames have few sources yet
            true = preprocess_frames([f.rgb], [real.depths[i]], real.K, cfg.video.frame_size).depths[0].numpy()
            valid = true > 0
            errs.append(float(np.mean(np.abs(depth[valid] - true[valid]) / true[valid])))
        return float(np.mean(errs))

    mono, fused = absrel("monocular"), absrel("fused")
    # measured at shipping: monocular ~1.9 (the simulator's scale is 3x off on this close-up box), fused ~0.2
    assert fused < 0.35 and fused < 0.25 * mono, (fused, mono)


def test_rgb_only_backend_serves_heatmaps_from_multiview_depth(real):
    cfg = load_config(None, ["node.learned_mode=rgb_only", f"node.model_path={SHIPPED_CHECKPOINT}"])
    backend = create_backend("model", cfg)
    frames = _frames(real, with_pose=False)
    result = _run(backend, frames, len(frames))
    hm = result.heatmaps
    assert torch.isfinite(hm.heatmap).all() and bool(hm.has_overlap.any())
    assert "from multi-view" in backend.describe()["depth_source"]


def test_rgb_only_odometry_drifts_less_with_the_essential_matrix_on_the_real_camera(real):
    """``model.relative_pose`` reaches the node's streaming odometry: on the real box the
    network's depth bends PnP, and ``pnp_or_essential`` drifts less (measured: mean rotation
    error against the last frame 16.8 deg with PnP, 13.2 deg with the choice)."""
    import math

    def rotation_deg(A, B):
        R = A[:3, :3].T @ B[:3, :3]
        return math.degrees(math.acos(np.clip((np.trace(R) - 1) / 2, -1, 1)))

    mean_error = {}
    for method in ("pnp", "pnp_or_essential"):
        cfg = load_config(None, ["node.learned_mode=rgb_only", f"node.model_path={SHIPPED_CHECKPOINT}",
                                 f"model.relative_pose={method}"])
        backend = create_backend("model", cfg)
        frames = _frames(real, with_pose=False)
        for f in frames:
            backend.frame_geometry(f)
        T_wc_last = backend._vo_pose[frames[-1].seq]
        true_last = np.asarray(real.poses[frames[-1].seq], dtype=np.float64)
        errors = [rotation_deg(np.linalg.inv(T_wc_last) @ backend._vo_pose[f.seq],
                               np.linalg.inv(true_last) @ np.asarray(real.poses[f.seq], dtype=np.float64))
                  for f in frames[:-1]]
        mean_error[method] = float(np.mean(errors))
    assert mean_error["pnp_or_essential"] < 0.85 * mean_error["pnp"], mean_error


def test_first_keyframe_of_a_stream_gets_the_views_that_arrive_after_it(real):
    """The node's case: the first frame enters the memory with no earlier frame to match; as the
    camera moves on it must be recomputed from the newer views until it has a full set of sources
    (it was once recomputed a single time, from the one view then available, and kept that depth)."""
    cfg = load_config(None, ["node.learned_mode=rgb_pose", f"node.model_path={SHIPPED_CHECKPOINT}"])
    backend = create_backend("model", cfg)
    frames = _frames(real, with_pose=True)
    first = frames[0]
    counts = []
    for t in range(1, len(frames)):
        backend.frame_geometry(frames[t])
        backend.infer(frames[t], [first], "go to the box")
        counts.append(len(backend._mv_depth[first.seq][1]))
    assert counts[0] == 1, counts  # one view so far
    assert counts[-1] == backend.num_sources, counts  # later: the full set, from the newer views
    assert all(q > first.seq for q in backend._mv_depth[first.seq][1])

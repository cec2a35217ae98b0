"""Hot swap of the learned model in the node's runtime (``vln_core/runtime/model_swap.py``).

The runtime serves the checkpoint at ``node.model_path``; replacing that file atomically makes it
load the new one in the background and serve it from the next update (no restart, no update
missed), and the new file's weights serve. A broken
file is refused with the reason in diagnostics and the log, and the old model keeps serving.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from vln_core.atomic import atomic_open
from vln_core.config import load_config
from vln_core.data.posed_images import load_posed_sequence
from vln_core.models.shipped import SHIPPED_CHECKPOINT
from vln_core.runtime.runtime import NavigationRuntime
from vln_core.train.checkpoint import load_checkpoint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def real(real_rgbd_dir):
    return load_posed_sequence(real_rgbd_dir, stride=2, max_frames=10)


def _variant(src, dst, factor: float) -> None:
    """A loadable checkpoint whose multi-view fusion weights differ (another 'trained' model)."""
    state = load_checkpoint(src)
    state["model"] = {k: (v * factor if k.startswith("multiview.") and v.is_floating_point() and v.ndim > 1 else v)
                      for k, v in state["model"].items()}
    with atomic_open(dst, "wb") as fh:
        torch.save(state, fh)


class _Stream:
    """Feeds the real frames (colour + odometry) one by one and steps after each."""

    def __init__(self, seq, T_base_cam):
        self.seq = seq
        self.T_odom_base = np.asarray(seq.poses, dtype=np.float64) @ np.linalg.inv(T_base_cam)

    def feed(self, rt, i):
        stamp = int(1e9 + i * 1e8)
        rt.add_odometry(stamp, self.T_odom_base[i])
        rt.add_image(stamp, "camera", np.ascontiguousarray(self.seq.colors[i]))
        return rt.step(overlay=False)


def _runtime(path, real):
    cfg = load_config(None, ["node.backend=model", "node.learned_mode=rgb_pose", f"node.model_path={path}",
                             "node.publish_overlay=false"])
    rt = NavigationRuntime(cfg)
    H, W = real.colors[0].shape[:2]
    rt.set_camera_info(real.K, W, H)
    rt.set_instruction("go to the box")
    return rt, _Stream(real, rt.T_base_cam)


def _serving_copy(tmp_path, real, frames: int):
    """A runtime serving a copy of the shipped checkpoint, after ``frames`` outputs."""
    path = tmp_path / "model.pt"
    shutil.copy(SHIPPED_CHECKPOINT, path)
    rt, stream = _runtime(path, real)
    for i in range(frames):
        assert stream.feed(rt, i) is not None
    return path, rt, stream


def _entry(rt, name):
    return next(s for s in rt.diagnostics() if s["name"] == f"vln_heatmap: {name}")


def test_a_replaced_checkpoint_serves_from_the_next_update(tmp_path, real):
    path, rt, stream = _serving_copy(tmp_path, real, 5)
    first_backend = rt.backend
    rt.poll_model()
    assert not rt.model_swapper.status.loading  # unchanged file: nothing to load
    _variant(SHIPPED_CHECKPOINT, path, 0.5)  # atomic replace, as adapt.py and ship_model.py write
    rt.poll_model()
    assert rt.model_swapper.wait_idle(60) and rt.model_swapper.status.refused == ""
    outputs = [stream.feed(rt, i) for i in range(5, 10)]
    assert all(o is not None for o in outputs)  # no update missed around the swap
    assert rt.backend is not first_backend and rt.model_swapper.status.loads == 2
    model = _entry(rt, "model")
    assert model["level"] == "OK" and str(path) in model["message"] and str(model["values"]["loads"]) == "2"

    # the new file's weights serve, and its heatmaps differ from the old model's on the same stream
    served = rt.backend.engine.model.state_dict()
    written = load_checkpoint(path)["model"]
    assert all(torch.equal(served[k], written[k]) for k in written)
    new, old = outputs[-1].heatmaps.heatmap, _first_model_heatmaps(real, 10)
    assert (new - old).abs().max() > 0.05 * old.abs().max(), "the swapped model changed nothing"
    rt.close()


def _first_model_heatmaps(real, n):
    rt, s = _runtime(SHIPPED_CHECKPOINT, real)
    for i in range(n):
        out = s.feed(rt, i)
    rt.close()
    return out.heatmaps.heatmap


def test_a_broken_file_is_refused_and_the_old_model_keeps_serving(tmp_path, real):
    path, rt, stream = _serving_copy(tmp_path, real, 4)
    serving = rt.backend
    data = SHIPPED_CHECKPOINT.read_bytes()
    tmp = tmp_path / "partial.pt"
    tmp.write_bytes(data[: len(data) // 2])  # truncated, then moved in place
    os.replace(tmp, path)
    rt.poll_model()
    assert rt.model_swapper.wait_idle(60)
    assert stream.feed(rt, 4) is not None and rt.backend is serving
    model = _entry(rt, "model")
    assert model["level"] == "WARN" and "refused" in model["message"] and str(path) in model["message"], model
    errors = _entry(rt, "errors")
    assert "model_refused" in errors["message"], errors
    rt.poll_model()  # the same broken file is not loaded again and again
    assert not rt.model_swapper.status.loading

    # the reload service path: a fixed file loads on request
    shutil.copy(SHIPPED_CHECKPOINT, tmp)
    os.replace(tmp, path)
    ok, message = rt.reload_model()
    assert ok, message
    assert rt.model_swapper.wait_idle(60)
    assert stream.feed(rt, 5) is not None and rt.backend is not serving
    assert _entry(rt, "model")["level"] == "OK"
    rt.close()


def test_geometry_backend_has_no_model_to_reload():
    rt = NavigationRuntime(load_config(None, ["node.backend=geometry"]))
    ok, message = rt.reload_model()
    assert not ok and "geometry" in message
    assert not any(s["name"] == "vln_heatmap: model" for s in rt.diagnostics())

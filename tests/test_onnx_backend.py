"""The exported reprojection model: export_onnx.py, the ``onnx`` backend's parity with the ``model``
backend (onnxruntime vs PyTorch within 1e-4 on heatmaps, goal and waypoints, on simulated and
real frames, batch 1 and > 1) and the export folder's checks.

Uses the shipped checkpoint ``models/embedded/checkpoint.pt`` (``VLN_ONNX_TEST_CHECKPOINT``
overrides it) and exports it into a temporary folder with the CLI (``onnx_export`` in conftest.py,
tests/onnx_helpers.py).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from onnx_helpers import CHECKPOINT, REPO
from vln_core.config import load_config
from vln_core.backends.base import BackendUnavailableError, create_backend
from vln_core.backends import CameraFrame

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
torch.set_num_threads(1)

ATOL = 1e-4


@pytest.fixture(scope="module")
def exported(onnx_export):
    """``(folder, stdout)`` of export/export_onnx.py on CHECKPOINT (conftest's session fixture)."""
    return onnx_export


def node_cfg(folder: Path, *overrides: str):
    return load_config(None, [f"node.model_path={folder}", "node.onnx_providers=[CPUExecutionProvider]", *overrides])


def model_cfg(*overrides: str):
    return load_config(None, [f"node.model_path={CHECKPOINT}", *overrides])


# ------------------------------------------------------------------------------------------ export
def test_cli_writes_checked_graphs_and_meta(exported):
    out, stdout = exported
    from vln_core.export.reprojection import GRAPHS, MULTIVIEW_GRAPHS, sha256_file

    assert "max |onnxruntime - torch| (batches 1 and 3" in stdout and "encode one frame: onnxruntime" in stdout
    meta = json.loads((out / "meta.json").read_text())
    graphs = {**GRAPHS, **MULTIVIEW_GRAPHS} if meta.get("multiview") else GRAPHS
    assert sorted(p.name for p in out.iterdir()) == sorted([s.file for s in graphs.values()] + ["meta.json"])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    meta = json.loads((out / "meta.json").read_text())
    assert meta["frame_size"] == [224, 224] and meta["opset"] == 17 and meta["tokenizer"]["vocab_size"] > 0
    assert meta["checkpoint"]["sha256"] == sha256_file(CHECKPOINT)
    assert max(meta["parity"]["max_abs_diff"].values()) <= ATOL
    for name, spec in graphs.items():
        path = out / spec.file
        assert meta["graphs"][name]["sha256"] == sha256_file(path)
        graph = onnx.load(str(path))
        onnx.checker.check_model(graph)
        assert [i.name for i in graph.graph.input] == list(spec.inputs)
        assert [o.name for o in graph.graph.output] == list(spec.outputs)
        for value in list(graph.graph.input) + list(graph.graph.output):  # dynamic batch on every tensor
            assert value.type.tensor_type.shape.dim[0].dim_param, (name, value.name)


# ------------------------------------------------------------------------------------------ parity
def sim_frames(tmp_path_factory) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(colors (N, H, W, 3) uint8, T_wc (N, 4, 4), K (3, 3))`` of a small simulated episode."""
    from vln_core.data.episode import read_episode
    from vln_core.sim.collect import generate_episode

    out = tmp_path_factory.mktemp("sim") / "ep"
    generate_episode(out, 7, load_config(None, ["sim.frames_per_episode=8", "sim.image_size=[96, 128]"]).sim)
    seq = read_episode(out).load_all()
    return seq.colors, seq.poses, seq.K


def real_frames(real_rgbd_dir) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from vln_core.data.posed_images import load_posed_sequence

    seq = load_posed_sequence(real_rgbd_dir, stride=6, max_frames=6)
    return seq.colors, seq.poses, seq.K


@pytest.fixture(scope="module")
def sequences(tmp_path_factory, request):
    seqs = {"sim": sim_frames(tmp_path_factory)}
    try:
        seqs["real"] = real_frames(request.getfixturevalue("real_rgbd_dir"))
    except pytest.skip.Exception as exc:  # absent data: the real half is skipped by its own test
        seqs["real_missing"] = str(exc)
    return seqs


@pytest.fixture(scope="module")
def engines(exported):
    from vln_core.backends.onnx_backend import OnnxEngine
    from vln_core.backends.model_backend import TorchEngine

    from_cfg = OnnxEngine(node_cfg(exported[0]))  # the other constructor: folder and providers from the config
    assert from_cfg.folder == exported[0].resolve() and from_cfg.active_providers == ["CPUExecutionProvider"]
    return TorchEngine(model_cfg(), str(CHECKPOINT)), OnnxEngine(exported[0])


def _frames_tensor(colors: np.ndarray, size=(224, 224)) -> torch.Tensor:
    import cv2

    return torch.stack([torch.from_numpy(cv2.resize(c, size[::-1], interpolation=cv2.INTER_AREA)).permute(2, 0, 1)
                        for c in colors]).float() / 255.0


def _maxdiff(a, b) -> float:
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.mark.parametrize("source", ["sim", "real"])
def test_engines_agree_with_a_dynamic_batch(engines, sequences, source):
    if source not in sequences:
        pytest.skip(sequences["real_missing"])
    torch_engine, onnx_engine = engines
    frames = _frames_tensor(sequences[source][0])  # batch N > 1
    want, got = torch_engine.encode(frames), onnx_engine.encode(frames)
    for name in ("depth", "depth_conf", "pose_features", "f8", "f32"):
        assert _maxdiff(getattr(got, name), getattr(want, name)) <= ATOL, name
    one = onnx_engine.encode(frames[-1:])  # batch 1 as well
    assert _maxdiff(one.depth, want.depth[-1:]) <= ATOL
    cur = want.pose_features[-1:].expand_as(want.pose_features[:-1])
    assert _maxdiff(onnx_engine.relative_poses(want.pose_features[:-1], cur),
                    torch_engine.relative_poses(want.pose_features[:-1], cur)) <= ATOL
    ids, mask = torch_engine.tokenizer.encode(["go to the chair", "turn left at the door and stop"], 64)
    assert torch.equal(onnx_engine.tokenizer.encode(["go to the chair", "turn left at the door and stop"], 64)[0], ids)
    past = torch.randn(2, 16, 4, generator=torch.Generator().manual_seed(0)) * 0.3
    intent = torch.tensor([0, 2])
    args = (want.f8[:2], want.f32[:2], ids, mask, past, intent)
    for g, w in zip(onnx_engine.goal_and_waypoints(*args), torch_engine.goal_and_waypoints(*args)):
        assert _maxdiff(g, w) <= ATOL
    # the multi-view depth graphs: features of every frame, then the first frame's depth from two
    # others (one source padded away) with a sideways motion
    assert onnx_engine.has_multiview == torch_engine.has_multiview
    if torch_engine.has_multiview:
        f_want, f_got = torch_engine.multiview_features(frames), onnx_engine.multiview_features(frames)
        assert _maxdiff(f_got, f_want) <= ATOL
        K = torch.tensor([[150.0, 0.0, 111.5], [0.0, 150.0, 111.5], [0.0, 0.0, 1.0]])
        T = torch.eye(4).repeat(1, 2, 1, 1)
        T[0, 0, 0, 3], T[0, 1, 0, 3] = 0.1, -0.08
        args = (f_want[:1], f_want[None, 1:3], K, T, (224, 224), want.depth[:1], want.depth_conf[:1],
                torch.tensor([[True, True]]))
        g, w = onnx_engine.multiview_depth(*args), torch_engine.multiview_depth(*args)
        assert _maxdiff(g.depth, w.depth) <= 10 * ATOL  # metres: 1e-3 relative at most
        assert _maxdiff(g.multiview_depth, w.multiview_depth) <= 10 * ATOL


def _camera_frames(colors, poses, K, with_pose: bool) -> list[CameraFrame]:
    return [CameraFrame(stamp_ns=int(1e9 + i * 2e8), frame_id="cam", rgb=np.ascontiguousarray(c), K=K,
                        T_wc=(p if with_pose else None), seq=i) for i, (c, p) in enumerate(zip(colors, poses))]


@pytest.mark.parametrize("source", ["sim", "real"])
@pytest.mark.parametrize("mode", ["rgb_pose", "rgb_only"])
def test_onnx_backend_matches_model_backend(exported, sequences, source, mode):
    """The node's outputs: heatmaps, goal heatmap and waypoints of the whole backend, ``onnx`` vs
    ``model``, over several updates (the encoding cache and the trajectory in play).

    The networks' parity is checked here with the match refinement off: its RANSAC picks inliers
    by a threshold, so a 1e-6 difference in depth can flip a borderline match and move a PnP pose
    by a fraction of a degree (see :func:`test_onnx_and_model_backends_agree_with_match_refinement`).
    RGB only without the refinement the frames are placed by the network's pose head alone, which
    collapsed to the mean motion: a cost volume over such poses is flat, and its most likely plane
    is a coin toss that a 1e-6 difference flips (as RANSAC's inliers are), so that mode compares
    the monocular depth; the multi-view graphs are compared directly in
    :func:`test_engines_agree_with_a_dynamic_batch`, and through the backend here with known poses
    and below with the refinement."""
    if source not in sequences:
        pytest.skip(sequences["real_missing"])
    colors, poses, K = sequences[source]
    extra = ["model.match_refinement=false"] + (["model.depth_source=monocular"] if mode == "rgb_only" else [])
    onnx_backend = create_backend("onnx", node_cfg(exported[0], f"node.learned_mode={mode}", *extra))
    model_backend = create_backend("model", model_cfg(f"node.learned_mode={mode}", *extra))
    assert onnx_backend.describe()["onnx_providers"] == "CPUExecutionProvider"
    frames = _camera_frames(colors, poses, K, with_pose=(mode == "rgb_pose"))
    worst = {"heatmaps": 0.0, "heatmaps_rel": 0.0, "goal": 0.0, "waypoints": 0.0, "depth": 0.0,
             "depth_share_off": 0.0, "depth_rel_off": 0.0}
    for cur in range(2, len(frames)):
        keyframes = frames[:cur]
        got = onnx_backend.infer(frames[cur], keyframes, "go to the box on the table")
        want = model_backend.infer(frames[cur], keyframes, "go to the box on the table")
        hm_g, hm_w = got.heatmaps.heatmap, want.heatmaps.heatmap
        assert hm_g.shape == hm_w.shape == (cur, 224, 224)
        worst["heatmaps"] = max(worst["heatmaps"], _maxdiff(hm_g, hm_w))
        # mass moved, relative: multi-view depth passes the occlusion test's threshold, where a 1e-5 m
        # difference can flip one point between hidden and visible (the depth parity is checked below)
        worst["heatmaps_rel"] = max(worst["heatmaps_rel"],
                                    float((hm_g - hm_w).abs().sum() / hm_w.abs().sum().clamp(min=1e-12)))
        worst["goal"] = max(worst["goal"], _maxdiff(got.goal_heatmap, want.goal_heatmap))
        worst["waypoints"] = max(worst["waypoints"], _maxdiff(got.waypoints, want.waypoints))
        for frac in ("in_view_fraction", "out_of_view_fraction"):
            assert _maxdiff(getattr(got.heatmaps, frac), getattr(want.heatmaps, frac)) <= 1e-3, frac
        d_g = onnx_backend.frame_geometry(frames[cur])[0].astype(np.float64)
        d_w = model_backend.frame_geometry(frames[cur])[0].astype(np.float64)
        diff = np.abs(d_g - d_w)
        off = diff > ATOL
        # the multi-view depth reads the most likely plane: where two planes are equally likely, a
        # 1e-6 difference picks the other one and moves that pixel by a fraction of a plane
        worst["depth_share_off"] = max(worst["depth_share_off"], float(off.mean()))
        worst["depth_rel_off"] = max(worst["depth_rel_off"], float((diff / d_w).max()))
        worst["depth"] = max(worst["depth"], float(diff[~off].max(initial=0.0)))
    print(f"{source} {mode}: max |onnx - model|: " + ", ".join(f"{k}={v:.1e}" for k, v in worst.items()))
    assert worst["heatmaps"] <= ATOL and worst["goal"] <= ATOL and worst["waypoints"] <= ATOL, worst
    assert worst["heatmaps_rel"] <= 1e-2 and worst["depth"] <= ATOL, worst
    # measured: 0.13 % of the pixels off on the small simulated frames, none on the real ones; a real
    # mismatch between the graphs would move most pixels
    assert worst["depth_share_off"] <= 1e-2 and worst["depth_rel_off"] <= 0.1, worst
    assert onnx_backend.last_mode == model_backend.last_mode


# ------------------------------------------------------------------------------------------ refusals
def test_missing_folder_says_how_to_export(tmp_path):
    with pytest.raises(BackendUnavailableError, match=r"does not exist; export it with: python export/export_onnx.py"):
        create_backend("onnx", node_cfg(tmp_path / "nowhere"))
    with pytest.raises(BackendUnavailableError, match="is a file, not an export folder"):
        create_backend("onnx", node_cfg(CHECKPOINT if CHECKPOINT.is_file() else Path(__file__)))


def _copy_export(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_tampered_or_mismatched_export_is_refused(exported, tmp_path):
    bad = _copy_export(exported[0], tmp_path / "tampered")
    with open(bad / "pose_head.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BackendUnavailableError, match="pose_head.onnx has sha256 .* partial or mixed export"):
        create_backend("onnx", node_cfg(bad))

    other = _copy_export(exported[0], tmp_path / "other_size")
    with pytest.raises(BackendUnavailableError, match=r"made at frame size \(224, 224\) but video.frame_size is \(256, 256\)"):
        create_backend("onnx", node_cfg(other, "video.frame_size=[256, 256]"))

    meta = json.loads((other / "meta.json").read_text())
    meta["version"] = 99
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BackendUnavailableError, match="export version 99"):
        create_backend("onnx", node_cfg(other))

    with pytest.raises(BackendUnavailableError, match="none of node.onnx_providers"):
        create_backend("onnx", node_cfg(exported[0], "node.onnx_providers=[NoSuchExecutionProvider]"))


def test_failed_export_leaves_the_good_one_and_bad_out_is_exit_2(exported, tmp_path, monkeypatch):
    from vln_core.export import reprojection as rx
    from vln_core.models.shipped import load_model_checkpoint

    good = _copy_export(exported[0], tmp_path / "embedded")
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    model, _ = load_model_checkpoint(CHECKPOINT, model_cfg())
    # a model that no longer matches what the graphs compute: the parity check fails, nothing is swapped in
    real_verify = rx.verify_export
    monkeypatch.setattr(rx, "verify_export", lambda m, folder, atol: real_verify(m, folder, atol=-1.0))
    with pytest.raises(rx.ExportMismatchError):
        rx.export_reprojection(model, good, checkpoint=CHECKPOINT)
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embedded"]  # no temporary folder left
    monkeypatch.undo()
    # a successful re-export swaps the folder and carries the TensorRT engine cache over
    (good / "engines").mkdir()
    (good / "engines" / "encoder.fp32.x.engine").write_bytes(b"cached")
    rx.export_reprojection(model, good, checkpoint=CHECKPOINT, atol=None)
    assert (good / "engines" / "encoder.fp32.x.engine").read_bytes() == b"cached"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embedded"]

    script = str(REPO / "export/export_onnx.py")
    for argv, message in (([f"--out={REPO / 'export'}"], "is not an export folder"),
                          (["--out=x.onnx"], "exports to a folder"),
                          ([], None)):
        done = subprocess.run([sys.executable, script, "--checkpoint", str(CHECKPOINT), "--runs", "0", *argv]
                              if message else [sys.executable, script], capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert (message or "--allow-random-init") in done.stderr


@pytest.mark.parametrize("mode", ["rgb_pose", "rgb_only"])
def test_onnx_and_model_backends_agree_with_match_refinement(exported, sequences, mode):
    """With the match refinement on (the default), both backends refine the same geometry: the
    maps agree closely (CC) and the shares within 0.01, on the real sequence where available."""
    from vln_core.metrics import heatmap_metrics

    source = "real" if "real" in sequences else "sim"
    colors, poses, K = sequences[source]
    onnx_backend = create_backend("onnx", node_cfg(exported[0], f"node.learned_mode={mode}"))
    model_backend = create_backend("model", model_cfg(f"node.learned_mode={mode}"))
    frames = _camera_frames(colors, poses, K, with_pose=(mode == "rgb_pose"))
    for cur in range(2, len(frames)):
        got = onnx_backend.infer(frames[cur], frames[:cur], "go to the box on the table")
        want = model_backend.infer(frames[cur], frames[:cur], "go to the box on the table")
        overlap = want.heatmaps.has_overlap.bool()
        assert torch.equal(got.heatmaps.has_overlap.bool(), overlap)
        if overlap.any():
            cc = heatmap_metrics(got.heatmaps.heatmap[overlap], want.heatmaps.heatmap[overlap], overlap[overlap])["cc"]
            assert cc >= 0.99, (cur, cc)
        for frac in ("in_view_fraction", "occluded_fraction", "out_of_view_fraction"):
            assert _maxdiff(getattr(got.heatmaps, frac), getattr(want.heatmaps, frac)) <= 1e-2, frac
        assert _maxdiff(got.waypoints, want.waypoints) <= ATOL
    for backend in (model_backend, onnx_backend):
        expected = "multi-view depth is metric" if mode == "rgb_pose" else "from PnP"
        assert expected in backend.describe()["match_refinement"]

"""The episode format: writer/reader round trip, crash safety, input validation, plain folders."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vln_core.data.episode import (
    PLAIN_FOLDER_RATE_HZ,
    EpisodeWriter,
    is_complete_episode,
    list_episodes,
    read_episode,
)
from vln_core.data.posed_images import load_posed_sequence
from vln_core.errors import InputError

H, W = 24, 32
K = np.array([[30.0, 0.0, 15.5], [0.0, 31.0, 11.5], [0.0, 0.0, 1.0]])
REPO = Path(__file__).resolve().parents[1]


def real_rgbd_dir() -> Path:
    env = os.environ.get("VLN_REAL_RGBD_DIR")
    return Path(env) if env else REPO.parent / "shared/data/real_rgbd_box"


def _yaw_pose(yaw: float, t) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = t
    return T


MOUNT = np.array([[0.0, 0.0, 1.0, 0.2], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 1.1], [0, 0, 0, 1]])


def _frames(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        color = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        depth = rng.uniform(0.3, 8.0, (H, W)).astype(np.float32)
        depth[0, :4] = [0.0, np.nan, np.inf, 70.0]  # all invalid -> 0
        T_odom_base = _yaw_pose(0.1 * i + 1 / 3, [0.5 * i + 1 / 7, -0.25 * i, 0.0])
        T_wc = T_odom_base @ MOUNT
        yield color, depth, T_wc, 100.0 + i / 10 + 1e-7, T_odom_base, np.array([0.5, 0.1 * i])


def _write(out: Path, n: int = 4, **finish_kwargs) -> tuple[Path, list]:
    frames = list(_frames(n))
    with EpisodeWriter(out, K, (H, W), T_base_cam=MOUNT, source="sim") as writer:
        for color, depth, T_wc, t, T_ob, vel in frames:
            writer.add_frame(color, depth, T_wc, t, T_odom_base=T_ob, base_velocity=vel)
        path = writer.finish(**finish_kwargs)
    return path, frames


def test_round_trip_of_everything(tmp_path: Path):
    goal = {"object": "red chair", "category": "chair", "color": "red", "position": (1.0, -2.0, 0.45)}
    path, frames = _write(
        tmp_path / "ep_0", instruction="go to the red chair", goal=goal, intent="left",
        scene={"seed": np.int64(7), "rooms": 3}, extra={"note": "test"},
    )
    assert path == tmp_path / "ep_0" and is_complete_episode(path)
    assert not (tmp_path / "ep_0.partial").exists()
    ep = read_episode(path)
    assert len(ep) == 4 and ep.frame_ids == [0, 1, 2, 3]
    assert ep.source == "sim" and ep.instruction == "go to the red chair" and ep.intent == "left"
    assert ep.goal == {"object": "red chair", "category": "chair", "color": "red", "position": [1.0, -2.0, 0.45]}
    assert ep.scene == {"seed": 7, "rooms": 3} and ep.extra == {"note": "test"}
    assert ep.image_size == (H, W)
    np.testing.assert_array_equal(ep.K, K)
    np.testing.assert_array_equal(ep.T_base_cam, MOUNT)
    for i, (color, depth, T_wc, t, T_ob, vel) in enumerate(frames):
        np.testing.assert_array_equal(ep.color(i), color)  # png: lossless
        expected = np.where(np.isfinite(depth) & (depth > 0) & (depth < 65.535), depth, 0.0)
        got = ep.depth(i)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=0.5e-3 + 1e-6)  # millimetre rounding
        assert (got[0, :4] == 0).all()
        np.testing.assert_array_equal(ep.poses[i], T_wc)  # repr text is exact
        assert ep.timestamps[i] == t
        np.testing.assert_array_equal(ep.base_poses[i], T_ob)
        np.testing.assert_array_equal(ep.base_velocities[i], vel)
    seq = ep.load_all(stride=2)
    assert seq.frame_ids == [0, 2] and seq.colors.shape == (2, H, W, 3) and seq.depths.shape == (2, H, W)
    np.testing.assert_array_equal(seq.colors[1], frames[2][0])
    # the folder is also a valid plain posed-image folder
    posed = load_posed_sequence(path)
    np.testing.assert_array_equal(posed.poses, ep.poses)
    np.testing.assert_array_equal(posed.K, K)


def test_jpeg_and_no_depth_no_base(tmp_path: Path):
    frames = list(_frames(2))
    v, u = np.mgrid[0:H, 0:W]
    smooth = np.stack([u * 7, v * 9, 255 - u * 5], axis=-1).astype(np.uint8)  # jpeg-friendly content
    with EpisodeWriter(tmp_path / "ep", K, (H, W), source="recording", color_format="jpg", write_depth=False) as w:
        for color, depth, T_wc, t, *_ in frames:
            w.add_frame(smooth, depth, T_wc, t)
        w.finish()
    ep = read_episode(tmp_path / "ep")
    assert (tmp_path / "ep" / "frame-000000.color.jpg").is_file()
    assert ep.depth(0) is None and ep.base_poses is None and ep.base_velocities is None and ep.T_base_cam is None
    assert ep.goal is None and ep.intent is None and ep.instruction == ""
    assert ep.load_all().depths is None
    error = np.abs(ep.color(1).astype(int) - smooth)
    assert error.mean() < 3 and error.max() < 40  # lossy but close, quality 95


def test_exception_inside_context_leaves_nothing(tmp_path: Path):
    frames = list(_frames(3))
    with pytest.raises(RuntimeError, match="boom"):
        with EpisodeWriter(tmp_path / "ep", K, (H, W)) as w:
            for color, depth, T_wc, t, *_ in frames:
                w.add_frame(color, depth, T_wc, t)
            raise RuntimeError("boom")
    assert not (tmp_path / "ep").exists() and not (tmp_path / "ep.partial").exists()
    assert list_episodes(tmp_path) == []
    with pytest.raises(RuntimeError, match="boom"):
        with EpisodeWriter(tmp_path / "kept", K, (H, W), keep_partial=True) as w:
            w.add_frame(*frames[0][:4])
            raise RuntimeError("boom")
    assert (tmp_path / "kept.partial" / "frame-000000.color.png").is_file()
    assert list_episodes(tmp_path) == []
    with pytest.raises(InputError, match="unfinished"):
        read_episode(tmp_path / "kept.partial")


def test_leaving_context_without_finish_discards_with_warning(tmp_path: Path):
    color, depth, T_wc, t, *_ = next(_frames(1))
    with pytest.warns(RuntimeWarning, match="without finish"):
        with EpisodeWriter(tmp_path / "ep", K, (H, W)) as w:
            w.add_frame(color, depth, T_wc, t)
    assert not (tmp_path / "ep").exists() and list_episodes(tmp_path) == []


def test_killed_writer_process_leaves_no_complete_episode(tmp_path: Path):
    script = textwrap.dedent(
        f"""
        import os, signal, sys, numpy as np
        sys.path.insert(0, {str(REPO)!r})
        from vln_core.data.episode import EpisodeWriter
        w = EpisodeWriter({str(tmp_path / 'ep_crash')!r}, np.array({K.tolist()}), ({H}, {W}))
        for i in range(3):
            w.add_frame(np.zeros(({H}, {W}, 3), np.uint8), np.ones(({H}, {W}), np.float32), np.eye(4), float(i))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    partial = tmp_path / "ep_crash.partial"
    assert (partial / "frame-000002.color.png").is_file()  # it really was killed mid-episode
    assert not (tmp_path / "ep_crash").exists()
    _write(tmp_path / "ep_ok", n=2)
    assert list_episodes(tmp_path) == [tmp_path / "ep_ok"]
    assert not is_complete_episode(partial)
    # a new writer for the same episode removes the stale partial folder and succeeds
    path, _ = _write(tmp_path / "ep_crash", n=2)
    assert not partial.exists() and len(read_episode(path)) == 2
    assert list_episodes(tmp_path) == [tmp_path / "ep_crash", tmp_path / "ep_ok"]


def test_partial_folder_with_json_is_not_complete(tmp_path: Path):
    # a crash between writing episode.json and the final rename
    path, _ = _write(tmp_path / "ep", n=1)
    path.rename(tmp_path / "ep2.partial")
    assert not is_complete_episode(tmp_path / "ep2.partial")
    assert list_episodes(tmp_path) == []


def test_bad_inputs_raise_input_error(tmp_path: Path):
    color, depth, T_wc, t, T_ob, vel = next(_frames(1))
    with pytest.raises(InputError, match="skew"):
        EpisodeWriter(tmp_path / "a", [[30, 1, 15], [0, 30, 11], [0, 0, 1]], (H, W))
    with pytest.raises(InputError, match="source"):
        EpisodeWriter(tmp_path / "a", K, (H, W), source="habitat")
    with EpisodeWriter(tmp_path / "ep", K, (H, W)) as w:
        with pytest.raises(InputError, match=r"color must be \(24, 32, 3\) uint8"):
            w.add_frame(color[:, :, :2], depth, T_wc, t)
        with pytest.raises(InputError, match="color must be"):
            w.add_frame(color.astype(np.float32), depth, T_wc, t)
        with pytest.raises(InputError, match="depth is required"):
            w.add_frame(color, None, T_wc, t)
        with pytest.raises(InputError, match="depth must be"):
            w.add_frame(color, depth[:-1], T_wc, t)
        bad_pose = T_wc.copy()
        bad_pose[0, 3] = np.nan
        with pytest.raises(InputError, match="non-finite"):
            w.add_frame(color, depth, bad_pose, t)
        with pytest.raises(InputError, match="4x4"):
            w.add_frame(color, depth, T_wc[:3], t)
        with pytest.raises(InputError, match="finite"):
            w.add_frame(color, depth, T_wc, float("nan"))
        assert len(w) == 0 and not list(w.partial_dir.glob("frame-*"))  # rejected frames leave no files
        w.add_frame(color, depth, T_wc, t, T_odom_base=T_ob)
        with pytest.raises(InputError, match="increase strictly"):
            w.add_frame(color, depth, T_wc, t, T_odom_base=T_ob)
        with pytest.raises(InputError, match="every frame or for none"):
            w.add_frame(color, depth, T_wc, t + 1)
        with pytest.raises(InputError, match="intent"):
            w.finish(intent="backwards")
        with pytest.raises(InputError, match="object"):
            w.finish(goal={"category": "chair"})
        with pytest.raises(InputError, match="position"):
            w.finish(goal={"object": "chair", "position": [1.0, 2.0]})
        with pytest.raises(InputError, match="serialisable"):
            w.finish(scene={"rng": object()})
        w.finish(goal={"object": "chair"})
    with pytest.raises(InputError, match="already exists"):
        EpisodeWriter(tmp_path / "ep", K, (H, W))
    with pytest.raises(InputError, match="no frames"):
        with EpisodeWriter(tmp_path / "empty", K, (H, W)) as w:
            w.finish()
    with pytest.raises(InputError, match="does not exist"):
        read_episode(tmp_path / "nope")


def test_corrupt_json_and_missing_files(tmp_path: Path):
    path, _ = _write(tmp_path / "ep", n=2)
    meta = json.loads((path / "episode.json").read_text())
    meta["format_version"] = 99
    (path / "episode.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="newer"):
        read_episode(path)
    meta["format_version"] = 1
    meta["base_poses"] = meta["base_poses"][:1]
    (path / "episode.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"base_poses must have shape \(2, 4, 4\)"):
        read_episode(path)
    _write(tmp_path / "ep_b", n=2)
    (tmp_path / "ep_b" / "frame-000001.color.png").unlink()
    with pytest.raises(InputError, match="no color file for frame 1"):
        read_episode(tmp_path / "ep_b")


def test_list_episodes_nested_and_sorted(tmp_path: Path):
    _write(tmp_path / "scene_b" / "ep_1", n=1)
    _write(tmp_path / "scene_a" / "ep_2", n=1)
    _write(tmp_path / "scene_a" / "ep_10", n=1)
    (tmp_path / "scene_a" / "junk").mkdir()
    assert list_episodes(tmp_path) == [
        tmp_path / "scene_a" / "ep_10", tmp_path / "scene_a" / "ep_2", tmp_path / "scene_b" / "ep_1",
    ]
    assert list_episodes(tmp_path / "scene_b" / "ep_1") == [tmp_path / "scene_b" / "ep_1"]


def test_plain_posed_folder_reads_as_episode(tmp_path: Path):
    path, frames = _write(tmp_path / "ep", n=3)
    (path / "episode.json").unlink()
    assert not is_complete_episode(path) and list_episodes(tmp_path) == []
    assert list_episodes(tmp_path, include_posed_folders=True) == [path]
    ep = read_episode(path)
    assert ep.source == "posed_folder" and ep.instruction == "" and ep.has_depth
    np.testing.assert_allclose(ep.timestamps, np.arange(3) / PLAIN_FOLDER_RATE_HZ)
    np.testing.assert_array_equal(ep.poses[2], frames[2][2])
    assert ep.base_poses is None and ep.T_base_cam is None


def test_real_posed_folder_reads_as_episode():
    folder = real_rgbd_dir()
    if not (folder / "intrinsics.K.txt").is_file():
        pytest.skip(f"real RGB-D sequence not found at {folder} (set VLN_REAL_RGBD_DIR)")
    ep = read_episode(folder)
    assert len(ep) == 50 and ep.frame_ids[:2] == [15, 17] and ep.image_size == (480, 640)
    assert ep.source == "posed_folder" and ep.has_depth
    seq = ep.load_all(stride=25)
    assert seq.frame_ids == [15, 65] and seq.depths.shape == (2, 480, 640)
    np.testing.assert_allclose(ep.poses[0], np.eye(4), atol=1e-9)

"""Posed-image folders (ScanNet / 7-Scenes layout): file lookup, decoding, intrinsics, loading."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from vln_core.data.posed_images import (
    SEVEN_SCENES_K,
    frame_path,
    list_frame_ids,
    load_posed_sequence,
    read_color,
    read_depth,
    read_intrinsics,
    read_pose,
)
from vln_core.errors import InputError


def real_rgbd_dir() -> Path:
    env = os.environ.get("VLN_REAL_RGBD_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared/data/real_rgbd_box"


def _pose(yaw: float, t) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    T[:3, 3] = t
    return T


def _write_frame(folder: Path, name_id: str, color: np.ndarray, depth_mm: np.ndarray | None, T: np.ndarray,
                 ext: str = "png") -> None:
    cv2.imwrite(str(folder / f"frame-{name_id}.color.{ext}"), cv2.cvtColor(color, cv2.COLOR_RGB2BGR))
    if depth_mm is not None:
        cv2.imwrite(str(folder / f"frame-{name_id}.depth.png"), depth_mm)
    np.savetxt(folder / f"frame-{name_id}.pose.txt", T, fmt="%.17g")


@pytest.fixture
def synthetic_folder(tmp_path: Path) -> tuple[Path, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    colors, depths, poses = [], [], []
    # unpadded and padded names mixed, ids not contiguous: 9 must sort before 10
    for frame_id, name_id in [(10, "000010"), (9, "9"), (123, "000123")]:
        color = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        depth = rng.integers(1, 5000, (12, 16)).astype(np.uint16)
        depth[0, 0] = 0
        depth[0, 1] = 65535
        T = _pose(0.1 * frame_id, [frame_id, 2.0, -1.0])
        _write_frame(tmp_path, name_id, color, depth, T)
        colors.append(color)
        depths.append(depth)
        poses.append(T)
    np.savetxt(tmp_path / "intrinsics.K.txt", [[20.0, 0, 7.5], [0, 21.0, 5.5], [0, 0, 1]])
    return tmp_path, colors, depths, poses


def test_frame_ids_sorted_numerically_and_paths_found(synthetic_folder):
    folder, *_ = synthetic_folder
    assert list_frame_ids(folder) == [9, 10, 123]
    assert frame_path(folder, 9, "color").name == "frame-9.color.png"
    assert frame_path(folder, 10, "pose").name == "frame-000010.pose.txt"
    with pytest.raises(InputError, match="no depth file for frame 11"):
        frame_path(folder, 11, "depth")
    with pytest.raises(InputError, match="frame kind"):
        frame_path(folder, 9, "normals")


def test_single_file_readers_round_trip(synthetic_folder):
    folder, colors, depths, poses = synthetic_folder
    assert np.array_equal(read_color(frame_path(folder, 10, "color")), colors[0])
    depth = read_depth(frame_path(folder, 10, "depth"))
    assert depth.dtype == np.float32 and depth.shape == (12, 16)
    assert depth[0, 0] == 0 and depth[0, 1] == 0  # 0 and 65535 are "no measurement"
    np.testing.assert_allclose(depth[1:], depths[0][1:].astype(np.float32) / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(read_pose(frame_path(folder, 10, "pose")), poses[0])


def test_load_sequence_stride_start_max(synthetic_folder):
    folder, colors, depths, poses = synthetic_folder
    seq = load_posed_sequence(folder)
    assert seq.frame_ids == [9, 10, 123]
    assert seq.colors.shape == (3, 12, 16, 3) and seq.colors.dtype == np.uint8
    assert seq.depths.shape == (3, 12, 16) and seq.depths.dtype == np.float32
    assert seq.poses.shape == (3, 4, 4) and seq.poses.dtype == np.float64
    np.testing.assert_array_equal(seq.colors[1], colors[0])  # frame 10 is second after sorting
    np.testing.assert_array_equal(seq.poses[0], poses[1])
    np.testing.assert_array_equal(seq.K, [[20.0, 0, 7.5], [0, 21.0, 5.5], [0, 0, 1]])
    assert load_posed_sequence(folder, stride=2).frame_ids == [9, 123]
    assert load_posed_sequence(folder, start=1, max_frames=1).frame_ids == [10]
    with pytest.raises(InputError, match="stride"):
        load_posed_sequence(folder, stride=0)


def test_bad_pose_files_raise_clear_errors(tmp_path: Path):
    bad = tmp_path / "p.txt"
    bad.write_text("1 0 0\n0 1 0\n0 0 1\n")
    with pytest.raises(InputError, match="16 numbers"):
        read_pose(bad)
    bad.write_text("\n".join(" ".join(["-inf"] * 4) for _ in range(4)))
    with pytest.raises(InputError, match="non-finite"):
        read_pose(bad)
    scaled = np.eye(4)
    scaled[:3, :3] *= 2.0
    np.savetxt(bad, scaled)
    with pytest.raises(InputError, match="not a proper rotation"):
        read_pose(bad)
    reflect = np.diag([1.0, 1.0, -1.0, 1.0])
    np.savetxt(bad, reflect)
    with pytest.raises(InputError, match="not a proper rotation"):
        read_pose(bad)
    with pytest.raises(InputError, match="does not exist"):
        read_pose(tmp_path / "missing.txt")


def test_invalid_pose_frames_can_be_skipped(synthetic_folder):
    folder, *_ = synthetic_folder
    (folder / "frame-000010.pose.txt").write_text("\n".join(" ".join(["-inf"] * 4) for _ in range(4)))
    with pytest.raises(InputError, match="frame-000010.pose.txt"):
        load_posed_sequence(folder)
    assert load_posed_sequence(folder, skip_invalid_poses=True).frame_ids == [9, 123]


def test_intrinsics_alternatives(tmp_path: Path):
    with pytest.raises(InputError, match="no intrinsics found"):
        read_intrinsics(tmp_path)
    (tmp_path / "intrinsic").mkdir()
    K4 = np.eye(4)
    K4[:3, :3] = [[1170.2, 0, 647.8], [0, 1170.2, 483.8], [0, 0, 1]]
    np.savetxt(tmp_path / "intrinsic" / "intrinsic_color.txt", K4)
    K, size = read_intrinsics(tmp_path)
    np.testing.assert_allclose(K, K4[:3, :3])
    assert size is None
    (tmp_path / "intrinsics.txt").write_text("500 501 320 240 640 480\n")
    K, size = read_intrinsics(tmp_path)
    np.testing.assert_allclose(K, [[500, 0, 320], [0, 501, 240], [0, 0, 1]])
    assert size == (480, 640)
    (tmp_path / "intrinsics.K.txt").write_text("500 3 320\n0 500 240\n0 0 1\n")
    with pytest.raises(InputError, match="skew"):
        read_intrinsics(tmp_path)


def test_seven_scenes_default_only_when_recognisable(tmp_path: Path):
    seq = tmp_path / "chess" / "seq-01"
    seq.mkdir(parents=True)
    K, size = read_intrinsics(seq)
    np.testing.assert_array_equal(K, SEVEN_SCENES_K)
    assert size == (480, 640)
    other = tmp_path / "kitchen" / "seq-01"
    other.mkdir(parents=True)
    with pytest.raises(InputError, match="no intrinsics found"):
        read_intrinsics(other)
    under_dataset = tmp_path / "7scenes_data" / "mykitchen" / "seq-03"
    under_dataset.mkdir(parents=True)
    assert read_intrinsics(under_dataset)[1] == (480, 640)


def test_depth_of_other_size_resized_only_with_shared_fov(tmp_path: Path):
    color = np.zeros((8, 12, 3), np.uint8)
    depth_half = np.arange(4 * 6, dtype=np.uint16).reshape(4, 6) + 1000
    _write_frame(tmp_path, "000000", color, depth_half, np.eye(4))
    np.savetxt(tmp_path / "intrinsics.K.txt", [[10.0, 0, 5.5], [0, 10.0, 3.5], [0, 0, 1]])
    seq = load_posed_sequence(tmp_path)
    assert seq.depths.shape == (1, 8, 12)
    # nearest neighbour: each depth pixel becomes a 2x2 block, no interpolated values
    np.testing.assert_allclose(seq.depths[0, ::2, ::2], depth_half / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(seq.depths[0, 1::2, 1::2], depth_half / 1000.0, rtol=1e-6)
    cv2.imwrite(str(tmp_path / "frame-000000.depth.png"), np.ones((8, 8), np.uint16))
    with pytest.raises(InputError, match="aspect ratio"):
        load_posed_sequence(tmp_path)


def test_partial_depth_is_an_error(synthetic_folder):
    folder, *_ = synthetic_folder
    (folder / "frame-000123.depth.png").unlink()
    with pytest.raises(InputError, match=r"not for frames \[123\]"):
        load_posed_sequence(folder)
    for p in folder.glob("*.depth.png"):
        p.unlink()
    assert load_posed_sequence(folder).depths is None


def test_real_posed_folder_loads():
    folder = real_rgbd_dir()
    if not (folder / "intrinsics.K.txt").is_file():
        pytest.skip(f"real RGB-D sequence not found at {folder} (set VLN_REAL_RGBD_DIR)")
    ids = list_frame_ids(folder)
    assert ids[0] == 15 and ids[-1] == 113 and len(ids) == 50
    seq = load_posed_sequence(folder, stride=10)
    assert seq.frame_ids == [15, 35, 55, 75, 95]
    assert seq.colors.shape == (5, 480, 640, 3)
    assert seq.depths.shape == (5, 480, 640)
    np.testing.assert_allclose(seq.poses[0], np.eye(4), atol=1e-9)
    assert seq.K[0, 0] == pytest.approx(615.195, abs=1e-3)
    valid = (seq.depths > 0).mean()
    assert 0.1 < valid < 0.9
    assert 0.2 < np.median(seq.depths[seq.depths > 0]) < 3.0  # close-range box, metres

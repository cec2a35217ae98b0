"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Where the real posed RGB-D sequence lives unless ``VLN_REAL_RGBD_DIR`` says otherwise.
DEFAULT_REAL_RGBD_DIR = Path(__file__).resolve().parents[1].parent / "shared/data/real_rgbd_box"


@pytest.fixture(scope="session")
def real_rgbd_dir() -> Path:
    """Folder of the real posed RGB-D sequence (``VLN_REAL_RGBD_DIR`` or ``../shared/data/real_rgbd_box``).

    Skips the test, naming the path looked at, when the folder or its intrinsics are absent.
    """
    env = os.environ.get("VLN_REAL_RGBD_DIR")
    folder = Path(env) if env else DEFAULT_REAL_RGBD_DIR
    if not (folder / "intrinsics.K.txt").is_file():
        pytest.skip(
            f"real RGB-D sequence not found at {folder} (no intrinsics.K.txt); "
            "set VLN_REAL_RGBD_DIR to a posed-image folder to run this test"
        )
    return folder


@pytest.fixture(scope="session")
def sim_episode_224(tmp_path_factory):
    """``(colors (N, H, W, 3), depth (N, H, W), T_wc (N, 4, 4), K)`` of a simulated 24-frame
    episode at 224x224 (seed 8): the two-view geometry tests' scene."""
    import numpy as np

    from vln_core.config import load_config
    from vln_core.data.episode import read_episode
    from vln_core.sim.collect import generate_episode

    out = tmp_path_factory.mktemp("sim_224") / "ep"
    generate_episode(out, 8, load_config(None, ["sim.frames_per_episode=24", "sim.image_size=[224, 224]"]).sim)
    seq = read_episode(out).load_all()
    return seq.colors, seq.depths.astype(np.float64), seq.poses.astype(np.float64), seq.K.astype(np.float64)


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory) -> tuple[Path, str]:
    """``(folder, the CLI's stdout)``: the shipped checkpoint (``VLN_ONNX_TEST_CHECKPOINT``
    overrides it) exported once per session by export/export_onnx.py into a temporary folder.

    Skips when onnx / onnxruntime or the checkpoint are absent.
    """
    from onnx_helpers import CHECKPOINT, export_onnx_folder

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if not CHECKPOINT.is_file():
        pytest.skip(f"no checkpoint at {CHECKPOINT} (the shipped model; set VLN_ONNX_TEST_CHECKPOINT)")
    out = tmp_path_factory.mktemp("export") / "embedded"
    return out, export_onnx_folder(out, CHECKPOINT)

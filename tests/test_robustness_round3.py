"""Issue 19, offline side: nothing lost, nothing silent (training folders, damaged bags, checkpoints,
exports, recordings, default configs, pose tolerance). Every broken file is made by the test itself."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_robustness_data import REPO, SIZE, _load_script, _one_clear_line, _run, box_episodes  # noqa: F401


def _finetune_overrides(episodes: Path, out: Path, *extra: str) -> list[str]:
    return ["video.total_frames=3", "video.keyframes=2", f"video.frame_size=[{SIZE},{SIZE}]",
            "frame_sampling.max_points_per_frame=512", "training.device=cpu", "training.num_workers=0",
            f"training.data_dirs=[{episodes}]", f"training.output_dir={out}",
            "training.eval_fraction=0.34", "training.batch_size=2", "training.max_steps=2",
            "training.eval_max_samples=2", "training.eval_data_dirs=[]", "training.frame_stride=1",
            "training.log_every=1", *extra]


# ----------------------------------------------------------------------------- items 1 and 13
def test_a_best_pt_the_run_did_not_write_is_moved_aside_not_replaced(box_episodes, tmp_path, capsys):
    """A folder with an earlier best.pt but no last.pt: the run starts at step 0 (nothing to resume)
    and must not overwrite that best.pt; it is moved aside as --fresh does, and the run says so."""
    finetune = _load_script("training/finetune.py")
    out = tmp_path / "R"
    out.mkdir()
    (out / "best.pt").write_bytes(b"somebody else's best model")
    torch.set_num_threads(1)
    assert finetune.main(["--config", "configs/train_embedded.yaml", "--no-progress",
                          *_finetune_overrides(box_episodes, out)]) == 0
    printed = capsys.readouterr().out
    aside = [p for p in out.iterdir() if p.name.startswith("previous_")]
    assert len(aside) == 1 and (aside[0] / "best.pt").read_bytes() == b"somebody else's best model"
    lines = [line for line in printed.splitlines() if str(aside[0]) in line]
    assert len(lines) == 1 and "best.pt" in lines[0] and "no last.pt" in lines[0], printed
    assert (out / "best.pt").is_file() and (out / "best.pt").read_bytes() != b"somebody else's best model"


def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once(box_episodes, tmp_path, capsys):
    """What a SIGKILL before the first save leaves: a train_log.jsonl and no last.pt. The next run
    starts at step 0 again; its log must not list steps 1-2 twice (the old log is moved aside)."""
    finetune = _load_script("training/finetune.py")
    out = tmp_path / "R"
    out.mkdir()
    killed_log = '{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 8.9}\n{"step": 3, "lo'
    (out / "train_log.jsonl").write_text(killed_log)
    torch.set_num_threads(1)
    assert finetune.main(["--config", "configs/train_embedded.yaml", "--no-progress",
                          *_finetune_overrides(box_episodes, out)]) == 0
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    aside = [p for p in out.iterdir() if p.name.startswith("previous_")]
    assert len(aside) == 1 and (aside[0] / "train_log.jsonl").read_text() == killed_log
    assert str(aside[0]) in capsys.readouterr().out


# ----------------------------------------------------------------------------- item 11
def _damage(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def test_a_checkpoint_with_damaged_bytes_or_non_finite_weights_is_refused_in_one_line(tmp_path):
    from vln_core.errors import InputError
    from vln_core.models.shipped import SHIPPED_CHECKPOINT, load_model_checkpoint
    from vln_core.train.checkpoint import load_checkpoint, save_checkpoint

    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(SHIPPED_CHECKPOINT.read_bytes())
    _damage(damaged, damaged.stat().st_size // 2, b"\x5a" * 64)  # inside some tensor's bytes
    with pytest.raises(InputError) as err:
        load_model_checkpoint(damaged)
    assert "CRC" in str(err.value) and str(damaged) in str(err.value) and "\n" not in str(err.value)

    nan = tmp_path / "nan.pt"
    save_checkpoint(nan, {"model": {"a.weight": torch.ones(3), "b.weight": torch.tensor([1.0, float("nan"), float("inf")])}})
    with pytest.raises(InputError, match=r"non-finite weights: 'b.weight' holds 2 NaN/inf"):
        load_checkpoint(nan)
    fine = tmp_path / "fine.pt"
    save_checkpoint(fine, {"model": {"a.weight": torch.ones(3)}})
    assert torch.equal(load_checkpoint(fine)["model"]["a.weight"], torch.ones(3))


# ----------------------------------------------------------------------------- item 12
def test_export_restores_what_a_killed_swap_left_and_removes_its_temporaries(tmp_path):
    """A SIGKILL between the export's two renames leaves the previous export in
    ``.<name>.old-XXXXXXXX/<name>`` and nothing at --out; a kill earlier leaves ``.<name>.tmp-*``.
    The next run (here one that then stops at a damaged checkpoint, exit 2) puts the export back
    and removes the temporaries, and leaves folders that are not its own alone."""
    from vln_core.models.shipped import SHIPPED_CHECKPOINT

    out = tmp_path / "exports" / "embedded"
    out.parent.mkdir()
    old = out.parent / ".embedded.old-k3x9a0qz"
    (old / "embedded" / "engines").mkdir(parents=True)
    graphs = {"encoder.onnx": b"enc", "pose_head.onnx": b"pose", "goal_waypoints.onnx": b"goal", "meta.json": b"{}"}
    for name, data in graphs.items():
        (old / "embedded" / name).write_bytes(data)
    tmp_new = out.parent / ".embedded.tmp-0a1b2c3d"  # the complete new export, never swapped in
    tmp_new.mkdir()
    (tmp_new / "encoder.onnx").write_bytes(b"half")
    not_ours = [out.parent / ".embedded.tmp-notes", out.parent / ".embedded.tmp-abcdefgh"]
    not_ours[0].mkdir()
    not_ours[1].mkdir()
    (not_ours[1] / "my_notes.txt").write_text("keep me")

    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(SHIPPED_CHECKPOINT.read_bytes())
    _damage(damaged, damaged.stat().st_size // 2, b"\x5a" * 64)
    proc = _run("export/export_onnx.py", "--checkpoint", str(damaged), "--out", str(out), "--runs", "0")
    _one_clear_line(proc, str(damaged), "CRC")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == graphs
    assert (out / "engines").is_dir()
    assert not old.exists() and not tmp_new.exists()
    assert all(p.exists() for p in not_ours), "removed a folder that is not the export's own"
    assert f"restored {out}" in proc.stdout and ".embedded.tmp-0a1b2c3d" in proc.stdout


# ----------------------------------------------------------------------------- item 10
@pytest.mark.parametrize("script, args, needle", [
    ("tools/infer_video.py", ["{tmp}/no_such_video.mp4", "--out", "{tmp}/out"], "no_such_video.mp4"),
    ("training/evaluate.py", ["--data", "{tmp}/no_such_data", "--out", "{tmp}/out", "--constant-depth", "2.0"],
     "no_such_data"),
])
def test_scripts_find_their_default_config_from_any_folder(tmp_path, script, args, needle):
    """Run from outside the repository, the scripts still find their default config (repository-
    relative) and get as far as the input the user named."""
    argv = [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, str(REPO / script), *argv], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert "config file not found" not in proc.stderr, proc.stderr[-2000:]
    _one_clear_line(proc, needle)


# ----------------------------------------------------------------------------- item 7
def _posed_folder_with_rotation(folder: Path, n: int, off: float, bad_frame: int = 1) -> Path:
    """A posed folder whose frame ``bad_frame`` pose is ``off`` away from orthonormal (the rotation
    written with few digits, as KinectFusion / SfM exports store it)."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True)
    (folder / "intrinsics.K.txt").write_text("14.0 0 7.5\n0 14.0 7.5\n0 0 1\n")
    c, s = np.cos(0.3), np.sin(0.3)
    for i in range(n):
        cv2.imwrite(str(folder / f"frame-{i:06d}.color.png"), np.full((16, 16, 3), 40 * i % 255, np.uint8))
        cv2.imwrite(str(folder / f"frame-{i:06d}.depth.png"), np.full((16, 16), 1000 + 100 * i, np.uint16))
        T = np.eye(4)
        T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        T[0, 3] = 0.01 * i
        if i == bad_frame:
            T[0, 0] += off
        np.savetxt(folder / f"frame-{i:06d}.pose.txt", T, fmt="%.6f")
    return folder


def _replay_folder(folder: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    from ros_helpers import ros_env, unique_domain_id

    return subprocess.run([sys.executable, "-m", "vln_heatmap.replay", str(folder), "--rate", "4", "--wait-for-node", "0", "--linger", "0"],
                          capture_output=True, text=True, cwd=REPO, env=ros_env(unique_domain_id()), timeout=120)


@pytest.mark.ros
def test_poses_a_little_off_orthonormal_are_replayed_and_loaded_the_same_everywhere(tmp_path):
    import numpy as np

    from vln_core.data.posed_images import load_posed_sequence

    folder = _posed_folder_with_rotation(tmp_path / "seq", 3, off=1.5e-4)
    seq = load_posed_sequence(folder)
    for T in np.asarray(seq.poses):  # re-orthonormalised
        assert np.abs(T[:3, :3] @ T[:3, :3].T - np.eye(3)).max() < 1e-12
    proc = _replay_folder(folder, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "published 3 frames" in proc.stdout, proc.stdout

    bad = _posed_folder_with_rotation(tmp_path / "bad", 3, off=0.05)
    proc = _replay_folder(bad, tmp_path)
    _one_clear_line(proc, "frame-000001.pose.txt", "error 9.80e-02", "tolerance 0.01")

"""Trainer behaviour on tiny ray-cast box-room episodes: the loss falls, resume is exact, 2-process
DDP equals one process, a failed save never replaces a good checkpoint."""
from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from vln_core.config import load_config
from vln_core.data.episode import EpisodeWriter
from vln_core.errors import InputError
from vln_core.geometry.camera import PinholeCamera
from vln_core.geometry.transforms import R_BODY_FROM_OPTICAL
from vln_core.train import checkpoint as ckpt_mod
from vln_core.train.dataset import (
    EpisodeWindowDataset,
    SampleStream,
    collate_samples,
    find_episodes,
    future_waypoints,
    goal_heatmap,
    past_trajectory,
)
from vln_core.train.trainer import Trainer, warmup_cosine

SIZE = 64  # divisible by the embedded encoder stride (32)
ROOM = np.array([[-2.5, 2.5], [-2.0, 2.0], [0.0, 2.4]])  # x, y, z extent of the box room (odom, z up)
CAMERA_HEIGHT = 1.0


# ----------------------------------------------------------------------------- tiny episodes
def _mount() -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R_BODY_FROM_OPTICAL.numpy().astype(np.float64)
    T[:3, 3] = (0.1, 0.0, CAMERA_HEIGHT)
    return T


def _base_pose(x: float, y: float, yaw: float) -> np.ndarray:
    T = np.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    T[:2, :2] = [[c, -s], [s, c]]
    T[:2, 3] = (x, y)
    return T


def _render(T_wc: np.ndarray, camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the inside of the box room: RGB (checker per face) and z-depth in metres."""
    H, W = camera.height, camera.width
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    rays_c = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u, float)], -1)
    rays_w = rays_c @ T_wc[:3, :3].T
    origin = T_wc[:3, 3]
    best_t = np.full((H, W), np.inf)
    face = np.zeros((H, W), dtype=int)
    for axis in range(3):
        for side in range(2):
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (ROOM[axis, side] - origin[axis]) / rays_w[..., axis]
            t = np.where(t > 1e-6, t, np.inf)
            closer = t < best_t
            best_t = np.where(closer, t, best_t)
            face = np.where(closer, axis * 2 + side, face)
    hit = origin + rays_w * best_t[..., None]
    checker = (np.floor(hit[..., 0] * 2.5) + np.floor(hit[..., 1] * 2.5) + np.floor(hit[..., 2] * 2.5)) % 2
    palette = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60], [120, 120, 120], [60, 200, 200]])
    rgb = palette[face] * (0.55 + 0.45 * checker[..., None])
    depth = best_t * rays_c[..., 2]  # rays have z = 1 in the camera frame: t is the z-depth
    return rgb.astype(np.uint8), depth.astype(np.float32)


def make_box_episode(path: Path, n_frames: int, seed: int, size: int = SIZE) -> Path:
    """A robot driving through the box room with a varying turn rate, written with EpisodeWriter."""
    rng = np.random.default_rng(seed)
    camera = PinholeCamera.from_hfov(80.0, size, size)
    mount = _mount()
    x, y, yaw = rng.uniform(-1.0, 0.0), rng.uniform(-0.8, 0.8), rng.uniform(-0.5, 0.5)
    turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.5)  # rad/s: keyframes see different parts of the room
    dt, speed = 0.1, 0.6
    with EpisodeWriter(path, camera.K, (size, size), T_base_cam=mount, source="sim") as writer:
        for i in range(n_frames):
            T_odom_base = _base_pose(x, y, yaw)
            rgb, depth = _render(T_odom_base @ mount, camera)
            writer.add_frame(rgb, depth, T_odom_base @ mount, i * dt, T_odom_base=T_odom_base,
                             base_velocity=(speed, turn))
            x += speed * dt * math.cos(yaw)
            y += speed * dt * math.sin(yaw)
            yaw += turn * dt
        writer.finish(instruction=f"drive to the {'left' if turn > 0 else 'right'} wall")
    return path


@pytest.fixture(scope="module")
def episodes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("episodes")
    for i in range(3):
        make_box_episode(root / f"ep_{i:02d}", n_frames=10, seed=i)
    return root


def tiny_cfg(root: Path, out: Path, *extra: str):
    torch.set_num_threads(1)
    return load_config(None, [
        "video.total_frames=3", "video.keyframes=2", f"video.frame_size=[{SIZE},{SIZE}]",
        "frame_sampling.max_points_per_frame=512",
        f"training.data_dirs=[{root}]", f"training.output_dir={out}", "training.eval_fraction=0.34",
        "training.batch_size=2", "training.learning_rate=0.001", "training.warmup_steps=2",
        "training.eval_every=1000", "training.save_every=1000", "training.eval_max_samples=4",
        "training.device=cpu", "training.stage=finetune", *extra,
    ])


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


# ----------------------------------------------------------------------------- dataset
def test_dataset_targets_follow_the_geometry(episodes_root, tmp_path):
    cfg = tiny_cfg(episodes_root, tmp_path)
    ds = EpisodeWindowDataset(find_episodes([episodes_root]), cfg)
    assert len(ds) == 3 * (10 - 2)
    s = ds[4]
    assert s["frames"].shape == (3, 3, SIZE, SIZE) and s["depth"].shape == (3, SIZE, SIZE)
    assert s["heatmap"].shape == (2, SIZE, SIZE)
    # every keyframe of a smooth drive overlaps the current view: maps sum to 1
    assert s["has_overlap"].all()
    assert torch.allclose(s["heatmap"].sum((1, 2)), torch.ones(2), atol=1e-4)
    # the current frame's pose relative to itself is the identity, fov from the 80 deg camera
    assert torch.allclose(s["pose_enc"][-1, :7], torch.tensor([0, 0, 0, 0, 0, 0, 1.0]), atol=1e-5)
    assert s["pose_enc"][-1, 8].item() == pytest.approx(math.radians(80.0), abs=1e-3)
    # the robot drives forward at 0.6 m/s, 10 Hz: first waypoint ~6 cm ahead, last ~1.2 m at most
    assert s["waypoints"][0, 0].item() == pytest.approx(0.06, abs=0.01)
    assert s["past_trajectory"][-1, :2].abs().max() < 1e-5
    assert s["past_trajectory"][-1, 2].item() == pytest.approx(0.6)
    # near the end of an episode the waypoints are padded and masked
    assert ds[6]["waypoint_mask"].sum() == 1  # frame 8 of 0..9: one future frame
    assert ds[7]["waypoint_mask"].sum() == 0  # the last frame has none
    # identical on a second read (deterministic)
    again = EpisodeWindowDataset(find_episodes([episodes_root]), cfg)[4]
    assert torch.equal(again["heatmap"], s["heatmap"]) and torch.equal(again["keyframe_indices"], s["keyframe_indices"])


def test_crop_augmentation_moves_the_intrinsics_and_every_target_with_the_crop(episodes_root, tmp_path):
    """A cropped window's targets are those of its own (cropped) depth, intrinsics and poses; the
    crop differs per window, is the same on a second read, and changes field of view / aspect."""
    from vln_core.heatmaps import heatmaps_from_config
    from vln_core.train.augment import crop_window

    plain_cfg = tiny_cfg(episodes_root, tmp_path)
    crop_cfg = tiny_cfg(episodes_root, tmp_path, "training.augment=true", "training.crop_augment=true")
    plain = EpisodeWindowDataset(find_episodes([episodes_root]), plain_cfg)
    cropped = EpisodeWindowDataset(find_episodes([episodes_root]), crop_cfg, augment=True)
    s, p = cropped[4], plain[4]
    assert not torch.allclose(s["intrinsics"], p["intrinsics"])  # another field of view / principal point
    kf = s["keyframe_indices"]
    T_wc = torch.linalg.inv(s["camera_poses"][-1]) @ s["camera_poses"]  # any world frame will do
    hm = heatmaps_from_config(s["depth"][kf], s["intrinsics"], T_wc[kf], s["intrinsics"], T_wc[-1], (SIZE, SIZE),
                              s["depth"][-1], cfg=crop_cfg.heatmap)
    assert torch.allclose(hm.heatmap, s["heatmap"], atol=1e-6)
    assert torch.equal(cropped[4]["intrinsics"], s["intrinsics"])  # deterministic per window
    assert not torch.equal(cropped[5]["intrinsics"], s["intrinsics"])
    # the crop itself: pixel (u, v) of the crop is pixel (u + x0, v + y0) of the image
    image = np.arange(40 * 60 * 3, dtype=np.uint16).reshape(40, 60, 3)
    K = np.array([[50.0, 0, 29.5], [0, 50.0, 19.5], [0, 0, 1]])
    colors, depths, K2 = crop_window([image], [None], K, np.random.default_rng(0))
    x0, y0 = int(round(K[0, 2] - K2[0, 2])), int(round(K[1, 2] - K2[1, 2]))
    h, w = colors[0].shape[:2]
    assert depths == [None] and np.array_equal(colors[0], image[y0:y0 + h, x0:x0 + w])
    assert np.array_equal(K2[:2, :2], K[:2, :2])


def test_motion_targets_hand_computed():
    # straight line along world +x at 1 m/s, 1 Hz, then a 90 deg left turn of the base frame
    poses = np.stack([_base_pose(float(i), 0.0, 0.0) for i in range(5)])
    wp, mask = future_waypoints(poses, 1, horizon=4)
    assert np.allclose(wp, [[1, 0], [2, 0], [3, 0], [3, 0]]) and mask.tolist() == [True, True, True, False]
    turned = poses.copy()
    turned[2] = _base_pose(2.0, 0.0, math.pi / 2)
    wp, _ = future_waypoints(turned, 2, horizon=1)
    assert np.allclose(wp, [[0.0, -1.0]], atol=1e-9)  # world +x is to the right of a base facing +y
    past = past_trajectory(poses, np.arange(5.0), 2, None, steps=4)
    assert np.allclose(past[:, :2], [[-2, 0], [-2, 0], [-1, 0], [0, 0]])
    assert np.allclose(past[:, 2:], [[0, 0], [0, 0], [1, 0], [1, 0]])


def test_goal_heatmap_projects_the_goal_and_respects_occlusion():
    K = torch.tensor([[20.0, 0, 15.5], [0, 20.0, 11.5], [0, 0, 1]])
    T_wc = torch.eye(4)  # camera at the origin looking along world +z
    goal_map, valid = goal_heatmap([0.0, 0.0, 2.0], K, T_wc, None, (24, 32))
    assert valid and goal_map.sum().item() == pytest.approx(1.0, abs=1e-5)
    row, col = divmod(int(goal_map.argmax()), 32)
    assert (row, col) in {(11, 15), (11, 16), (12, 15), (12, 16)}  # around (cx, cy) = (15.5, 11.5)
    right, _ = goal_heatmap([1.0, 0.0, 2.0], K, T_wc, None, (24, 32))  # u = 15.5 + 20 * 0.5 = 25.5
    assert divmod(int(right.argmax()), 32)[1] in (25, 26)
    assert not goal_heatmap([0.0, 0.0, -2.0], K, T_wc, None, (24, 32))[1]  # behind
    assert not goal_heatmap([5.0, 0.0, 2.0], K, T_wc, None, (24, 32))[1]  # outside the image
    wall_near = torch.full((24, 32), 1.0)
    assert not goal_heatmap([0.0, 0.0, 2.0], K, T_wc, wall_near, (24, 32))[1]  # hidden 1 m in front
    surface = torch.full((24, 32), 1.6)  # the object's own surface, in front of its centre
    assert goal_heatmap([0.0, 0.0, 2.0], K, T_wc, surface, (24, 32))[1]
    assert not goal_heatmap(None, K, T_wc, None, (24, 32))[1]


def test_temporal_pairs_share_keyframes(episodes_root, tmp_path):
    cfg = tiny_cfg(episodes_root, tmp_path)
    ds = EpisodeWindowDataset(find_episodes([episodes_root]), cfg, temporal_pairs=True)
    earlier, later = ds[3]
    assert later["frame_index"] == earlier["frame_index"] + 1
    # same absolute frames: earlier window index = later window index + 1
    assert torch.equal(earlier["keyframe_indices"], later["keyframe_indices"] + 1)
    batch = collate_samples([ds[0], ds[1]])
    assert batch["frames"].shape[0] == 4 and batch["temporal_pairs"].tolist() == [[0, 1], [2, 3]]


def test_sample_stream_is_seeded_and_covers_every_item_each_epoch():
    stream = SampleStream(5, seed=3)
    assert sorted(stream.items(0, 5)) == list(range(5)) and sorted(stream.items(5, 5)) == list(range(5))
    assert stream.items(3, 4) == SampleStream(5, seed=3).items(3, 4)
    assert stream.items(0, 10) != SampleStream(5, seed=4).items(0, 10)
    ranks = [next(iter(stream.rank_batches(8, 2, r, 2))) for r in range(2)]
    assert ranks[0] + ranks[1] == stream.items(8, 4)
    assert stream.position(12) == (2, 2)


def test_no_episodes_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = tiny_cfg(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(InputError, match="no episodes found"):
        Trainer(cfg, resume=None, progress=False)


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 4, 20, 0.1) == pytest.approx(0.25)
    assert warmup_cosine(4, 4, 20, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(20, 4, 20, 0.1) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- training
def test_multiview_stage_leaves_the_frozen_monocular_prior_exactly_as_it_was(episodes_root, tmp_path):
    """Stage ``multiview`` (the adaptation's default) freezes the monocular network it fuses: its
    batch-norm layers must neither normalise with batch statistics nor overwrite their running
    statistics, or the "frozen" prior changes with every step (it did, on a robot's recording)."""
    cfg = tiny_cfg(episodes_root, tmp_path / "run", "training.stage=multiview", "training.max_steps=3",
                   "training.pose_known_fraction=1.0")
    trainer = Trainer(cfg, resume=None, progress=False)
    before = _params(trainer)
    frozen_bn = [m for m in trainer.model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert frozen_bn, "the monocular encoder has batch norm: this test guards it"
    assert all(not m.training for m in frozen_bn)
    records = trainer.fit()
    trainer.close()
    assert len(records) == 3
    after = _params(trainer)
    monocular = [k for k in before if k.startswith(("encoder.", "depth_decoder."))]
    assert any(k.endswith("running_mean") for k in monocular)
    changed = [k for k in monocular if not torch.equal(before[k], after[k])]
    assert changed == [], f"the frozen monocular prior changed: {changed[:4]}"
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("multiview."))
    # the trained network itself is in train mode (only frozen batch norm is held in eval)
    assert trainer.model.multiview.training and trainer.model.training


def test_training_lowers_the_loss(episodes_root, tmp_path):
    cfg = tiny_cfg(episodes_root, tmp_path / "run", "training.max_steps=40", "training.log_every=5")
    trainer = Trainer(cfg, resume=None, progress=False)
    records = trainer.fit()
    trainer.close()
    losses = [r.loss for r in records]
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    # measured (training.seed 0 / 1): first-5 mean 8.44 / 8.43, last-10 mean 8.24 / 8.27; a single
    # step's loss scatters by ~0.05, a 10-step mean by ~0.02
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert last < first - 0.1, f"loss did not fall: first 5 steps {first:.3f}, last 10 {last:.3f}"
    run = tmp_path / "run"
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file() and (run / "config.yaml").is_file()
    assert list((run / "tb").iterdir()), "no TensorBoard events written"


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(episodes_root, tmp_path):
    k = 3
    extra = ("training.max_steps=6", "training.grad_accum_steps=2")
    straight = Trainer(tiny_cfg(episodes_root, tmp_path / "a", *extra), resume=None, progress=False)
    straight.fit(2 * k)
    interrupted = Trainer(tiny_cfg(episodes_root, tmp_path / "b", *extra), resume=None, progress=False)
    interrupted.fit(k)
    assert (tmp_path / "b" / "last.pt").is_file()
    # move the global RNG on: a resumed run must not depend on the state the process happens to be in
    torch.rand(17)
    np.random.rand(3)
    resumed = Trainer(tiny_cfg(episodes_root, tmp_path / "b", *extra), resume="auto", progress=False)
    assert resumed.step == k and resumed.samples_seen == 2 * k * 2  # accumulation 2, batch 2
    resumed.fit(2 * k)
    a, b = _params(straight), _params(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name
    # and training did move the parameters (so equality is not trivial)
    fresh = Trainer(tiny_cfg(episodes_root, tmp_path / "c", *extra), resume=None, progress=False)
    assert any(not torch.allclose(a[n], v) for n, v in _params(fresh).items())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, root: str, out: str, result_path: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        cfg = tiny_cfg(Path(root), Path(out), "training.batch_size=1", "training.max_steps=3", *_DDP_MODEL)
        trainer = Trainer(cfg, rank=rank, world_size=world_size, resume=None, progress=False)
        trainer.fit()
        if rank == 0:
            torch.save({"params": _params(trainer), "losses": [r.loss for r in trainer.history],
                        "grad_norms": [r.grad_norm for r in trainer.history]}, result_path)
    finally:
        dist.destroy_process_group()


# The embedded model's BatchNorm normalises over each process's own batch (standard DDP without
# SyncBatchNorm), so one process on the global batch differs from two by design; the trainer's
# gradient averaging is checked on the batch-independent token model.
_DDP_MODEL = ("model.name=small",)


def test_two_process_ddp_matches_one_process_on_the_same_global_batch(episodes_root, tmp_path):
    single = Trainer(tiny_cfg(episodes_root, tmp_path / "single", "training.max_steps=3", *_DDP_MODEL), resume=None,
                     progress=False)
    single.fit()
    result = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(episodes_root), str(tmp_path / "ddp"), str(result)),
             nprocs=2, join=True)
    ddp = torch.load(result)
    # the loss and the all-reduced gradient norm of every step are functions of all parameters
    assert ddp["losses"] == pytest.approx([r.loss for r in single.history], rel=1e-5)
    assert ddp["grad_norms"] == pytest.approx([r.grad_norm for r in single.history], rel=1e-4)
    ref = _params(single)
    diffs = {name: (value - ref[name]).abs().max().item() for name, value in ddp["params"].items()}
    # Adam moves a parameter by at most ~lr per step, whatever its gradient: parameters the loss is
    # invariant to (attention key biases under a softmax) get float-noise gradients that Adam scales
    # up to ~lr-sized steps of arbitrary sign. Everything else agrees to float precision.
    lr, steps = 1e-3, 3
    assert max(diffs.values()) <= 1.5 * lr * steps, max(diffs.items(), key=lambda kv: kv[1])
    close = sum(d < 2e-4 for d in diffs.values())
    assert close >= 0.97 * len(diffs), sorted(diffs.items(), key=lambda kv: -kv[1])[:10]
    fresh = Trainer(tiny_cfg(episodes_root, tmp_path / "fresh", *_DDP_MODEL), resume=None, progress=False)
    moved = sum(not torch.allclose(v, ref[n]) for n, v in _params(fresh).items())
    assert moved > 0


def test_a_failed_save_never_replaces_a_good_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    good = {"model": {"w": torch.arange(4.0)}, "step": 7}
    ckpt_mod.save_checkpoint(target, good)

    def half_written(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 truncated")  # start of a zip archive, then the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        ckpt_mod.save_checkpoint(target, {"model": {"w": torch.zeros(4)}, "step": 8})
    monkeypatch.undo()
    state = ckpt_mod.load_checkpoint(target)
    assert state["step"] == 7 and torch.equal(state["model"]["w"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="broken.pt"):
        ckpt_mod.load_checkpoint(tmp_path / "broken.pt")


# ----------------------------------------------------------------------------- real data, CLIs
REAL_RGBD = Path(os.environ.get("VLN_REAL_RGBD_DIR", Path(__file__).resolve().parents[1].parent / "shared/data/real_rgbd_box"))


@pytest.mark.skipif(not REAL_RGBD.is_dir(), reason=f"real RGB-D sequence not found at {REAL_RGBD} (set VLN_REAL_RGBD_DIR)")
def test_posed_folder_windows_on_the_real_sequence(tmp_path):
    cfg = tiny_cfg(REAL_RGBD, tmp_path, "training.frame_stride=3", "video.total_frames=4")
    ds = EpisodeWindowDataset(find_episodes([REAL_RGBD]), cfg)
    assert len(ds) == 50 - 9
    s = ds[20]
    # a hand-held sweep over a box: consecutive keyframes overlap the current view
    assert s["has_overlap"].any()
    assert torch.allclose(s["heatmap"][s["has_overlap"]].sum((1, 2)), torch.ones(int(s["has_overlap"].sum())), atol=1e-4)
    # no odometry: the camera with body axes is the base; its own position is the origin
    assert s["past_trajectory"][-1, :2].abs().max() < 1e-6
    assert s["waypoint_mask"].all() and torch.isfinite(s["waypoints"]).all()
    assert not s["goal_valid"] and s["instruction"] == ""
    # ~35 % of the sensor's pixels have depth (box at 0.3-1 m); nearest resizing keeps that share
    valid = s["depth"] > 0
    assert 0.25 < valid.float().mean() < 0.45
    assert 0.2 < s["depth"][valid].median() < 1.5


def _run(script: str, *args: str) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(root / script), *args], capture_output=True, text=True,
                          cwd=root, env=env, timeout=600)


def test_finetune_and_evaluate_clis(episodes_root, tmp_path):
    out = tmp_path / "run"
    overrides = [
        "video.total_frames=3", "video.keyframes=2", f"video.frame_size=[{SIZE},{SIZE}]", "training.frame_stride=1",
        "frame_sampling.max_points_per_frame=512", "training.device=cpu", "training.num_workers=0",
        f"training.data_dirs=[{episodes_root}]", "training.eval_data_dirs=[]", f"training.output_dir={out}",
        "training.eval_fraction=0.34", "training.batch_size=2", "training.max_steps=2", "training.eval_max_samples=2",
    ]
    done = _run("training/finetune.py", "--config", "configs/train_embedded.yaml", "--no-progress", *overrides)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best eval loss" in done.stdout and (out / "last.pt").is_file() and (out / "config.yaml").is_file()
    again = _run("training/finetune.py", "--config", "configs/train_embedded.yaml", "--no-progress", *overrides)
    assert again.returncode == 0 and "already at step 2" in again.stdout  # resumed from last.pt
    report = tmp_path / "eval"
    done = _run("training/evaluate.py", "--config", "configs/train_embedded.yaml", "--checkpoint", str(out / "last.pt"),
                "--data", str(episodes_root), "--frames", "3", "--keyframes", "2", "--frame-stride", "1",
                "--max-windows", "4", "--panels", "1", "--constant-depth", "2.0", "--out", str(report),
                "--no-progress", *overrides[:3])
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    result = json.loads((report / "eval.json").read_text())
    pose_mode = result["modes"]["rgb_pose"]["heatmap"]
    # "model" is the refined geometry (model.match_refinement, the default), "model_net" the networks alone
    assert set(pose_mode) == {"model", "model_net", "constant_depth", "classical", "uniform", "center", "identity", "oracle"}
    assert set(result["modes"]["rgb_only"]["heatmap"]) == {"model", "model_net", "classical", "uniform", "center",
                                                            "identity", "oracle"}
    assert set(result["modes"]["rgb_only"]["pose"]) == {"model", "model_net", "identity"}
    # the oracle is the ground truth itself; a uniform map is not
    assert pose_mode["oracle"]["cc"] == pytest.approx(1.0, abs=1e-5) and pose_mode["oracle"]["kl"] < 1e-4
    assert pose_mode["uniform"]["kl"] > 0.05 and 0 <= pose_mode["model"]["auc_judd"] <= 1
    assert result["num_windows"] == 4  # (these 10-frame episodes have no window with a full 2 s future)
    assert len(result["panels"]) == 2 and all(Path(p).is_file() for p in result["panels"])
    assert len(result["depth_panels"]) == 2 and all(Path(p).is_file() for p in result["depth_panels"])
    assert "keyframes answered" in (report / "report.txt").read_text()
    assert "model CC as a fraction of the oracle" in (report / "report.txt").read_text()
    missing = _run("training/evaluate.py", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "e2"),
                   "--constant-depth", "2.0")
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = _run("training/finetune.py", "--config", "configs/train_embedded.yaml", *overrides[:-4],
               f"training.data_dirs=[{empty}]", f"training.output_dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "no episodes found" in bad.stderr


def test_preprocess_frames_keeps_intrinsics_and_depth_honest():
    from vln_core.preprocess import preprocess_frames

    K = np.array([[100.0, 0, 39.5], [0, 100.0, 29.5], [0, 0, 1]])  # 80x60 image
    color = np.zeros((60, 80, 3), np.uint8)
    color[:, 40:] = 255
    depth = np.full((60, 80), 2.0, np.float32)
    depth[0, 0], depth[0, 1], depth[1, 0] = np.nan, np.inf, -1.0
    out = preprocess_frames([color, color], [depth, depth], K, (30, 40))
    assert out.frames.shape == (2, 3, 30, 40) and out.frames.dtype == torch.float32
    assert out.frames[0, :, :, :20].max() == 0 and out.frames[0, :, :, 20:].min() == 1.0
    # halving the size halves the focal length; the centre stays at the image centre
    assert torch.allclose(out.K, torch.tensor([[50.0, 0, 19.5], [0, 50.0, 14.5], [0, 0, 1]]))
    assert torch.isfinite(out.depths).all() and set(out.depths.unique().tolist()) <= {0.0, 2.0}
    assert preprocess_frames([color], None, K, (60, 80)).depths is None
    with pytest.raises(InputError, match="depth map 0"):
        preprocess_frames([color], [depth[:10]], K, (30, 40))
    with pytest.raises(InputError, match="uint8"):
        preprocess_frames([color.astype(np.float32)], None, K, (30, 40))

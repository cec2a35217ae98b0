"""Issue 11, data side: nothing is lost (fresh runs, collection, stale temporaries, orphaned
workers), bad files give exit status 2 and one line, and the rough edges of the offline tools.
Every broken file here is made by the test itself."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import test_training
from test_training import make_box_episode

SIZE = int(os.environ.get("_ROBUSTNESS_TEST_SIZE", test_training.SIZE))  # the trainer tests' model size


def tiny_cfg(root: Path, out: Path, *extra: str):
    return test_training.tiny_cfg(root, out, f"video.frame_size=[{SIZE},{SIZE}]", *extra)
from vln_core.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def _load_script(relpath: str):
    """Import a script of ``training/`` or ``tools/`` as a module (its ``main`` runs in-process)."""
    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(f"_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                          env={**base, **(env or {})}, timeout=timeout)


def _one_clear_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit status 2, no traceback, and a stderr line that names every needle."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1500:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert any(all(n in line for n in needles) for line in lines), (needles, proc.stderr[-3000:])


# ----------------------------------------------------------------------------- training runs
@pytest.fixture(scope="module")
def box_episodes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("box_episodes")
    for i in range(3):
        make_box_episode(root / f"ep_{i:02d}", n_frames=10, seed=i)
    return root


def test_fresh_run_moves_the_earlier_run_aside_and_says_where(box_episodes, tmp_path, capsys):
    finetune = _load_script("training/finetune.py")
    out = tmp_path / "run"
    overrides = ["video.total_frames=3", "video.keyframes=2", f"video.frame_size=[{SIZE},{SIZE}]",
                 "frame_sampling.max_points_per_frame=512", "training.device=cpu", "training.num_workers=0",
                 f"training.data_dirs=[{box_episodes}]", f"training.output_dir={out}",
                 "training.eval_fraction=0.34", "training.batch_size=2", "training.max_steps=1",
                 "training.eval_max_samples=2", "training.eval_data_dirs=[]", "training.frame_stride=1"]
    torch.set_num_threads(1)
    out.mkdir()
    earlier = {"best.pt": b"the earlier run's best model", "last.pt": b"its last checkpoint",
               "train_log.jsonl": b'{"step": 1, "loss": 9.0}\n', "eval_log.jsonl": b'{"step": 1, "loss": 9.96}\n',
               "config.yaml": b"earlier: config\n"}
    for name, data in earlier.items():
        (out / name).write_bytes(data)
    assert finetune.main(["--config", "configs/train_embedded.yaml", "--no-progress", "--fresh", *overrides]) == 0
    printed = capsys.readouterr().out
    aside = [p for p in out.iterdir() if p.name.startswith("previous_")]
    assert len(aside) == 1, sorted(p.name for p in out.iterdir())
    for name, data in earlier.items():  # the earlier run survives byte for byte
        assert (aside[0] / name).read_bytes() == data, name
    assert str(aside[0]) in printed and "best.pt" in printed, printed
    # the new run has its own files and logs that start again at step 1
    assert (out / "last.pt").is_file()
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1]


def test_stale_temporaries_of_a_killed_save_are_removed_at_start(box_episodes, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    ours = [out / ".last.pt.k3x_9a0q.tmp", out / ".best.pt.0a1b2c3d.tmp", out / ".config.yaml.zz99yy88.tmp"]
    theirs = [out / ".last.pt.notes.tmp", out / "user.tmp", out / ".data.csv.abcdefgh.tmp", out / "keep.pt"]
    for p in ours + theirs:
        p.write_bytes(b"\0" * 1024)
    trainer = Trainer(tiny_cfg(box_episodes, out, "training.max_steps=1"), resume="auto", progress=False)
    trainer.fit()
    trainer.close()
    assert not [p.name for p in ours if p.exists()]
    assert all(p.exists() for p in theirs), "removed a file that is not our own temporary"


def test_train_log_keeps_one_record_per_step_after_a_resume(box_episodes, tmp_path):
    out = tmp_path / "run"
    extra = ("training.max_steps=4", "training.log_every=1", "training.save_every=2")
    first = Trainer(tiny_cfg(box_episodes, out, *extra), resume=None, progress=False)
    first.fit(2)  # last.pt at step 2
    first.save = lambda *a, **k: None  # the process is "killed" before its next save
    first.fit(4)
    first.close()
    with open(out / "train_log.jsonl", "a") as fh:
        fh.write('{"step": 5, "lo')  # a line the kill cut short
    resumed = Trainer(tiny_cfg(box_episodes, out, *extra), resume="auto", progress=False)
    assert resumed.step == 2
    resumed.fit(4)
    resumed.close()
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- collection
def test_collect_never_deletes_a_folder_that_is_not_its_own(tmp_path):
    out = tmp_path / "sim"
    theirs = out / "ep_000000"
    theirs.mkdir(parents=True)
    (theirs / "frame-000000.color.png").write_bytes(b"user data")
    ours = out / "ep_000001.partial"  # our own unfinished episode: removed and redone
    ours.mkdir()
    (ours / "junk").write_text("x")
    proc = _run("training/collect.py", "--episodes", "1", "--out", str(out), "--workers", "1",
                "--frames", "2", "--size", "16x16")
    _one_clear_line(proc, str(theirs), "not a complete episode")
    assert (theirs / "frame-000000.color.png").read_bytes() == b"user data"
    assert ours.exists()  # not in the requested range: not touched either


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_collect_workers_die_with_a_killed_parent(tmp_path):
    out = tmp_path / "sim"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, "training/collect.py", "--episodes", "2", "--workers", "2",
                               "--out", str(out), "--frames", "2000", "--size", "96x128"],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            workers = [p for p in _children(parent.pid)
                       if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
            if len(workers) == 2:
                break
            time.sleep(0.2)
        assert len(workers) == 2, "workers did not start"
        # the two jobs are queued at once: from here each worker holds a 2000-frame episode
        # (minutes of work), so one that outlives its parent keeps running long after the kill
        time.sleep(3.0)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "workers outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for p in workers:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


# ----------------------------------------------------------------------------- damaged bags
from rosbags.rosbag2 import Reader, StoragePlugin, Writer  # noqa: E402

import test_rosbag_import as bags  # noqa: E402

COLOR_TOPIC = "/camera/color/image_raw/compressed"


@pytest.fixture(scope="module")
def good_bags(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bags")
    colors, depths_mm = bags.make_frames()
    out = {}
    for storage in (StoragePlugin.MCAP, StoragePlugin.SQLITE3):
        out[storage.name] = root / storage.name.lower()
        bags.write_bag(out[storage.name], storage, colors=colors, depths_mm=depths_mm)
    return out


def _copy_bag(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _data_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def _import_argv(bag: Path, out: Path) -> list[str]:
    return [str(bag), "--out", str(out), "--color-topic", COLOR_TOPIC, "--depth-topic", "/camera/depth/image_raw",
            "--odom-topic", "/odom", "--mount", ",".join(repr(v) for v in (0.2, 0.0, 1.1, -0.5, 0.5, -0.5, 0.5)),
            "--no-progress"]


def _import_main(argv: list[str], capsys) -> tuple[int, str, str]:
    import_bag = _load_script("training/import_bag.py")
    code = import_bag.main(argv)  # an uncaught exception here is the traceback a user would see
    captured = capsys.readouterr()
    return code, captured.out, captured.err


METADATA_DAMAGE = {
    "binary_junk": lambda data: bytes(range(256)) * 8,
    "cut_in_half": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "not_yaml": lambda data: b"rosbag2_bagfile_information: {version: [9\n\t- unclosed: ]]\n",
    "yaml_but_not_a_bag": lambda data: b"- just\n- a list\n",
}


@pytest.mark.parametrize("damage", sorted(METADATA_DAMAGE))
def test_import_bag_with_damaged_metadata_is_one_line_exit_2(good_bags, tmp_path, capsys, damage):
    bag = _copy_bag(good_bags["MCAP"], tmp_path / "bag")
    meta = bag / "metadata.yaml"
    meta.write_bytes(METADATA_DAMAGE[damage](meta.read_bytes()))
    code, out, err = _import_main(_import_argv(bag, tmp_path / "ep"), capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "metadata.yaml" in lines[0] and "ros2 bag reindex" in lines[0], err
    assert not (tmp_path / "ep").exists()


@pytest.mark.parametrize("storage", ["MCAP", "SQLITE3"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_import_bag_with_a_data_file_cut_short_is_one_line_exit_2(good_bags, tmp_path, capsys, storage, keep):
    bag = _copy_bag(good_bags[storage], tmp_path / "bag")
    data = _data_file(bag)
    data.write_bytes(data.read_bytes()[: int(data.stat().st_size * keep)])  # an interrupted recording
    code, out, err = _import_main(_import_argv(bag, tmp_path / "ep"), capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and data.name in lines[0], err
    assert ("mcap recover" in lines[0]) if storage == "MCAP" else ("sqlite3" in lines[0] and ".recover" in lines[0])
    assert not (tmp_path / "ep").exists() and not (tmp_path / "ep.partial").exists()


def test_import_bag_cli_on_a_truncated_mcap_has_no_traceback(good_bags, tmp_path):
    bag = _copy_bag(good_bags["MCAP"], tmp_path / "bag")
    data = _data_file(bag)
    data.write_bytes(data.read_bytes()[: data.stat().st_size * 2 // 3])
    proc = _run("training/import_bag.py", *_import_argv(bag, tmp_path / "ep"))
    _one_clear_line(proc, str(bag), "mcap recover", "ros2 bag reindex")


def _rewrite_with_one_corrupt_message(src: Path, dst: Path, storage: StoragePlugin, topic: str, index: int) -> None:
    """Copy a bag message by message; the ``index``-th message of ``topic`` gets a string length
    field (``header.frame_id``, after the CDR header and the stamp) that points past its end."""
    seen = 0
    with Reader(src) as reader, Writer(dst, version=9, storage_plugin=storage) as writer:
        conns = {}
        for conn, timestamp, raw in reader.messages():
            if conn.topic not in conns:
                conns[conn.topic] = writer.add_connection(conn.topic, conn.msgtype, typestore=bags.TS)
            raw = bytearray(raw)
            if conn.topic == topic:
                if seen == index:
                    raw[12:16] = (0x7FFFFFF0).to_bytes(4, "little")
                seen += 1
            writer.write(conns[conn.topic], timestamp, bytes(raw))


@pytest.mark.parametrize("storage", ["MCAP", "SQLITE3"])
def test_one_corrupt_message_is_skipped_counted_and_the_rest_imported(good_bags, tmp_path, capsys, storage):
    bag = tmp_path / "bag"
    _rewrite_with_one_corrupt_message(good_bags[storage], bag, StoragePlugin[storage], COLOR_TOPIC, 2)
    code, out, err = _import_main(_import_argv(bag, tmp_path / "ep"), capsys)
    assert code == 0, err
    # 6 colour frames, one has no depth (the fixture's gap), one is corrupt: 4 imported
    assert "4 of 5 colour frames kept" in out and "1 corrupt bag messages skipped" in out, out
    from vln_core.data.episode import read_episode

    assert len(read_episode(tmp_path / "ep")) == 4


# ----------------------------------------------------------------------------- replay of damaged bags
def _replay(bag: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    from ros_helpers import ros_env, unique_domain_id

    return subprocess.run([sys.executable, "-m", "vln_heatmap.replay", str(bag), "--rate", "50",
                           "--wait-for-node", "0", "--linger", "0"],
                          capture_output=True, text=True, cwd=REPO, env=ros_env(unique_domain_id()), timeout=120)


@pytest.mark.ros
def test_replay_of_damaged_bags_is_one_line_exit_2(good_bags, tmp_path):
    meta_bag = _copy_bag(good_bags["MCAP"], tmp_path / "meta")
    (meta_bag / "metadata.yaml").write_bytes(b"\x00\xff\xfe binary junk \x80\x81")
    _one_clear_line(_replay(meta_bag, tmp_path), "metadata.yaml", "ros2 bag reindex")
    cut = _copy_bag(good_bags["MCAP"], tmp_path / "cut")
    data = _data_file(cut)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    _one_clear_line(_replay(cut, tmp_path), data.name, "mcap recover")


@pytest.mark.ros
def test_replay_skips_and_counts_a_corrupt_message(good_bags, tmp_path):
    bag = tmp_path / "bag"
    _rewrite_with_one_corrupt_message(good_bags["MCAP"], bag, StoragePlugin.MCAP, COLOR_TOPIC, 2)
    with Reader(bag) as reader:
        total = reader.message_count
    proc = _replay(bag, tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"published {total - 1} bag messages" in proc.stdout, proc.stdout
    assert "skipped 1 corrupt bag messages" in proc.stderr and COLOR_TOPIC in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------- rough edges
def _posed_folder(folder: Path, n: int, size: int = 16) -> Path:
    import cv2
    import numpy as np

    folder.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"frame-{i:06d}.color.png"), np.full((size, size, 3), 40 * i % 255, np.uint8))
        cv2.imwrite(str(folder / f"frame-{i:06d}.depth.png"), np.full((size, size), 1000 + 100 * i, np.uint16))
        T = np.eye(4)
        T[0, 3] = 0.01 * i
        np.savetxt(folder / f"frame-{i:06d}.pose.txt", T)
    return folder


def test_posed_folder_with_tsdf_fusion_camera_intrinsics_txt(tmp_path):
    from vln_core.data.posed_images import load_posed_sequence

    folder = _posed_folder(tmp_path / "seq", 3)
    (folder / "camera-intrinsics.txt").write_text("14.0 0 7.5\n0 14.0 7.5\n0 0 1\n")  # TSDF-fusion layout
    seq = load_posed_sequence(folder)
    assert seq.K[0, 0] == 14.0 and seq.K[1, 2] == 7.5 and len(seq) == 3


def test_render_heatmaps_reads_only_the_frames_it_draws(tmp_path):
    from vln_core.data.posed_images import load_posed_sequence

    folder = _posed_folder(tmp_path / "seq", 8, size=32)
    (folder / "intrinsics.K.txt").write_text("30.0 0 15.5\n0 30.0 15.5\n0 0 1\n")
    for i in (1, 2, 3, 6, 7):  # frames not drawn: unreadable, so reading them would fail
        (folder / f"frame-{i:06d}.color.png").write_bytes(b"not a png")
        (folder / f"frame-{i:06d}.pose.txt").write_text("garbage")
    seq = load_posed_sequence(folder, frame_ids=[5, 0, 4])
    assert seq.frame_ids == [0, 4, 5] and seq.colors.shape[0] == 3
    out = tmp_path / "mosaic.png"
    proc = _run("tools/render_heatmaps.py", "--data", str(folder), "--current", "5", "--keyframes", "0,4",
                "--out", str(out), "--heatmap-width", "16", "--tile-width", "64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.is_file() and "kf    0 -> current 5" in proc.stdout


def test_demo_domain_id_comes_from_the_environment_when_set(monkeypatch):
    from ros_helpers import PACKAGE_SRC  # noqa: F401  (the package on sys.path)
    from vln_heatmap.session import pick_domain_id

    assert pick_domain_id({"ROS_DOMAIN_ID": "42"}) == 42
    assert pick_domain_id({"ROS_DOMAIN_ID": "0"}) == 0
    assert 1 <= pick_domain_id({}) <= 101
    with pytest.raises(ValueError, match="ROS_DOMAIN_ID"):
        pick_domain_id({"ROS_DOMAIN_ID": "300"})


def test_demo_cli_rejects_a_bad_ros_domain_id_from_the_environment(tmp_path):
    episode = make_box_episode(tmp_path / "ep", n_frames=3, seed=0)
    proc = _run("tools/demo.py", "--episode", str(episode), "--out", str(tmp_path / "demo"), timeout=90,
                env={"ROS_DOMAIN_ID": "999"})
    _one_clear_line(proc, "ROS_DOMAIN_ID", "999")

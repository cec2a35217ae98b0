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
        while time.monotonic() < deadline:  # both workers are inside an episode
            partial = list(out.glob("*.partial")) if out.exists() else []
            workers = [p for p in _children(parent.pid)
                       if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
            if len(partial) == 2 and len(workers) == 2:
                break
            time.sleep(0.2)
        assert len(workers) == 2, "workers did not start"
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

"""Issue 19, runtime side: nothing silent. Every event reaches diagnostics AND the log sink (the
node's logger), once per kind and throttle period; the runtime runs with the real backends and
real checkpoint files (broken ones made by the test), on a fake clock."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vln_core.config import load_config
from vln_core.models.shipped import SHIPPED_CHECKPOINT
from vln_core.runtime import NavigationRuntime

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO / "ros2_ws" / "src" / "vln_heatmap" / "config" / "vln_heatmap.yaml"


def _cfg(*overrides: str):
    return load_config(PARAMS_FILE, ["node.publish_overlay=false", "video.total_frames=8", "video.keyframes=4",
                                     *overrides])


def _status(rt: NavigationRuntime, part: str) -> dict:
    return next(s for s in rt.diagnostics() if part in s["name"])


class Log(list):
    def __call__(self, level: str, kind: str, message: str) -> None:
        self.append((level, kind, message))

    def kinds(self) -> list[str]:
        return [k for _, k, _ in self]


def _image(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_auto_with_a_truncated_checkpoint_says_so_at_start_up_and_logs_every_failed_step(tmp_path):
    broken = tmp_path / "checkpoint.pt"
    data = SHIPPED_CHECKPOINT.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    now = [0.0]
    rt = NavigationRuntime(_cfg("node.backend=auto", f"node.model_path={broken}"), clock=lambda: now[0])
    log = Log()
    rt.set_log_sink(log)  # as the node does, after construction: the start-up warning still arrives
    assert [(lv, k) for lv, k, _ in log] == [("WARN", "learned_backend_unavailable")]
    assert str(broken) in log[0][2]
    backend = _status(rt, "backend")
    assert backend["level"] == "WARN" and "learned path unavailable" in backend["message"], backend
    # a colour-only stream: the learned path is needed and fails; the log says so, not only diagnostics
    rt.set_camera_info(np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]), 64, 48)
    for i in range(12):
        rt.add_image(1_000_000_000 + i * 100_000_000, "camera", _image())
        now[0] += 0.25
        assert rt.step() is None
    assert rt.error_count("step_failed") >= 1
    failed = [m for lv, k, m in log if k == "step_failed"]
    assert failed and failed[0].count(str(broken)) >= 1 and len(failed) <= 2  # once per 2 s throttle
    rt.close()


def test_camera_info_that_does_not_fit_the_images_is_logged_not_only_shown():
    now = [0.0]
    rt = NavigationRuntime(_cfg("node.backend=geometry"), clock=lambda: now[0])
    log = Log()
    rt.set_log_sink(log)
    rt.set_camera_info(np.array([[50.0, 0, 40], [0, 50.0, 30], [0, 0, 1]]), 80, 60)
    for i in range(5):
        stamp = 1_000_000_000 + i * 100_000_000
        rt.add_odometry(stamp, np.eye(4))
        rt.add_image(stamp, "camera", _image())
        rt.add_depth(stamp, np.full((48, 64), 2.0, np.float32))
        now[0] += 0.5
        assert rt.step() is None
    assert _status(rt, "inputs")["level"] == "ERROR"
    lines = [(lv, m) for lv, k, m in log if k == "camera_info_size_mismatch"]
    assert lines and lines[0][0] == "ERROR" and "80x60" in lines[0][1] and "64x48" in lines[0][1], log
    assert "camera_info_size_mismatch" in _status(rt, "errors")["message"]
    rt.close()


def test_instructions_too_long_truncated_or_damaged_are_reported(tmp_path):
    rt = NavigationRuntime(_cfg("node.backend=auto", "model.max_instruction_length=64"))
    log = Log()
    rt.set_log_sink(log)
    rt.set_instruction("go to the red chair")
    assert rt.instruction == "go to the red chair" and not log
    assert _status(rt, "inputs")["values"]["instruction_tokens"] == "7 of 7 used"

    import pytest

    from vln_core.errors import InputError

    with pytest.raises(InputError, match="refused"):
        rt.set_instruction("go " * 400_000)  # 1.2 MB
    assert rt.instruction == "go to the red chair"  # the previous one is kept
    assert log[-1][:2] == ("ERROR", "instruction_too_long") and "kept the previous one" in log[-1][2]

    long = " ".join(f"word{i}" for i in range(200))  # 1.3 kB: taken, but the model reads 64 tokens
    rt.set_instruction(long)
    assert rt.instruction == long
    assert log[-1][:2] == ("WARN", "instruction_truncated") and "202 tokens" in log[-1][2] and "first 64" in log[-1][2]
    inputs = _status(rt, "inputs")
    assert inputs["values"]["instruction_tokens"] == "64 of 202 used" and "truncated" in inputs["message"]

    damaged = b"go to the \xff\xfe chair".decode("utf-8", errors="replace")  # what rclpy hands over
    rt.set_instruction(damaged)
    assert log[-1][:2] == ("WARN", "instruction_replacement_characters") and "2 replacement" in log[-1][2]
    assert "replacement" in _status(rt, "errors")["message"]
    assert _status(rt, "inputs")["level"] in ("WARN", "ERROR")
    rt.close()


# ----------------------------------------------------------------------------- recording to a full disk
import contextlib
import os
import subprocess
import time


@contextlib.contextmanager
def _small_filesystem(path: Path, size: str = "256k"):
    """A real tmpfs of ``size`` at ``path`` (needs root / CAP_SYS_ADMIN), unmounted afterwards."""
    import pytest

    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (not root?): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(folder: Path) -> Path:
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:  # ENOSPC: the filesystem is full
        pass
    finally:
        os.close(fd)
    return filler


def _frame(seq: int):
    from vln_core.backends import CameraFrame

    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    return CameraFrame(stamp_ns=1_000_000_000 + seq * 100_000_000, frame_id="camera", rgb=_image(), depth_m=None,
                       K=K, T_wc=np.eye(4), T_odom_base=None, seq=seq)


def _wait(pred, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not pred():
        time.sleep(0.02)
    return pred()


def test_recording_to_a_full_disk_pauses_cleans_up_says_so_once_and_resumes(tmp_path):
    from vln_core.runtime.recorder import EpisodeRecorder

    with _small_filesystem(tmp_path / "small") as small:
        root = small / "rec"
        root.mkdir()
        filler = _fill(small)
        errors: list[str] = []
        now = [0.0]
        rec = EpisodeRecorder(root, None, (48, 64), on_error=errors.append, retry_after_s=5.0,
                              clock=lambda: now[0], frames_per_episode=100)
        for seq in range(10):
            rec.submit(_frame(seq))
            now[0] += 0.2  # 5 Hz, all inside the 5 s pause
        assert _wait(lambda: rec.stats()["queued"] == 0 and rec.paused)
        stats = rec.stats()
        assert len(errors) == 1 and "recording paused" in errors[0], errors  # said once, not per frame
        assert stats["written"] == 0 and stats["storage_failures"] == 1
        assert stats["dropped_storage"] == 9, stats
        assert sorted(p.name for p in root.iterdir()) == [], "a half-written episode was left behind"
        filler.unlink()  # space returns
        now[0] += 5.0
        for seq in range(10, 14):
            assert rec.submit(_frame(seq))
        finished = rec.close()
        assert rec.stats()["written"] == 4 and len(finished) == 1 and len(errors) == 1
        assert sorted(p.name for p in root.iterdir()) == [finished[0].name]  # no .partial left


def test_the_runtime_reports_a_full_disk_in_the_log_and_the_errors_entry(tmp_path):
    with _small_filesystem(tmp_path / "small") as small:
        (small / "rec").mkdir()
        _fill(small)
        now = [0.0]
        rt = NavigationRuntime(_cfg("node.backend=geometry", "node.record=true", f"node.record_dir={small / 'rec'}"),
                               clock=lambda: now[0])
        log = Log()
        rt.set_log_sink(log)
        rt.set_camera_info(np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]), 64, 48)
        outputs = 0
        for i in range(8):
            stamp = 1_000_000_000 + i * 100_000_000
            rt.add_odometry(stamp, np.eye(4))
            rt.add_image(stamp, "camera", _image())
            rt.add_depth(stamp, np.full((48, 64), 2.0, np.float32))
            now[0] += 0.5
            outputs += rt.step() is not None
            _wait(lambda: rt.recorder is None or rt.recorder.stats()["queued"] == 0)
        assert outputs >= 6  # heatmaps keep coming
        assert _wait(lambda: "record_failed" in log.kinds())
        assert log.kinds().count("record_failed") == 1, log
        assert "record_failed" in _status(rt, "errors")["message"]
        recorder = _status(rt, "recorder")
        assert recorder["level"] == "ERROR" and "recording paused" in recorder["message"], recorder
        rt.close()
        assert [p.name for p in (small / "rec").iterdir()] == []

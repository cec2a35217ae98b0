"""Onboard episode recording on a background thread (the node's ``node.record`` option).

:class:`EpisodeRecorder` takes :class:`~vln_core.runtime.buffer.CameraFrame` objects from the
runtime, queues them (bounded) and writes them with :class:`vln_core.data.episode.EpisodeWriter`
on its own thread, so the caller never waits for the disk: when the queue is full the frame is
dropped and counted. A new episode starts every ``frames_per_episode`` frames, and whenever a
frame cannot continue the current one (other intrinsics or image size, depth / base pose /
velocity present where the episode had none or vice versa, a stamp not after the previous);
:meth:`EpisodeRecorder.close` finishes the last one. Episodes are written in ``<name>.partial``
and renamed on finish, so a crash leaves only ``.partial`` folders, never a half episode that
looks complete.

A write that fails with an ``OSError`` (disk full, quota, the folder gone read-only) pauses
recording at once: the frame's files and an episode that cannot be finished are removed (what
the recorder wrote before is kept when it can still be finished), ``on_error`` is called once,
later frames are dropped and counted (``dropped_storage``), and recording is tried again
``retry_after_s`` later (space may have returned); a failed retry pauses again.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from vln_core.data.episode import EpisodeWriter
from vln_core.errors import InputError
from vln_core.backends.base import CameraFrame

__all__ = ["EpisodeRecorder"]

_STOP = object()


class EpisodeRecorder:
    """Write submitted frames as episodes under ``root`` without blocking the submitter.

    Args:
        root: folder the episodes go into (created).
        K: ``(3, 3)`` intrinsics used for frames that carry none (``frame.K is None``) and have
            size ``image_size``; frames with their own ``K`` use it.
        image_size: ``(H, W)`` belonging to ``K``.
        T_base_cam: ``(4, 4)`` camera mount (camera optical -> base_link) written into every
            episode, or None.
        instruction_getter: called when an episode is finished; its string becomes the episode's
            instruction (None: empty instruction).
        frames_per_episode: roll to a new episode after this many frames (>= 1).
        queue_size: frames waiting for the writer thread; beyond that ``submit`` drops.
        name_prefix: episode folders are ``<prefix>_<UTC date>_<time>_<n>``.
        color_format: ``"png"`` or ``"jpg"`` (see :class:`EpisodeWriter`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        K: Any,
        image_size: tuple[int, int],
        T_base_cam: Any = None,
        instruction_getter: Optional[Callable[[], str]] = None,
        *,
        frames_per_episode: int = 300,
        queue_size: int = 32,
        name_prefix: str = "rec",
        color_format: str = "png",
        on_error: Optional[Callable[[str], None]] = None,
        retry_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if frames_per_episode < 1:
            raise InputError(f"frames_per_episode must be >= 1, got {frames_per_episode}")
        if queue_size < 1:
            raise InputError(f"queue_size must be >= 1, got {queue_size}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.default_K = None if K is None else np.asarray(K, dtype=np.float64)
        self.default_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.T_base_cam = None if T_base_cam is None else np.asarray(T_base_cam, dtype=np.float64)
        self.instruction_getter = instruction_getter
        self.frames_per_episode = int(frames_per_episode)
        self.name_prefix = name_prefix
        self.color_format = color_format
        self._queue: queue.Queue = queue.Queue(maxsize=int(queue_size))
        self._lock = threading.Lock()
        self._counts = {"submitted": 0, "dropped_queue_full": 0, "dropped_closed": 0, "dropped_storage": 0,
                        "written": 0, "rejected": 0, "episodes_finished": 0, "episodes_aborted": 0,
                        "storage_failures": 0}
        self.on_error = on_error
        self.retry_after_s = float(retry_after_s)
        self.clock = clock
        self._paused_until: Optional[float] = None  # storage failure: no writing before this time
        self.paused_reason = ""
        self.finished_episodes: list[Path] = []
        self.last_error: Optional[str] = None
        self._writer: Optional[EpisodeWriter] = None
        self._writer_key: Optional[tuple] = None
        self._last_stamp_ns: Optional[int] = None
        self._episode_counter = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="vln-episode-recorder", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side
    def submit(self, frame: CameraFrame) -> bool:
        """Queue ``frame`` for writing; never blocks. Returns False when it was dropped
        (queue full: the disk is slower than the frame rate, or the recorder is closed)."""
        with self._lock:
            if self._closed:
                self._counts["dropped_closed"] += 1
                return False
            self._counts["submitted"] += 1
            if self._paused_until is not None:
                if self.clock() < self._paused_until:
                    self._counts["dropped_storage"] += 1
                    return False
                self._paused_until = None  # try again: space may have returned
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            with self._lock:
                self._counts["dropped_queue_full"] += 1
            return False
        return True

    def close(self, timeout_s: Optional[float] = 30.0) -> list[Path]:
        """Write what is queued, finish the open episode and stop the thread.

        Returns:
            All episodes finished by this recorder.
        """
        with self._lock:
            if self._closed:
                return list(self.finished_episodes)
            self._closed = True
        self._queue.put(_STOP)  # the queued frames go first; waits only if the queue is full
        self._thread.join(timeout_s)
        return list(self.finished_episodes)

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """Counters (submitted, dropped, written, rejected, episodes) and the queue length."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
        out["queued"] = self._queue.qsize()
        out["open_episode_frames"] = len(self._writer) if self._writer is not None else 0
        out["last_error"] = self.last_error or ""
        out["paused"] = self.paused_reason if self.paused else ""
        return out

    @property
    def paused(self) -> bool:
        """Recording is paused after a storage failure (retried ``retry_after_s`` after it)."""
        with self._lock:
            return self._paused_until is not None

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                self._finish_episode()
                return
            with self._lock:
                paused = self._paused_until is not None
            if paused:  # queued before the failure: dropped, not written into a full disk
                self._count("dropped_storage")
                continue
            try:
                self._write(item)
            except OSError as exc:  # disk full, quota, read-only: pause, clean up, say so once
                self._storage_failed(f"frame seq {getattr(item, 'seq', '?')}: {exc}")
            except Exception as exc:  # keep recording: one bad frame must not kill the thread
                self._note_error(f"frame seq {getattr(item, 'seq', '?')}: {type(exc).__name__}: {exc}")
                self._count("rejected")
                self._finish_episode()  # keep the frames written so far (aborts if even that fails)

    def _storage_failed(self, message: str) -> None:
        with self._lock:
            self._paused_until = self.clock() + self.retry_after_s
            self._counts["storage_failures"] += 1
            self._counts["rejected"] += 1
        self._note_error(message)
        self._finish_episode()  # keeps the frames written so far if even that can be written, else removes them
        self.paused_reason = (f"recording paused: {message}; retrying in {self.retry_after_s:g} s "
                              f"(frames meanwhile are dropped)")
        if self.on_error is not None:
            try:
                self.on_error(self.paused_reason)
            except Exception:  # noqa: BLE001 - reporting must not stop the writer thread
                pass

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _note_error(self, message: str) -> None:
        self.last_error = f"{time.strftime('%H:%M:%S', time.gmtime())} UTC: {message}"

    def _write(self, frame: CameraFrame) -> None:
        K = frame.K
        if K is None and self.default_K is not None and frame.size == self.default_size:
            K = self.default_K
        if K is None or frame.T_wc is None:
            self._count("rejected")
            self._note_error(f"frame seq {frame.seq}: cannot record a frame without intrinsics and pose")
            return
        key = (
            frame.size,
            tuple(np.round(np.asarray(K, dtype=np.float64).reshape(-1), 9)),
            frame.depth_m is not None,
            frame.T_odom_base is not None,
            frame.base_velocity is not None,
        )
        if self._writer is not None and (
            key != self._writer_key or self._last_stamp_ns is None or frame.stamp_ns <= self._last_stamp_ns
        ):
            self._finish_episode()
        if self._writer is None:
            self._writer = EpisodeWriter(
                self._next_episode_dir(), K, frame.size, T_base_cam=self.T_base_cam, source="recording",
                color_format=self.color_format, write_depth=frame.depth_m is not None,
            )
            self._writer_key = key
        try:
            self._writer.add_frame(
                frame.rgb, frame.depth_m, frame.T_wc, frame.stamp_ns * 1e-9,
                T_odom_base=frame.T_odom_base, base_velocity=frame.base_velocity,
            )
        except InputError as exc:
            self._count("rejected")
            self._note_error(str(exc))
            return
        self._last_stamp_ns = frame.stamp_ns
        self._count("written")
        if len(self._writer) >= self.frames_per_episode:
            self._finish_episode()

    def _next_episode_dir(self) -> Path:
        stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime())
        while True:
            self._episode_counter += 1
            path = self.root / f"{self.name_prefix}_{stamp}_{self._episode_counter:04d}"
            if not path.exists() and not path.with_name(path.name + ".partial").exists():
                return path

    def _finish_episode(self) -> None:
        writer, self._writer, self._writer_key, self._last_stamp_ns = self._writer, None, None, None
        if writer is None:
            return
        if len(writer) == 0:
            writer.abort()
            return
        try:
            instruction = self.instruction_getter() if self.instruction_getter is not None else ""
            path = writer.finish(instruction=instruction or "", extra={"recorder": "vln_core.runtime.EpisodeRecorder"})
        except Exception as exc:
            self._note_error(f"finishing {writer.out_dir}: {type(exc).__name__}: {exc}")
            writer.abort()
            self._count("episodes_aborted")
            return
        with self._lock:
            self.finished_episodes.append(path)
            self._counts["episodes_finished"] += 1

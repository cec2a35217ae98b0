"""Hot swap of the learned model: a new checkpoint or export is loaded beside the serving one and
swapped in between two updates.

:class:`ModelSwapper` watches the file (or export folder) the learned backend loads
(``node.model_path``; the shipped checkpoint or ``exports/embedded`` when empty). When its
signature (inode, size, modification time of the file, or of every file of the folder) changes,
or on :meth:`request_reload` (the node's ``~/reload_model`` service), it builds a new backend on a
thread of its own while the old one keeps serving. :class:`~vln_core.runtime.runtime.NavigationRuntime`
takes the new backend between two steps (:meth:`take_ready`); a file that does not load (broken,
truncated, another model's weights) is refused with the reason, and the old model keeps serving.

Writers must replace the file atomically (``training/adapt.py``, ``tools/ship_model.py`` and the
exporters write a temporary file and rename it), so a half-written file is never seen.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from vln_core.config import VLNConfig

#: backends whose model comes from ``node.model_path``
LEARNED_BACKENDS = ("model", "onnx", "tensorrt")


def watched_model_path(cfg: VLNConfig, learned: str) -> Path:
    """The file or folder the learned backend ``learned`` loads for ``cfg``."""
    if cfg.node.model_path:
        return Path(cfg.node.model_path).expanduser()
    if learned == "model":
        from vln_core.models.shipped import SHIPPED_CHECKPOINT

        return Path(SHIPPED_CHECKPOINT)
    from vln_core.backends.onnx_backend import DEFAULT_EXPORT_DIR

    return Path(DEFAULT_EXPORT_DIR)


def path_signature(path: Path) -> Optional[tuple]:
    """What changes when ``path`` is replaced: ``(inode, size, mtime_ns)`` of the file, or of each
    file in the folder (sorted by name); None when it does not exist."""
    try:
        if path.is_dir():
            stats = ((p.name, p.stat()) for p in path.rglob("*") if p.is_file())
            return tuple(sorted((name, st.st_ino, st.st_size, st.st_mtime_ns) for name, st in stats))
        st = path.stat()
        return (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        return None


@dataclass
class ModelStatus:
    """For diagnostics: what serves, since when, and the last refused reload (if any)."""

    path: str
    loaded_at: float  # wall clock (time.time) when the serving model was loaded
    loads: int  # models loaded since start (1: the first)
    loading: bool
    refused: str  # "" or why the last new file was refused


class ModelSwapper:
    """Loads new models in the background; see the module doc.

    Args:
        cfg: the node's config (``node.model_path``).
        learned: the learned backend's name (``model``, ``onnx``, ``tensorrt``).
        build: ``cfg -> backend`` (``create_backend(learned, cfg)``); raises on a bad file.
        on_refused: called once per refused file with the reason (on the loading thread).
        clock: wall clock for "since when".
    """

    def __init__(self, cfg: VLNConfig, learned: str, build: Callable[[VLNConfig], object],
                 on_refused: Optional[Callable[[str], None]] = None, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.learned = learned
        self.path = watched_model_path(cfg, learned)
        self._build = build
        self._on_refused = on_refused
        self._clock = clock
        self._lock = threading.Lock()
        self._signature = path_signature(self.path)  # of the model serving now
        self._pending_signature: Optional[tuple] = None
        self._thread: Optional[threading.Thread] = None
        self._ready: Optional[object] = None
        self._ready_signature: Optional[tuple] = None
        self.status = ModelStatus(str(self.path), clock(), 1, False, "")

    def poll(self) -> bool:
        """Start loading when the file changed since the serving model was loaded (and is not
        being loaded or refused already); returns whether a load started."""
        sig = path_signature(self.path)
        with self._lock:
            if sig is None or sig == self._signature or sig == self._pending_signature or self.status.loading:
                return False
        return self._start(sig)

    def request_reload(self) -> tuple[bool, str]:
        """Load the file now, changed or not (the reload service). Returns ``(started, message)``."""
        sig = path_signature(self.path)
        if sig is None:
            return False, f"{self.path} does not exist: still serving the loaded model"
        if not self._start(sig):
            return False, "a model is being loaded already"
        return True, f"loading {self.path} in the background; it serves from the next update once loaded"

    def _start(self, sig: tuple) -> bool:
        with self._lock:
            if self.status.loading:
                return False
            self.status.loading = True
            self._pending_signature = sig
        self._thread = threading.Thread(target=self._load, args=(sig,), name="vln_model_load", daemon=True)
        self._thread.start()
        return True

    def _load(self, sig: tuple) -> None:
        try:
            backend = self._build(self.cfg)
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, the old model serves
            refused = f"{self.path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            with self._lock:
                self.status.loading = False
                self.status.refused = refused
            if self._on_refused is not None:
                self._on_refused(refused)
            return
        with self._lock:
            old, self._ready, self._ready_signature = self._ready, backend, sig
            self.status.loading = False
        if old is not None and hasattr(old, "close"):
            old.close()

    def take_ready(self) -> Optional[object]:
        """The newly loaded backend, once (None when none is ready); it serves from now on."""
        with self._lock:
            backend, self._ready = self._ready, None
            if backend is None:
                return None
            self._signature, self._pending_signature = self._ready_signature, None
            self.status.loaded_at = self._clock()
            self.status.loads += 1
            self.status.refused = ""
        return backend

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait for a load in progress (tests, shutdown); True when none is running."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return not self.status.loading

"""The shipped checkpoint exported to ONNX with the project's own CLI (export/export_onnx.py).

``exports/`` is gitignored and absent on a clean checkout, so tests that need an export folder
make one: :func:`export_onnx_folder` (used by the session fixture ``onnx_export`` in conftest.py,
shared by tests/test_onnx_backend.py and tests/test_node_learned.py, so one run exports once).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the checkpoint the ONNX tests export: the shipped model (``VLN_ONNX_TEST_CHECKPOINT`` overrides it)
CHECKPOINT = Path(os.environ.get("VLN_ONNX_TEST_CHECKPOINT") or REPO / "models/embedded/checkpoint.pt")


def export_onnx_folder(out: Path, checkpoint: Path = CHECKPOINT, runs: int = 1, timeout_s: float = 600) -> str:
    """Run ``export/export_onnx.py --checkpoint checkpoint --out out --runs runs`` (the graphs, checked
    against PyTorch, then ``runs`` timing runs); assert it succeeded and return its stdout."""
    done = subprocess.run([sys.executable, str(REPO / "export/export_onnx.py"), "--checkpoint", str(checkpoint),
                           "--out", str(out), "--runs", str(runs)], capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout

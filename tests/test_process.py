"""vln_core.process: background work gives way to the node, on the real kernel (in a child
process, so the test process keeps its own priority)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_CHILD = """
import json, os, sys, threading
sys.path.insert(0, {repo!r})
from vln_core.process import give_way_to_foreground
started, stop = threading.Event(), threading.Event()
def work():
    started.set()
    stop.wait()
before = threading.Thread(target=work)
before.start()
started.wait()
base = os.getpriority(os.PRIO_PROCESS, 0)
policy = give_way_to_foreground(5, idle=True)
after = threading.Thread(target=stop.wait)
after.start()
tids = [int(t) for t in os.listdir("/proc/self/task")]
print(json.dumps({{"policy": policy, "base": base, "threads": len(tids),
                   "nice": [os.getpriority(os.PRIO_PROCESS, t) for t in tids],
                   "sched": [os.sched_getscheduler(t) for t in tids], "idle": os.SCHED_IDLE}}))
stop.set()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness and SCHED_IDLE are Linux's")
def test_every_thread_gives_way_also_those_started_before_and_after():
    proc = subprocess.run([sys.executable, "-c", _CHILD.format(repo=str(REPO))], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["policy"] == "idle" and out["threads"] == 3
    assert all(n == min(19, out["base"] + 5) for n in out["nice"])  # os.nice() would have moved the caller's only
    assert all(s == out["idle"] for s in out["sched"])
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the test process itself is untouched

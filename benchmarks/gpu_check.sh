#!/usr/bin/env bash
# Thin wrapper of benchmarks/gpu_check.py (see its docstring): the repo root on PYTHONPATH, so it
# runs whether or not vln_core is pip-installed, and a hard limit of 480 s.
#   bash benchmarks/gpu_check.sh              # on the GPU machine; JSON to outputs/gpu_check.json
#   bash benchmarks/gpu_check.sh --dry-run    # any machine: CPU, tiny sizes, plumbing only
# The interpreter: $PYTHON if set, else the repo's .venv when present, else python3.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
  PY="$ROOT/.venv/bin/python"
else
  PY="python3"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --kill-after=15 480 "$PY" "$ROOT/benchmarks/gpu_check.py" "$@"

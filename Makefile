# Two entry points for a fresh machine with Python 3.11 and no ROS: `make demo`, `make test`.
# Both create (or reuse) the project virtual environment in .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TF2_STAMP := $(VENV)/.tf2_msgs

.PHONY: venv demo demo-geometry test bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[ros,data,train,export,dev]'
	touch $(STAMP)

# tf2_msgs/msg/TFMessage (/tf, /tf_static) is not on PyPI: generated from ros2_ws/src/tf2_msgs
# with the rosidl generators of the `ros` extra; needs cmake, a C/C++ compiler, Python headers.
$(TF2_STAMP): $(STAMP) tools/build_tf2_msgs.sh $(wildcard ros2_ws/src/tf2_msgs/*.* ros2_ws/src/tf2_msgs/msg/*)
	tools/build_tf2_msgs.sh $(VENV)
	touch $(TF2_STAMP)

venv: $(TF2_STAMP)

# the learned backend from colour + odometry alone, its overlays beside the exact heatmaps
demo: $(TF2_STAMP)
	$(PY) tools/demo.py

# the RGB-D demo: depth published, the node's exact geometry backend
demo-geometry: $(TF2_STAMP)
	$(PY) tools/demo.py --backend geometry --out outputs/demo_geometry

test: $(TF2_STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/geometry_throughput.py

clean-venv:
	rm -rf $(VENV)

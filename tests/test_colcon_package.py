"""`colcon build` of ros2_ws turns vln_heatmap into an installed ament_python package."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COLCON = Path(sys.executable).with_name("colcon")


@pytest.fixture(scope="module")
def install_base(tmp_path_factory) -> Path:
    colcon = str(COLCON) if COLCON.exists() else shutil.which("colcon")
    if colcon is None:
        pytest.skip("colcon is not installed (pip install colcon-common-extensions)")
    tmp = tmp_path_factory.mktemp("colcon")
    # build outside the source tree so the checkout stays clean
    proc = subprocess.run(
        [colcon, "--log-base", str(tmp / "log"), "build", "--base-paths", str(REPO / "ros2_ws" / "src"),
         "--build-base", str(tmp / "build"), "--install-base", str(tmp / "install")],
        cwd=tmp, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
    )
    assert proc.returncode == 0, f"colcon build failed:\n{proc.stdout}\n{proc.stderr}"
    assert "1 package finished" in proc.stdout, proc.stdout
    return tmp / "install" / "vln_heatmap"


def test_share_directory_holds_launch_config_rviz(install_base):
    share = install_base / "share" / "vln_heatmap"
    for rel in ("launch/nav.launch.py", "config/vln_heatmap.yaml", "rviz/vln_heatmap.rviz", "package.xml"):
        assert (share / rel).is_file(), f"{rel} not installed into {share}"
    # installed copies are the files of the repository, not stale duplicates
    assert (share / "launch/nav.launch.py").read_bytes() == (REPO / "launch/nav.launch.py").read_bytes()
    assert (install_base / "share/ament_index/resource_index/packages/vln_heatmap").is_file()


def test_console_scripts_installed_where_ros2_run_looks(install_base):
    lib = install_base / "lib" / "vln_heatmap"
    for name in ("vln_heatmap_node", "vln_heatmap_replay"):
        script = lib / name
        assert script.is_file(), f"{script} missing"
        assert os.access(script, os.X_OK), f"{script} is not executable"


def test_installed_entry_point_runs(install_base):
    """The installed replay script starts from the install tree and answers --help."""
    site = next((install_base / "lib").glob("python3*/site-packages"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))
    proc = subprocess.run([str(install_base / "lib/vln_heatmap/vln_heatmap_replay"), "--help"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "--rate" in proc.stdout and "--loop" in proc.stdout
    assert str(site) in subprocess.run(
        [sys.executable, "-c", "import vln_heatmap, sys; print(vln_heatmap.__file__)"],
        capture_output=True, text=True, env=env, timeout=60,
    ).stdout

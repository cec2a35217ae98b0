"""ament_python package of the vln_heatmap ROS 2 node.

The node's logic is the ``vln_core`` library at the repository root (``pip install -e .`` there);
this package installs the ROS wrapper, the launch file (kept at the repository top level as
``launch/nav.launch.py`` and installed from there), the parameter file and the RViz configuration.
"""
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "vln_heatmap"
HERE = Path(__file__).resolve().parent
# the launch file lives at <repo>/launch/nav.launch.py; data_files paths are relative to this dir
LAUNCH_FILE = Path("..", "..", "..", "launch", "nav.launch.py")
if not (HERE / LAUNCH_FILE).is_file():
    raise FileNotFoundError(f"launch file not found at {HERE / LAUNCH_FILE} (expected <repo>/launch/nav.launch.py)")

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    package_data={PACKAGE: ["fastdds_profile.xml"]},  # the node's and replay's Fast DDS profile (transport.py)
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml", "README.md"]),
        (f"share/{PACKAGE}/launch", [LAUNCH_FILE.as_posix()]),
        (f"share/{PACKAGE}/config", ["config/vln_heatmap.yaml"]),
        (f"share/{PACKAGE}/rviz", ["rviz/vln_heatmap.rviz"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="vln_heatmap maintainers",
    maintainer_email="vln-heatmap@example.org",
    description="Frame-indexed inter-frame heatmaps and waypoints for vision-language navigation",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "vln_heatmap_node = vln_heatmap.node:main",
            "vln_heatmap_replay = vln_heatmap.replay:main",
        ],
    },
)

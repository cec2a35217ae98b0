"""The RViz configuration shows what the node publishes: overlay, goal heatmap, waypoints, markers."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

PACKAGE = Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "vln_heatmap"


def test_rviz_displays_the_node_outputs():
    rviz = yaml.safe_load((PACKAGE / "rviz" / "vln_heatmap.rviz").read_text())
    displays = {d["Topic"]["Value"]: d for d in rviz["Visualization Manager"]["Displays"] if "Topic" in d}
    node_source = (PACKAGE / "vln_heatmap" / "node.py").read_text()
    published = {f"/vln_heatmap_node/{name}": cls for cls, name in
                 re.findall(r'create_publisher\((\w+), "~/(\w+)"', node_source)}
    expected = {
        "/vln_heatmap_node/overlay": ("Image", "rviz_default_plugins/Image"),
        "/vln_heatmap_node/goal_heatmap": ("Image", "rviz_default_plugins/Image"),
        "/vln_heatmap_node/waypoints": ("Path", "rviz_default_plugins/Path"),
        "/vln_heatmap_node/waypoint_markers": ("MarkerArray", "rviz_default_plugins/MarkerArray"),
    }
    for topic, (msg_type, display_class) in expected.items():
        assert published.get(topic) == msg_type, (topic, published)
        assert topic in displays and displays[topic]["Class"] == display_class, topic
        assert displays[topic]["Enabled"] is True
    # the Path and markers are drawn in the fixed frame the node publishes them in (node.world_frame)
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == "odom"

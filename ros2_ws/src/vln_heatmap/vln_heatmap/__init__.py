"""ROS 2 wrapper of vln_core."""

"""Launch the vln_heatmap node (and optionally RViz) on a robot or against a replayed episode.

    ros2 launch vln_heatmap nav.launch.py
    ros2 launch vln_heatmap nav.launch.py camera_topic:=/camera/image_raw depth_topic:=/camera/depth \
        camera_info_topic:=/camera/camera_info odometry_topic:=/odom backend:=auto rviz:=true

Parameters come from ``params_file`` (default: the package's ``config/vln_heatmap.yaml``, a ROS
parameter file holding the ``vln_core.config`` tree) with ``backend`` / ``model_path`` laid on top.
The topic arguments remap the topics named in the parameter file; leave one empty to keep the
parameter file's topic.
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vln_core.config import load_config

PACKAGE = "vln_heatmap"
NODE_NAME = "vln_heatmap_node"

# launch argument -> key under node.topics in the parameter file
TOPIC_ARGUMENTS = {
    "camera_topic": "image",
    "depth_topic": "depth",
    "camera_info_topic": "camera_info",
    "odometry_topic": "odometry",
}


def _launch_node(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context)
    # the node subscribes to the topics of its config (the parameter file over the defaults):
    # read them the way the node does, which also validates the file before anything starts
    topics = load_config(params_file).node.topics
    remappings = []
    for argument, key in TOPIC_ARGUMENTS.items():
        wanted = LaunchConfiguration(argument).perform(context)
        subscribed = getattr(topics, key)
        if wanted and wanted != subscribed:
            remappings.append((subscribed, wanted))
    overrides = {"node.backend": LaunchConfiguration("backend").perform(context)}
    model_path = LaunchConfiguration("model_path").perform(context)
    if model_path:
        overrides["node.model_path"] = model_path
    node = Node(
        package=PACKAGE,
        executable="vln_heatmap_node",
        name=NODE_NAME,
        output="screen",
        emulate_tty=True,
        parameters=[params_file, overrides],
        remappings=remappings,
    )
    return [node]


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory(PACKAGE))
    default_params = str(share / "config" / "vln_heatmap.yaml")
    rviz_config = str(share / "rviz" / "vln_heatmap.rviz")

    arguments = [
        DeclareLaunchArgument("camera_topic", default_value="",
                              description="sensor_msgs/Image colour topic (empty: the parameter file's node.topics.image)"),
        DeclareLaunchArgument("depth_topic", default_value="",
                              description="sensor_msgs/Image depth topic, 16UC1 mm or 32FC1 m (empty: node.topics.depth)"),
        DeclareLaunchArgument("camera_info_topic", default_value="",
                              description="sensor_msgs/CameraInfo of the colour camera (empty: node.topics.camera_info)"),
        DeclareLaunchArgument("odometry_topic", default_value="",
                              description="nav_msgs/Odometry of base_link in the odom frame (empty: node.topics.odometry)"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS parameter file holding the vln_core config tree"),
        DeclareLaunchArgument("backend", default_value="auto",
                              choices=["geometry", "model", "onnx", "tensorrt", "auto"],
                              description="heatmap backend: geometry (depth reprojection), model, onnx, tensorrt, "
                                          "auto (geometry when depth and poses arrive, else model)"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="checkpoint / ONNX / engine file for the learned backends"),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="start RViz with the package's configuration"),
    ]
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", rviz_config],
        output="log",
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*arguments, OpaqueFunction(function=_launch_node), rviz])

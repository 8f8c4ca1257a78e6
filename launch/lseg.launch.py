"""Launch lseg_node: `ros2 launch lseg_ros lseg.launch.py image:=/camera/color/image_raw weights:=/path/demo_e200.ckpt`

Arguments: image (input topic), namespace (moves every output: <ns>/lseg/..., <ns>/set_labels),
params_file (default config/lseg.yaml), weights, device, rviz (true opens config/lseg.rviz).

Large frames from a best-effort camera need bigger Fast DDS socket buffers in BOTH processes
(docs/node.md, "QoS"): this file sets FASTDDS_BUILTIN_TRANSPORTS for the node unless it is already
set; set the same on the camera's side, e.g. `export FASTDDS_BUILTIN_TRANSPORTS=DEFAULT?sockets_size=4MB`.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("lseg_ros")
    image = LaunchConfiguration("image")
    namespace = LaunchConfiguration("namespace")
    params_file = LaunchConfiguration("params_file")
    weights = LaunchConfiguration("weights")
    device = LaunchConfiguration("device")
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/color/image_raw",
                              description="input sensor_msgs/Image topic (its /compressed sibling with "
                                          "input_transport: compressed)"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and all its topics and services"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "lseg.yaml"),
                              description="lseg_node parameters (YAML)"),
        DeclareLaunchArgument("weights", default_value="",
                              description="LSeg checkpoint (demo_e200.ckpt or own .safetensors); '' = untrained"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda, cuda:N"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/lseg.rviz"),
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS",
                               os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "DEFAULT?sockets_size=4MB")),
        Node(
            package="lseg_ros",
            executable="lseg_node",
            name="lseg_node",
            namespace=namespace,
            parameters=[params_file, {"weights": weights, "device": device}],
            remappings=[("image", image)],  # the node derives <image>/compressed from it
            output="screen",
            emulate_tty=True,
        ),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            namespace=namespace,
            arguments=["-d", os.path.join(share, "config", "lseg.rviz")],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])

"""Launch lseg_node: `ros2 launch lseg_ros lseg.launch.py image:=/camera/color/image_raw weights:=/path/demo_e200.ckpt`

Arguments: image (input topic), namespace (moves every output: <ns>/lseg/..., <ns>/set_labels),
params_file (default config/lseg.yaml), weights and device (override the params file when given),
rviz (true opens config/lseg.rviz in the same namespace).

Large frames from a best-effort camera need bigger Fast DDS socket buffers in BOTH processes
(docs/node.md, "QoS"): the node gets FASTDDS_BUILTIN_TRANSPORTS=DEFAULT?sockets_size=4MB unless the
environment sets it already (measured on Kilted; Humble's Fast DDS 2.6 ignores it: use an XML profile);
set the same on the camera's side.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

OVERRIDES = ("weights", "device")  # launch arguments that, when non-empty, override the params file


def _nodes(context):
    share = get_package_share_directory("lseg_ros")
    arg = {name: LaunchConfiguration(name).perform(context)
           for name in ("image", "namespace", "params_file", "rviz") + OVERRIDES}
    parameters = [arg["params_file"]]
    overrides = {name: arg[name] for name in OVERRIDES if arg[name]}
    if overrides:
        parameters.append(overrides)
    nodes = [Node(
        package="lseg_ros",
        executable="lseg_node",
        name="lseg_node",
        namespace=arg["namespace"],
        parameters=parameters,
        remappings=[("image", arg["image"])],  # the node derives <image>/compressed from it
        additional_env={"FASTDDS_BUILTIN_TRANSPORTS":
                        os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "DEFAULT?sockets_size=4MB")},
        output="screen",
        emulate_tty=True,
    )]
    if arg["rviz"].lower() in ("true", "1", "yes"):
        nodes.append(Node(package="rviz2", executable="rviz2", name="rviz2", namespace=arg["namespace"],
                          arguments=["-d", os.path.join(share, "config", "lseg.rviz")]))
    return nodes


def generate_launch_description():
    share = get_package_share_directory("lseg_ros")
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/color/image_raw",
                              description="input sensor_msgs/Image topic (its /compressed sibling with "
                                          "input_transport: compressed)"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and all its topics and services"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "lseg.yaml"),
                              description="lseg_node parameters (YAML)"),
        DeclareLaunchArgument("weights", default_value="",
                              description="LSeg checkpoint (demo_e200.ckpt or own .safetensors); "
                                          "'' = as in params_file"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto, cpu, cuda, cuda:N; '' = as in params_file"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/lseg.rviz"),
        OpaqueFunction(function=_nodes),
    ])

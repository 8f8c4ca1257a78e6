"""Launch lseg_node: `ros2 launch lseg_ros lseg.launch.py image:=/camera/color/image_raw weights:=/path/demo_e200.ckpt`

Arguments (`ros2 launch lseg_ros lseg.launch.py --show-args` lists them):
image (input topic), namespace (moves the node and every output: <ns>/lseg/..., <ns>/set_labels),
params_file (default config/lseg.yaml), and arguments that override the params file only when given
(non-empty): weights, model, device, autostart, image_topics, depth_topics. rviz:=true opens config/lseg.rviz.

Arguments and the params file are checked before anything starts, against the node's own parameter
table (lseg_ros.node.params): a bad value (device:=gpu7), a params file that does not exist or names
a parameter lseg_node does not have stop the launch with a message naming it, and nothing runs.

Large frames from a best-effort camera need bigger Fast DDS socket buffers in BOTH processes
(docs/node.md, "QoS"): the node gets FASTDDS_BUILTIN_TRANSPORTS=DEFAULT?sockets_size=4MB unless the
environment sets it already (measured on Kilted; Humble's Fast DDS 2.6 ignores it: use an XML profile);
set the same on the camera's side.
"""
import fnmatch
import os
from typing import Any, Dict, List

import yaml
from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from lseg_ros.node import params as P

NODE_NAME = "lseg_node"
# launch arguments that, when non-empty, override the params file (each is a node parameter)
OVERRIDES = ("weights", "model", "device", "autostart", "image_topics", "depth_topics", "fast_path", "input_size")
# parameters every rclpy node accepts besides its own
GENERIC_PARAMS = ("use_sim_time", "start_type_description_service")
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class LaunchArgumentError(ValueError):
    """A launch argument or the params file is wrong; the message names it (launch prints only it)."""


def _typed(name: str, text: str) -> Any:
    """A launch argument's text as the value of node parameter `name` (typed like its default)."""
    default = P.BY_NAME[name].default
    if isinstance(default, bool):
        if text.lower() not in TRUE + FALSE:
            raise LaunchArgumentError(f"launch argument {name}:={text}: must be true or false")
        return text.lower() in TRUE
    if isinstance(default, list):
        try:
            value = yaml.safe_load(text) if text.lstrip().startswith("[") else text.split(",")
        except yaml.YAMLError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise LaunchArgumentError(f"launch argument {name}:={text}: must be a list of strings, "
                                      f"e.g. {name}:=\"[/front/image_raw, /rear/image_raw]\" or a,b")
        return [v.strip() for v in value]
    if isinstance(default, (int, float)):
        try:
            return type(default)(text)
        except ValueError:
            raise LaunchArgumentError(f"launch argument {name}:={text}: must be a number") from None
    return text


def _matches(key: str, full_name: str) -> bool:
    """Whether a params-file section key (`/**`, `lseg_node`, `/ns/lseg_node`, `/**/lseg_node`) applies."""
    pattern = "/" + key.lstrip("/")
    if pattern == "/**":
        return True
    return any(fnmatch.fnmatchcase(full_name, p) for p in (pattern.replace("**", "*"), pattern.replace("/**", "")))


def _flatten(values: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_params_file(path: str, full_name: str) -> None:
    """Raises LaunchArgumentError naming the file and the parameter when `path` is missing, not a ROS
    params file, names a parameter lseg_node lacks, or gives one an invalid value."""
    if not os.path.isfile(path):
        raise LaunchArgumentError(f"params_file:={path}: no such file")
    try:
        with open(path) as fh:
            doc = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise LaunchArgumentError(f"params_file:={path}: not readable YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise LaunchArgumentError(f"params_file:={path}: not a ROS parameters file "
                                  "(expected '<node>: ros__parameters: {...}')")
    for key, section in doc.items():
        if not (isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict)):
            raise LaunchArgumentError(f"params_file:={path}: section {key!r} has no ros__parameters mapping")
        if not _matches(str(key), full_name):
            continue
        for name, value in _flatten(section["ros__parameters"]).items():
            if name in GENERIC_PARAMS or name.startswith("qos_overrides."):
                continue
            if name not in P.BY_NAME:
                raise LaunchArgumentError(f"params_file:={path}: unknown parameter {name!r} for {full_name} "
                                          f"(it has: {', '.join(sorted(P.BY_NAME))})")
            reason = P.validate(name, value)
            if reason:
                raise LaunchArgumentError(f"params_file:={path}: parameter {name}: {reason}")


def _nodes(context) -> List[Node]:
    share = get_package_share_directory("lseg_ros")
    arg = {name: LaunchConfiguration(name).perform(context)
           for name in ("image", "namespace", "params_file", "rviz") + OVERRIDES}
    namespace = arg["namespace"].strip("/")
    full_name = f"/{namespace}/{NODE_NAME}" if namespace else f"/{NODE_NAME}"
    check_params_file(arg["params_file"], full_name)
    overrides = {}
    for name in OVERRIDES:
        if arg[name]:
            value = _typed(name, arg[name])
            reason = P.validate(name, value)
            if reason:
                raise LaunchArgumentError(f"launch argument {name}:={arg[name]}: {reason}")
            overrides[name] = value
    if arg["rviz"].lower() not in TRUE + FALSE:
        raise LaunchArgumentError(f"launch argument rviz:={arg['rviz']}: must be true or false")
    rviz = arg["rviz"].lower() in TRUE
    if rviz:  # checked before anything starts: launch would otherwise leave lseg_node running
        try:
            get_package_prefix("rviz2")
        except PackageNotFoundError:
            raise LaunchArgumentError("launch argument rviz:=true: package 'rviz2' not found "
                                      "(install rviz2, e.g. ros-<distro>-rviz2, or leave rviz:=false)") from None
    nodes = [Node(
        package="lseg_ros",
        executable=NODE_NAME,
        name=NODE_NAME,
        namespace=namespace,
        parameters=[arg["params_file"]] + ([overrides] if overrides else []),
        remappings=[("image", arg["image"])],  # the node derives <image>/compressed from it
        additional_env={"FASTDDS_BUILTIN_TRANSPORTS":
                        os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "DEFAULT?sockets_size=4MB")},
        output="screen",
        emulate_tty=True,
    )]
    if rviz:
        nodes.append(Node(package="rviz2", executable="rviz2", name="rviz2", namespace=namespace,
                          arguments=["-d", os.path.join(share, "config", "lseg.rviz")]))
    return nodes


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("lseg_ros")
    as_file = "'' = as in params_file"
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/color/image_raw",
                              description="input sensor_msgs/Image topic (its /compressed sibling with "
                                          "input_transport: compressed); remaps the node's 'image'"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and all its topics and services"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "lseg.yaml"),
                              description="lseg_node parameters (YAML), checked before the node starts"),
        DeclareLaunchArgument("weights", default_value="",
                              description="LSeg checkpoint (demo_e200.ckpt or own .safetensors); " + as_file),
        DeclareLaunchArgument("model", default_value="",
                              description=f"architecture without weights: {', '.join(P.MODELS)}; " + as_file),
        DeclareLaunchArgument("device", default_value="", description="auto, cpu, cuda, cuda:N; " + as_file),
        DeclareLaunchArgument("autostart", default_value="",
                              description="true: configure and activate at start; false: wait unconfigured "
                                          "for a lifecycle manager; " + as_file),
        DeclareLaunchArgument("image_topics", default_value="",
                              description="several cameras: \"[/front/image_raw, /rear/image_raw]\"; outputs "
                                          "go beside each topic; " + as_file),
        DeclareLaunchArgument("depth_topics", default_value="",
                              description="aligned depth per camera (order of image_topics), e.g. "
                                          "\"[/camera/aligned_depth_to_color/image_raw]\": enables lseg/points; " + as_file),
        DeclareLaunchArgument("fast_path", default_value="",
                              description="auto (CUDA graphs on CUDA, + torch.compile with input_size), always, eager; "
                                          + as_file),
        DeclareLaunchArgument("input_size", default_value="",
                              description="HxW, multiples of 32 (e.g. 480x640): one input shape, compiled and "
                                          "captured at configure; " + as_file),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/lseg.rviz"),
        OpaqueFunction(function=_nodes),
    ])

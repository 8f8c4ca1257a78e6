"""launch_testing file (run by `launch_test`, see test/test_launch_file.py): launch/lseg.launch.py as
installed, included twice, two lseg_node instances side by side in two namespaces, every launch argument
given to one of them; checked over ROS while running, and for exit codes after launch shut them down.

Not collected by pytest directly (no test_ prefix): `launch_test` runs it with unittest in its own
process, on the ROS domain and environment the calling test gives.
"""
import os
import sys
import tempfile
import time
import unittest
from pathlib import Path

import launch_testing
import launch_testing.actions
import launch_testing.asserts
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import GroupAction, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ros_harness import TestNode, image_msg, photo, wait_for  # noqa: E402

LABELS_A = ["sky", "tree", "road", "other"]
MISSING_WEIGHTS = "/nonexistent/lseg_never_loaded.safetensors"
# Instance A: the single-camera form, its input remapped, labels from a params file; instance B: a
# managed node (autostart false) for two cameras whose weights are loaded only at configure.
ARGS_A = {"namespace": "cam_a", "image": "/cam_a/color/image_raw", "model": "tiny_vit", "device": "cpu",
          "autostart": "true", "rviz": "false"}
ARGS_B = {"namespace": "cam_b", "image_topics": "[/cam_b/front/image_raw, /cam_b/rear/image_raw]",
          "depth_topics": "[/cam_b/front/depth, /cam_b/rear/depth]",
          "model": "tiny_resnet", "device": "cpu", "autostart": "false", "weights": MISSING_WEIGHTS,
          "fast_path": "eager", "input_size": "480x640"}


def _params_file() -> str:
    fd, path = tempfile.mkstemp(prefix="lseg_a_", suffix=".yaml")
    with os.fdopen(fd, "w") as fh:
        fh.write("/**:\n  ros__parameters:\n    labels: [" + ", ".join(LABELS_A) + "]\n    num_threads: 1\n")
    return path


def _instance(args):
    launch_file = os.path.join(get_package_share_directory("lseg_ros"), "launch", "lseg.launch.py")
    return GroupAction([IncludeLaunchDescription(PythonLaunchDescriptionSource(launch_file),
                                                 launch_arguments=list(args.items()))])


def generate_test_description():
    return LaunchDescription([
        _instance({**ARGS_A, "params_file": _params_file()}),
        _instance(ARGS_B),
        launch_testing.actions.ReadyToTest(),
    ]), {}


class TestTwoInstances(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import rclpy
        from rclpy.context import Context

        from lseg_ros.msg import ClassConfidences

        cls.context = Context()
        rclpy.init(context=cls.context)
        cls.ros = TestNode(cls.context, "launch_file_test")
        for topic in ("/cam_a/lseg/class_confidences", "/cam_b/front/lseg/class_confidences"):
            cls.ros.subscribe(topic, ClassConfidences)
        want = {("lseg_node", "/cam_a"), ("lseg_node", "/cam_b")}
        wait_for(lambda: want <= set(cls.ros.node.get_node_names_and_namespaces()), 90, "both lseg_node instances")

    @classmethod
    def tearDownClass(cls):
        import rclpy

        cls.ros.close()
        rclpy.try_shutdown(context=cls.context)

    def _state(self, node):
        from lifecycle_msgs.srv import GetState

        return self.ros.call(GetState, f"{node}/get_state", GetState.Request(), timeout=30).current_state.label

    def test_1_arguments_and_params_file_reach_the_parameters(self):
        names = ("model", "device", "labels", "num_threads", "autostart")
        a = dict(zip(names, self.ros.get_params("cam_a/lseg_node", *names)))
        self.assertEqual(a, {"model": "tiny_vit", "device": "cpu", "labels": LABELS_A, "num_threads": 1,
                             "autostart": True})
        names = ("model", "device", "weights", "autostart", "image_topics", "depth_topics", "fast_path", "input_size")
        b = dict(zip(names, self.ros.get_params("cam_b/lseg_node", *names)))
        self.assertEqual(b, {"model": "tiny_resnet", "device": "cpu", "weights": MISSING_WEIGHTS,
                             "autostart": False, "image_topics": ["/cam_b/front/image_raw", "/cam_b/rear/image_raw"],
                             "depth_topics": ["/cam_b/front/depth", "/cam_b/rear/depth"], "fast_path": "eager",
                             "input_size": "480x640"})

    def test_2_remapped_image_and_namespace_route_frames_to_namespaced_outputs(self):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        subs = wait_for(lambda: dict(self.ros.node.get_subscriber_names_and_types_by_node("lseg_node", "/cam_a"))
                        .get("/cam_a/color/image_raw"), 30, "instance A subscribed to its remapped image")
        self.assertIn("sensor_msgs/msg/Image", subs)
        pub = self.ros.node.create_publisher(Image, "/cam_a/color/image_raw",
                                             QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
        img, deadline = photo(320, 240), time.monotonic() + 60
        while not self.ros.messages("/cam_a/lseg/class_confidences") and time.monotonic() < deadline:
            pub.publish(image_msg(img, "rgb8", self.ros.node.get_clock().now().to_msg()))
            time.sleep(0.5)
        msgs = self.ros.messages("/cam_a/lseg/class_confidences")
        self.assertTrue(msgs, "no /cam_a/lseg/class_confidences within 60 s")
        self.assertEqual(list(msgs[-1].labels), LABELS_A)
        self.assertFalse(self.ros.messages("/cam_b/front/lseg/class_confidences"))  # B waits unconfigured

    def test_3_autostart_false_waits_unconfigured_and_a_failed_configure_keeps_it_so(self):
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        self.assertEqual(self._state("/cam_a/lseg_node"), "active")
        self.assertEqual(self._state("/cam_b/lseg_node"), "unconfigured")
        res = self.ros.call(ChangeState, "/cam_b/lseg_node/change_state",
                            ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE)), timeout=60)
        self.assertFalse(res.success)  # its weights file does not exist
        self.assertEqual(self._state("/cam_b/lseg_node"), "unconfigured")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_both_nodes_exit_cleanly(self, proc_info, proc_output):
        launch_testing.asserts.assertExitCodes(proc_info)
        text = "".join(o.text.decode(errors="replace") for o in proc_output)  # stdout and stderr
        self.assertIn(MISSING_WEIGHTS, text)  # B's failed configure names the file
        for alarm in ("Traceback", "terminate called"):
            self.assertNotIn(alarm, text)

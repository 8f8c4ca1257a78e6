"""launch/lseg.launch.py tested the way ROS 2 packages test launch files: `launch_test` (launch_testing)
runs test/launch/lseg_two_namespaces.py, two lseg_node instances side by side in two namespaces with
every launch argument given, in its own process group and ROS domain; its unittest cases check them over
ROS and their exit codes after shutdown. (launch_pytest, the pytest flavour, does not run under this
project's pytest 9: its plugin reads fixture internals that pytest 8.4 removed.)
Bad values: test_launch_bad_input.py. Needs launch_testing and launch_ros from ../shared/vendor/ros2-python.
"""
import os
import re
import signal
import subprocess

import cli_harness as H

H.skip_module_without_tools()

os.environ.setdefault("AMENT_PREFIX_PATH", str(H.VENV))  # as a sourced install: the launch file's share
LAUNCH_FILE = H.VENV / "share" / "lseg_ros" / "launch" / "lseg.launch.py"  # what `ros2 launch` runs
LAUNCH_TEST = H.ROOT / "test" / "launch" / "lseg_two_namespaces.py"
DECLARED = {"image", "namespace", "params_file", "weights", "model", "device", "autostart", "image_topics", "depth_topics", "fast_path",
            "input_size", "rviz"}


def test_the_launch_test_gives_every_declared_argument():
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    H.check_installed_launch_file()
    ld = get_launch_description_from_python_launch_file(str(LAUNCH_FILE))
    assert {a.name for a in ld.get_launch_arguments()} == DECLARED
    text = LAUNCH_TEST.read_text()
    given = set(re.findall(r'"(\w+)": ', text[text.index("ARGS_A ="):text.index("def _params_file")]))
    assert given | {"params_file"} >= DECLARED, DECLARED - given


def test_two_instances_in_two_namespaces_with_launch_testing(ros_env):
    H.check_installed_launch_file()
    env = H.cli_env(ros_env)
    proc = subprocess.Popen([str(H.VENV / "bin" / "launch_test"), str(LAUNCH_TEST)], env=env, cwd=H.ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"launch_test did not finish in 300 s:\n{out}")
    assert proc.returncode == 0, out
    ran = [int(n) for n in re.findall(r"^Ran (\d+) tests?", out, re.M)]
    assert ran == [3, 1] and out.count("\nOK") == 2, out

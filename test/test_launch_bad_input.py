"""Bad input to `ros2 launch lseg_ros lseg.launch.py`: a launch argument with a bad value, a params file
that does not exist, names a parameter lseg_node does not have or gives one a bad value. Each stops the
launch before anything starts, with a message naming the argument or parameter, a non-zero exit code
and no process left. Needs the ROS 2 CLI from ../shared/vendor/ros2-python; skips without.
"""
import pytest

import cli_harness as H

H.skip_module_without_tools()


@pytest.fixture(scope="module")
def env(ros_env):
    H.check_installed_launch_file()
    return H.cli_env(ros_env)


def _params_file(tmp_path, body: str) -> str:
    path = tmp_path / "lseg.yaml"
    path.write_text("/**:\n  ros__parameters:\n" + body)
    return str(path)


CASES = {
    "device": (lambda tmp: ["device:=gpu7"], ["device:=gpu7", "cuda:N", "'gpu7'"]),
    "model": (lambda tmp: ["model:=vit_huge"], ["model:=vit_huge", "tiny_vit"]),
    "autostart": (lambda tmp: ["autostart:=maybe"], ["autostart:=maybe", "true or false"]),
    "image_topics": (lambda tmp: ["image_topics:=[/a/image_raw, /a/image_raw]"], ["image_topics", "duplicate"]),
    "image_topics_syntax": (lambda tmp: ["image_topics:=[/a/image_raw"], ["image_topics:=[/a/image_raw", "list of strings"]),
    "rviz": (lambda tmp: ["rviz:=perhaps"], ["rviz:=perhaps", "true or false"]),
    # no rviz2 on these machines: checked before lseg_node starts (launch left it running otherwise)
    "rviz_missing": (lambda tmp: ["rviz:=true"], ["rviz:=true", "package 'rviz2' not found"]),
    "missing_params_file": (lambda tmp: [f"params_file:={tmp}/nowhere/lseg.yaml"], ["nowhere/lseg.yaml", "no such file"]),
    "unknown_parameter": (lambda tmp: [f"params_file:={_params_file(tmp, '    modle: tiny_vit' + chr(10))}"],
                          ["unknown parameter 'modle'", "model"]),
    "bad_parameter_value": (lambda tmp: [f"params_file:={_params_file(tmp, '    precision: fp8' + chr(10))}"],
                            ["parameter precision", "fp8"]),
    "not_a_params_file": (lambda tmp: [f"params_file:={_params_file(tmp, '    - just a list' + chr(10))}"],
                          ["ros__parameters"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_stops_the_launch_with_a_message_naming_it(case, env, tmp_path):
    args, expected = CASES[case]
    launch = H.Launch(["lseg_ros", "lseg.launch.py", *H.TINY_ARGS, *args(tmp_path)], env)  # the bad value last: it wins
    try:
        rc = launch.wait_exit(timeout=60)
        text = launch.stdout() + launch.stderr()
        assert rc != 0, launch.output()
        for word in expected:
            assert word in text, f"{word!r} not in the message:\n{launch.output()}"
        assert "process started" not in text, f"a node was started:\n{launch.output()}"
        assert "Traceback" not in text, launch.output()
        assert not launch.leftovers(), launch.leftovers()
    finally:
        launch.close()

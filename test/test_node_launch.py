"""config/lseg.yaml, config/lseg.rviz and the README's ROS commands against the node's real parameters,
executable and the CLI tests. The launch file is launched for real (test_cli_launch.py,
test_launch_file.py, test_launch_bad_input.py, where ../shared/vendor provides the ROS 2 launch tools);
test_node_pipeline.py starts the real node with config/lseg.yaml and compares its declared parameters.
"""
import re
from pathlib import Path

import pytest
import yaml

from cli_harness import README_COMMANDS, readme_commands
from lseg_ros.node import params as P

ROOT = Path(__file__).resolve().parents[1]


def test_readme_ros2_commands_are_the_tested_ones():
    """The README's `ros2 ...` lines ("On a ROS 2 install") are exactly the commands the CLI tests run
    (test_cli_*.py, test_launch_*.py): a changed README command fails here until the tests follow."""
    assert readme_commands() == README_COMMANDS


def test_launch_file_installs_and_names_the_installed_executable():
    """`ros2 launch` finds launch/lseg.launch.py in share/lseg_ros/launch, and its Node runs the
    executable CMake installs into lib/lseg_ros (what `ros2 run` and launch_ros look up). The launch
    file itself runs for real in test_cli_launch.py, test_launch_file.py and test_launch_bad_input.py."""
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r'"lib/\$\{PROJECT_NAME\}/lseg_node=lseg_ros\.node\.lseg_node:main"', cmake)
    assert re.search(r"install\(DIRECTORY[^)]*\blaunch\b[^)]*DESTINATION share/\$\{PROJECT_NAME\}", cmake, re.S)


def test_params_file_sets_exactly_the_declared_parameters_with_valid_values():
    doc = yaml.safe_load((ROOT / "config" / "lseg.yaml").read_text())
    values = doc["/**"]["ros__parameters"]
    assert set(values) == set(P.BY_NAME), (set(values) ^ set(P.BY_NAME))
    for name, value in values.items():
        assert P.validate(name, value) is None, (name, value, P.validate(name, value))
        default = P.BY_NAME[name].default
        assert type(value) is type(default) or (isinstance(default, float) and isinstance(value, float)), name


def test_every_parameter_has_a_description_and_validation_reasons():
    for p in P.PARAMS:
        assert len(p.description) > 20, p.name
        assert P.validate(p.name, p.default) is None, p.name
    assert "one of" in P.validate("device", "tpu") or "must be" in P.validate("device", "tpu")
    assert P.validate("device", "cuda:1") is None
    assert "duplicate" in P.validate("labels", ["a", "A"])
    assert "empty" in P.validate("labels", [])
    assert P.validate("max_side", 16) and P.validate("max_side", 0) is None
    assert P.topic_token("Traffic light|signal") == "traffic_light_signal"
    assert P.topic_token("3d printer") == "l_3d_printer"


def test_rviz_config_shows_overlay_and_mask():
    cfg = yaml.safe_load((ROOT / "config" / "lseg.rviz").read_text())
    displays = cfg["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"]: d for d in displays if d["Class"] == "rviz_default_plugins/Image"}
    # relative names: rviz started in the launch namespace finds <ns>/lseg/...
    assert {"lseg/overlay", "lseg/mask"} <= set(topics)
    assert topics["lseg/overlay"]["Enabled"] and topics["lseg/mask"]["Enabled"]
    for d in topics.values():
        assert d["Topic"]["Reliability Policy"] == "Reliable"


@pytest.mark.parametrize("exe", [ROOT / ".venv" / "lib" / "lseg_ros" / "lseg_node"])
def test_installed_executable_runs_the_node_main(exe):
    if not exe.exists():
        pytest.skip(f"{exe} not built (run scripts/setup.sh)")
    text = exe.read_text()
    assert "from lseg_ros.node.lseg_node import main" in text and text.startswith("#!")

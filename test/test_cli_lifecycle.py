"""The managed node through the ROS 2 CLI, as the README shows it: `ros2 launch ... autostart:=false`
leaves lseg_node unconfigured; `ros2 lifecycle set /lseg_node configure|activate|deactivate|cleanup`
move it, `ros2 lifecycle get` reports it; only an active node turns camera frames into outputs; an
unknown or impossible transition is refused with a message and the state stays; Ctrl-C ends it cleanly.
Needs the ROS 2 CLI from ../shared/vendor/ros2-python; skips without.
"""
import pytest

import cli_harness as H

H.skip_module_without_tools()

NODE = "/lseg_node"


@pytest.fixture(scope="module")
def env(ros_env):
    return H.cli_env(ros_env)


@pytest.fixture(scope="module")
def managed(env):
    """The README's managed launch (tiny model instead of its checkpoint) and a camera on its input."""
    H.check_installed_launch_file()
    launch = H.Launch(H.tiny(H.readme_command("ros2 launch lseg_ros lseg.launch.py autostart:=false")[2:]), env)
    camera = H.Camera("/camera/color/image_raw", env)
    try:
        first = H.ros2_until(_get_argv(), lambda r: r.returncode == 0, env, timeout=90)
        assert first.returncode == 0, f"{first}\n{launch.output()}"
        launch.track()
        yield launch
    finally:
        camera.stop()
        launch.close()


def _get_argv():
    argv = H.readme_command("ros2 lifecycle get")[1:]
    assert argv[-1] == NODE
    return argv


def _state(env) -> str:
    res = H.ros2(_get_argv(), env)
    assert res.returncode == 0, res
    return res.stdout.split()[0]  # "inactive [2]"


def _set(transition, env):
    argv = H.readme_command("ros2 lifecycle set")[1:]
    assert argv[-2:] == [NODE, "configure"]
    return H.ros2(argv[:-1] + [transition], env, timeout=90)


def _frames(env, timeout=3) -> bool:
    """Whether class confidences arrive within `timeout` s (the camera publishes at 2 Hz)."""
    argv = H.readme_command("ros2 topic echo")[1:]
    res = H.ros2([*argv, "--timeout", str(timeout)], env, timeout + 30)
    return bool(res.stdout.strip())


def test_autostart_false_leaves_it_unconfigured_and_silent(managed, env):
    assert _state(env) == "unconfigured"
    nodes = H.ros2_until(["lifecycle", "nodes", "--no-daemon", "--spin-time", "2"], lambda r: NODE in r.stdout.split(), env)
    assert NODE in nodes.stdout.split(), nodes
    assert not _frames(env), "an unconfigured node published class confidences"


@pytest.mark.parametrize("transition", ["explode", "activate"])
def test_unknown_or_impossible_transition_is_refused_and_the_state_stays(managed, env, transition):
    res = _set(transition, env)
    assert res.returncode != 0, res
    assert "Unknown transition requested" in res.stderr and "configure" in res.stderr, res  # lists the valid ones
    assert _state(env) == "unconfigured"


def test_configure_then_activate_turns_frames_into_outputs(managed, env):
    res = _set("configure", env)
    assert res.returncode == 0 and "Transitioning successful" in res.stdout, (res, managed.output())
    assert _state(env) == "inactive"
    assert not _frames(env), "an inactive node published class confidences"
    res = _set("activate", env)
    assert res.returncode == 0 and "Transitioning successful" in res.stdout, (res, managed.output())
    assert _state(env) == "active"
    assert _frames(env, timeout=30), f"no class confidences from the active node\n{managed.output()}"


def test_deactivate_stops_processing_and_cleanup_configure_activate_bring_it_back(managed, env):
    res = _set("deactivate", env)
    assert res.returncode == 0 and "Transitioning successful" in res.stdout, (res, managed.output())
    assert _state(env) == "inactive"
    assert not _frames(env), "a deactivated node published class confidences"
    for transition in ("cleanup", "configure", "activate"):
        res = _set(transition, env)
        assert res.returncode == 0 and "Transitioning successful" in res.stdout, (transition, res, managed.output())
    assert _state(env) == "active"
    assert _frames(env, timeout=30), managed.output()


def test_ctrl_c_ends_the_managed_node_cleanly(managed, env):
    assert managed.track()
    H.assert_clean_exit(managed, managed.interrupt())

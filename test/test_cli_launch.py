"""The README's commands, run as a user types them: `ros2 launch lseg_ros lseg.launch.py ...`, then
`ros2 service call /set_labels ...`, `ros2 topic echo --once .../class_confidences ...` on frames from a
camera process, `ros2 param set ... labels ...`, refused requests, and Ctrl-C (SIGINT to the launch's
process group) with frames flowing: exit code 0, no process left, nothing alarming in the output.

Then once more moved with `namespace:=robot1` and the camera remapped under it (one test: launch,
service call, echo, param set, Ctrl-C).
The README's `weights:=<checkpoint>` becomes the tiny CPU model (no weights on these machines).
Needs the ROS 2 CLI from ../shared/vendor/ros2-python (scripts/setup.sh installs it); skips without.
"""
import pytest
import yaml

import cli_harness as H

H.skip_module_without_tools()

def _ns(argv, ns):
    return H.renamespace(argv, "/", f"/{ns}/") if ns else list(argv)


def _cmd(prefix, ns=""):
    """The README's command starting with `prefix` (argv without `ros2`), its names moved under /ns."""
    return _ns(H.readme_command(prefix)[1:], ns)


def _start(env, ns=""):
    """`ros2 launch` with the README's arguments (tiny model) and a camera on its image topic."""
    H.check_installed_launch_file()
    argv = H.tiny(H.readme_command("ros2 launch lseg_ros lseg.launch.py image:=")[2:])
    image = next(a.split(":=", 1)[1] for a in argv if a.startswith("image:="))
    if ns:
        image = f"/{ns}{image}"
        argv = [f"image:={image}" if a.startswith("image:=") else a for a in argv] + [f"namespace:={ns}"]
    launch = H.Launch(argv, env)
    try:
        launch.wait_ready()
    except BaseException:
        launch.close()
        raise
    return launch, H.Camera(image, env)


@pytest.fixture(scope="module")
def env(ros_env):
    return H.cli_env(ros_env)


@pytest.fixture(scope="module")
def run(env):
    launch, camera = _start(env)
    try:
        yield "", launch
    finally:
        camera.stop()
        launch.close()


def test_node_and_service_are_up(run, env):
    ns, launch = run
    node = f"/{ns}/lseg_node" if ns else "/lseg_node"
    nodes = H.ros2_until(["node", "list", "--no-daemon", "--spin-time", "2"], lambda r: node in r.stdout.split(), env)
    assert node in nodes.stdout.split(), f"{node} not in `ros2 node list`:\n{nodes.stdout}\n{launch.output()}"
    service = f"{node.rsplit('/', 1)[0]}/set_labels lseg_ros/srv/SetLabels"
    found = H.ros2_until(["service", "list", "-t", "--no-daemon", "--spin-time", "2"],
                         lambda r: service in r.stdout.replace("[", "").replace("]", ""), env)
    assert service in found.stdout.replace("[", "").replace("]", ""), found.stdout


def test_param_set_labels_reaches_the_next_frames(run, env):
    ns, launch = run
    argv = _cmd("ros2 param set", ns)
    res = H.ros2(argv, env)
    assert res.returncode == 0 and "Set parameter successful" in res.stdout, (res, launch.output())
    wanted = list(yaml.safe_load(argv[-1]))
    assert H.wait_labels(_cmd("ros2 topic echo", ns), wanted, env) == wanted, launch.output()


def _require_service_call():
    reason = H.service_call_unsupported()
    if reason:
        pytest.skip(reason)


def test_service_call_set_labels_answers_success_and_reaches_the_next_frames(run, env):
    _require_service_call()
    ns, launch = run
    argv = _cmd("ros2 service call", ns)
    res = H.ros2(argv, env)
    assert res.returncode == 0 and "success=True" in res.stdout, (res, launch.output())
    wanted = list(yaml.safe_load(argv[-1])["labels"])
    assert f"labels={wanted!r}" in res.stdout, res.stdout  # the response names the set in force
    assert H.wait_labels(_cmd("ros2 topic echo", ns), wanted, env) == wanted, launch.output()


def test_refused_service_call_prints_its_reason_and_keeps_the_labels(run, env):
    _require_service_call()
    ns, launch = run
    call = _cmd("ros2 service call", ns)
    before = list(yaml.safe_load(call[-1])["labels"])
    res = H.ros2(call[:-1] + ["{labels: [floor, Floor]}"], env)
    assert res.returncode == 0 and "success=False" in res.stdout and "duplicate" in res.stdout, res
    assert H.echoed_labels(H.echo_once(_cmd("ros2 topic echo", ns), env)) == before


def test_refused_param_set_prints_its_reason_and_keeps_the_labels(run, env):
    ns, launch = run
    echo = _cmd("ros2 topic echo", ns)
    before = H.echoed_labels(H.echo_once(echo, env))
    res = H.ros2(_cmd("ros2 param set", ns)[:-1] + ["[door, door]"], env)
    assert "Setting parameter failed" in res.stdout + res.stderr and "duplicate" in res.stdout + res.stderr, res
    assert H.echoed_labels(H.echo_once(echo, env)) == before


def test_rviz_config_is_where_the_readme_points(run, env):
    ns, _ = run
    section = (H.ROOT / "README.md").read_text()
    assert "rviz2 -d $(ros2 pkg prefix lseg_ros)/share/lseg_ros/config/lseg.rviz" in section
    prefix = H.ros2(["pkg", "prefix", "lseg_ros"], env).stdout.strip()
    assert (H.Path(prefix) / "share" / "lseg_ros" / "config" / "lseg.rviz").is_file(), prefix


def test_ctrl_c_ends_everything_cleanly_while_frames_flow(run, env):
    ns, launch = run
    topic = _cmd("ros2 topic echo", ns)
    H.echo_once(topic, env)  # frames are flowing right now
    assert launch.track(), f"no node process under {launch.command}"
    rc = launch.interrupt()
    H.assert_clean_exit(launch, rc)


def test_namespace_and_remapped_camera(env):
    """The same commands with `namespace:=robot1 image:=/robot1/...`: everything moves under /robot1."""
    ns = "robot1"
    launch, camera = _start(env, ns)
    try:
        found = H.ros2_until(["node", "list", "--no-daemon", "--spin-time", "2"],
                             lambda r: "/robot1/lseg_node" in r.stdout.split(), env)
        assert "/robot1/lseg_node" in found.stdout.split(), (found.stdout, launch.output())
        echo = _cmd("ros2 topic echo", ns)
        assert echo[3] == "/robot1/lseg/class_confidences"
        if not H.service_call_unsupported():  # Jazzy: see service_call_unsupported
            call = _cmd("ros2 service call", ns)
            assert call[2] == "/robot1/set_labels"
            res = H.ros2(call[:-1] + ["{labels: [door, handle, other]}"], env)
            assert "success=True" in res.stdout, (res, launch.output())
            assert H.wait_labels(echo, ["door", "handle", "other"], env) == ["door", "handle", "other"]
        param = _cmd("ros2 param set", ns)
        assert param[2] == "/robot1/lseg_node"
        res = H.ros2(param[:-1] + ["[sky, road, other]"], env)
        assert "Set parameter successful" in res.stdout, (res, launch.output())
        assert H.wait_labels(echo, ["sky", "road", "other"], env) == ["sky", "road", "other"]
        H.assert_clean_exit(launch, launch.interrupt())
    finally:
        camera.stop()
        launch.close()

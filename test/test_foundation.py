"""Foundation: the package's interfaces, its build description and the ROS-free import boundary."""
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Blocks rclpy and the generated interfaces, as on a machine without ROS.
NO_ROS = textwrap.dedent("""
    import importlib.abc, sys
    class _NoRos(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('rclpy', 'rosidl_runtime_py', 'sensor_msgs', 'std_msgs') \\
                    or name in ('lseg_ros.msg', 'lseg_ros.srv'):
                raise ImportError('blocked for this test: ' + name)
    sys.meta_path.insert(0, _NoRos())
""")


def test_generated_interfaces_import_from_installed_package_and_roundtrip():
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Header

    from lseg_ros.msg import ClassConfidences, LabelEntry, LabelMap
    from lseg_ros.srv import SetLabels

    # The generated modules come from the CMake-installed copy in the venv, not the source tree.
    import lseg_ros.msg
    assert str(ROOT / "lseg_ros") not in str(Path(lseg_ros.msg.__file__).resolve())

    cc = ClassConfidences(header=Header(frame_id="camera_optical"), label_set_version=3,
                          labels=["floor", "wall"], pixel_fraction=[0.25, 0.75],
                          mean_confidence=[0.5, 0.875], max_confidence=[0.75, 1.0],
                          unlabeled_id=255, min_confidence=0.25)
    cc.header.stamp.sec, cc.header.stamp.nanosec = 12, 345
    back = deserialize_message(serialize_message(cc), ClassConfidences)
    assert back == cc and back.labels == ["floor", "wall"] and back.header.stamp.nanosec == 345

    lm = LabelMap(version=3, unlabeled_id=255, entries=[
        LabelEntry(class_id=0, name="person", text="person|pedestrian", r=255, g=0, b=0)])
    back = deserialize_message(serialize_message(lm), LabelMap)
    assert back == lm and back.entries[0].text == "person|pedestrian"

    req = SetLabels.Request(labels=["a", "b|c"])
    assert deserialize_message(serialize_message(req), SetLabels.Request).labels == ["a", "b|c"]
    resp = SetLabels.Response(success=False, message="empty label", labels=["a"])
    assert deserialize_message(serialize_message(resp), SetLabels.Response) == resp


SERVER = textwrap.dedent("""
    import rclpy
    from lseg_ros.srv import SetLabels
    rclpy.init()
    node = rclpy.create_node("set_labels_server")
    state = {"labels": ["other"]}
    def handle(req, resp):
        if not req.labels or any(not l.strip() for l in req.labels):
            resp.success, resp.message = False, "refused: empty label set or empty label"
        else:
            state["labels"] = list(req.labels)
            resp.success, resp.message = True, "ok"
        resp.labels = state["labels"]
        return resp
    node.create_service(SetLabels, "set_labels", handle)
    print("READY", flush=True)
    rclpy.spin(node)
""")


@pytest.mark.timeout(120)
def test_set_labels_service_between_two_processes(ros_env, rclpy_context):
    import rclpy
    from lseg_ros.srv import SetLabels

    server = subprocess.Popen([sys.executable, "-c", SERVER], env=ros_env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node("set_labels_client", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    try:
        client = node.create_client(SetLabels, "/set_labels")
        assert client.wait_for_service(timeout_sec=60), "set_labels never appeared"

        def call(labels):
            fut = client.call_async(SetLabels.Request(labels=labels))
            executor.spin_until_future_complete(fut, timeout_sec=30)
            assert fut.done(), "no answer from set_labels"
            return fut.result()

        ok = call(["floor", "wall", "person|pedestrian"])
        assert ok.success and ok.labels == ["floor", "wall", "person|pedestrian"]
        bad = call([])
        assert not bad.success and "empty" in bad.message
        assert bad.labels == ["floor", "wall", "person|pedestrian"]  # previous set kept
    finally:
        executor.shutdown()
        node.destroy_node()
        server.kill()
        server.wait()


def test_ros_free_part_imports_without_rclpy():
    code = NO_ROS + textwrap.dedent("""
        import lseg_ros, lseg_ros.model, lseg_ros.imaging
        import lseg_ros.tools.segment, lseg_ros.tools.evaluate, lseg_ros.tools.train
        import lseg_ros.tools.convert, lseg_ros.tools.fetch, lseg_ros.tools.export, lseg_ros.model.export
        bad = sorted(m for m in sys.modules if m.split('.')[0] == 'rclpy' or m in ('lseg_ros.msg', 'lseg_ros.srv'))
        assert not bad, bad
        print('OK')
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-2000:]


def test_node_module_loads_without_torch():
    """lseg_node installs its signal handlers, then imports the node class: torch must not come with it
    (it comes at configure), or a Ctrl-C in the first seconds waits for torch's import to end."""
    code = ("import sys; sys.path.insert(0, '.'); import lseg_ros.node.lifecycle_node, lseg_ros.node.worker; "
            "sys.exit('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"importing the node imports torch: {out.stderr[-2000:]}"


def test_build_description_is_consistent():
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(ROOT / "package.xml"))
    assert pkg.name == "lseg_ros" and pkg.package_format == 3
    assert pkg.get_build_type() == "ament_cmake"
    import lseg_ros
    assert pkg.version == lseg_ros.__version__, "package.xml and lseg_ros.__version__ (the pip version) differ"
    assert "rosidl_interface_packages" in [g.name for g in pkg.member_of_groups]
    cmake = (ROOT / "CMakeLists.txt").read_text()
    interfaces = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "msg").glob("*.msg")) + \
        sorted(str(p.relative_to(ROOT)) for p in (ROOT / "srv").glob("*.srv"))
    for f in interfaces:
        assert f'"{f}"' in cmake, f"{f} is not listed in rosidl_generate_interfaces"
    # Every installed executable's module exists in the source tree (pip's list: test_packaging.py).
    for module in re.findall(r'=(lseg_ros\.[\w.]+):\w+"', cmake):
        assert (ROOT / (module.replace(".", "/") + ".py")).exists(), module
    # Every interface field is commented: the line above it is a comment, or a field of the same
    # type under one comment (r, g, b).
    for f in interfaces:
        lines = [l for l in (ROOT / f).read_text().splitlines() if l.strip() and l.strip() != "---"]
        for i, line in enumerate(lines):
            if line.startswith("#"):
                continue
            j = i - 1
            while j >= 0 and not lines[j].startswith("#") and lines[j].split()[0] == line.split()[0]:
                j -= 1
            assert j >= 0 and lines[j].startswith("#"), f"{f}: field '{line}' has no comment"

#!/usr/bin/env bash
# Sets up a venv at the repository root: the ROS 2 wheels, PyTorch, timm, open_clip, OpenCV, the test
# tools, lseg_ros itself with its interfaces built by CMake and installed into the venv, and, when
# ../shared/vendor/ros2-python is present, the ROS 2 launch and command-line tools (`ros2 launch`,
# `ros2 service`, launch_testing, ...) and vision_msgs from that source, for the tests that run the
# user's commands and read lseg/label_info.
#
#   bash scripts/setup.sh                   # ROS 2 Kilted -> .venv (the default; CI)
#   bash scripts/setup.sh --distro jazzy    # ROS 2 Jazzy  -> .venv-jazzy (or LSEG_ROS_DISTRO=jazzy)
#
# Idempotent: a second run checks stamps and rebuilds only what changed (seconds).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DISTRO="${LSEG_ROS_DISTRO:-kilted}"
while [ $# -gt 0 ]; do
  case "$1" in
    --distro) [ $# -ge 2 ] || { echo "[setup] --distro needs a value: kilted or jazzy" >&2; exit 2; }
              DISTRO="$2"; shift 2 ;;
    --distro=*) DISTRO="${1#--distro=}"; shift ;;
    *) echo "[setup] unknown argument '$1' (usage: scripts/setup.sh [--distro kilted|jazzy])" >&2; exit 2 ;;
  esac
done
case "$DISTRO" in
  kilted) VENV="$ROOT/.venv";       REQ="$ROOT/requirements.txt" ;;
  jazzy)  VENV="$ROOT/.venv-jazzy"; REQ="$ROOT/requirements-jazzy.txt" ;;
  *) echo "[setup] unknown ROS 2 distribution '$DISTRO': kilted (default, .venv) or jazzy (.venv-jazzy)" >&2; exit 2 ;;
esac
VENDOR="${LSEG_ROS_VENDOR:-$ROOT/../shared/vendor/ros2-python}"
VENDOR="$(cd "$VENDOR" 2>/dev/null && pwd || echo "$VENDOR")"
BUILD="$ROOT/build/$(basename "$VENV" | sed "s/^\.//")"
PY="${PYTHON:-python3}"
LOG="$ROOT/build/setup-$DISTRO.log"
mkdir -p "$ROOT/build"
: > "$LOG"

step() { printf '[setup] %s\n' "$*"; }
tree_hash() {  # dir [file...]: a stamp of the files under dir (and the files named after it)
  (cd "$1" && find . -type f ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; shift; cat "$@" /dev/null) \
    | sha256sum | cut -c1-16
}
fail() {
  printf '[setup] FAILED: %s\n' "$1" >&2
  printf '[setup] last lines of %s:\n' "$LOG" >&2
  grep -v "is ignored: it is neither a file nor a directory" "$LOG" | tail -n 25 >&2
  exit 1
}
# 1. The tools, the interpreter and the venv.
for tool in cmake make cc c++; do
  command -v "$tool" >/dev/null || fail "'$tool' not found: the interfaces are built with CMake and a C/C++ compiler (Debian/Ubuntu: apt-get install cmake g++ make)"
done
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10) or sys.version_info >= (3, 14))' \
  || fail "need Python 3.10 to 3.13 (the ROS 2 Kilted wheels are cp310-cp313, Jazzy's cp311); got $("$PY" --version 2>&1). Set PYTHON=/path/to/python3.x"
if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PY" -m venv "$VENV" >>"$LOG" 2>&1 || fail "python -m venv (install the venv module, e.g. apt-get install python3-venv)"
fi
export PATH="$VENV/bin:$PATH"
VPY="$VENV/bin/python"

# 2. Packages, pinned in the distribution's requirements file (+ requirements-common.txt). Skipped
#    when those files are unchanged.
REQ_HASH="$(cat "$REQ" "$ROOT/requirements-common.txt" | sha256sum | cut -c1-16)"
if [ "$(cat "$VENV/.requirements-installed" 2>/dev/null)" != "$REQ_HASH" ]; then
  step "installing $(basename "$REQ") into $(basename "$VENV") (ROS 2 $DISTRO; first time: a few minutes, about 6 GB)"
  t0=$SECONDS
  "$VPY" -m pip install --disable-pip-version-check -q -r "$REQ" >>"$LOG" 2>&1 \
    || fail "pip install -r $(basename "$REQ")"
  echo "$REQ_HASH" > "$VENV/.requirements-installed"
  step "packages installed in $((SECONDS - t0)) s"
fi

# 3. The ROS wheels' exported CMake files name their build host's Python include dirs; point them
#    at this venv's (configure fails on std_msgs__rosidl_generator_py otherwise).
PY_INC="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NP_INC="$("$VPY" -c 'import numpy; print(numpy.get_include())')"
{ grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+/(include|lib)' "$VENV/share" 2>/dev/null || true; } | while read -r f; do
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include#${NP_INC}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${PY_INC}#g" "$f"
done
if grep -rqE '/opt/python/cp3[0-9]+-cp3[0-9]+/include' "$VENV/share" 2>/dev/null; then
  grep -rnoE '/opt/python/cp3[^;" ]*/include[^;" ]*' "$VENV/share" >>"$LOG" 2>&1 || true
  fail "some ROS CMake files still name /opt/python paths (listed in $LOG)"
fi

# 4. Build the interfaces and install lseg_ros into the venv, as colcon would (CMakeLists.txt).
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
cmake_install() {  # name source-dir build-dir: the one CMake recipe for every interface package
  cmake -S "$2" -B "$3" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$VPY" \
    -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >>"$LOG" 2>&1 || fail "cmake configure ($1)"
  cmake --build "$3" -j "$(nproc)" >>"$LOG" 2>&1 || fail "cmake build ($1)"
  cmake --install "$3" >>"$LOG" 2>&1 || fail "cmake install ($1)"
}
writable_copy() {  # src dst: pip and CMake build inside their source trees, and ../shared is read-only
  rm -rf "$2" && mkdir -p "$2"
  cp -r "$1/." "$2/" && chmod -R u+w "$2" || fail "copying $1 to $2"
}
step "building lseg_ros (interfaces + Python package) into $(basename "$VENV")"
t0=$SECONDS
cmake_install lseg_ros "$ROOT" "$BUILD"
step "built in $((SECONDS - t0)) s"

# 5. The ROS 2 launch and CLI tools and vision_msgs, from ../shared/vendor/ros2-python (its README): not on PyPI.
#    Pure Python, installed with --no-deps from a writable copy (pip builds in the source tree);
#    composition_interfaces (imported by launch_ros) is built by the same CMake recipe as above.
#    Stamped with a hash of the sources and requirements-ros-tools.txt.
if [ -d "$VENDOR" ]; then
  TOOLS_HASH="$(tree_hash "$VENDOR" "$ROOT/requirements-ros-tools.txt")"
  if [ "$(cat "$VENV/.ros-tools-installed" 2>/dev/null)" != "$TOOLS_HASH" ]; then
    step "installing the ROS 2 launch/CLI tools from $VENDOR"
    t0=$SECONDS
    COPY="$ROOT/build/ros2-vendor-$DISTRO"
    writable_copy "$VENDOR" "$COPY"
    (cd "$COPY" && "$VPY" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation \
      ./launch ./launch_xml ./launch_yaml ./launch_testing ./launch_pytest ./launch_ros ./ros2launch \
      ./launch_testing_ros ./ros2cli ./ros2pkg ./ros2run ./ros2topic ./ros2service ./ros2node ./ros2param \
      ./ros2interface ./ros2lifecycle ./rosidl_runtime_py) >>"$LOG" 2>&1 \
      || fail "pip install of the vendored ROS 2 tools"
    "$VPY" -m pip install --disable-pip-version-check -q -r "$ROOT/requirements-ros-tools.txt" >>"$LOG" 2>&1 \
      || fail "pip install -r requirements-ros-tools.txt"
    cmake_install composition_interfaces "$COPY/composition_interfaces" "$ROOT/build/composition_interfaces-$DISTRO"
    (cd / && "$VPY" -c 'from composition_interfaces.srv import LoadNode; from launch_ros.actions import Node; import launch_pytest, launch_testing, ros2cli.cli, rosidl_runtime_py' ) >>"$LOG" 2>&1 \
      || fail "the vendored ROS 2 tools do not import"
    echo "$TOOLS_HASH" > "$VENV/.ros-tools-installed"
    step "ROS 2 tools installed in $((SECONDS - t0)) s"
  fi
  # vision_msgs (the node's lseg/label_info): the same CMake recipe, stamped with a hash of its sources.
  VM_HASH="$(tree_hash "$VENDOR/vision_msgs")"
  if [ "$(cat "$VENV/.vision-msgs-installed" 2>/dev/null)" != "$VM_HASH" ]; then
    step "building vision_msgs from $VENDOR/vision_msgs"
    t0=$SECONDS
    writable_copy "$VENDOR/vision_msgs" "$ROOT/build/vision_msgs-src-$DISTRO"
    cmake_install vision_msgs "$ROOT/build/vision_msgs-src-$DISTRO" "$ROOT/build/vision_msgs-$DISTRO"
    (cd / && "$VPY" -c 'from vision_msgs.msg import LabelInfo, VisionClass') >>"$LOG" 2>&1 \
      || fail "the vision_msgs build does not import"
    echo "$VM_HASH" > "$VENV/.vision-msgs-installed"
    step "vision_msgs built in $((SECONDS - t0)) s"
  fi
else
  step "no $VENDOR: ros2 launch / ros2 CLI tools and vision_msgs not installed (their tests skip)"
fi

# 6. Check from outside the source tree that the installed package and its interfaces import.
(cd / && "$VPY" -c 'from lseg_ros.msg import ClassConfidences, LabelMap; from lseg_ros.srv import SetLabels; import rclpy, torch, timm, open_clip, cv2' ) >>"$LOG" 2>&1 \
  || fail "the installed lseg_ros interfaces or a dependency do not import"
step "ready: $VENV (ROS 2 $DISTRO)"

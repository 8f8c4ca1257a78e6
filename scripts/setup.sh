#!/usr/bin/env bash
# Sets up .venv/ at the repository root: the ROS 2 Kilted wheels, PyTorch, timm, open_clip, OpenCV,
# the test tools, and lseg_ros itself with its interfaces built by CMake and installed into the venv.
# Idempotent: a second run checks stamps and rebuilds only what changed (seconds).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
BUILD="$ROOT/build/venv"
PY="${PYTHON:-python3}"
LOG="$ROOT/build/setup.log"
mkdir -p "$ROOT/build"
: > "$LOG"

step() { printf '[setup] %s\n' "$*"; }
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
  || fail "need Python 3.10 to 3.13 (the ROS 2 Kilted wheels are cp310-cp313); got $("$PY" --version 2>&1). Set PYTHON=/path/to/python3.x"
if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PY" -m venv "$VENV" >>"$LOG" 2>&1 || fail "python -m venv (install the venv module, e.g. apt-get install python3-venv)"
fi
export PATH="$VENV/bin:$PATH"
VPY="$VENV/bin/python"

# 2. Packages, pinned in requirements.txt. Skipped when requirements.txt is unchanged.
REQ_HASH="$(sha256sum "$ROOT/requirements.txt" | cut -c1-16)"
if [ "$(cat "$VENV/.requirements-installed" 2>/dev/null)" != "$REQ_HASH" ]; then
  step "installing requirements.txt into .venv (first time: a few minutes, about 6 GB)"
  t0=$SECONDS
  "$VPY" -m pip install --disable-pip-version-check -q -r "$ROOT/requirements.txt" >>"$LOG" 2>&1 \
    || fail "pip install -r requirements.txt"
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
step "building lseg_ros (interfaces + Python package) into .venv"
t0=$SECONDS
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$VPY" \
  -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >>"$LOG" 2>&1 || fail "cmake configure"
cmake --build "$BUILD" -j "$(nproc)" >>"$LOG" 2>&1 || fail "cmake build"
cmake --install "$BUILD" >>"$LOG" 2>&1 || fail "cmake install"
step "built in $((SECONDS - t0)) s"

# 5. Check from outside the source tree that the installed package and its interfaces import.
(cd / && "$VPY" -c 'from lseg_ros.msg import ClassConfidences, LabelMap; from lseg_ros.srv import SetLabels; import rclpy, torch, timm, open_clip, cv2' ) >>"$LOG" 2>&1 \
  || fail "the installed lseg_ros interfaces or a dependency do not import"
step "ready: $VENV"

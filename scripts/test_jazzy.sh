#!/usr/bin/env bash
# Runs the ROS tests (interfaces, node, launch file, ros2 CLI) on ROS 2 Jazzy: sets up .venv-jazzy
# (scripts/setup.sh --distro jazzy: the ros-jazzy-* wheels, the same model pins, the interfaces built by
# CMake, the vendored launch/CLI tools when ../shared is present), then pytest with that venv's python.
# The default .venv (Kilted) is untouched; CI runs scripts/test.sh (Kilted). Extra arguments go to pytest
# after the test list (e.g. scripts/test_jazzy.sh -k cli -x).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" --distro jazzy
cd "$ROOT"
export HF_HUB_OFFLINE=1
TESTS=(test/test_foundation.py test/test_node_*.py test/test_cli_*.py test/test_launch_*.py)
exec "$ROOT/.venv-jazzy/bin/python" -m pytest "${TESTS[@]}" "$@"

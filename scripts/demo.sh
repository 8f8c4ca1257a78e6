#!/usr/bin/env bash
# The main job: sets up .venv (scripts/setup.sh, idempotent), then runs lseg_node on a real photo
# stream (lseg_ros/node/demo.py): overlays in out/demo/, class confidences printed.
# Arguments go to the demo, e.g. scripts/demo.sh --weights weights/demo_e200.ckpt
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m lseg_ros.node.demo "$@"

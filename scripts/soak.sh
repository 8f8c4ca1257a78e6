#!/usr/bin/env bash
# Soak test of lseg_node (benchmarks/soak.py): sets up .venv first (scripts/setup.sh, idempotent).
#   scripts/soak.sh --minutes 10          # figures printed, JSON in benchmarks/results/soak_<machine>_<date>.json
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1
exec "$ROOT/.venv/bin/python" -m benchmarks.soak "$@"

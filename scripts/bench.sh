#!/usr/bin/env bash
# One benchmark command: sets up .venv (scripts/setup.sh, idempotent), then runs benchmarks/run.py:
# the bare model per stage (ViT-L/16, ResNet-101 x sizes x labels x precisions x cpu/cuda), the label
# switch, and lseg_node end to end over DDS; prints a table and writes benchmarks/results/*.json.
#   bash scripts/bench.sh --quick                       # smoke run, a few minutes on a laptop CPU
#   bash scripts/bench.sh --models rn101 --sizes 480x640 --labels 3,150
# Every option: bash scripts/bench.sh --help. See docs/performance.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" >&2
cd "$ROOT"
export HF_HUB_OFFLINE=1
# Idle OpenMP threads sleep instead of spinning: on a shared CPU spinning steals the other processes' time.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec "$ROOT/.venv/bin/python" -m benchmarks.run "$@"

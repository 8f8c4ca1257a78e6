#!/usr/bin/env bash
# Runs every test: sets up .venv first (scripts/setup.sh, idempotent), then pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k node -x).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1
exec "$ROOT/.venv/bin/python" -m pytest "$@"

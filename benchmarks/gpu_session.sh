#!/usr/bin/env bash
# The prepared GPU run: on a CUDA machine without network or ROS, in one command, its steps bounded by a budget
# (GPU_SESSION_BUDGET, 540 s; docs/performance.md, the GPU check):
#   tests  test/test_model_cuda.py (the CUDA paths: transfer ring, pipelined submit, images built on the GPU,
#          the post-processing compiled by inductor for CUDA);
#   bare   benchmarks/gpu_fastpath.py: the bare model (fidelity, one-at-a-time and pipelined speed, GPU time
#          per stage);
#   node   benchmarks/bench_node.py: lseg_node end to end with input_size 480x640, one camera at 200 Hz and four
#          cameras at 60 Hz, against the bare Predictor in the same run;
#   train  benchmarks/gpu_train.py: ViT-L/16 training steps at a 480 crop with and without activation
#          checkpointing, and lseg-train / lseg-evaluate under torchrun (NCCL), if the time budget allows.
# It needs the node bundle (ROS 2 wheels for the GPU machine's Python, open_clip/timm/ftfy/wcwidth wheels and
# `git archive HEAD` of this project) in BUNDLE (default .gpu-node), made by the workplace's gpu-node tool
# (make_bundle.sh; commit first, the bundle holds HEAD) and carried to the machine:
#     bash benchmarks/gpu_session.sh "$OUT"                 # on the GPU machine, from the repository root
# tests, bare and train run with the machine's own torch (python3) plus the bundle's open_clip wheels; node
# sets up the bundle's venv with its go.sh (set-up only) and runs bench_node from the bundle's copy of the
# project. Every step is bounded by `timeout` and skipped when the budget has too little left for it.
# OUT gets at most 8 files: session.log, logs.tar.gz (set-up and node logs), the benchmarks' .txt/.json.
# Settings: GPU_SESSION_DEVICE (cuda; cpu for a rehearsal), GPU_SESSION_MODEL (vitl16; tiny_vit for a
# rehearsal), GPU_SESSION_SCENARIOS (1x200,4x60), GPU_SESSION_DURATION (16 s per scenario), GPU_SESSION_STEPS
# ("tests bare node train"), GPU_SESSION_BUDGET (540 s), GPU_SESSION_BASE_PYTHON (/opt/torch/.venv/bin/python3,
# else python3), GPU_SESSION_BARE_ARGS (extra gpu_fastpath arguments).
set -uo pipefail
OUT="${1:?usage: bash benchmarks/gpu_session.sh OUTDIR [BUNDLE]}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="$(cd "${2:-$ROOT/.gpu-node}" 2>/dev/null && pwd)" || { echo "no bundle at ${2:-$ROOT/.gpu-node}" >&2; exit 2; }
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
DEV="${GPU_SESSION_DEVICE:-cuda}"
MODEL="${GPU_SESSION_MODEL:-vitl16}"
STEPS="${GPU_SESSION_STEPS:-tests bare node train}"
BUDGET="${GPU_SESSION_BUDGET:-540}"
PY="${GPU_SESSION_BASE_PYTHON:-/opt/torch/.venv/bin/python3}"
[ -x "$PY" ] || PY="$(command -v python3)"
LOGS="$(mktemp -d)"
T0=$SECONDS
exec > >(tee -a "$OUT/session.log") 2>&1
TEE_PID=$!
say() { printf '[gpu_session %s +%3ds] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - T0))" "$*"; }
left() { echo $((BUDGET - (SECONDS - T0))); }
want() {  # want STEP NEEDED_S: the step is asked for and the budget still has NEEDED_S for it
  case " $STEPS " in *" $1 "*) ;; *) return 1;; esac
  [ "$(left)" -ge "$2" ] && return 0
  say "SKIPPED $1: $(left) s left, it needs about $2"; return 1
}
cap() { local l; l=$(left); [ "$1" -lt "$l" ] && echo "$1" || echo $((l > 10 ? l - 5 : 5)); }
finish() {
  tar -czf "$OUT/logs.tar.gz" -C "$LOGS" . 2>/dev/null
  say "done in $((SECONDS - T0)) s; files: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')"
  exec 1>&- 2>&-; wait "$TEE_PID" 2>/dev/null  # session.log gets its last line before the command returns
}
trap finish EXIT
say "device $DEV, model $MODEL, steps: $STEPS, budget $BUDGET s; python $PY ($("$PY" --version 2>&1)); bundle $BUNDLE"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
MACHINE="$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0).split()[-1].lower() if torch.cuda.is_available() else "cpu")' 2>/dev/null || echo cpu)"
export LSEG_BENCH_MACHINE="$MACHINE"

# The machine's torch plus the bundle's pure-Python wheels that it lacks (open_clip and its tokenizer's needs).
SITE=/tmp/gpu_session_site
rm -rf "$SITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" \
  "$BUNDLE"/wheels/open_clip_torch-*.whl "$BUNDLE"/wheels/ftfy-*.whl "$BUNDLE"/wheels/wcwidth-*.whl \
  || say "WARNING: installing open_clip/ftfy/wcwidth from the bundle failed (the machine's own are used if any)"
export PYTHONPATH="$ROOT:$SITE"
# node runs the bundle's copy of the project: it must be this checkout (make_bundle.sh after the last commit).
STALE="$(for d in lseg_ros benchmarks test; do diff -rq -x __pycache__ -x results "$ROOT/$d" "$BUNDLE/proj/$d"; done 2>&1 | head -5)"
[ -z "$STALE" ] || say "WARNING: the bundle's proj/ differs from this checkout (node would measure other code): $STALE"

if want tests 60; then
  say "tests: test/test_model_cuda.py"
  (cd "$ROOT" && timeout -k 10 "$(cap 120)" "$PY" -m pytest -q -p no:cacheprovider test/test_model_cuda.py 2>&1 \
    | tail -n 40) || say "CUDA tests FAILED (see above)"
fi

if want bare 120; then
  say "bare: gpu_fastpath"
  if [ "$DEV" = cpu ]; then BARE=(--dry-run --runs 2); else BARE=(); fi
  (cd "$ROOT" && timeout -k 10 "$(cap 200)" "$PY" -m benchmarks gpu_fastpath --out "$OUT" --budget 140 --runs 20 \
     --variants fp16+compile+graphs "${BARE[@]}" ${GPU_SESSION_BARE_ARGS:-}) || say "gpu_fastpath FAILED"
fi

if want node 200; then
  say "node: set-up from the bundle (go.sh without bench runs)"
  DEVRUN_RATES=" " DEVRUN_DEVICE="$DEV" DEVRUN_MODEL="$MODEL" DEVRUN_BUDGET=300 DEVRUN_BASE_PYTHON="$PY" \
    timeout -k 10 "$(cap 320)" bash "$BUNDLE/go.sh" "$LOGS/setup" > /dev/null 2>&1
  VPY="$BUNDLE/proj/.venv/bin/python"
  if ! (cd / && env -u PYTHONPATH "$VPY" -c "import rclpy, lseg_ros.msg, torch, open_clip" 2>/dev/null); then
    say "node set-up FAILED: $(tail -5 "$LOGS/setup/go.log" 2>/dev/null)"
  else
    say "node: bench_node, $MODEL on $DEV, input_size 480x640, scenarios ${GPU_SESSION_SCENARIOS:-1x200,4x60}"
    (cd "$BUNDLE/proj" && timeout -k 20 -s INT "$(cap 420)" env -u PYTHONPATH \
       "$VPY" -m benchmarks bench_node --model "$MODEL" \
       --device "$DEV" --node-param input_size:=480x640 --scenarios "${GPU_SESSION_SCENARIOS:-1x200,4x60}" \
       --duration "${GPU_SESSION_DURATION:-16}" --rounds 4 --photo "$BUNDLE/voc_rgb.png" \
       --node-log "$LOGS/node.log" --json "$OUT/bench_node_${MACHINE}_$(date +%Y-%m-%d_%H%M).json") \
      || say "bench_node FAILED"
  fi
fi

if want train 100; then
  say "train: gpu_train"
  if [ "$DEV" = cpu ]; then TRAIN=(--dry-run); else TRAIN=(--steps 12 --warmup 3); fi
  (cd "$ROOT" && timeout -k 10 "$(cap 220)" "$PY" -m benchmarks gpu_train --out "$OUT" --machine "$MACHINE" \
     "${TRAIN[@]}") || say "gpu_train FAILED"
fi

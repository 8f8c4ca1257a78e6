#!/usr/bin/env bash
# The prepared GPU run: on a CUDA machine without network or ROS, in one command (about 7-9 minutes on an H200):
#   1. test/test_model_cuda.py (the CUDA paths: transfer ring, pipelined submit, images built on the GPU,
#      the post-processing compiled by inductor for CUDA);
#   2. benchmarks/gpu_fastpath.py: the bare model (fidelity, one-at-a-time and pipelined speed, GPU time per stage);
#   3. benchmarks/bench_node.py: lseg_node end to end with input_size 480x640, one camera at 200 Hz and four
#      cameras at 60 Hz, against the bare Predictor in the same run.
# It needs the node bundle (ROS 2 wheels for the GPU machine's Python, open_clip/timm/ftfy/wcwidth wheels and
# `git archive HEAD` of this project) in BUNDLE (default .gpu-node), made by the workplace's gpu-node tool
# (make_bundle.sh; commit first, the bundle holds HEAD) and carried to the machine:
#     bash benchmarks/gpu_session.sh "$OUT"                 # on the GPU machine, from the repository root
# Steps 1-2 run with the machine's own torch (python3) plus the bundle's open_clip wheels; step 3 sets up the
# bundle's venv with its go.sh (set-up only) and runs bench_node.py from the bundle's copy of the project.
# Every step is bounded by `timeout`; outputs (at most 8 files) go to OUT.
# Settings: GPU_SESSION_DEVICE (cuda; cpu for a rehearsal), GPU_SESSION_MODEL (vitl16; tiny_vit for a
# rehearsal), GPU_SESSION_SCENARIOS (1x200,4x60), GPU_SESSION_DURATION (16 s per scenario), GPU_SESSION_STEPS
# ("tests bare node"), GPU_SESSION_BASE_PYTHON (/opt/torch/.venv/bin/python3, else python3), GPU_SESSION_BARE_ARGS
# (extra gpu_fastpath.py arguments).
set -uo pipefail
OUT="${1:?usage: bash benchmarks/gpu_session.sh OUTDIR [BUNDLE]}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="$(cd "${2:-$ROOT/.gpu-node}" 2>/dev/null && pwd)" || { echo "no bundle at ${2:-$ROOT/.gpu-node}" >&2; exit 2; }
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
DEV="${GPU_SESSION_DEVICE:-cuda}"
MODEL="${GPU_SESSION_MODEL:-vitl16}"
STEPS="${GPU_SESSION_STEPS:-tests bare node}"
PY="${GPU_SESSION_BASE_PYTHON:-/opt/torch/.venv/bin/python3}"
[ -x "$PY" ] || PY="$(command -v python3)"
T0=$SECONDS
exec > >(tee -a "$OUT/session.log") 2>&1
say() { printf '[gpu_session %s +%3ds] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - T0))" "$*"; }
say "device $DEV, model $MODEL, steps: $STEPS; python $PY ($("$PY" --version 2>&1)); bundle $BUNDLE"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
STAMP="$(date +%Y-%m-%d_%H%M)"
MACHINE="$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0).split()[-1].lower() if torch.cuda.is_available() else "cpu")' 2>/dev/null || echo cpu)"

# The machine's torch plus the bundle's pure-Python wheels that it lacks (open_clip and its tokenizer's needs).
SITE=/tmp/gpu_session_site
rm -rf "$SITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" \
  "$BUNDLE"/wheels/open_clip_torch-*.whl "$BUNDLE"/wheels/ftfy-*.whl "$BUNDLE"/wheels/wcwidth-*.whl \
  || say "WARNING: installing open_clip/ftfy/wcwidth from the bundle failed (the machine's own are used if any)"
export PYTHONPATH="$ROOT:$SITE"

case " $STEPS " in *" tests "*)
  say "1. CUDA tests"
  (cd "$ROOT" && timeout -k 10 240 "$PY" -m pytest -q -p no:cacheprovider test/test_model_cuda.py 2>&1 \
    | tail -n 40) || say "CUDA tests FAILED (see above)";;
esac

case " $STEPS " in *" bare "*)
  say "2. bare model (gpu_fastpath.py)"
  if [ "$DEV" = cpu ]; then BARE=(--dry-run --runs 2); else BARE=(); fi
  (cd "$ROOT" && timeout -k 10 330 "$PY" -m benchmarks gpu_fastpath --out "$OUT" --budget 230 \
     --variants fp32,fp16+compile+graphs "${BARE[@]}" ${GPU_SESSION_BARE_ARGS:-}) || say "gpu_fastpath.py FAILED"
esac

case " $STEPS " in *" node "*)
  say "3. node: set-up from the bundle (go.sh without bench runs)"
  DEVRUN_RATES=" " DEVRUN_DEVICE="$DEV" DEVRUN_BUDGET=300 DEVRUN_BASE_PYTHON="$PY" \
    timeout -k 10 320 bash "$BUNDLE/go.sh" "$OUT/setup" > /dev/null 2>&1
  VPY="$BUNDLE/proj/.venv/bin/python"
  if ! (cd / && "$VPY" -c "import rclpy, lseg_ros.msg, torch, open_clip" 2>/dev/null); then
    say "node set-up FAILED: $(tail -5 "$OUT/setup/go.log" 2>/dev/null)"
  else
    say "3. bench_node.py: $MODEL on $DEV, input_size 480x640, scenarios ${GPU_SESSION_SCENARIOS:-1x200,4x60}"
    PHOTO="$BUNDLE/voc_rgb.png"
    (cd "$BUNDLE/proj" && timeout -k 20 -s INT 420 "$VPY" -m benchmarks bench_node --model "$MODEL" \
       --device "$DEV" --node-param input_size:=480x640 --scenarios "${GPU_SESSION_SCENARIOS:-1x200,4x60}" \
       --duration "${GPU_SESSION_DURATION:-16}" --rounds 4 --photo "$PHOTO" --node-log "$OUT/node.log" \
       --json "$OUT/bench_node_${MACHINE}_${STAMP}.json") || say "bench_node.py FAILED"
  fi
esac
say "done in $((SECONDS - T0)) s; files: $(cd "$OUT" && find . -type f | tr '\n' ' ')"

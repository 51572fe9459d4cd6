#!/usr/bin/env bash
# The GPU validation kit: run on a GPU machine as the one command of a call,
#   bash tools/dev/gpu/run.sh OUT_DIR
# or on this CPU machine, to know the script works before a GPU minute is spent,
#   bash tools/dev/gpu/run.sh --cpu OUT_DIR
# First `bash tools/dev/gpu/prepare.sh` here (it gathers .gpu-kit/, which travels with
# the working tree). Installs the kit offline into a fresh virtual environment,
# then runs each part on its own (a failure or a timeout stops only that part),
# within a deadline (KIT_DEADLINE_S, 470 s by default: the call's 10 minutes less
# start-up and transfers; what is left is skipped, saying so):
#   1. tests: every GPU-marked test and the CUDA-source tests
#   2. sanitizer: compute-sanitizer memcheck and racecheck on one forward and
#      backward of each CUDA kernel at a small shape (tools/dev/gpu/sanitize_kernels.py)
#   3. operator: tools/dev/benchmarks/benchmark_involution.py on CUDA, fp32, fp16, bf16
#   4. backbone: tools/dev/benchmarks/benchmark_backbone.py, RedNet-50 and ResNet-50
#   5. demo: 20 iterations of the demo detector with AMP (tools/dev/gpu/demo_iterations.py)
# and writes at most 8 files into OUT_DIR, summary.md first (tools/dev/gpu/summarize.py).
# --cpu: the image's packages (torch, numpy, cupy, ...) come from the project's
# .venv, the kit's wheels from .gpu-kit-host/ (this machine's Python), mmcv from
# the set-up's wheel cache; the GPU parts are skipped with one line each and the
# benchmarks run their CPU halves at small settings.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
MODE=gpu
if [[ "${1:-}" == --cpu ]]; then MODE=cpu; shift; fi
if [[ $# -ne 1 ]]; then
  echo "usage: bash tools/dev/gpu/run.sh [--cpu] OUT_DIR" >&2; exit 2
fi
OUT="$(mkdir -p "$1" && cd "$1" && pwd)"
DEADLINE_S="${KIT_DEADLINE_S:-470}"
START=$SECONDS
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-kit-run.XXXXXX")"
LOGS="$WORK/logs"
RESULTS="$WORK/results"
mkdir -p "$LOGS" "$RESULTS"
STATUS="$WORK/status.tsv"  # part, status, seconds, note
: > "$STATUS"
MMCV_VERSION=2.1.0
log() { printf '[gpu-kit %4ds] %s\n' $((SECONDS - START)) "$*" >&2; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$STATUS"; }

# part NAME TIMEOUT_S CMD...: runs CMD (log in $LOGS/NAME.log) unless the deadline
# has passed; records ok / failed (exit code) / timeout / skipped.
part() {
  local name="$1" limit="$2"; shift 2
  local left=$((DEADLINE_S - (SECONDS - START)))
  if (( left < 10 )); then
    record "$name" skipped 0 "out of time (deadline ${DEADLINE_S} s)"
    log "$name: skipped, out of time"; return 0
  fi
  (( limit > left )) && limit=$left
  log "$name (at most ${limit} s)"
  local t0=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1 || rc=$?
  local took=$((SECONDS - t0))
  if (( rc == 0 )); then record "$name" ok "$took" ""
  elif (( rc == 124 || rc == 137 )); then record "$name" timeout "$took" "killed after ${limit} s"
  else record "$name" failed "$took" "exit code $rc"; fi
  log "$name: $(tail -n 1 "$STATUS" | cut -f2) in ${took} s"
  return 0
}
skip() { record "$1" skipped 0 "$2"; log "$1: skipped ($2)"; }

finish() {
  local py="${VPY:-python3}"
  "$py" "$ROOT/tools/dev/gpu/summarize.py" "$WORK" "$OUT" --mode "$MODE" \
    || { log "summarize.py failed; the raw logs are in $OUT/logs.tar.gz";
         tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs results status.tsv; }
  log "done: $(ls "$OUT" | tr '\n' ' ')"
}
trap finish EXIT

# ---- 0. the environment ----------------------------------------------------
if [[ $MODE == gpu ]]; then
  KIT="$ROOT/.gpu-kit/wheels"
  BASE_PY="${KIT_PYTHON:-python3}"
  if ! "$BASE_PY" -m venv --system-site-packages "$WORK/venv" \
      > "$LOGS/venv.log" 2>&1; then
    # an image without the venv module: the base interpreter, with the kit
    # installed into a folder of its own on PYTHONPATH
    log "no virtual environment ($LOGS/venv.log): installing into $WORK/site"
    TARGET="$WORK/site"
  fi
else
  KIT="$ROOT/.gpu-kit-host/wheels"
  BASE_PY="$(readlink -f "$ROOT/.venv/bin/python")"
  "$BASE_PY" -m venv "$WORK/venv"
  # the GPU image's packages, taken from the project's environment
  "$WORK/venv/bin/python" "$ROOT/tools/dev/gpu/image_packages.py" \
    "$ROOT/.venv" "$WORK/image" > "$LOGS/image_packages.log" 2>&1 \
    || { log "could not stand in the image's packages: $LOGS/image_packages.log"; exit 1; }
fi
if [[ -n "${TARGET:-}" ]]; then
  VPY="$BASE_PY"
  PIP_INTO=(--target "$TARGET")
  export PATH="$TARGET/bin:$PATH" PYTHONPATH="$ROOT:$TARGET"
else
  VPY="$WORK/venv/bin/python"
  PIP_INTO=(--ignore-installed)
  # the venv's scripts first: torch's extension builder looks for ninja there
  export PATH="$WORK/venv/bin:$PATH" PYTHONPATH="$ROOT"
fi
export PYTHONDONTWRITEBYTECODE=1
if [[ ! -d "$KIT" ]]; then
  log "no kit at $KIT: run bash tools/dev/gpu/prepare.sh on a machine with the registries"
  record install failed 0 "no kit at $KIT"; exit 1
fi
"$VPY" - > "$RESULTS/versions.json" 2> "$LOGS/versions.log" <<'PY'
import json, platform, subprocess
import torch
info = dict(python=platform.python_version(), torch=torch.__version__,
            cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
            gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
try:
    import cupy
    info['cupy'] = cupy.__version__
except ImportError as error:
    info['cupy'] = f'not importable: {error}'
try:
    info['driver'] = subprocess.run(
        ['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
        capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.TimeoutExpired):
    info['driver'] = None
print(json.dumps(info))
PY

# The kit's wheels, offline, none of their dependencies (those the image has).
part install-wheels 120 "$VPY" -m pip install --no-index --no-deps \
  "${PIP_INTO[@]}" --disable-pip-version-check "$KIT"/*.whl

# mmcv: built from its source distribution with its CPU ops only (the GPU hidden
# from torch: far shorter than the CUDA-ops build) by tools/dev/mmcv_wheel.sh, which
# caches the wheel (--cpu finds the set-up's).
MMCV_WHEELS="$(bash "$ROOT/tools/dev/mmcv_wheel.sh" --dir "$VPY")"
# The sanitizer needs only torch and CuPy: it runs while mmcv builds.
if [[ $MODE == gpu ]]; then
  ( part sanitizer-memcheck 120 compute-sanitizer --tool memcheck \
      --error-exitcode 1 "$VPY" "$ROOT/tools/dev/gpu/sanitize_kernels.py"
    part sanitizer-racecheck 150 compute-sanitizer --tool racecheck \
      --error-exitcode 1 "$VPY" "$ROOT/tools/dev/gpu/sanitize_kernels.py" ) &
  SANITIZER_PID=$!
else
  skip sanitizer-memcheck "no GPU (--cpu)"
  skip sanitizer-racecheck "no GPU (--cpu)"
  SANITIZER_PID=
fi
part build-mmcv 300 env CUDA_VISIBLE_DEVICES='' bash "$ROOT/tools/dev/mmcv_wheel.sh" \
  --build "$VPY" "$ROOT/.gpu-kit/sdist/mmcv-$MMCV_VERSION.tar.gz"
part install-mmcv 60 "$VPY" -m pip install --no-index --no-deps \
  "${PIP_INTO[@]}" "$MMCV_WHEELS"/mmcv-*.whl
part import-check 60 "$VPY" -c 'import mmcv._ext, mmdet, mmseg, mmplug_involution; print("imports ok")'
[[ -n "$SANITIZER_PID" ]] && wait "$SANITIZER_PID"

# ---- 1. tests -----------------------------------------------------------------
cd "$ROOT"
# the files that hold GPU-marked tests, and the CUDA source run on the host
GPU_TEST_FILES=$(grep -rl --include='test_*.py' 'mark.gpu' tests | sort)
if [[ $MODE == gpu ]]; then
  part tests 150 "$VPY" -m pytest -p no:cacheprovider -q -rs $GPU_TEST_FILES \
    tests/ops/test_backend_cupy_source.py
else
  skip tests-gpu "no GPU (--cpu): the GPU-marked tests need a CUDA device"
  part tests 150 "$VPY" -m pytest -p no:cacheprovider -q -rs \
    tests/ops/test_backend_cupy_source.py
fi

# ---- 3. the operator benchmark ------------------------------------------------
BENCH="$ROOT/tools/dev/benchmarks"
if [[ $MODE == gpu ]]; then
  for dtype in float32 float16 bfloat16; do
    part "operator-$dtype" 90 "$VPY" "$BENCH/benchmark_involution.py" \
      --device cuda --dtype "$dtype" --repeats 20 --out "$RESULTS/operator-$dtype"
  done
else
  skip operator-cuda "no GPU (--cpu): the CUDA rows"
  part operator-float32 120 "$VPY" "$BENCH/benchmark_involution.py" \
    --device cpu --quick --repeats 2 --out "$RESULTS/operator-float32"
fi

# ---- 4. the backbone benchmark -------------------------------------------------
if [[ $MODE == gpu ]]; then
  part backbone 150 "$VPY" "$BENCH/benchmark_backbone.py" --device cuda \
    --backbones RedNet-50 "ResNet-50 (mmdet)" --repeats 10 --out "$RESULTS/backbone"
else
  skip backbone-cuda "no GPU (--cpu): fp32 and AMP on CUDA"
  part backbone 120 "$VPY" "$BENCH/benchmark_backbone.py" --device cpu \
    --backbones RedNet-50 "ResNet-50 (mmdet)" --modes infer --settings "224 px, batch 1" \
    --repeats 2 --out "$RESULTS/backbone"
fi

# ---- 5. the demo detector ------------------------------------------------------
DEMO_CONFIG=configs/demo/mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py
if [[ $MODE == gpu ]]; then
  part demo 120 "$VPY" "$ROOT/tools/dev/gpu/demo_iterations.py" "$DEMO_CONFIG" \
    --iters 20 --amp --device cuda --work-dir "$WORK/demo" \
    --out "$RESULTS/demo.json"
else
  skip demo-cuda "no GPU (--cpu): 20 iterations with AMP on CUDA"
  part demo 150 "$VPY" "$ROOT/tools/dev/gpu/demo_iterations.py" "$DEMO_CONFIG" \
    --iters 2 --device cpu --work-dir "$WORK/demo" --out "$RESULTS/demo.json"
fi
exit 0

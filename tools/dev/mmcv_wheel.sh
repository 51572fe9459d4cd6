#!/usr/bin/env bash
# mmcv with its compiled ops, as a wheel built once per (mmcv, torch, Python, CUDA ops)
# and cached: what tools/dev/setup_env.sh and the GPU kit (tools/dev/gpu/run.sh) install.
#   bash tools/dev/mmcv_wheel.sh --dir PYTHON          print the cache folder of PYTHON's
#                                                  torch (nothing is built)
#   bash tools/dev/mmcv_wheel.sh --build PYTHON [SDIST]
#                                                  build the wheel into that folder
#                                                  unless it is there; SDIST is mmcv's
#                                                  source distribution (downloaded with
#                                                  PYTHON's pip when not given)
# PYTHON needs torch, setuptools<82 and wheel; ninja on PATH makes the build parallel.
# MMCV_FORCE_CUDA=1 builds the CUDA ops too (needs nvcc; much longer). The cache is
# $MMPLUG_CACHE_DIR (default ~/.cache/mmplug-involution)/wheels/.
set -euo pipefail
MMCV_VERSION=2.1.0
MODE="${1:-}"
PY="${2:-}"
if [[ ( "$MODE" != --dir && "$MODE" != --build ) || -z "$PY" ]]; then
  sed -n '2,12p' "$0" >&2; exit 2
fi
CACHE="${MMPLUG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mmplug-involution}"
FORCE_CUDA_FLAG="${MMCV_FORCE_CUDA:-0}"
KEY="$("$PY" -c 'import sys, torch
print(f"torch-{torch.__version__}-cp{sys.version_info[0]}{sys.version_info[1]}")')"
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-$KEY-cuda$FORCE_CUDA_FLAG"
if [[ "$MODE" == --dir ]]; then
  echo "$WHEEL_DIR"; exit 0
fi
if ls "$WHEEL_DIR"/mmcv-*.whl > /dev/null 2>&1; then
  echo "mmcv $MMCV_VERSION: cached in $WHEEL_DIR"; exit 0
fi
echo "building mmcv $MMCV_VERSION with ops (about 10 minutes on 2 cores; cached in" \
  "$WHEEL_DIR)" >&2
BUILD_TMP="$(mktemp -d)"
trap 'rm -rf "$BUILD_TMP"' EXIT
SDIST="${3:-}"
if [[ -z "$SDIST" ]]; then
  "$PY" -m pip download --disable-pip-version-check --quiet --no-cache-dir \
    --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" \
    -d "$BUILD_TMP"
  SDIST="$BUILD_TMP/mmcv-$MMCV_VERSION.tar.gz"
fi
tar -xzf "$SDIST" -C "$BUILD_TMP"
SRC="$BUILD_TMP/mmcv-$MMCV_VERSION"
# mmcv's setup.py compiles as C++17; torch's headers need C++20 from torch 2.14 on.
if "$PY" -c 'import sys, torch
sys.exit(tuple(map(int, torch.__version__.split(".")[:2])) < (2, 14))'; then
  sed -i "s/'-std=c++17'/'-std=c++20'/" "$SRC/setup.py"
fi
# pip's wheel cache is off: it would hand back an mmcv compiled against another torch
# under the same name.
MMCV_WITH_OPS=1 FORCE_CUDA="$FORCE_CUDA_FLAG" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
  "$PY" -m pip wheel --disable-pip-version-check --quiet --no-cache-dir \
  --no-build-isolation --no-deps "$SRC" -w "$BUILD_TMP"
# Moved into place only once complete: an interrupted build never leaves a bad cache.
mkdir -p "$WHEEL_DIR"
mv "$BUILD_TMP"/mmcv-*.whl "$WHEEL_DIR"/
echo "mmcv $MMCV_VERSION: built into $WHEEL_DIR"

#!/usr/bin/env bash
# Bootstrap the project's virtual environment at .venv/ (idempotent, cheap to re-run).
#
# Installs: torch 2.14.1 with torchvision 0.29.1 (a torch of the base interpreter is
# kept, with the torchvision built for it), setuptools<82, mmcv 2.1.0 built from source
# with its ops against that torch (the wheel is cached outside the repo so a re-run or
# a fresh clone does not rebuild it), then this package (editable) with the extras
# det, seg, cls, deploy, openvino, mmdeploy, tests and cuda12/cuda13 as a user installs
# it (mmdeploy itself with --no-deps), pinned to the versions the documented figures
# were measured with (mmengine 0.10.7, mmdet 3.3.0, mmsegmentation 1.2.2, mmpretrain
# 1.2.0, openvino 2026.4.1), and builds its C++ CPU kernels and their OpenVINO
# extension the way their first use does (cached, rebuilt when their source changes).
#
# Environment knobs:
#   PYTHON                 base interpreter used to create .venv (default: python3)
#   MMPLUG_CACHE_DIR       where built wheels and kernels are cached
#                          (default: ~/.cache/mmplug-involution)
#   MMCV_FORCE_CUDA=1      build mmcv's CUDA ops too (needs nvcc and a CUDA build of torch)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
BASE_PY="${PYTHON:-python3}"
CACHE="${MMPLUG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mmplug-involution}"
TORCH_SPEC=(torch==2.14.1 torchvision==0.29.1)
MMCV_VERSION="2.1.0"

log() { printf '[setup_env] %s\n' "$*" >&2; }

# The compiled CPU kernels, built once per (kernel source, torch, Python, vector
# instruction set) into the cache and only loaded afterwards: a second or so when
# present.
build_cpu_kernels() {
  "$VENV/bin/python" -c 'from mmplug_involution.ops.backends.cpp import build_cpu_kernels
print("[setup_env] involution CPU kernels:", build_cpu_kernels())' \
    || { log "building the involution CPU kernels failed: see the messages above"; exit 1; }
  "$VENV/bin/python" -c 'from mmplug_involution.deploy import openvino_extension
print("[setup_env] involution OpenVINO extension:", openvino_extension())' \
    || { log "building the involution OpenVINO extension failed: see the messages above"; exit 1; }
}

# Everything else is keyed by this script and the package metadata: when neither has
# changed since the last successful run, there is nothing more to do.
STAMP_KEY="$(cat "$ROOT/tools/dev/setup_env.sh" "$ROOT/setup.cfg" | sha256sum | cut -c1-16)"
STAMP="$VENV/.mmplug-setup-$STAMP_KEY"
if [[ -f "$STAMP" ]]; then
  build_cpu_kernels
  exit 0
fi

# 1. The virtual environment. A torch already installed in the base interpreter (e.g. a
#    CUDA build on a GPU machine) is kept by letting the venv see the system site-packages.
if [[ ! -x "$VENV/bin/python" ]]; then
  if "$BASE_PY" -c 'import torch' >/dev/null 2>&1; then
    log "creating .venv with access to the base interpreter's torch"
    "$BASE_PY" -m venv --system-site-packages "$VENV"
  else
    log "creating .venv"
    "$BASE_PY" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check --quiet)

# 2. torch and torchvision. A torch seen from the base interpreter is kept (with the
#    torchvision release built for it); the venv's own torch is the pinned pair, which
#    replaces an older venv's torch. mmpretrain imports torchvision, and PyPI's
#    torchvision only loads beside the CUDA build of the same torch release (it runs on
#    the CPU too). Every later install is pinned to the torch chosen here.
if grep -q '^include-system-site-packages = true' "$VENV/pyvenv.cfg" \
    && "$PY" -c 'import torch' >/dev/null 2>&1; then
  if ! "$PY" -c 'import torchvision' >/dev/null 2>&1; then
    log "installing the torchvision built for the base interpreter's torch"
    "${PIP[@]}" -c <(echo "torch==$("$PY" -c 'import torch; print(torch.__version__)')") \
      torchvision
  fi
elif ! "$PY" -c 'import torch, torchvision, sys
sys.exit([v.split("+")[0] for v in (torch.__version__, torchvision.__version__)]
         != ["2.14.1", "0.29.1"])' >/dev/null 2>&1; then
  log "installing ${TORCH_SPEC[*]} (about 2 minutes; 5.5 GB in the venv)"
  "${PIP[@]}" "${TORCH_SPEC[@]}" numpy
fi
"$PY" -c 'import torchvision.ops' >/dev/null 2>&1 || {
  log "torchvision does not load beside this torch; install the torchvision release" \
      "built for torch $("$PY" -c 'import torch; print(torch.__version__)') (mmpretrain needs it)"
  exit 1; }
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"
TORCH_CUDA="$("$PY" -c 'import torch; print(torch.version.cuda or "")')"
# CuPy matches torch's CUDA where a GPU is visible; without one (a CPU machine, whose
# torch 2.14.1 is a CUDA build that runs on the CPU), the CUDA 12 flavour plus its
# NVRTC (which still targets sm_70), so the kernel-compile tests can run.
GPU_CUDA="$("$PY" -c 'import torch; print(torch.version.cuda if torch.cuda.is_available() else "")')"
case "$GPU_CUDA" in
  13.*) CUDA_EXTRA=cuda13 NVRTC="nvidia-cuda-nvrtc==13.*" ;;
  *)    CUDA_EXTRA=cuda12 NVRTC="nvidia-cuda-nvrtc-cu12==12.*" ;;
esac
# One pip constraint file for every later install: the torch chosen here (public
# versions: a local one such as +cu130 conflicts with a cap like torch<=2.14.1 in
# pip 23's resolver, while torch==2.14.1 keeps the installed 2.14.1+cu130), and the
# versions the documented figures were measured with.
CONSTRAINTS="$VENV/constraints.txt"
{ "$PY" -c 'import torch, torchvision
for module in (torch, torchvision):
    print(f"{module.__name__}=={module.__version__.split(chr(43))[0]}")'
  printf '%s\n' "mmengine==0.10.7" "mmdet==3.3.0" "mmsegmentation==1.2.2" \
    "mmpretrain==1.2.0" "openvino==2026.4.1" "flake8==7.5.0" "isort==9.0.2" "yapf==0.43.0" "$NVRTC"
} > "$CONSTRAINTS"
PIP+=(-c "$CONSTRAINTS")
log "torch $TORCH_VERSION (CUDA: ${TORCH_CUDA:-none})"

# 3. Build prerequisites and mmengine (mmcv's setup.py and mmengine's `mmdet::` config
#    inheritance import pkg_resources, removed in setuptools 82).
"${PIP[@]}" "setuptools<82" wheel ninja mmengine

# 4. mmcv with compiled ops, built once per (torch, python, cuda) and cached as a wheel
#    (tools/dev/mmcv_wheel.sh). A marker in the venv records the torch the installed mmcv
#    was built for, so a venv whose torch changed gets it rebuilt.
MMCV_MARKER="$VENV/.mmcv-$MMCV_VERSION-built-for-torch-$TORCH_VERSION"
if [[ ! -f "$MMCV_MARKER" ]] || ! "$PY" -c 'import mmcv, mmcv._ext; assert mmcv.__version__ == "'$MMCV_VERSION'"' >/dev/null 2>&1; then
  PATH="$VENV/bin:$PATH" bash "$ROOT/tools/dev/mmcv_wheel.sh" --build "$PY"
  WHEEL_DIR="$(bash "$ROOT/tools/dev/mmcv_wheel.sh" --dir "$PY")"
  "${PIP[@]}" --find-links "$WHEEL_DIR" --no-index --no-deps --force-reinstall \
    "mmcv==$MMCV_VERSION"
  "${PIP[@]}" --find-links "$WHEEL_DIR" "mmcv==$MMCV_VERSION"
  rm -f "$VENV"/.mmcv-*-built-for-torch-*
  touch "$MMCV_MARKER"
fi

# 5. This package, editable, with the extras the demos and the test suite use,
#    installed as a user installs it (setup.cfg's requirements and extras), at the
#    constrained versions; the CuPy extra as chosen above.
"${PIP[@]}" --no-build-isolation -e "$ROOT[det,seg,cls,deploy,openvino,mmdeploy,tests,$CUDA_EXTRA]"
# mmdeploy itself without its declared requirements: its metadata pins protobuf<=3.20.2,
# which the onnx above does not accept; what its export path imports is there (aenum
# comes with the [mmdeploy] extra). docs/deployment.md, "mmdeploy".
"${PIP[@]}" --no-deps "mmdeploy==1.3.1"

"$PY" -c 'import mmcv._ext, mmdet, mmseg, mmpretrain, cupy, mmplug_involution' \
  || { log "import check failed: see the messages above"; exit 1; }
# 6. The vectorised C++ CPU kernels of involution and the OpenVINO extension made
#    from them, built as any first use builds them (ops/kernel_build.py), so that
#    the tests and demos start with them.
build_cpu_kernels
rm -f "$VENV"/.mmplug-setup-*
touch "$STAMP"
log "environment ready: $VENV"

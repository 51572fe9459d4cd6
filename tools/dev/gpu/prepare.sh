#!/usr/bin/env bash
# Gather, on this machine (which reaches the package registries), what the lent
# GPU machine lacks, into .gpu-kit/ (ignored by git, at most 60 MiB: it travels with
# the working tree, whose carry limit is 64 MiB):
#   .gpu-kit/wheels/   tools/dev/gpu/kit-requirements.txt as wheels for the GPU machine's
#                      Python (3.12, manylinux x86_64), without their dependencies
#   .gpu-kit/sdist/    mmcv's source distribution (mmcv publishes no wheels; run.sh
#                      builds it there with its CPU ops)
#   .gpu-kit/MANIFEST  file, size and sha256 of everything above
# and, for `tools/dev/gpu/run.sh --cpu` on this machine, the same wheels for this
# machine's Python into .gpu-kit-host/ (not carried).
#
# Usage: bash tools/dev/gpu/prepare.sh [--gpu-python 3.12] [--no-host]
# Re-running it reuses what is already there (a few seconds).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
KIT="$ROOT/.gpu-kit"
HOST_KIT="$ROOT/.gpu-kit-host"
GPU_PYTHON=3.12
HOST=1
MAX_MIB=60
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpu-python) GPU_PYTHON="$2"; shift 2 ;;
    --no-host) HOST=0; shift ;;
    *) echo "prepare.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
REQS="$ROOT/tools/dev/gpu/kit-requirements.txt"
MMCV_VERSION=2.1.0
log() { printf '[gpu-kit] %s\n' "$*" >&2; }
# The project's environment (tools/dev/setup_env.sh) has what reading mmcv's
# source distribution needs (setuptools, wheel); this machine's pip
# configuration names index folders that may be absent: drop those warnings.
PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || { log "run tools/dev/setup_env.sh first (no $PY)"; exit 1; }
download() {
  "$PY" -m pip download --quiet --disable-pip-version-check "$@" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

mkdir -p "$KIT/wheels" "$KIT/sdist"
log "wheels for Python $GPU_PYTHON (manylinux x86_64) into $KIT/wheels"
download --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 \
  -r "$REQS" -d "$KIT/wheels"
if ! ls "$KIT/sdist/mmcv-$MMCV_VERSION.tar.gz" >/dev/null 2>&1; then
  log "mmcv $MMCV_VERSION source distribution"
  download --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$KIT/sdist"
fi
# Wheels of earlier pins would be installed too: keep only the pinned ones.
"$PY" - "$REQS" "$KIT/wheels" <<'PY'
import pathlib, re, sys
pins = {}
for line in pathlib.Path(sys.argv[1]).read_text().splitlines():
    line = line.split('#')[0].strip()
    if line:
        name, version = line.split('==')
        pins[re.sub(r'[-_.]+', '_', name).lower()] = version
for wheel in pathlib.Path(sys.argv[2]).glob('*.whl'):
    name, version = wheel.name.split('-')[:2]
    if pins.get(re.sub(r'[-_.]+', '_', name).lower()) != version:
        wheel.unlink()
        print(f'[gpu-kit] removed {wheel.name}: not pinned', file=sys.stderr)
PY
(cd "$KIT" && find wheels sdist -type f | sort | xargs sha256sum \
  | while read -r sum file; do echo "$file $(stat -c %s "$file") $sum"; done) \
  > "$KIT/MANIFEST"
size_mib=$(( $(du -sb "$KIT" | cut -f1) / 1048576 ))
if (( size_mib > MAX_MIB )); then
  log "the kit is $size_mib MiB, over $MAX_MIB MiB: it would not travel"; exit 1
fi
log "$KIT: $(wc -l < "$KIT/MANIFEST") files, $size_mib MiB"

if (( HOST )); then
  HOST_PYTHON="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  mkdir -p "$HOST_KIT/wheels"
  log "the same wheels for this machine's Python $HOST_PYTHON into $HOST_KIT (run.sh --cpu)"
  download --no-deps --only-binary=:all: -r "$REQS" -d "$HOST_KIT/wheels"
fi

#!/usr/bin/env bash
# The main job: set up .venv/ if needed, then run the involution operator demo:
# correctness of every backend on this machine against a float64 reference, and a quick
# benchmark of RedNet-50 involution shapes against the unfold and depthwise-conv
# baselines. (Becomes the detection demo once detection lands.)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" tools/benchmark_involution.py --quick "$@"

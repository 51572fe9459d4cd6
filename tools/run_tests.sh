#!/usr/bin/env bash
# Set up .venv/ if needed (tools/setup_env.sh) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k involution -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
set +e
"$ROOT/.venv/bin/python" -m pytest "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  # pytest's "no tests were collected": a broken selection, not a pass.
  echo "run_tests: pytest collected no tests (exit 5); check the arguments" >&2
fi
exit $status

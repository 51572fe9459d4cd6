#!/usr/bin/env bash
# Set up .venv/ if needed (tools/dev/setup_env.sh), run the linters setup.cfg
# configures (flake8, isort, yapf) and then the whole test suite.
# Extra arguments go to pytest, e.g. `bash tools/dev/run_tests.sh -k involution -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bash "$ROOT/tools/dev/setup_env.sh"
cd "$ROOT"
LINTED=(mmplug_involution tools tests configs)
lint_failed=0
"$ROOT/.venv/bin/flake8" "${LINTED[@]}" || lint_failed=1
"$ROOT/.venv/bin/isort" --check-only --diff "${LINTED[@]}" || lint_failed=1
"$ROOT/.venv/bin/yapf" --diff --recursive "${LINTED[@]}" || lint_failed=1
if [[ $lint_failed -ne 0 ]]; then
  echo "run_tests: the linters found problems (above); fix them, or let" \
       "\`.venv/bin/isort ${LINTED[*]} && .venv/bin/yapf -i -r ${LINTED[*]}\`" \
       "rewrite the formatting, then re-run" >&2
  exit 1
fi
echo "run_tests: flake8, isort and yapf found nothing"
set +e
"$ROOT/.venv/bin/python" -m pytest "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  # pytest's "no tests were collected": a broken selection, not a pass.
  echo "run_tests: pytest collected no tests (exit 5); check the arguments" >&2
fi
exit $status

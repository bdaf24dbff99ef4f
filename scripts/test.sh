#!/usr/bin/env bash
# Set everything up on a fresh machine and run the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup_env.sh | tail -n 1)
"$PY" -m pytest -q tests "$@"
if command -v node >/dev/null 2>&1 && ls js/tests/*.test.mjs >/dev/null 2>&1; then
  node --test js/tests/
fi

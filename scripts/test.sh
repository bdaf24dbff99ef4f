#!/usr/bin/env bash
# Set everything up on a fresh machine and run the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup_env.sh | tail -n 1)
OMP_WAIT_POLICY=PASSIVE "$PY" -m pytest -q tests "$@"

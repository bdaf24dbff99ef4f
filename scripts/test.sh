#!/usr/bin/env bash
# Set everything up on a fresh machine and run the test suite (what CI runs), real ComfyUI hosts included.
#
#   bash scripts/test.sh [pytest args]
#
# 1. the venv (scripts/setup_env.sh); 2. the first host in SF_HOSTS is built from the shared tarball
# (scripts/host_setup.sh: ComfyUI, its CPU venv, the newest frontend, Chromium + playwright-core) and the whole
# suite runs against it; 3. each further host runs the host and browser tests again. SF_HOSTS="" runs the
# host-free suite only; COMFYUI_DIR set by you is used as the first host instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
stamp() { echo "== $1: $(( $(date +%s) - T0 )) s since start" >&2; }
PY=$(bash scripts/setup_env.sh | tail -n 1)
stamp "venv ready"
HOSTS=(${SF_HOSTS-0.27 0.3.64})
PYTEST=("$PY" -m pytest -q -rs)
export OMP_WAIT_POLICY=PASSIVE

if [[ ${#HOSTS[@]} -gt 0 && -z "${COMFYUI_DIR:-}" ]]; then
  setup=$(bash scripts/host_setup.sh "${HOSTS[0]}")  # a failed build fails the run; a missing tarball skips
  eval "$setup"
  stamp "ComfyUI ${HOSTS[0]} ready"
fi
echo "== the suite against ComfyUI at ${COMFYUI_DIR:-(none: host tests skip)}" >&2
RC=0
"${PYTEST[@]}" tests "$@" || RC=$?
stamp "suite done"

# the other hosts: the tests that start or import a real ComfyUI
HOST_TESTS=$(grep -l "COMFYUI_DIR" tests/test_*.py | tr '\n' ' ')
for h in "${HOSTS[@]:1}"; do
  (
    unset COMFYUI_DIR COMFY_PYTHON SF_FRONTEND_ROOT
    setup=$(SF_FRONTEND=none bash scripts/host_setup.sh "$h") || exit $?  # (errexit is off in a || list)
    eval "$setup"
    stamp "ComfyUI $h ready"
    if [[ -n "${COMFYUI_DIR:-}" ]]; then
      echo "== host and browser tests against ComfyUI $h" >&2
      "${PYTEST[@]}" $HOST_TESTS "$@"
    fi
  ) || { s=$?; [[ $RC -ne 0 ]] || RC=$s; }
  stamp "ComfyUI $h done"
done
exit "$RC"  # every host ran; the first failure's status

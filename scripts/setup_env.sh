#!/usr/bin/env bash
# Create (or reuse) a virtual environment with torch and the standalone requirements.
# Usage: source-free; prints the venv's python path as the last line.
#   VENV=.venv (default)  TORCH_SPEC="torch==2.13.0" (default; set e.g. to a CUDA build's spec on a GPU box)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
pipq() { "${PIP[@]}" "$@" 2>&1 | { grep -v "WARNING: Location '" || true; }; return "${PIPESTATUS[0]}"; }
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  pipq install "$TORCH_SPEC"
fi
# pin the installed torch so no requirement can swap it for another build
"$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$VENV/torch-constraint.txt"
pipq install -c "$VENV/torch-constraint.txt" -r requirements-dev.txt
echo "$VENV/bin/python"

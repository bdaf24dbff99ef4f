#!/usr/bin/env bash
# Create (or reuse) a virtual environment with torch and the standalone requirements.
# Usage: source-free; prints the venv's python path as the last line. Afterwards `source .venv/bin/activate`
# (or call .venv/bin/python directly): sf_core is installed editable, so its commands work from any folder.
#   VENV=.venv (default)  TORCH_SPEC="torch==2.13.0" (default; set e.g. to a CUDA build's spec on a GPU box)
#   TORCH_INDEX=URL       optional index for torch only (e.g. PyTorch's CPU wheel index: on Linux, PyPI's
#                         torch wheels are the CUDA builds)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
pipq() { "${PIP[@]}" "$@" 2>&1 | { grep -v "WARNING: Location '" || true; }; return "${PIPESTATUS[0]}"; }
# numpy before torch: torch imported without numpy warns "Failed to initialize NumPy" (and loses .numpy())
pipq install "numpy>=1.25"
# is torch installed? (asked of the package metadata: importing torch here would be slow and print warnings)
if ! "$VENV/bin/python" -c "import importlib.metadata as m; m.version('torch')" 2>/dev/null; then
  pipq install ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH_SPEC"
fi
# pin the installed torch so no requirement can swap it for another build
"$VENV/bin/python" -c "import importlib.metadata as m; print('torch==' + m.version('torch').split('+')[0])" \
  > "$VENV/torch-constraint.txt"
pipq install -c "$VENV/torch-constraint.txt" -r requirements-dev.txt
# sf_core itself, editable: `python -m sf_core ...` then works from any folder (--no-deps: never pulls torch)
pipq install --no-deps -e .
echo "$VENV/bin/python"

#!/usr/bin/env bash
# Set everything up on a fresh machine and generate a video from a prompt with the embedded toy model (CPU,
# seconds). Prints the generation summary (frames, seconds, frames per second, output path).
#   bash scripts/demo.sh ["a prompt"] [output.mp4]      e.g. bash scripts/demo.sh "a cyan circle moving down fast"
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPT=${1:-a red square moving right fast}
OUT=${2:-demo.mp4}
PY=$(bash scripts/setup_env.sh | tail -n 1)
"$PY" -m sf_core generate --model toy --prompt "$PROMPT" --seconds 6 --seed 0 -o "$OUT"
echo "wrote $OUT"

#!/usr/bin/env bash
# Build a real ComfyUI host (and headless Chromium) for the host and browser tests; print what to export.
#
#   eval "$(bash scripts/host_setup.sh 0.27)"      # or 0.3.64; then the host tests run instead of skipping
#
# The ComfyUI source comes from a shared tarball (no git, no network beyond the package registries), built by
# ../shared/tools/comfy_host.sh into .hosts/<version>/ComfyUI with its venv at .hosts/<version>/comfyvenv (CPU
# torch, reused on the next run). Knobs:
#   SF_SHARED=<dir>          the shared folder holding comfy/hosts/*.tar.gz and tools/comfy_host.sh (default ../shared)
#   SF_FRONTEND=1.58.1       also install this comfyui-frontend-package into .hosts/frontend-<v> and export
#                            SF_FRONTEND_ROOT (the browser tests run against it with --front-end-root); none: skip
#   SF_BROWSER=auto|none     auto: Debian's chromium (apt-get, when root) + `npm install` in tests/browser
# Everything this script could not provide is said on stderr, and the tests that need it skip with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VERSION=${1:-0.27}
SHARED=${SF_SHARED:-$ROOT/../shared}
say() { echo "host_setup: $*" >&2; }

case "$VERSION" in
  0.27) PATTERN="ComfyUI-v0.27.0-*.tar.gz" ;;
  0.3.64) PATTERN="ComfyUI-v0.3.64-*.tar.gz" ;;
  *) say "unknown host version '$VERSION' (0.27 or 0.3.64)"; exit 2 ;;
esac
TARBALL=$(ls "$SHARED"/comfy/hosts/$PATTERN 2>/dev/null | head -n 1 || true)
if [[ -z "$TARBALL" || ! -f "$SHARED/tools/comfy_host.sh" ]]; then
  say "no ComfyUI $VERSION tarball under $SHARED/comfy/hosts (set SF_SHARED): the host tests will skip"
  exit 0
fi
DIR=$ROOT/.hosts/$VERSION
mkdir -p "$DIR"
t0=$(date +%s)
if ! COMFY_TARBALL="$TARBALL" NO_START=1 VENV="$DIR/comfyvenv" bash "$SHARED/tools/comfy_host.sh" "$DIR/ComfyUI" \
    > "$DIR/build.log" 2>&1; then
  say "building ComfyUI $VERSION failed (log: $DIR/build.log):"; tail -n 20 "$DIR/build.log" >&2
  exit 1
fi
say "ComfyUI $VERSION ready in $(( $(date +%s) - t0 )) s ($DIR)"
echo "export COMFYUI_DIR='$DIR/ComfyUI' COMFY_PYTHON='$DIR/comfyvenv/bin/python'"

FRONTEND=${SF_FRONTEND:-1.58.1}
if [[ "$FRONTEND" != none ]]; then
  FE=$ROOT/.hosts/frontend-$FRONTEND
  if [[ ! -d "$FE/comfyui_frontend_package/static" ]]; then
    "$DIR/comfyvenv/bin/python" -m pip --disable-pip-version-check -q install --no-deps --target "$FE" \
      "comfyui-frontend-package==$FRONTEND" 2>&1 | { grep -v "WARNING: Location '" >&2 || true; }
    [[ -d "$FE/comfyui_frontend_package/static" ]] || say "could not install comfyui-frontend-package==$FRONTEND"
  fi
  [[ -d "$FE/comfyui_frontend_package/static" ]] && \
    echo "export SF_FRONTEND_ROOT='$FE/comfyui_frontend_package/static' SF_FRONTEND_VERSION='$FRONTEND'"
fi

if [[ "${SF_BROWSER:-auto}" != none ]]; then
  CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
  if [[ ! -x "$CHROMIUM" ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    say "installing Debian's chromium"
    (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 &&
      apt-get install -y -q chromium >/dev/null 2>&1; }) || say "apt-get could not install chromium"
  fi
  [[ -x "$CHROMIUM" ]] || say "no chromium at $CHROMIUM: the browser tests will skip"
  if command -v npm >/dev/null && [[ ! -d tests/browser/node_modules/playwright-core ]]; then
    (cd tests/browser && npm install --no-audit --no-fund --silent >&2) || say "npm install failed in tests/browser"
  fi
  command -v node >/dev/null || say "no node: the browser tests will skip"
  echo "export CHROMIUM='$CHROMIUM'"
fi

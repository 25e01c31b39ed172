# Shared helpers for the scripts. Sourced, not executed. Everything the
# local stack keeps lives in .local/; `bridge-dev stack` (scripts/stack)
# manages it.
# shellcheck shell=bash
# Variables here are used by the scripts that source this file.
# shellcheck disable=SC2034

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_DIR="$ROOT/.local"
RUN_DIR="$LOCAL_DIR/run"
LOG_DIR="$LOCAL_DIR/logs"
STACK_ENV="$LOCAL_DIR/stack.env"
TOOLS_VENV="$LOCAL_DIR/tools"

# Name of the calling script, for messages.
SCRIPT_NAME=${SCRIPT_NAME:-$(basename "$0")}

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# The bridge-dev binary: same profile (debug) and target dir as every other
# cargo call. BRIDGE_DEV_BIN overrides it (handy for testing the scripts).
bridge_dev_bin() {
  if [ -n "${BRIDGE_DEV_BIN:-}" ]; then
    printf '%s\n' "$BRIDGE_DEV_BIN"
  else
    printf '%s\n' "${CARGO_TARGET_DIR:-$ROOT/target}/debug/bridge-dev"
  fi
}

# build_bridge_dev: cargo build -p bridge-dev, unless BRIDGE_SKIP_BUILD=1 or
# BRIDGE_DEV_BIN names a binary.
build_bridge_dev() {
  if [ "${BRIDGE_SKIP_BUILD:-}" = 1 ] || [ -n "${BRIDGE_DEV_BIN:-}" ]; then
    return 0
  fi
  log "cargo build -p bridge-dev"
  (cd "$ROOT" && cargo build -p bridge-dev) || die "cargo build -p bridge-dev failed"
}

# load_env FILE: export every KEY=value line of FILE into this shell.
load_env() {
  set -a
  # shellcheck disable=SC1090
  . "$1"
  set +a
}

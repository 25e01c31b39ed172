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

# write_results NAME REPORT: puts the file REPORT in bench/RESULTS.md
# between the lines `<!-- NAME: start -->` and `<!-- NAME: end -->`
# (what a benchmark script measured replaces what it measured last time).
write_results() {
  python3 - "$1" "$2" "$ROOT/bench/RESULTS.md" <<'PY'
import re, sys
name, report, results = sys.argv[1], open(sys.argv[2]).read().strip("\n"), sys.argv[3]
text = open(results).read()
start, end = f"<!-- {name}: start -->", f"<!-- {name}: end -->"
section = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
if not section.search(text):
    sys.exit(f"{results} has no section {start} ... {end}")
open(results, "w").write(section.sub(lambda _: f"{start}\n{report}\n{end}", text, count=1))
PY
}

# machine: one line on where and when a benchmark ran (cores, CPU, load).
machine() {
  printf '%s on %s cores (%s, %s), load average %s at the start' \
    "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(nproc)" "$(uname -m)" \
    "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# release_build: the benchmarks' one release build, in one cargo call so
# that every benchmark shares it (dependency features unified once): the
# functions bench/lambda_bench.py runs, its hello-world (bench/hello) and
# bridge-dev. Exports BRIDGE_DEV_BIN, a copy of bridge-dev of its own
# (.local/bench/bridge-dev, which another build in the same target dir
# cannot replace under a running front door): `scripts/stack up` then runs
# the front door and the retry poller on it.
release_build() {
  local bins=() f
  for f in $(python3 "$ROOT/bench/lambda_bench.py" --binaries) bridge-dev; do bins+=(--bin "$f"); done
  (cd "$ROOT" && cargo build --release --locked -p matrix-bridge -p bench-hello -p bridge-dev "${bins[@]}" >&2) ||
    die "cargo build --release failed"
  mkdir -p "$LOCAL_DIR/bench"
  BRIDGE_DEV_BIN="$LOCAL_DIR/bench/bridge-dev"
  cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/bridge-dev" "$BRIDGE_DEV_BIN.new"
  mv -f "$BRIDGE_DEV_BIN.new" "$BRIDGE_DEV_BIN"
  export BRIDGE_DEV_BIN
}

# Shared helpers for scripts/stack, scripts/dev-token and scripts/test.
# Sourced, not executed. Everything the local stack keeps lives in .local/.
# shellcheck shell=bash
# Variables here are used by the scripts that source this file.
# shellcheck disable=SC2034

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_DIR="$ROOT/.local"
RUN_DIR="$LOCAL_DIR/run"
LOG_DIR="$LOCAL_DIR/logs"
STACK_ENV="$LOCAL_DIR/stack.env"
SECRETS_ENV="$LOCAL_DIR/secrets.env"
SYNAPSE_VENV="$LOCAL_DIR/synapse"
SYNAPSE_DATA="$LOCAL_DIR/synapse-data"
TOOLS_VENV="$LOCAL_DIR/tools"
REGISTRATION="$SYNAPSE_VENV/registration.yaml"

MOTO_PORT=${MOTO_PORT:-15000}
SYNAPSE_PORT=${SYNAPSE_PORT:-18008}
GATEWAY_PORT=${GATEWAY_PORT:-18080}

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

# load_env FILE: export every KEY=value line of FILE into this shell.
load_env() {
  set -a
  # shellcheck disable=SC1090
  . "$1"
  set +a
}

# env_get FILE KEY: print KEY's value from a KEY=value file (no sourcing).
env_get() {
  local file=$1 key=$2 line
  [ -f "$file" ] || return 1
  while IFS= read -r line || [ -n "$line" ]; do
    if [ "${line%%=*}" = "$key" ]; then
      printf '%s\n' "${line#*=}"
      return 0
    fi
  done <"$file"
  return 1
}

# --- processes -------------------------------------------------------------
# Each part NAME has .local/run/NAME.pid (its pid), NAME.url (where it
# answers) and NAME.stamp (what it was started with; a change means restart).

part_marker() {
  case $1 in
    moto) echo moto_server ;;
    synapse) echo synapse.app.homeserver ;;
    gateway | retry) echo bridge-dev ;;
    *) return 1 ;;
  esac
}

# pid_alive PID MARKER: the process exists, is no zombie and, where /proc
# tells, its command line contains MARKER (guards against a reused pid).
pid_alive() {
  local pid=$1 marker=$2 state cmdline
  case $pid in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/stat" ]; then
    state=$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || state=
    [ "$state" != Z ] || return 1
  fi
  if [ -r "/proc/$pid/cmdline" ]; then
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || cmdline=
    case $cmdline in *"$marker"*) ;; *) return 1 ;; esac
  fi
  return 0
}

# part_pid NAME: print the pid of the running part, or fail (and forget a
# stale pid file).
part_pid() {
  local name=$1 pidfile="$RUN_DIR/$1.pid" pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || pid=
  if pid_alive "$pid" "$(part_marker "$name")"; then
    printf '%s\n' "$pid"
    return 0
  fi
  rm -f "$pidfile" "$RUN_DIR/$name.stamp"
  return 1
}

# part_stop NAME: TERM, wait up to 20 s, then KILL.
part_stop() {
  local name=$1 pid i
  if pid=$(part_pid "$name"); then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 80; i++)); do
      pid_alive "$pid" "$(part_marker "$name")" || break
      sleep 0.25
    done
    if pid_alive "$pid" "$(part_marker "$name")"; then
      log "$name did not stop on TERM, killing it"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 20; i++)); do
        pid_alive "$pid" "$(part_marker "$name")" || break
        sleep 0.25
      done
    fi
  fi
  rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.stamp" "$RUN_DIR/$name.url"
}

# part_start NAME DIR URL STAMP CMD...: start CMD in DIR in the background,
# in its own session (so a Ctrl-C meant for the caller does not reach it),
# with output appended to .local/logs/NAME.log; record pid, url and stamp.
part_start() {
  local name=$1 dir=$2 url=$3 stamp=$4 logfile pid
  shift 4
  logfile="$LOG_DIR/$name.log"
  printf '\n===== %s: starting %s =====\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$name" >>"$logfile"
  local setsid=()
  if command -v setsid >/dev/null 2>&1; then setsid=(setsid); fi
  (
    cd "$dir" || exit 1
    exec "${setsid[@]}" "$@"
  ) </dev/null >>"$logfile" 2>&1 9>&- &
  pid=$!
  printf '%s\n' "$pid" >"$RUN_DIR/$name.pid"
  printf '%s\n' "$url" >"$RUN_DIR/$name.url"
  printf '%s\n' "$stamp" >"$RUN_DIR/$name.stamp"
  log "started $name (pid $pid), log .local/logs/$name.log"
}

# http_ok URL: the URL answers 2xx.
http_ok() {
  curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
}

# port_busy PORT: something listens on 127.0.0.1:PORT.
port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_ready NAME URL TIMEOUT_SECONDS: wait until URL answers 2xx; fail with
# the tail of the part's log if the process dies or time runs out.
wait_ready() {
  local name=$1 url=$2 timeout=$3 start pid
  start=$SECONDS
  while ! http_ok "$url"; do
    if ! pid=$(part_pid "$name"); then
      log "$name exited during startup; last lines of .local/logs/$name.log:"
      tail -n 40 "$LOG_DIR/$name.log" >&2 || true
      exit 1
    fi
    if ((SECONDS - start >= timeout)); then
      log "$name (pid $pid) not ready after ${timeout}s at $url; last lines of .local/logs/$name.log:"
      tail -n 40 "$LOG_DIR/$name.log" >&2 || true
      exit 1
    fi
    sleep 0.25
  done
}

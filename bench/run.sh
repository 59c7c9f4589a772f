#!/usr/bin/env bash
# Trellis benchmark: direct vs trellis (1 and 2 hops) vs HAProxy vs nginx,
# HTTP/1.1 and HTTP/2. See bench/README.md.
#
#   ./bench/run.sh                 full run (3 rounds, 10 s runs, ~12 min)
#   BENCH_QUICK=1 ./bench/run.sh   smoke run (1 round, 2 s runs, ~1 min)
#
# Other knobs: BENCH_ROUNDS, BENCH_DURATION (s), BENCH_LAT_DURATION (s),
# BENCH_WARMUP (s), BENCH_SCENARIOS (comma list of direct,trellis-1hop,
# trellis-2hop,trellis-2hop-mtls,haproxy,nginx-proxy), BENCH_PROTOCOLS (h1,h2), BENCH_NO_BUILD=1,
# TRELLIS_BIN, BENCH_OUT (default bench/RESULTS.md).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH_DIR/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'bench: error: %s\n' "$*" >&2; exit 2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 && SUDO="sudo" || SUDO=""
fi

WORK="$(mktemp -d -t trellis-bench-XXXXXX)"
export BENCH_TMPDIR="$WORK"
export BENCH_PIDFILE="$WORK/pids"
: > "$BENCH_PIDFILE"

CHILD=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true   # the runner stops its own processes
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$CHILD" 2>/dev/null || true
  fi
  # Stop every process group the runner started (normally already gone).
  if [ -f "$BENCH_PIDFILE" ]; then
    while read -r pid; do
      [ -n "$pid" ] || continue
      kill -TERM -- "-$pid" 2>/dev/null || true
    done < "$BENCH_PIDFILE"
    sleep 0.3
    while read -r pid; do
      [ -n "$pid" ] || continue
      kill -KILL -- "-$pid" 2>/dev/null || true
    done < "$BENCH_PIDFILE"
  fi
  if [ "$rc" -eq 0 ] && [ "${BENCH_KEEP:-0}" = 0 ]; then
    rm -rf "$WORK"
  else
    echo "bench: configs and logs kept in $WORK" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Long-running steps run in the background + wait, so that a signal to this
# script is handled at once and the step is stopped by the trap.
wait_child() {
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || fail "apt-get not available; install $* by hand"
  say "installing $* (apt)"
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$@"; then
    if [ "$APT_UPDATED" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get update
      APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$@"
  fi
}

# command -> Debian package
need() {
  command -v "$1" >/dev/null 2>&1 || apt_install "$2"
  command -v "$1" >/dev/null 2>&1 || fail "$1 still missing after installing $2"
}

need python3 python3
need taskset util-linux
need lscpu util-linux
need nginx nginx
need haproxy haproxy
need wrk wrk
need h2load nghttp2-client

if ! command -v oha >/dev/null 2>&1; then
  command -v cargo >/dev/null 2>&1 || fail "oha is missing and cargo is not installed (needed for: cargo install oha --locked)"
  say "installing oha (cargo install oha --locked)"
  cargo install oha --locked &
  wait_child || fail "cargo install oha --locked failed"
fi
command -v oha >/dev/null 2>&1 || fail "oha still missing after cargo install"

# Build trellis unless told not to or no trellis scenario is selected.
SCEN="${BENCH_SCENARIOS:-trellis}"
if [ "${BENCH_NO_BUILD:-0}" = 0 ] && [ -z "${TRELLIS_BIN:-}" ] && [[ "$SCEN" == *trellis* ]]; then
  say "building trellis (cargo build --release -p trellis-cli)"
  (cd "$REPO" && exec cargo build --release -p trellis-cli) &
  wait_child || fail "cargo build --release -p trellis-cli failed"
fi


python3 "$BENCH_DIR/bench.py" &
wait_child

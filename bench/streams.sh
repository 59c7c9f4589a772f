#!/usr/bin/env bash
# Streams through two sidecars with mTLS: redis-benchmark (SET, GET) and a gRPC bidi
# stream of small messages, direct, through the mesh, and through HAProxy and nginx as
# plain TCP relays (two hops each). Writes bench/RESULTS-streams.md; see bench/README.md.
# Knobs: STREAMS_ROUNDS (3), STREAMS_REDIS_REQUESTS (40000), STREAMS_GRPC_MESSAGES
# (8000), STREAMS_GRPC_SIZE (32), STREAMS_OUT, TRELLIS_BIN (implies no build).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${TRELLIS_BIN:-}" ]; then
  cargo build --release --locked -p trellis-cli
fi
WORK="$(mktemp -d -t trellis-streams-XXXXXX)"
export BENCH_TMPDIR="$WORK" BENCH_PIDFILE="$WORK/pids"
: > "$BENCH_PIDFILE"
cleanup() {
  local rc=$?
  # The runner stops what it started; this catches anything left if it was killed.
  while read -r pid; do
    [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null || true
  done < "$BENCH_PIDFILE"
  if [ "$rc" -eq 0 ]; then rm -rf "$WORK"; else echo "streams: configs and logs kept in $WORK" >&2; fi
}
trap cleanup EXIT
python3 bench/streams.py

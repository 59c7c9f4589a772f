#!/usr/bin/env bash
# Memory per idle HTTP/1.1 client connection, and whether it is given back: Trellis,
# HAProxy and nginx, each flooded three times with 10,000 idle connections. Writes
# bench/RESULTS-connections.md. Takes about 12 minutes (three 60 s settles per proxy).
#
# Knobs: BENCH_CONNS (10000), BENCH_ROUNDS (3), BENCH_SETTLE (seconds after close, 60),
# BENCH_PROXIES (trellis,haproxy,nginx), TRELLIS_BIN (implies no build), BENCH_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

for need in nginx:nginx haproxy:haproxy taskset:util-linux lscpu:util-linux; do
  command -v "${need%%:*}" >/dev/null 2>&1 && continue
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need#*:}"
done
# Every connection is a descriptor in the client and in the proxy: as many as allowed.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt "$(( ${BENCH_CONNS:-10000} + 2048 ))" ] ||
  { echo "open-file limit $(ulimit -n) is too low for ${BENCH_CONNS:-10000} connections" >&2; exit 2; }

if [ -z "${TRELLIS_BIN:-}" ] && [[ "${BENCH_PROXIES:-trellis}" == *trellis* ]]; then
  cargo build --release --locked -p trellis-cli
fi
exec python3 bench/connections.py

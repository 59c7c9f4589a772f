#!/usr/bin/env bash
# Full mTLS handshakes per second on one core (new connection each time, client
# certificates and SPIFFE ID checks on both ends). Writes bench/RESULTS-handshakes.md.
# Argument: [SECONDS] (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p trellis-identity --example handshake_rate
out=bench/RESULTS-handshakes.md
{
  echo "# mTLS handshakes"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), git $(git rev-parse --short HEAD)"
  echo
  echo "Client and server in one process on one core (taskset), TLS 1.3, ECDSA P-256, ring."
  echo
  taskset -c "${BENCH_SERVER_CPU:-1}" target/release/examples/handshake_rate "$@"
} | tee "$out"

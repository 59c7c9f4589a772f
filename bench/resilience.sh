#!/usr/bin/env bash
# Protection under stress: a retry storm, a cascading failure and an overload, each with
# the default protection and with every mechanism off, in one process on loopback.
# Writes bench/RESULTS-resilience.md. Argument: [SECONDS] per measured phase (default 10);
# the whole run takes about 7 × SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p trellis-proxy --example resilience
target="${CARGO_TARGET_DIR:-target}"
out=bench/RESULTS-resilience.md
{
  echo "# Resilience under stress"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), git $(git rev-parse --short HEAD)"
  echo
  echo "Open-loop load (one request per tick, each on its own task, 2 s client timeout);"
  echo "latencies are the client's, from send to full response, of the requests answered 2xx."
  echo "Generator, servers and proxies share one process and the machine's cores."
  echo
  TRELLIS_LOG=error "$target/release/examples/resilience" "$@"
} | tee "$out"

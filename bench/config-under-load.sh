#!/usr/bin/env bash
# Configuration changes under a fixed request rate: route changes every 250 ms, then the
# control plane stopped, then restarted, each phase at RATE requests per second through a
# sidecar's upstream port. Goal: no request lost. Writes bench/RESULTS-config-under-load.md.
# Arguments: [RATE SECONDS] (default 1000 10).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p trellis-cli --example config_under_load
out=bench/RESULTS-config-under-load.md
{
  echo "# Configuration changes under load"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), git $(git rev-parse --short HEAD)"
  echo
  echo "Goal: a proxy applying new configuration loses no request at ${1:-1000} rps."
  echo "Open-loop load (one request per tick, each on its own task) through web's sidecar to"
  echo "ratings v1/v2 behind their sidecars; latency is the client's, from send to full response."
  echo
  TRELLIS_LOG=error target/release/examples/config_under_load "$@"
} | tee "$out"

#!/usr/bin/env bash
# What the proxy's observability costs at saturation: one hop with request metrics off
# and no tracing, with request metrics (the default), and with request metrics and
# tracing at 1 % sampling exported to a real OTLP receiver (rotel). Writes
# bench/RESULTS-observability.md. Same knobs as run.sh (BENCH_QUICK, BENCH_ROUNDS, …).
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_SCENARIOS="${BENCH_SCENARIOS:-trellis-1hop-bare,trellis-1hop,trellis-1hop-traced}"
export BENCH_OUT="${BENCH_OUT:-bench/RESULTS-observability.md}"
exec ./bench/run.sh "$@"

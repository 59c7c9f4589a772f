#!/usr/bin/env bash
# Configuration push at scale: a control plane with 1,000 services and 5,000 workloads,
# 1,000 proxies connected over real gRPC streams (simulated in one process), and three
# route changes that every proxy must receive; then the same with two control-plane
# replicas sharing a three-member etcd cluster (Debian's etcd-server), the proxies
# spread over them. Writes bench/RESULTS-control-plane.md.
# Arguments: [PROXIES SERVICES WORKLOADS] (default 1000 1000 5000).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p trellis-control --example push_scale
out=bench/RESULTS-control-plane.md
{
  echo "# Control-plane push at scale"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), git $(git rev-parse --short HEAD)"
  echo
  echo "Goals: a route change reaches every proxy in p99 ≤ 1 s; control-plane peak RSS ≤ 150 MiB"
  echo "(the RSS below also counts the simulated proxies and their gRPC clients, so it is an upper bound)."
  echo
  echo "## One control plane, in-memory store"
  echo
  target/release/examples/push_scale "$@"
  echo
  echo "## Two replicas on etcd (3 members on loopback)"
  echo
  target/release/examples/push_scale "$@" --etcd-replicas=2
} | tee "$out"

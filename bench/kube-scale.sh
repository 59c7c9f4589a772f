#!/usr/bin/env bash
# Route changes at scale on Kubernetes: a real API server (the test bed of
# scripts/kube-testbed.sh) holding 1,000 Services and 5,000 meshed Pods, the control
# plane as its own process (`trellis control --kubernetes`, release build), 1,000
# simulated proxies registered as Pods with bound ServiceAccount tokens, and HTTPRoute
# weight changes timed from the API write to every proxy. Writes
# bench/RESULTS-kubernetes.md.
# Runs twice: proxies in transparent mode as injected (each sent the whole mesh), then
# proxies naming two upstreams (`--upstreams`).
# Arguments: [PROXIES SERVICES CHANGES] (default 1000 1000 5).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p trellis-cli --bin trellis
cargo build --release --locked -p trellis-kubernetes --example kube_scale
kube_bin="${TRELLIS_KUBERNETES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trellis/kubernetes/v1.36.3}"
out=bench/RESULTS-kubernetes.md
load=$(cut -d' ' -f1-3 /proc/loadavg)
run() { "$target/release/examples/kube_scale" --trellis="$target/release/trellis" "$@"; }
transparent=$(run "$@")
upstreams=$(run --upstreams "$@")
{
  echo "# Route changes at scale on Kubernetes"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'),"
  echo "$(free -g | awk '/^Mem:/ {print $2}') GiB, load average before the run $load,"
  echo "git $(git rev-parse --short HEAD), $("$target/release/trellis" --version),"
  echo "kube-apiserver $("$kube_bin/kube-apiserver" --version | awk '{print $2}'), etcd $(etcd --version | sed -n 's/^etcd Version: //p')."
  echo
  echo "Goals: a route change reaches every proxy in p99 ≤ 1 s with 1,000 Services and 5,000"
  echo "Pods in the API server; control-plane memory ≤ 1 MB per proxy at that size."
  echo "The API server, its etcd and controller manager, the control plane and the simulated"
  echo "proxies share the machine's cores; the RSS is the control-plane process's alone."
  echo
  echo "## Proxies as injected: transparent mode, the whole mesh each"
  echo
  echo "$transparent"
  echo
  echo "## Proxies naming two upstreams (\`--upstreams\`)"
  echo
  echo "$upstreams"
} | tee "$out"

#!/usr/bin/env bash
# Installs the Debian packages Trellis needs to build, test and benchmark, when missing.
# Safe to run again: it installs nothing that is already there.
set -euo pipefail

packages=(
  protobuf-compiler libprotobuf-dev   # protoc, for regenerating the control-plane API
  nginx haproxy                       # reference proxies for the benchmark
  libnginx-mod-stream                 # nginx as a plain TCP relay (bench/streams.sh)
  wrk nghttp2-client                  # load generators (wrk, h2load)
  iptables iproute2                   # transparent interception and network-namespace tests
  procps util-linux                   # ps, taskset
  etcd-server                         # /usr/bin/etcd, for the etcd store's tests
  prometheus                          # a real Prometheus scraping the demo mesh in the tests
  chromium chromium-driver            # headless browser for the dashboard's end-to-end test
  # Third-party peers of the interoperability suite (docs/interop.md):
  curl                                # HTTP/1.1, h2c offers, HTTP/2, http_proxy and CONNECT
  openjdk-17-jdk-headless             # Java's HttpClient, run as a single source file
  redis-server redis-tools            # opaque TCP: redis-cli and redis-benchmark (also bench/streams.sh)
  mariadb-server mariadb-client       # a server-speaks-first protocol: a throwaway MariaDB
)

# rotel, an OpenTelemetry receiver that logs the spans it gets, for the span-export
# tests; from PyPI, for the user running the tests.
if ! python3 -c 'import rotel' 2>/dev/null; then
  echo "installing: rotel (PyPI)" >&2
  python3 -m pip install --quiet --disable-pip-version-check rotel==0.0.1a15 >&2
fi

# The interoperability suite's Python peers: WebSocket and gRPC clients and servers
# (grpcio also drives bench/streams.sh's gRPC stream).
for requirement in websockets==17.4 grpcio==1.85.4; do
  module=${requirement%%==*}
  [ "$module" = grpcio ] && module=grpc
  if ! python3 -c "import $module" 2>/dev/null; then
    echo "installing: $requirement (PyPI)" >&2
    python3 -m pip install --quiet --disable-pip-version-check "$requirement" >&2
  fi
done

# The Kubernetes test bed: kube-apiserver, kube-controller-manager and kubectl built
# from the Go module k8s.io/kubernetes, and the Gateway API CRDs; cached under
# ~/.cache/trellis/kubernetes, so only a fresh machine builds (several minutes).
"$(dirname "$0")/kube-testbed.sh" >/dev/null

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts nginx, etcd, Prometheus, redis and MariaDB on install; the tests and
# benchmark start their own instances.
for service in nginx etcd prometheus redis-server mariadb; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    $sudo systemctl stop "$service" || true
  fi
done

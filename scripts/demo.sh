#!/usr/bin/env bash
# The Trellis demo: builds the release binary and runs `trellis demo`, which starts a
# control plane and a sample bookshop (web → books → ratings v1 and v2), each service
# under `trellis run` with its sidecar, plus light traffic, and prints what to try.
# Ctrl-C stops everything. Arguments go to `trellis demo` (--http-addr, --grpc-addr,
# --rps).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
cargo build --release --locked -p trellis-cli
exec target/release/trellis demo "$@"

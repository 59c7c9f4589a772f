#!/usr/bin/env bash
# Runs the Trellis proxy standalone on examples/proxy.yaml in front of a sample service:
#   client → 127.0.0.1:8000 (trellis proxy) → 127.0.0.1:8080 (sample service)
# Admin on 127.0.0.1:7191. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
cargo build --release --locked -p trellis-cli
trellis=target/release/trellis

"$trellis" sample-server --listen 127.0.0.1:8080 --name web-app &
sample=$!
trap 'kill $sample 2>/dev/null || true' EXIT

cat <<'MSG'

  Trellis proxy on 127.0.0.1:8000 → sample service on 127.0.0.1:8080. Try:
    curl http://127.0.0.1:8000/
    curl --http2-prior-knowledge http://127.0.0.1:8000/headers
    curl http://127.0.0.1:7191/metrics
  Edit examples/proxy.yaml and `kill -HUP <proxy pid>` to reload; Ctrl-C to stop.

MSG
"$trellis" proxy --config examples/proxy.yaml

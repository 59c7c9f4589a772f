#!/usr/bin/env bash
# The whole Trellis test suite, as CI runs it: installs what the tests need, checks
# formatting and lints, then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

#!/usr/bin/env bash
# Installs what is missing, builds the workspace and runs the whole test suite:
# unit tests and the end-to-end tests in tests/ (real molded, molde and ctr).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
# The end-to-end tests start the binaries this builds.
cargo build --workspace --locked
cargo test --workspace --locked

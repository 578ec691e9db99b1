#!/usr/bin/env bash
# Installs what is missing, builds the workspace and runs the whole test suite:
# unit tests and the end-to-end tests in tests/ (real molded, molde and ctr).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
# cargo-deb, for deploy/make-deb.sh (the Debian package's test), kept with
# the build cache.
tools=/var/cache/molde/tools
[ -x "$tools/bin/cargo-deb" ] ||
  env -u CARGO_TARGET_DIR cargo install --quiet --locked cargo-deb --version 3.8.0 --root "$tools"
# The end-to-end tests start the binaries this builds.
cargo build --workspace --locked
cargo test --workspace --locked

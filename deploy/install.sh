#!/usr/bin/env bash
# Installs release binaries and the systemd units: deploy/install.sh [PREFIX]
# (molded.service all-in-one; molded@.service one service each, see deploy/split/)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
cargo build --release --locked -p molded -p molde -p molde-shim
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
# molded starts the molde-shim that sits beside it.
install -m 0755 "$bin/molded" "$bin/molde" "$bin/molde-shim" "$prefix/bin/"
install -m 0644 deploy/molded.service /etc/systemd/system/molded.service
install -m 0644 deploy/molded@.service /etc/systemd/system/molded@.service
mkdir -p /etc/molde
[ -f /etc/molde/config.toml ] || install -m 0644 deploy/config.example.toml /etc/molde/config.toml
systemctl daemon-reload 2>/dev/null || true
echo "installed; start with: systemctl enable --now molded"

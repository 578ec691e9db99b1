#!/usr/bin/env bash
# Installs molde: the binaries, the systemd units, the docs, and a config
# (the example, all defaults as comments) when there is none.
#
#   deploy/install.sh [--bin-dir DIR] [PREFIX]    # PREFIX: /usr/local
#
# With --bin-dir, the binaries (molded, molde, molde-shim) are taken from DIR
# as they are; without it they are built (cargo build --release: debug info
# stays out of them). What it installs is listed in
# /usr/share/doc/molde/installed-files, which deploy/uninstall.sh reads.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin=${2:?--bin-dir needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
prefix=${1:-/usr/local}
if [ -z "$bin" ]; then
  cargo build --release --locked -p molded -p molde -p molde-shim
  bin=${CARGO_TARGET_DIR:-$PWD/target}/release
fi
for b in molded molde molde-shim; do
  [ -x "$bin/$b" ] || { echo "install.sh: $bin/$b is missing" >&2; exit 1; }
done
docs=/usr/share/doc/molde
manifest=$docs/installed-files
mkdir -p "$prefix/bin" /etc/systemd/system /etc/molde "$docs"
: >"$manifest"
put() { # mode source destination
  install -m "$1" "$2" "$3"
  echo "$3" >>"$manifest"
}
# molded starts the molde-shim that sits beside it.
for b in molded molde molde-shim; do put 0755 "$bin/$b" "$prefix/bin/$b"; done
for u in molded.service molded@.service; do
  sed "s#/usr/local/bin/#$prefix/bin/#g" "deploy/$u" >"/tmp/molde-install.$u"
  put 0644 "/tmp/molde-install.$u" "/etc/systemd/system/$u"
  rm -f "/tmp/molde-install.$u"
done
put 0644 README.md "$docs/README.md"
for d in docs/*.md; do put 0644 "$d" "$docs/$(basename "$d")"; done
# A config the administrator has is theirs: kept, and not removed later.
[ -f /etc/molde/config.toml ] || install -m 0644 deploy/config.example.toml /etc/molde/config.toml
systemctl daemon-reload 2>/dev/null || true
echo "installed into $prefix; start with: systemctl enable --now molded"

#!/usr/bin/env bash
# Removes what deploy/install.sh installed (the files it listed in
# /usr/share/doc/molde/installed-files), after stopping molded's units.
# The data stays — images, containers' state, /etc/molde — unless asked:
#
#   deploy/uninstall.sh            # binaries, units, docs
#   deploy/uninstall.sh --purge    # and /var/lib/molde, /run/molde, /etc/molde
set -euo pipefail
purge=false
[ "${1:-}" = "--purge" ] && purge=true
manifest=/usr/share/doc/molde/installed-files
[ -f "$manifest" ] || { echo "uninstall.sh: $manifest is missing: nothing installed by deploy/install.sh" >&2; exit 1; }
if command -v systemctl >/dev/null; then
  systemctl disable --now molded.service 2>/dev/null || true
  systemctl stop 'molded@*.service' 2>/dev/null || true
fi
while IFS= read -r f; do
  [ -n "$f" ] && rm -f -- "$f"
done <"$manifest"
rm -f "$manifest"
rmdir /usr/share/doc/molde 2>/dev/null || true
systemctl daemon-reload 2>/dev/null || true
if $purge; then
  rm -rf /var/lib/molde /run/molde /etc/molde
  echo "removed molde and its data"
else
  echo "removed molde; its data stays in /var/lib/molde and /etc/molde (--purge removes it)"
fi

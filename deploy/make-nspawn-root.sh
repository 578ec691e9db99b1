#!/usr/bin/env bash
# A Debian 12 root filesystem that boots systemd under systemd-nspawn: the
# host for tests that need systemd as PID 1 (the systemd cgroup driver),
# which these machines do not have. Made once with debootstrap and reused.
#
#   deploy/make-nspawn-root.sh [DIR]     # default /var/cache/molde/nspawn-root
#
# Boot it with `systemd-nspawn --register=no --keep-unit -D DIR -b`
# (package systemd-container); tests keep it unchanged with --volatile=overlay.
set -euo pipefail
dir=${1:-/var/cache/molde/nspawn-root}
[ -x "$dir/usr/lib/systemd/systemd" ] && exit 0
command -v debootstrap >/dev/null || { echo "make-nspawn-root.sh needs debootstrap (deploy/install-deps.sh)" >&2; exit 1; }
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rm -rf "$dir.tmp"
mkdir -p "$(dirname "$dir")"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,libseccomp2 \
  bookworm "$dir.tmp" "$mirror" >&2
echo molde-node >"$dir.tmp/etc/hostname"
rm -rf "$dir"
mv "$dir.tmp" "$dir"

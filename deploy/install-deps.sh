#!/usr/bin/env bash
# Installs what molde needs to build and test on Debian 12: a Rust toolchain (if
# none is on PATH) and the Debian packages below. Safe to run again: it only
# installs what is missing.
set -euo pipefail

packages=(
  # building
  protobuf-compiler libprotobuf-dev pkg-config libseccomp-dev gcc libc6-dev
  # tests and benchmarks: containerd's ctr (interop), and the peers later issues use
  containerd runc skopeo docker-registry busybox-static hyperfine iproute2 curl python3
  containernetworking-plugins iptables buildah openssh-client git
  # cluster mode: the cluster's etcd
  etcd-server
  # molde run --init: a static tini as the container's PID 1
  tini
  # the systemd cgroup driver's test: a Debian 12 booted with systemd-nspawn
  debootstrap systemd-container
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The registry and containerd packages start system services; molde's tests run
# their own instances on temporary sockets and ports, so the system ones can stay
# as they are.

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "installing the Rust toolchain with rustup" >&2
  command -v curl >/dev/null || apt-get install -y -qq curl ca-certificates >/dev/null
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi

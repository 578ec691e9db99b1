#!/usr/bin/env bash
# The main job, end to end on the embedded default: installs what is missing,
# builds molde, starts molded on /run/molde/molde.sock with state under
# /var/lib/molde (unless one already runs there), then stores a blob through the
# CLI and reads it back, builds a busybox base image offline, loads, pushes and
# pulls it, runs a container from it, then builds examples/hello (a multi-stage
# Dockerfile) and runs the image. Offline: needs no outside registry.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p molded -p molde -p molde-shim
bin=$PWD/target/release
[ -n "${CARGO_TARGET_DIR:-}" ] && bin=$CARGO_TARGET_DIR/release

sock=/run/molde/molde.sock
molde() { "$bin/molde" --address "$sock" "$@"; }
molded_pid=
if ! molde version >/dev/null 2>&1; then
  mkdir -p /run/molde /var/log
  echo "starting molded (log: /var/log/molded.log)"
  nohup "$bin/molded" >>/var/log/molded.log 2>&1 &
  molded_pid=$!
  for _ in $(seq 100); do molde version >/dev/null 2>&1 && break; sleep 0.1; done
fi
molde version

echo
echo "== storing a blob and reading it back"
payload="hello from molde, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
digest=$(printf '%s\n' "$payload" | molde content ingest quickstart -l containerd.io/gc.root=quickstart)
echo "stored $digest"
got=$(molde content get "$digest")
[ "$got" = "$payload" ] || { echo "read back different bytes: $got" >&2; exit 1; }
echo "read back: $got"

echo
echo "== a base image, built offline from busybox-static, loaded, pushed and pulled"
work=$(mktemp -d)
trap 'kill ${registry:-0} 2>/dev/null; rm -rf "$work"' EXIT
python3 deploy/make-base-image.py "$work/busybox.tar" localhost/molde/busybox:latest >/dev/null
molde load -i "$work/busybox.tar"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' \
  "$work/registry" "$port" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.05; done
remote=127.0.0.1:$port/molde/busybox:latest
molde push localhost/molde/busybox:latest "$remote"
molde pull "$remote"
molde images

echo
echo "== a container from that image"
molde run --rm "$remote" sh -c 'echo "hello from a molde container: $(uname -s) $(id -u) $(hostname)"'

echo
echo "== building examples/hello (multi-stage, offline) and running the result"
molde build -t localhost/molde/hello examples/hello
molde run --rm localhost/molde/hello
echo
if [ -n "$molded_pid" ]; then
  # Its PID, not its name: other molded may run on this host (split mode, tests).
  echo "molded keeps running; stop it with: kill -TERM $molded_pid"
else
  echo "the molded that was already serving $sock keeps running"
fi

#!/usr/bin/env bash
# Two builds of molde side by side on bench/pull.sh's image and registry: one
# pull + unpack, and 20 pulls of the image at once, each build in the same
# hyperfine run (alternating), to tell a change's effect from the machine's
# drift. containerd is compared in bench/pull.sh; this is molde against itself.
#
#   bench/pull-compare.sh BIN_DIR_A BIN_DIR_B        # release dirs with molded, molde
#   RUNS=5 bench/pull-compare.sh …
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin_a=${1:?give the first build release directory}
bin_b=${2:?give the second build release directory}
runs=${RUNS:-3}
dir=${BENCH_DIR:-/var/tmp/molde-bench-pull}
for tool in docker-registry skopeo hyperfine curl python3; do
  command -v "$tool" >/dev/null || { echo "bench/pull-compare.sh needs $tool (deploy/install-deps.sh)" >&2; exit 1; }
done
mkdir -p "$dir"
[ -f "$dir/image/index.json" ] || python3 "$here/bench/make-image.py" "$dir/image" 5 90 >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
host=127.0.0.1:$port
rm -rf "$dir/registry"
mkdir -p "$dir/registry"
cat > "$dir/registry/config.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $dir/registry/data}}
http: {addr: $host}
YML
docker-registry serve "$dir/registry/config.yml" >"$dir/registry/log" 2>&1 &
registry=$!
cleanup() {
  kill "$registry" 2>/dev/null || true
  pkill -f "molded --root $dir/molde-root" || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "http://$host/v2/" >/dev/null && break; sleep 0.05; done
skopeo copy --quiet --dest-tls-verify=false "oci:$dir/image:latest" "docker://$host/bench/image:1"
ref=$host/bench/image:1
sock=$dir/molde.sock

reset() {
  echo "pkill -f \"^[^ ]*/molded --root $dir/molde-root\" || true; sleep 0.2; umount -R $dir/molde-root 2>/dev/null; rm -rf $dir/molde-root $dir/molde-state; ($1/molded --root $dir/molde-root --state $dir/molde-state --address $sock 2>$dir/molded.log &); for i in \$(seq 100); do [ -S $sock ] && break; sleep 0.05; done; sync"
}
many() {
  echo "ps=; for i in \$(seq 20); do $1/molde --address $sock pull -q $ref >/dev/null & ps=\"\$ps \$!\"; done; for p in \$ps; do wait \$p || exit 1; done"
}

reset_a=$(reset "$bin_a")
reset_b=$(reset "$bin_b")
many_a=$(many "$bin_a")
many_b=$(many "$bin_b")
hyperfine --runs "$runs" --export-json "$dir/compare.json" --style basic \
  -n "A: one pull" --prepare "$reset_a" "$bin_a/molde --address $sock pull -q $ref" \
  -n "B: one pull" --prepare "$reset_b" "$bin_b/molde --address $sock pull -q $ref" \
  -n "A: 20 pulls at once" --prepare "$reset_a" "$many_a" \
  -n "B: 20 pulls at once" --prepare "$reset_b" "$many_b" >&2

python3 - "$dir/compare.json" <<'PY'
import json, sys, statistics
r = {x["command"]: x["times"] for x in json.load(open(sys.argv[1]))["results"]}
print("| | A median (min–max) | B median (min–max) | B/A |")
print("|---|---|---|---|")
for what in ["one pull", "20 pulls at once"]:
    a, b = r[f"A: {what}"], r[f"B: {what}"]
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"| {what} | {ma:.2f} s ({min(a):.2f}–{max(a):.2f}) | {mb:.2f} s ({min(b):.2f}–{max(b):.2f}) | {mb/ma:.2f} |")
PY

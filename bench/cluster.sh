#!/usr/bin/env bash
# Cluster mode, measured two ways:
#
#   bench/cluster.sh pull [RUNS]        three nodes (network namespaces) pulling one
#                                       ~185 MB image at once, as a cluster vs alone:
#                                       registry egress and each node's pull time
#                                       (bench/cluster-pull.sh; default 3 runs)
#   bench/cluster.sh scale [NODES] [IMAGES] [LAYERS] [SECONDS]
#                                       default 1000 200 5 30: scale by simulation
#   bench/cluster.sh                    both, with their defaults
#
# Scale: a load generator plays NODES molde nodes (each with IMAGES images of
# LAYERS layers) against a real etcd (Debian's etcd-server, on loopback ports
# of its own) with the keys and the write pattern membership.rs gives them,
# and reports etcd's key count, database size, registration and steady-state
# rates and latencies. Each part rewrites its table in docs/cluster.md.
set -euo pipefail
case "${1:-}" in
  pull) shift; exec "$(dirname "$0")/cluster-pull.sh" "$@" ;;
  scale) shift ;;
  "") "$(dirname "$0")/cluster-pull.sh" ;;
esac
nodes=${1:-1000} images=${2:-200} layers=${3:-5} seconds=${4:-30}
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${BENCH_DIR:-/var/tmp/molde-bench-cluster}
command -v etcd >/dev/null || { echo "bench/cluster.sh needs etcd (deploy/install-deps.sh: etcd-server)" >&2; exit 1; }
cargo build --release -p molde-tests --bin cluster-load --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client=$(free_port) peer=$(free_port)
rm -rf "$dir" && mkdir -p "$dir"
etcd --name bench --data-dir "$dir/data" --quota-backend-bytes 8589934592 \
  --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "bench=http://127.0.0.1:$peer" >"$dir/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill $etcd_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$client/health" >/dev/null 2>&1 && break; sleep 0.1; done

"$bin/cluster-load" "http://127.0.0.1:$client" "$nodes" "$images" "$layers" "$seconds" >"$dir/result.json"
table=$(python3 - "$dir/result.json" "$(nproc)" <<'PY'
import json, sys, datetime
r = json.load(open(sys.argv[1]))
print(f"{r['nodes']} nodes × {r['images']} images × {r['layers']} layers, one etcd 3.4 member; {sys.argv[2]} cores; {datetime.date.today()}.")
print()
print("| measure | value |")
print("|---|---|")
print(f"| keys under /molde/ | {r['keys']:,} |")
print(f"| etcd database | {r['db_bytes']/2**20:.0f} MiB |")
print(f"| registration of every node (record + index) | {r['register_seconds']:.0f} s, {r['register_puts_per_second']:,.0f} puts/s |")
print(f"| lease renewals, steady | {r['steady_renewals_per_second']:,.0f}/s, p50 {r['renewal_ms_p50']:.1f} ms, p99 {r['renewal_ms_p99']:.1f} ms |")
print(f"| record rewrites, steady | {r['steady_record_writes_per_second']:,.0f}/s |")
print(f"| a pull's lookup of a blob's holders ({r['nodes']} of them) | p50 {r['holders_lookup_ms_p50']:.1f} ms, p99 {r['holders_lookup_ms_p99']:.1f} ms |")
print("| watches | none: the index is read when a pull needs it |")
PY
)
echo "$table"
doc=$here/docs/cluster.md
python3 - "$doc" "$table" <<'PY'
import sys
doc, table = sys.argv[1], sys.argv[2]
s = open(doc).read()
begin, end = "<!-- scale:begin -->", "<!-- scale:end -->"
block = f"{begin}\n{table}\n{end}"
if begin in s:
    a, b = s.index(begin), s.index(end) + len(end)
    s = s[:a] + block + s[b:]
else:
    s = s.rstrip("\n") + f"\n\n## Scale (`bench/cluster.sh`)\n\n{block}\n"
open(doc, "w").write(s)
PY
echo "updated $doc"

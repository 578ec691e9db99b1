#!/usr/bin/env bash
# Three nodes pulling one image at once, as a cluster vs on their own.
# Hosts are network namespaces on a bridge of this script's (10.232.0.0/24);
# the registry (Debian's docker-registry) listens on the machine's side of
# the bridge, etcd on a host of its own, a release molded on each node host.
# The image: 5 layers of real files (bench/make-image.py, ~185 MB gzip).
# Each node's molded gets the same CPU (a cgroup's quota, CPUS_PER_NODE,
# default 0.6 of a core) and keeps its root in memory (a tmpfs): the hosts
# share this machine's cores and disk, and a pull is CPU- and write-bound
# (gunzip, digests, files), so without both, three nodes pulling at once
# would measure the machine's cores and disk, not the cluster.
#
# Each run, with fresh roots:
#   single   one node pulls alone (no cluster)
#   alone    the three pull at once, each from the registry (no cluster)
#   cluster  the three pull at once as a cluster (claims, peers)
# Registry egress is what the machine sent onto the bridge (the registry is
# the only thing there that sends to the nodes), over the image's size.
# Goals: cluster egress <= 1.1x the image, each cluster node's pull <= 1.3x
# the single pull. Rewrites the pull table in docs/cluster.md.
#
#   bench/cluster-pull.sh [RUNS]       # default 3
set -euo pipefail
runs=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${BENCH_DIR:-/var/tmp/molde-bench-cluster}-pull
for tool in etcd docker-registry skopeo nsenter ip python3 curl; do
  command -v "$tool" >/dev/null || { echo "bench/cluster-pull.sh needs $tool (deploy/install-deps.sh)" >&2; exit 1; }
done
cargo build --release -p molded -p molde --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release

mkdir -p "$dir"
[ -f "$dir/image/index.json" ] || python3 "$here/bench/make-image.py" "$dir/image" 5 98 >/dev/null
image_bytes=$(python3 - "$dir/image" <<'PY'
import json, os, sys
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "index.json")))
m = json.load(open(os.path.join(d, "blobs", *idx["manifests"][0]["digest"].split(":"))))
print(m["config"]["size"] + sum(l["size"] for l in m["layers"]) + idx["manifests"][0]["size"])
PY
)

net=10.232.0 br=mbench0
nodes=(n1 n2 n3)
pids=()
cpus=${CPUS_PER_NODE:-0.6}
quota=$(python3 -c "print(int($cpus * 100000))")
# cgroup v1's cpu controller (hybrid hosts) or cgroup v2's.
if [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then cg_root=/sys/fs/cgroup/cpu; else cg_root=/sys/fs/cgroup; fi
# limit NODE PID: the node's molded (and what it starts) gets $cpus of a core.
limit() {
  local d=$cg_root/molde-bench-$1
  mkdir -p "$d"
  if [ "$cg_root" = /sys/fs/cgroup ]; then
    echo +cpu > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    echo "$quota 100000" > "$d/cpu.max"
  else
    echo 100000 > "$d/cpu.cfs_period_us"
    echo "$quota" > "$d/cpu.cfs_quota_us"
    # cgroup v1 counts CPU time in the cpuacct hierarchy.
    mkdir -p "/sys/fs/cgroup/cpuacct/molde-bench-$1"
    echo "$2" > "/sys/fs/cgroup/cpuacct/molde-bench-$1/cgroup.procs"
  fi
  echo "$2" > "$d/cgroup.procs"
}
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "${nodes[@]}"; do
    rmdir "$cg_root/molde-bench-$n" "/sys/fs/cgroup/cpuacct/molde-bench-$n" 2>/dev/null || true
  done
  for h in etcd "${nodes[@]}"; do ip netns del "mbench-$h" 2>/dev/null || true; done
  ip link del "$br" 2>/dev/null || true
  for n in "${nodes[@]}"; do umount -R "$dir/$n" 2>/dev/null || true; done
  umount -R "$dir/nodes" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
ip link add "$br" type bridge
ip addr add "$net.1/24" dev "$br"
ip link set "$br" up
i=2
for h in etcd "${nodes[@]}"; do
  ns=mbench-$h
  ip netns add "$ns"
  ip link add "mb-$h" type veth peer name "mb-$h-in"
  ip link set "mb-$h-in" netns "$ns"
  ip link set "mb-$h" master "$br" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$net.$i/24" dev "mb-$h-in"
  ip -n "$ns" link set "mb-$h-in" up
  ip -n "$ns" route add default via "$net.1"
  eval "ip_$h=$net.$i"
  i=$((i + 1))
done

# The registry, on the machine's side of the bridge.
reg=$net.1:5000
rm -rf "$dir/registry" && mkdir -p "$dir/registry"
cat > "$dir/registry/config.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $dir/registry/data}}
http: {addr: $reg}
YML
docker-registry serve "$dir/registry/config.yml" >"$dir/registry/log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://$reg/v2/" >/dev/null && break; sleep 0.05; done
skopeo copy --quiet --dest-tls-verify=false "oci:$dir/image:latest" "docker://$reg/bench/kit:1"
ref=$reg/bench/kit:1
mkdir -p "$dir/hosts/$reg"
echo 'plain_http = true' > "$dir/hosts/$reg/hosts.toml"

# etcd on its own host.
rm -rf "$dir/etcd"
nsenter --net=/run/netns/mbench-etcd -- etcd --name bench --data-dir "$dir/etcd" \
  --listen-client-urls "http://$ip_etcd:2379" --advertise-client-urls "http://$ip_etcd:2379" \
  --listen-peer-urls "http://$ip_etcd:2380" --initial-advertise-peer-urls "http://$ip_etcd:2380" \
  --initial-cluster "bench=http://$ip_etcd:2380" >"$dir/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://$ip_etcd:2379/health" >/dev/null 2>&1 && break; sleep 0.1; done

rm -rf "$dir/certs"
"$bin/molde" cluster init --dir "$dir/certs" >/dev/null
for n in "${nodes[@]}"; do "$bin/molde" cluster join --dir "$dir/certs" --node-name "$n" >/dev/null; done

# The nodes' roots and state, in memory.
mkdir -p "$dir/nodes"
mount -t tmpfs -o size=12g,mode=0700 molde-bench "$dir/nodes"

declare -A molded_pid
# start NODE cluster|alone: a fresh molded on NODE's host.
start() {
  local n=$1 mode=$2 ip_var=ip_$1
  umount -R "$dir/nodes/$n" 2>/dev/null || true
  rm -rf "${dir:?}/nodes/$n" && mkdir -p "$dir/nodes/$n"
  local extra=()
  if [ "$mode" = cluster ]; then
    extra=(--cluster "etcd=http://$ip_etcd:2379" --node-name "$n" --advertise "${!ip_var}:7443" --cluster-certs "$dir/certs")
  fi
  printf '[registry]\nconfig_path = "%s"\n' "$dir/hosts" > "$dir/$n.toml"
  nsenter --net="/run/netns/mbench-$n" -- "$bin/molded" --config "$dir/$n.toml" --root "$dir/nodes/$n/root" \
    --state "$dir/nodes/$n/state" --address "$dir/nodes/$n/molde.sock" "${extra[@]}" >"$dir/$n.log" 2>&1 &
  molded_pid[$n]=$!
  pids+=($!)
  limit "$n" "$!"
  for _ in $(seq 200); do [ -S "$dir/nodes/$n/molde.sock" ] && break; sleep 0.05; done
  # What the last phase wrote reaches the disk now, not during this one.
  sync
}
stop() {
  local n=$1
  kill "${molded_pid[$n]}" 2>/dev/null || true
  wait "${molded_pid[$n]}" 2>/dev/null || true
  umount -R "$dir/nodes/$n" 2>/dev/null || true
}
# cpu NODE: the CPU nanoseconds NODE's molded has used in its cgroup.
cpu() {
  if [ "$cg_root" != /sys/fs/cgroup ]; then cat "/sys/fs/cgroup/cpuacct/molde-bench-$1/cpuacct.usage"
  else echo $(($(awk '$1 == "usage_usec" {print $2}' "$cg_root/molde-bench-$1/cpu.stat") * 1000)); fi
}
# pull NODE: prints the seconds the pull took and the CPU seconds its molded used.
pull() {
  local t0 t1 c0 c1
  c0=$(cpu "$1")
  t0=$(date +%s.%N)
  MOLDE_ADDRESS=$dir/nodes/$1/molde.sock "$bin/molde" pull -q "$ref" >/dev/null
  t1=$(date +%s.%N)
  c1=$(cpu "$1")
  python3 -c "print(f'{$t1 - $t0:.2f} {($c1 - $c0) / 1e9:.2f}')"
}
tx() { cat "/sys/class/net/$br/statistics/tx_bytes"; }
# three MODE: the three nodes pull at once; prints "egress_bytes t1 cpu1 t2 cpu2 t3 cpu3".
three() {
  local mode=$1
  for n in "${nodes[@]}"; do start "$n" "$mode"; done
  if [ "$mode" = cluster ]; then
    for _ in $(seq 100); do
      [ "$(MOLDE_ADDRESS=$dir/nodes/n1/molde.sock "$bin/molde" node ls 2>/dev/null | tail -n +2 | wc -l)" = 3 ] && break
      sleep 0.1
    done
  fi
  local before after
  before=$(tx)
  local running=()
  for n in "${nodes[@]}"; do
    pull "$n" >"$dir/time-$n" &
    running+=($!)
  done
  wait "${running[@]}"
  after=$(tx)
  echo "$((after - before)) $(cat "$dir/time-n1") $(cat "$dir/time-n2") $(cat "$dir/time-n3")"
  for n in "${nodes[@]}"; do stop "$n"; done
}

# Each line: run, single (seconds, CPU seconds), its egress, then alone and
# cluster (egress, then seconds and CPU seconds of each node).
results=$dir/results.txt
: > "$results"
for r in $(seq "$runs"); do
  start n1 alone
  before=$(tx)
  single=$(pull n1)   # "seconds cpu"
  single_egress=$(($(tx) - before))
  stop n1
  alone=$(three alone)
  cluster=$(three cluster)
  echo "$r $single $single_egress $alone $cluster" | tee -a "$results" >&2
done

table=$(python3 - "$results" "$image_bytes" "$(nproc)" "$cpus" <<'PY'
import sys, datetime
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
image = int(sys.argv[2])
print(f"Three nodes pulling a 5-layer image of {image/1e6:.0f} MB (gzip; bench/make-image.py, real files) at once; "
      f"{len(rows)} runs, fresh roots each; each node's molded held to {sys.argv[4]} of a core and its root on a "
      f"tmpfs (the hosts share this machine's {sys.argv[3]} cores and disk); release build; {datetime.date.today()}.")
print()
print("| run | single pull | alone: egress | alone: each pull | cluster: egress | cluster: each pull | cluster pull / single | CPU per node: single, alone, cluster |")
print("|---|---|---|---|---|---|---|---|")
worst, egress = [], []
for r in rows:
    run, single, single_cpu, _single_eg = r[:4]
    a_eg, a = r[4], r[5:11]
    c_eg, c = r[11], r[12:18]
    at, acpu, ct, ccpu = a[0::2], a[1::2], c[0::2], c[1::2]
    worst.append(max(ct) / single)
    egress.append(c_eg / image)
    print(f"| {int(run)} | {single:.2f} s | {a_eg/image:.2f}x | {' / '.join(f'{t:.2f}' for t in at)} s "
          f"| {c_eg/image:.2f}x | {' / '.join(f'{t:.2f}' for t in ct)} s | {min(ct)/single:.2f}-{max(ct)/single:.2f}x "
          f"| {single_cpu:.2f}; {sum(acpu)/3:.2f}; {sum(ccpu)/3:.2f} s |")
print()
print(f"Goals: registry egress <= 1.1x the image — {min(egress):.2f}-{max(egress):.2f}x; "
      f"each node's pull <= 1.3x a single pull — the slowest node {min(worst):.2f}-{max(worst):.2f}x. "
      "Egress is what the machine sent onto the bridge, where the registry is the only sender; "
      "CPU is what a node's molded used during its pull (alone and cluster: the mean of the three).")
PY
)
echo "$table"
doc=$here/docs/cluster.md
python3 - "$doc" "$table" <<'PY'
import sys
doc, table = sys.argv[1], sys.argv[2]
s = open(doc).read()
begin, end = "<!-- pull:begin -->", "<!-- pull:end -->"
block = f"{begin}\n{table}\n{end}"
if begin in s:
    a, b = s.index(begin), s.index(end) + len(end)
    s = s[:a] + block + s[b:]
else:
    s = s.rstrip("\n") + f"\n\n## Three nodes, one image (`bench/cluster.sh pull`)\n\n{block}\n"
open(doc, "w").write(s)
PY
echo "updated $doc"

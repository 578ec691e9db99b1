#!/usr/bin/env bash
# CRI: critest's benchmarks (pod lifecycle, container lifecycle) against
# molde's CRI and containerd 1.6's in the same run, each with the same CNI
# bridge and the same images from a loopback registry. Rewrites the CRI table
# in docs/benchmarks.md.
#
#   bench/cri.sh CRITEST [VERSION]   # critest (v1.26.1 or v1.32.0), built by hand (never part of the repo)
#
# The images critest uses must be in a registry on 127.0.0.1:5000 first: see
# ../shared/critest/README.md (make-images.sh). containerd runs with
# restrict_oom_score_adj = true (root cannot lower oom_score_adj on these hosts).
set -euo pipefail

critest=${1:?usage: bench/cri.sh CRITEST [VERSION] (a critest binary, v1.26.1 or v1.32.0)}
version=${2:-v1.26.1}
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${CRITEST_SHARED:-$here/../shared/critest}
dir=${BENCH_DIR:-/var/tmp/molde-bench-cri}
pods=${PODS:-20}
for tool in containerd python3 curl; do
  command -v "$tool" >/dev/null || { echo "bench/cri.sh needs $tool (deploy/install-deps.sh)" >&2; exit 1; }
done
curl -fs http://127.0.0.1:5000/v2/ >/dev/null || { echo "no registry on 127.0.0.1:5000: see $shared/README.md" >&2; exit 1; }

cargo build --release -p molded -p molde -p molde-shim --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release

cleanup() {
  for p in "$dir"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  sleep 1
  grep -o " $dir/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}
trap cleanup EXIT
cleanup
rm -rf "$dir"
mkdir -p "$dir/net.d" "$dir/out-molde" "$dir/out-containerd" "$dir/out-molde-split"
cp "$shared/10-critest-bridge.conflist" "$dir/net.d/"
cat > "$dir/params.yaml" <<EOF
podsNumber: $pods
podsNumberParallel: 1
containersNumber: $pods
containersNumberParallel: 1
EOF

cat > "$dir/molde.toml" <<EOF
root = "$dir/m/root"
state = "$dir/m/state"
address = "$dir/m/molde.sock"
[cri]
cni_conf_dir = "$dir/net.d"
cni_bin_dirs = ["/usr/lib/cni"]
[registry]
config_path = "$shared/certs.d"
EOF
"$bin/molded" --config "$dir/molde.toml" >"$dir/molded.log" 2>&1 &
echo $! >"$dir/molded.pid"

cat > "$dir/containerd.toml" <<EOF
version = 2
root = "$dir/c/root"
state = "$dir/c/state"
[grpc]
  address = "$dir/c/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$shared/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
EOF
containerd --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
echo $! >"$dir/containerd.pid"
for s in "$dir/m/cri.sock" "$dir/c/containerd.sock"; do
  for _ in $(seq 100); do [ -S "$s" ] && break; sleep 0.1; done
  [ -S "$s" ] || { echo "$s did not appear" >&2; exit 1; }
done

run() { # name endpoint
  "$critest" -runtime-endpoint "unix://$2" -benchmark -benchmarking-params-file "$dir/params.yaml" \
    -benchmarking-output-dir "$dir/out-$1" -ginkgo.no-color \
    -ginkgo.focus "lifecycle of PodSandbox|basic operations on Container" >"$dir/critest-$1.log" 2>&1 \
    || { echo "critest against $1 failed: $dir/critest-$1.log" >&2; tail -20 "$dir/critest-$1.log" >&2; exit 1; }
}
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
# molded releases a stopped pod's network in the background (up to 2 s after
# the stop): waited for before it is stopped, or the addresses and NAT rules
# of the last pods outlive the run (this script removes molded's state).
released() { # state dir
  for _ in $(seq 300); do
    [ -z "$(ls -A "$1/cri/netns" 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  echo "the pods' networks under $1 were not released within 30 s" >&2
}
idle_with=$(rss "$(cat "$dir/molded.pid")")
run containerd "$dir/c/containerd.sock"
run molde "$dir/m/cri.sock"
after=$(rss "$(cat "$dir/molded.pid")")
released "$dir/m/state"
# CRI as a process of its own (the other services in the molded above), under
# the same load: what the CRI service itself holds.
mkdir -p "$dir/s"
at="unix://$dir/m/molde.sock"
"$bin/molded" --address "$dir/s/molde.sock" --service cri \
  --remote content="$at" --remote snapshotter="$at" --remote transfer="$at" --remote runtime="$at" \
  --config <(sed -e "s#$dir/m/#$dir/s/#" -e '/^address/d' "$dir/molde.toml") >"$dir/molded-cri.log" 2>&1 &
echo $! >"$dir/molded-cri.pid"
for _ in $(seq 100); do [ -S "$dir/s/cri.sock" ] && break; sleep 0.1; done
sleep 1
cri_idle=$(rss "$(cat "$dir/molded-cri.pid")")
run molde-split "$dir/s/cri.sock"
cri_after=$(rss "$(cat "$dir/molded-cri.pid")")
released "$dir/s/state"
# The same molded without the CRI service, idle, for what CRI adds.
"$bin/molded" --root "$dir/n/root" --state "$dir/n/state" --address "$dir/n/molde.sock" \
  --service content --service snapshotter --service transfer --service runtime --service builder \
  >"$dir/molded-nocri.log" 2>&1 &
echo $! >"$dir/molded-nocri.pid"
for _ in $(seq 100); do [ -S "$dir/n/molde.sock" ] && break; sleep 0.1; done
sleep 1
idle_without=$(rss "$(cat "$dir/molded-nocri.pid")")

table=$(CRITEST_VERSION=$version python3 - "$dir" "$(nproc)" "$pods" "$idle_without" "$idle_with" "$after" "$cri_idle" "$cri_after" <<'PY'
import json, os, statistics, sys, datetime
d, cores, n = sys.argv[1], sys.argv[2], sys.argv[3]
idle_without, idle_with, after, cri_idle, cri_after = (float(x) for x in sys.argv[4:9])
def medians(who):
    out = {}
    for f in ("pod_benchmark_data.json", "container_benchmark_data.json"):
        r = json.load(open(os.path.join(d, f"out-{who}", f)))
        names = r["operationsNames"]
        for i, name in enumerate(names):
            vals = [p["operationsDurationsNs"][i] for p in r["datapoints"] if len(p["operationsDurationsNs"]) == len(names)]
            out[name] = (statistics.median(vals) / 1e6, min(vals) / 1e6, max(vals) / 1e6)
    return out
m, c = medians("molde"), medians("containerd")
rows = ["CreatePod", "StatusPod", "StopPod", "RemovePod", "CreateContainer", "StartContainer", "StatusContainer", "StopContainer", "RemoveContainer"]
print(f"critest {os.environ['CRITEST_VERSION']} -benchmark, {n} pods and {n} containers one after the other, median (min–max) in ms; {cores} cores; {datetime.date.today()}; containerd 1.6 with runc and a pause image, molde with no pause image; both on the same CNI bridge.")
print()
print("| operation | molde | containerd | containerd / molde |")
print("|---|---|---|---|")
for r in rows:
    if r in m and r in c:
        print(f"| {r} | {m[r][0]:.1f} ({m[r][1]:.1f}–{m[r][2]:.1f}) | {c[r][0]:.1f} ({c[r][1]:.1f}–{c[r][2]:.1f}) | {c[r][0]/m[r][0]:.2f}x |")
pm = m["CreatePod"][0] + m["CreateContainer"][0] + m["StartContainer"][0]
pc = c["CreatePod"][0] + c["CreateContainer"][0] + c["StartContainer"][0]
print()
print(f"Pod + container (CreatePod + CreateContainer + StartContainer medians): molde {pm:.0f} ms, containerd {pc:.0f} ms.")
print(f"molded's RSS: {idle_without:.1f} MB idle without the CRI service, {idle_with:.1f} MB idle with it (CRI's own: {idle_with - idle_without:.1f} MB), {after:.1f} MB after the benchmarks (every service's growth over {n} pods and containers, images pulled).")
print(f"CRI as a process of its own (`molded --service cri`, the other services in another molded), under the same benchmark: {cri_idle:.1f} MB idle, {cri_after:.1f} MB after.")
print("Goals: CreatePod ≤ 50 ms, CreateContainer ≤ 8 ms, StartContainer ≤ 10 ms, StopPod ≤ 40 ms, pod + container ≤ 120 ms, CRI's overhead on molded's RSS ≤ 10 MB.")
PY
)
echo "$table"
doc=$here/docs/benchmarks.md
python3 - "$doc" "$table" <<'PY'
import sys
doc, table = sys.argv[1], sys.argv[2]
s = open(doc).read()
begin, end = "<!-- cri:begin -->", "<!-- cri:end -->"
block = f"{begin}\n{table}\n{end}"
if begin in s:
    a, b = s.index(begin), s.index(end) + len(end)
    s = s[:a] + block + s[b:]
else:
    s = s.rstrip("\n") + f"\n\n## CRI (`bench/cri.sh`)\n\n{block}\n"
open(doc, "w").write(s)
PY
echo "updated $doc"

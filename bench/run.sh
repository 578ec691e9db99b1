#!/usr/bin/env bash
# Container start, end to end: `molde run --rm --network none busybox true`
# (like ctr run and runc run, no CNI network; a second row adds molde's default
# bridge network) vs containerd's
# `ctr run --rm` (containerd + runc) and raw `runc run` on a prepared bundle, in
# the same run; plus molde-shim RSS, molded idle RSS and containerd's runc shim
# RSS. Rewrites the table in docs/benchmarks.md.
#
#   bench/run.sh            # 20 runs each
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-20}
dir=${BENCH_DIR:-/var/tmp/molde-bench-run}
for tool in containerd ctr runc hyperfine python3; do
  command -v "$tool" >/dev/null || { echo "bench/run.sh needs $tool (deploy/install-deps.sh)" >&2; exit 1; }
done
cargo build --release -p molded -p molde -p molde-shim --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release

pkill -f "molded --root $dir/molde-root" 2>/dev/null || true
pkill -f "containerd --config $dir/containerd.toml" 2>/dev/null || true
sleep 0.3
# Mounts an earlier run left (a container's rootfs, a netns pin), deepest first.
awk -v d="$dir" '$2 ~ "^"d {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
rm -rf "$dir"
mkdir -p "$dir"
python3 "$here/deploy/make-base-image.py" "$dir/busybox.tar" localhost/molde/busybox:latest >/dev/null

# molde
"$bin/molded" --root "$dir/molde-root" --state "$dir/molde-state" --address "$dir/molde.sock" >/dev/null 2>"$dir/molded.log" &
for _ in $(seq 100); do [ -S "$dir/molde.sock" ] && break; sleep 0.05; done
molde() { "$bin/molde" --address "$dir/molde.sock" "$@"; }
molde load -q -i "$dir/busybox.tar" >/dev/null

# containerd + runc
cat > "$dir/containerd.toml" <<TOML
version = 2
root = "$dir/ctrd-root"
state = "$dir/ctrd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/ctrd.sock"
TOML
containerd --config "$dir/containerd.toml" >/dev/null 2>"$dir/containerd.log" &
for _ in $(seq 100); do [ -S "$dir/ctrd.sock" ] && break; sleep 0.05; done
sleep 0.3
ctr --address "$dir/ctrd.sock" images import "$dir/busybox.tar" >/dev/null

# raw runc: a bundle whose rootfs is the unpacked layer
mkdir -p "$dir/bundle/rootfs"
python3 - "$dir/busybox.tar" "$dir/bundle/rootfs" <<'PY'
import sys, tarfile, json, gzip, io
t = tarfile.open(sys.argv[1])
idx = json.load(t.extractfile("index.json"))
m = json.load(t.extractfile("blobs/sha256/" + idx["manifests"][0]["digest"][7:]))
layer = t.extractfile("blobs/sha256/" + m["layers"][0]["digest"][7:]).read()
tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))).extractall(sys.argv[2])
PY
(cd "$dir/bundle" && runc spec && python3 - <<'PY'
import json
s = json.load(open("config.json")); s["process"]["terminal"] = False; s["process"]["args"] = ["true"]
json.dump(s, open("config.json", "w"))
PY
)
i=0
hyperfine --runs "$runs" --warmup 2 --export-json "$dir/result.json" --style basic \
  -n molde "$bin/molde --address $dir/molde.sock run --rm --network none localhost/molde/busybox true" \
  -n "molde, bridge network" "$bin/molde --address $dir/molde.sock run --rm localhost/molde/busybox true" \
  -n "containerd (ctr run --rm, runc)" "ctr --address $dir/ctrd.sock run --rm localhost/molde/busybox:latest c\$RANDOM\$RANDOM true" \
  -n "runc run (raw)" "runc --root $dir/runc-state run --bundle $dir/bundle r\$RANDOM\$RANDOM >/dev/null" >&2

# Memory: a sleeping container under each shim, and the idle daemons.
molde run -d --network none --name sleeper localhost/molde/busybox sleep 30 >/dev/null
# The shim gives back its start-up memory once the container has run a second.
sleep 3
shim_pid=$(pgrep -f "molde-shim start --id default-sleeper" | head -1)
shim_rss=$(awk '/VmRSS/ {print $2}' /proc/$shim_pid/status)
sleeper=sleeper-$$
ctr --address "$dir/ctrd.sock" run -d localhost/molde/busybox:latest "$sleeper" sleep 30 >/dev/null
sleep 0.5
ctr_shim_pid=$(pgrep -f "containerd-shim-runc-v2 -namespace default -id $sleeper" | head -1)
ctr_shim_rss=$(awk '/VmRSS/ {print $2}' /proc/$ctr_shim_pid/status)
molded_rss=$(awk '/VmRSS/ {print $2}' /proc/$(pgrep -f "molded --root $dir/molde-root")/status)
ctrd_rss=$(awk '/VmRSS/ {print $2}' /proc/$(pgrep -f "containerd --config $dir/containerd.toml")/status)
ctr --address "$dir/ctrd.sock" task kill -s 9 "$sleeper" >/dev/null 2>&1 || true
sleep 0.3
ctr --address "$dir/ctrd.sock" task rm "$sleeper" >/dev/null 2>&1 || true
molde rm -f sleeper >/dev/null 2>&1 || true

# 50 containers started at once, each detached.
now() { date +%s%N; }
# (`wait` on these jobs only: the daemons are background jobs of this script too.)
t=$(now)
jobs_=()
for i in $(seq 50); do molde run -d --network none --name many$i localhost/molde/busybox sleep 60 >/dev/null & jobs_+=($!); done
wait "${jobs_[@]}"
molde_50=$(( ($(now) - t) / 1000000 ))
running=$(molde ps -q | grep -c many || true)
t=$(now)
jobs_=()
for i in $(seq 50); do ctr --address "$dir/ctrd.sock" run -d localhost/molde/busybox:latest many$i-$$ sleep 60 >/dev/null & jobs_+=($!); done
wait "${jobs_[@]}"
ctr_50=$(( ($(now) - t) / 1000000 ))
jobs_=()
for i in $(seq 50); do molde rm -f many$i >/dev/null 2>&1 & jobs_+=($!); done
for i in $(seq 50); do
  (ctr --address "$dir/ctrd.sock" task rm -f many$i-$$ && ctr --address "$dir/ctrd.sock" container rm many$i-$$) >/dev/null 2>&1 & jobs_+=($!)
done
wait "${jobs_[@]}"

table=$(python3 - "$dir/result.json" "$shim_rss" "$ctr_shim_rss" "$molded_rss" "$ctrd_rss" "$(nproc)" "$molde_50" "$ctr_50" "$running" <<'PY'
import json, sys, statistics, datetime
r = {x["command"]: statistics.median(x["times"]) for x in json.load(open(sys.argv[1]))["results"]}
runs = len(json.load(open(sys.argv[1]))["results"][0]["times"])
m = r["molde"]; c = r["containerd (ctr run --rm, runc)"]; raw = r["runc run (raw)"]
print(f"busybox `true`, median of {runs} runs; {sys.argv[6]} cores; {datetime.date.today()}.")
print()
print("| start + run + remove | median | vs molde |")
print("|---|---|---|")
for k, v in r.items():
    print(f"| {k} | {v*1000:.1f} ms | {v/m:.2f}x |")
print()
b = r["molde, bridge network"]
print(f"molde is **{m/raw:.2f}x** the raw runtime (goal ≤ 1.5x) and **{c/m:.1f}x** faster than ctr (goal ≥ 2.5x).")
print(f"On its default bridge network molde takes **{b/m:.2f}x** its time without a network (goal ≤ 1.5x): molded attaches the")
print("container itself (veth over netlink, host-local's address store); the CNI plugins run only when ports are published. ctr and runc rows have no network.")
print()
print("| memory (RSS) | molde | containerd |")
print("|---|---|---|")
print(f"| shim of a running container | {int(sys.argv[2])/1024:.1f} MB | {int(sys.argv[3])/1024:.1f} MB |")
print(f"| daemon, idle | {int(sys.argv[4])/1024:.1f} MB | {int(sys.argv[5])/1024:.1f} MB |")
print()
print(f"50 containers started at once (detached, `sleep 60`): molde {int(sys.argv[7])} ms ({sys.argv[9]} running after), containerd {int(sys.argv[8])} ms.")
PY
)
echo "$table"
pkill -f "molded --root $dir/molde-root" || true
pkill -f "containerd --config $dir/containerd.toml" || true
# Shims of containerd's containers outlive it; none of this run's may stay.
pkill -9 -f "containerd-shim-runc-v2 .*-address $dir/ctrd.sock" || true
doc=$here/docs/benchmarks.md
begin='<!-- run:begin -->'
end='<!-- run:end -->'
if grep -q "$begin" "$doc"; then
  awk -v b="$begin" -v e="$end" -v t="$table" '
    $0 == b { print; print t; skip = 1; next }
    $0 == e { skip = 0 }
    !skip' "$doc" > "$doc.tmp" && mv "$doc.tmp" "$doc"
  echo "updated $doc" >&2
fi

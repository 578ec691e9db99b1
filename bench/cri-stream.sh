#!/usr/bin/env bash
# CRI streaming: the latency of ExecSync and of a streamed exec (`echo` over
# SPDY/3.1 to the URL Exec returns), and critest's exec/attach/port-forward
# specs' times, against molde's CRI and containerd 1.6's in the same run.
# Rewrites the streaming table in docs/benchmarks.md.
#
#   bench/cri-stream.sh CRITEST [ROUNDS]   # critest v1.26.1, built by hand
#
# Needs the images of ../shared/critest/README.md in a registry on
# 127.0.0.1:5000 (make-images.sh).
set -euo pipefail

critest=${1:?usage: bench/cri-stream.sh CRITEST [ROUNDS]}
rounds=${2:-50}
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${CRITEST_SHARED:-$here/../shared/critest}
dir=${BENCH_DIR:-/var/tmp/molde-bench-cri-stream}
image=registry.k8s.io/e2e-test-images/busybox:1.29-2
for tool in containerd python3 curl; do
  command -v "$tool" >/dev/null || { echo "bench/cri-stream.sh needs $tool (deploy/install-deps.sh)" >&2; exit 1; }
done
curl -fs http://127.0.0.1:5000/v2/ >/dev/null || { echo "no registry on 127.0.0.1:5000: see $shared/README.md" >&2; exit 1; }

# Two builds: one with the test crate would unify features differently and
# rebuild molded for every other bench.
cargo build --release -p molded -p molde-shim --manifest-path "$here/Cargo.toml" >&2
cargo build --release -p molde-tests --bin cri-latency --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release

cleanup() {
  # molded releases stopped pods' networks in the background (up to 2 s
  # after the stop): waited for, or their addresses and NAT rules outlive
  # the run.
  for _ in $(seq 300); do
    [ -z "$(ls -A "$dir/m/state/cri/netns" 2>/dev/null)" ] && break
    sleep 0.1
  done
  for p in "$dir"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  sleep 1
  grep -o " $dir/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}
trap cleanup EXIT
cleanup
rm -rf "$dir"
mkdir -p "$dir/net.d"
cp "$shared/10-critest-bridge.conflist" "$dir/net.d/"

cat > "$dir/molde.toml" <<EOT
root = "$dir/m/root"
state = "$dir/m/state"
address = "$dir/m/molde.sock"
[cri]
cni_conf_dir = "$dir/net.d"
cni_bin_dirs = ["/usr/lib/cni"]
[registry]
config_path = "$shared/certs.d"
EOT
"$bin/molded" --config "$dir/molde.toml" >"$dir/molded.log" 2>&1 &
echo $! >"$dir/molded.pid"

cat > "$dir/containerd.toml" <<EOT
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
EOT
containerd --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
echo $! >"$dir/containerd.pid"
for s in "$dir/m/cri.sock" "$dir/c/containerd.sock"; do
  for _ in $(seq 100); do [ -S "$s" ] && break; sleep 0.1; done
  [ -S "$s" ] || { echo "$s did not appear" >&2; exit 1; }
done

for who in containerd:"$dir/c/containerd.sock" molde:"$dir/m/cri.sock"; do
  name=${who%%:*} sock=${who#*:}
  "$bin/cri-latency" "unix://$sock" "$image" "$rounds" >"$dir/latency-$name.json"
  "$critest" -runtime-endpoint "unix://$sock" -ginkgo.no-color -ginkgo.v \
    -ginkgo.focus "runtime should support (exec|attach|portforward)" >"$dir/critest-$name.log" 2>&1 \
    || { echo "critest against $name failed: $dir/critest-$name.log" >&2; tail -20 "$dir/critest-$name.log" >&2; exit 1; }
done

table=$(python3 - "$dir" "$(nproc)" "$rounds" <<'PY'
import json, re, statistics, sys, datetime
d, cores, n = sys.argv[1], sys.argv[2], sys.argv[3]
def lat(who):
    return json.load(open(f"{d}/latency-{who}.json"))
def specs(who):
    # ginkgo -v: a spec's name line, its steps, then "• [0.532 seconds]".
    out, name = {}, None
    for line in open(f"{d}/critest-{who}.log"):
        if line.startswith("[k8s.io] "):
            name = re.sub(r"\s*\[Conformance\]\s*$", "", line.split("runtime should support", 1)[-1].strip())
            name = re.sub(r"^.*runtime should support ", "", name)
        m = re.match(r"• \[([0-9.]+) seconds\]", line)
        if m and name:
            out[name] = float(m.group(1)) * 1e3
            name = None
    return out
m, c = lat("molde"), lat("containerd")
print(f"{n} rounds each after 3 warm-up rounds, median (min–max) in ms; {cores} cores; {datetime.date.today()}; a busybox container in a host-network pod; containerd 1.6 with runc.")
print()
print("| operation | molde | containerd | containerd / molde |")
print("|---|---|---|---|")
for key, label in (("exec_sync_ms", "ExecSync `echo hi`"), ("exec_stream_ms", "Exec + SPDY stream `echo hi`")):
    a, b = m[key], c[key]
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"| {label} | {ma:.1f} ({min(a):.1f}–{max(a):.1f}) | {mb:.1f} ({min(b):.1f}–{max(b):.1f}) | {mb/ma:.2f}x |")
sm, sc = specs("molde"), specs("containerd")
for name in sorted(set(sm) & set(sc)):
    print(f"| critest spec \"{name}\" (whole spec) | {sm[name]:.0f} | {sc[name]:.0f} | {sc[name]/sm[name]:.2f}x |")
print()
print("Goal: each faster than containerd.")
PY
)
echo "$table"
doc=$here/docs/benchmarks.md
python3 - "$doc" "$table" <<'PY'
import sys
doc, table = sys.argv[1], sys.argv[2]
s = open(doc).read()
begin, end = "<!-- cri-stream:begin -->", "<!-- cri-stream:end -->"
block = f"{begin}\n{table}\n{end}"
if begin in s:
    a, b = s.index(begin), s.index(end) + len(end)
    s = s[:a] + block + s[b:]
else:
    s = s.rstrip("\n") + f"\n\n## CRI streaming (`bench/cri-stream.sh`)\n\n{block}\n"
open(doc, "w").write(s)
PY
echo "updated $doc"

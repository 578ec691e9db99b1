#!/usr/bin/env bash
# Pull + unpack of a 5-layer image (~150 MB compressed, ~450 MB unpacked) from a
# local registry: molde vs containerd's `ctr images pull` (Debian containerd +
# runc), with two floors measured in the same run: fetching the blobs only
# (curl, in parallel), and gunzip + untar of the same layers one after the
# other. Also 20 pulls of the image at once into one molded (what a node does
# when a deployment starts many pods): goal at most 1.5x one pull. Rewrites
# the table in docs/benchmarks.md.
#
#   bench/pull.sh                  # 5 runs each
#   RUNS=3 bench/pull.sh
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-5}
dir=${BENCH_DIR:-/var/tmp/molde-bench-pull}
for tool in docker-registry skopeo containerd ctr hyperfine curl python3; do
  command -v "$tool" >/dev/null || { echo "bench/pull.sh needs $tool (deploy/install-deps.sh)" >&2; exit 1; }
done

cargo build --release -p molded -p molde --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release

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
pids=($!)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  umount -R "$dir/ctrd-root" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "http://$host/v2/" >/dev/null && break; sleep 0.05; done
skopeo copy --quiet --dest-tls-verify=false "oci:$dir/image:latest" "docker://$host/bench/image:1"
ref=$host/bench/image:1

# containerd with its own root and socket, CRI off.
cat > "$dir/containerd.toml" <<TOML
version = 2
root = "$dir/ctrd-root"
state = "$dir/ctrd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/ctrd.sock"
TOML
molde_sock=$dir/molde.sock
export ref dir bin molde_sock

layers=$(python3 -c "import json,sys; m=json.load(open('$dir/image/blobs/sha256/'+json.load(open('$dir/image/index.json'))['manifests'][0]['digest'][7:])); print(' '.join(l['digest'] for l in m['layers']))")
export layers host

reset_molde='pkill -f "molded --root $dir/molde-root" || true; sleep 0.2; umount -R $dir/molde-root 2>/dev/null; rm -rf $dir/molde-root $dir/molde-state; ('"$bin"'/molded --root $dir/molde-root --state $dir/molde-state --address $molde_sock 2>$dir/molded.log &); for i in $(seq 100); do [ -S $molde_sock ] && break; sleep 0.05; done; sync'
reset_ctrd='pkill -f "containerd --config $dir/containerd.toml" || true; sleep 0.3; umount -R $dir/ctrd-root 2>/dev/null; rm -rf $dir/ctrd-root $dir/ctrd-state; (containerd --config $dir/containerd.toml 2>$dir/containerd.log &); for i in $(seq 100); do [ -S $dir/ctrd.sock ] && break; sleep 0.05; done; sleep 0.3; sync'
fetch='for l in $layers; do curl -sf -o /dev/null http://$host/v2/bench/image/blobs/$l & done; wait'
# Every one of the 20 must succeed: a failure fails the run.
many='ps=; for i in $(seq 20); do '"$bin"'/molde --address $molde_sock pull -q $ref >/dev/null & ps="$ps $!"; done; for p in $ps; do wait $p || exit 1; done'
ctrd_many='ps=; for i in $(seq 20); do ctr --address $dir/ctrd.sock images pull --plain-http $ref >/dev/null & ps="$ps $!"; done; for p in $ps; do wait $p || exit 1; done'
untar='rm -rf $dir/untar; mkdir -p $dir/untar; for l in $layers; do gzip -dc $dir/image/blobs/sha256/${l#sha256:} | tar -x -C $dir/untar; done; sync'

hyperfine --runs "$runs" --export-json "$dir/result.json" --style basic \
  -n molde --prepare "$reset_molde" "$bin/molde --address $molde_sock pull -q $ref" \
  -n containerd --prepare "$reset_ctrd" "ctr --address $dir/ctrd.sock images pull --plain-http $ref >/dev/null" \
  -n "molde, 20 pulls at once" --prepare "$reset_molde" "$many" \
  -n "containerd, 20 pulls at once" --prepare "$reset_ctrd" "$ctrd_many" \
  -n "fetch only (curl, parallel)" --prepare true "$fetch" \
  -n "gunzip+untar (sequential)" --prepare "rm -rf $dir/untar; sync" "$untar" >&2
pkill -f "molded --root $dir/molde-root" || true
pkill -f "containerd --config $dir/containerd.toml" || true

compressed=$(python3 -c "import json; m=json.load(open('$dir/image/blobs/sha256/'+json.load(open('$dir/image/index.json'))['manifests'][0]['digest'][7:])); print(round(sum(l['size'] for l in m['layers'])/1e6))")
table=$(python3 - "$dir/result.json" "$compressed" "$(nproc)" <<'PY'
import json, sys, statistics, datetime
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
med = {k: statistics.median(v["times"]) for k, v in r.items()}
m, c = med["molde"], med["containerd"]
print(f"Image: 5 gzip layers of real files from /usr, {sys.argv[2]} MB compressed, ~470 MB unpacked; median of {len(r['molde']['times'])} runs; {sys.argv[3]} cores; {datetime.date.today()}.")
print()
print("| pull + unpack | median | spread (min–max) | vs molde |")
print("|---|---|---|---|")
for k in ["molde", "containerd", "molde, 20 pulls at once", "containerd, 20 pulls at once",
          "fetch only (curl, parallel)", "gunzip+untar (sequential)"]:
    t = r[k]["times"]
    print(f"| {k} | {med[k]:.2f} s | {min(t):.2f}–{max(t):.2f} s | {med[k]/m:.2f}x |")
print()
print(f"molde is **{c/m:.1f}x** faster than containerd (goal: 4x, and at most 1.5 s).")
n = med["molde, 20 pulls at once"]
print(f"20 concurrent pulls take **{n/m:.2f}x** one pull (goal: at most 1.5x); "
      f"containerd's take {med['containerd, 20 pulls at once']/c:.2f}x its one.")
PY
)
echo "$table"
doc=$here/docs/benchmarks.md
begin='<!-- pull:begin -->'
end='<!-- pull:end -->'
if grep -q "$begin" "$doc"; then
  awk -v b="$begin" -v e="$end" -v t="$table" '
    $0 == b { print; print t; skip = 1; next }
    $0 == e { skip = 0 }
    !skip' "$doc" > "$doc.tmp" && mv "$doc.tmp" "$doc"
  echo "updated $doc" >&2
  # README quotes the ratio: kept in step.
  "$(dirname "$0")/sync-readme.sh" >&2
fi

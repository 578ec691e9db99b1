#!/usr/bin/env bash
# Building examples/hello (two stages, an ARG, a RUN that writes 500 files, a
# COPY of 50 files, a COPY --from), cold (--no-cache, base image present) and
# fully cached: molde vs buildah --layers (runc, no network), in the same run.
# Rewrites the build table in docs/benchmarks.md.
#
#   bench/build.sh          # 5 runs each
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-5}
dir=${BENCH_DIR:-/var/tmp/molde-bench-build}
for tool in buildah hyperfine python3; do
  command -v "$tool" >/dev/null || { echo "bench/build.sh needs $tool (deploy/install-deps.sh)" >&2; exit 1; }
done
cargo build --release -p molded -p molde -p molde-shim --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release

pkill -f "molded --root $dir/molde-root" 2>/dev/null || true
sleep 0.3
awk -v d="$dir" '$2 ~ "^"d {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
rm -rf "$dir"
mkdir -p "$dir"
python3 "$here/deploy/make-base-image.py" "$dir/busybox.tar" localhost/molde/busybox:latest >/dev/null
ctx=$here/examples/hello

"$bin/molded" --root "$dir/molde-root" --state "$dir/molde-state" --address "$dir/molde.sock" >/dev/null 2>"$dir/molded.log" &
for _ in $(seq 100); do [ -S "$dir/molde.sock" ] && break; sleep 0.05; done
molde() { "$bin/molde" --address "$dir/molde.sock" "$@"; }
molde load -q -i "$dir/busybox.tar" >/dev/null

buildah="buildah --root $dir/buildah-root --runroot $dir/buildah-runroot --storage-driver overlay"
id=$($buildah pull -q "oci-archive:$dir/busybox.tar" | tail -1)
$buildah tag "$id" localhost/molde/busybox:latest
bud="$buildah bud --layers --pull=false --runtime runc --network none -q -t localhost/bench/hello"

# Both must build what the Dockerfile says before they are timed.
molde build -q -t localhost/bench/hello "$ctx" >/dev/null
want=$(molde run --rm --network none localhost/bench/hello)
$bud "$ctx" >/dev/null
echo "molde's image says: $want" >&2

hyperfine --runs "$runs" --warmup 1 --export-json "$dir/result.json" --style basic \
  -n "molde, cold" "$bin/molde --address $dir/molde.sock build -q --no-cache -t localhost/bench/hello $ctx" \
  -n "buildah, cold" "$bud --no-cache $ctx" \
  -n "molde, cached" "$bin/molde --address $dir/molde.sock build -q -t localhost/bench/hello $ctx" \
  -n "buildah, cached" "$bud $ctx" >&2

table=$(python3 - "$dir/result.json" "$(nproc)" <<'PY'
import json, sys, statistics, datetime
res = json.load(open(sys.argv[1]))["results"]
r = {x["command"]: statistics.median(x["times"]) for x in res}
print(f"examples/hello, median of {len(res[0]['times'])} runs; {sys.argv[2]} cores; {datetime.date.today()}; buildah with --layers, runc, no network; molde's RUN steps on its bridge network.")
print()
print("| build | molde | buildah | buildah / molde |")
print("|---|---|---|---|")
for kind in ("cold", "cached"):
    m, b = r[f"molde, {kind}"], r[f"buildah, {kind}"]
    print(f"| {kind} | {m*1000:.0f} ms | {b*1000:.0f} ms | {b/m:.1f}x |")
print()
print(f"Goals: cold ≤ 1.0 s (molde {r['molde, cold']:.2f} s), fully cached ≤ 0.15 s (molde {r['molde, cached']:.3f} s).")
PY
)
echo "$table"
pkill -f "molded --root $dir/molde-root" || true
doc=$here/docs/benchmarks.md
begin='<!-- build:begin -->'
end='<!-- build:end -->'
if ! grep -q "$begin" "$doc"; then
  printf '\n## Build (`bench/build.sh`)\n\n%s\n%s\n' "$begin" "$end" >> "$doc"
fi
awk -v b="$begin" -v e="$end" -v t="$table" '
  $0 == b { print; print t; skip = 1; next }
  $0 == e { skip = 0 }
  !skip' "$doc" > "$doc.tmp" && mv "$doc.tmp" "$doc"
echo "updated $doc" >&2

#!/usr/bin/env bash
# Ingest and read of a 1 GiB blob through molded's gRPC content stream, next to
# the disk floor (dd of the same file) measured in the same run.
#
#   bench/content-ingest.sh            # 5 rounds, writes the table into docs/benchmarks.md
#   ROUNDS=3 SIZE_MIB=256 bench/content-ingest.sh
#
# Ingest floor: dd copying the (page-cached) source file to a new file with
# conv=fsync; molde's ingest also ends in an fsync before the blob is renamed
# into place. Read floor: dd of the stored blob to /dev/null. Cold reads drop the
# page cache first (when /proc/sys/vm/drop_caches is writable); warm reads don't.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
rounds=${ROUNDS:-5}
size_mib=${SIZE_MIB:-1024}
dir=${BENCH_DIR:-/var/tmp/molde-bench}

cargo build --release -p molded -p molde --manifest-path "$here/Cargo.toml" >&2
target=${CARGO_TARGET_DIR:-$here/target}/release
molded=$target/molded
molde=$target/molde

rm -rf "$dir"
mkdir -p "$dir"
sock=$dir/molde.sock
head -c $((size_mib << 20)) /dev/urandom > "$dir/blob.bin"
"$molded" --root "$dir/root" --state "$dir/state" --address "$sock" 2> "$dir/molded.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
export MOLDE_ADDRESS=$sock

now() { date +%s%N; }
secs() { awk -v ns="$1" 'BEGIN { printf "%.3f", ns / 1e9 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
mbps() { awk -v s="$1" -v m="$size_mib" 'BEGIN { printf "%.0f", m * 1.048576 / s }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", 100 * b / a }'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

digest=sha256:$(sha256sum "$dir/blob.bin" | cut -d' ' -f1)
ingest=() dd_write=() get_cold=() dd_cold=() get_warm=() dd_warm=()
for i in $(seq "$rounds"); do
  "$molde" content rm "$digest" >/dev/null 2>&1 || true
  "$molde" gc >/dev/null
  cat "$dir/blob.bin" > /dev/null
  t=$(now); "$molde" content ingest "bench-$i" --file "$dir/blob.bin" -l containerd.io/gc.root=bench >/dev/null 2>&1; ingest+=($(( $(now) - t )))
  rm -f "$dir/copy.bin"
  t=$(now); dd if="$dir/blob.bin" of="$dir/copy.bin" bs=1M conv=fsync status=none; dd_write+=($(( $(now) - t )))
  rm -f "$dir/copy.bin"
  stored=$dir/root/content/blobs/sha256/${digest#sha256:}
  drop_caches
  t=$(now); "$molde" content get "$digest" > /dev/null; get_cold+=($(( $(now) - t )))
  drop_caches
  t=$(now); dd if="$stored" of=/dev/null bs=1M status=none; dd_cold+=($(( $(now) - t )))
  t=$(now); "$molde" content get "$digest" > /dev/null; get_warm+=($(( $(now) - t )))
  t=$(now); dd if="$stored" of=/dev/null bs=1M status=none; dd_warm+=($(( $(now) - t )))
done

row() { # name molde-samples floor-samples
  local m f
  m=$(secs "$(printf '%s\n' $2 | median)")
  f=$(secs "$(printf '%s\n' $3 | median)")
  echo "| $1 | $m s | $(mbps "$m") MB/s | $f s | $(mbps "$f") MB/s | $(pct "$m" "$f") |"
}

table=$(cat <<TABLE
Blob: ${size_mib} MiB of random bytes; median of ${rounds} rounds; $(nproc) cores; $(date -u +%Y-%m-%d).

| operation | molde | molde MB/s | dd floor | floor MB/s | molde / floor |
|---|---|---|---|---|---|
$(row "ingest (gRPC Write stream, verify, fsync, rename)" "${ingest[*]}" "${dd_write[*]}")
$(row "read, cold cache (gRPC Read stream to stdout)" "${get_cold[*]}" "${dd_cold[*]}")
$(row "read, warm cache" "${get_warm[*]}" "${dd_warm[*]}")
TABLE
)
echo "$table"

doc=$here/docs/benchmarks.md
begin='<!-- content-ingest:begin -->'
end='<!-- content-ingest:end -->'
if [ -f "$doc" ] && grep -q "$begin" "$doc"; then
  awk -v b="$begin" -v e="$end" -v t="$table" '
    $0 == b { print; print t; skip = 1; next }
    $0 == e { skip = 0 }
    !skip' "$doc" > "$doc.tmp" && mv "$doc.tmp" "$doc"
  echo "updated $doc" >&2
fi

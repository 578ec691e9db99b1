#!/usr/bin/env bash
# Keeps README's speed claim in step with docs/benchmarks.md: the pull ratio
# README quotes is the one the latest bench/pull.sh run wrote there
# ("molde is **N.Nx** faster than containerd"). bench/pull.sh runs it;
# tests/layout.rs checks the two agree.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ratio=$(grep -o 'molde is \*\*[0-9.]*x\*\* faster than containerd' "$here/docs/benchmarks.md" | head -1 | grep -o '[0-9.]*x')
[ -n "$ratio" ] || { echo "sync-readme.sh: no pull ratio in docs/benchmarks.md" >&2; exit 1; }
sed -i -E "s/[0-9.]+x faster than containerd in the latest run here/${ratio} faster than containerd in the latest run here/" "$here/README.md"
echo "README: pull ${ratio} faster than containerd"

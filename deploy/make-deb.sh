#!/usr/bin/env bash
# Makes the Debian package `molde` with cargo-deb: molded, molde and
# molde-shim in /usr/bin, molded.service enabled and started on install,
# /etc/molde/config.toml as a conffile (the example: every default as a
# comment), the CRI's CNI conflist in /usr/share/molde/cni, manual pages
# (molde(1) and one per command, molded(8)) and bash/zsh/fish completions.
#
#   deploy/make-deb.sh [--profile PROFILE] [--no-build] [OUTDIR]
#
# PROFILE is a cargo profile (release by default; the tests use dev, whose
# binaries cargo-deb strips); --no-build packages the binaries the profile
# last built. The package goes to OUTDIR (default
# $CARGO_TARGET_DIR/debian); its path is printed last. Needs cargo-deb
# (`cargo install cargo-deb --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?--profile needs a name}; shift 2 ;;
    --no-build) build=""; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
target=${CARGO_TARGET_DIR:-$PWD/target}
out=${1:-$target/debian}
cargo_deb=$(command -v cargo-deb || echo /var/cache/molde/tools/bin/cargo-deb)
[ -x "$cargo_deb" ] || { echo "make-deb.sh needs cargo-deb: cargo install cargo-deb --locked" >&2; exit 1; }
# The whole workspace, as the tests build it: one set of features, one build.
[ -z "$build" ] || cargo build --locked --profile "$profile" --workspace
dir=$profile
[ "$profile" = dev ] && dir=debug
bin=$target/$dir
for b in molded molde molde-shim; do
  [ -x "$bin/$b" ] || { echo "make-deb.sh: $bin/$b is missing" >&2; exit 1; }
done

# What the package carries that is made, not kept in the repository.
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/units" "$assets/scripts" "$assets/man" "$assets/completions"
for u in molded.service molded@.service; do
  sed 's#/usr/local/bin/#/usr/bin/#g' "deploy/$u" >"$assets/units/$u"
done
"$bin/molde" manpages "$assets/man"
"$bin/molded" manpages "$assets/man"
gzip -9n "$assets"/man/*
"$bin/molde" completion bash >"$assets/completions/molde"
"$bin/molde" completion zsh >"$assets/completions/_molde"
"$bin/molde" completion fish >"$assets/completions/molde.fish"

mkdir -p "$out"
# cargo-deb reads target/release/* from the profile's directory.
"$cargo_deb" -p molded --no-build --profile "$profile" --fast -o "$out" -q >&2
ls -t "$out"/molde_*.deb | head -1

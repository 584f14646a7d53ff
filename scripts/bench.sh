#!/usr/bin/env bash
# Every benchmark figure the issues name, written into docs/BENCHMARKS.md (each bench replaces its
# own marked section). Figures are ratios against a floor measured in the same run: this machine
# is noisy, absolute times drift.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*"; }

step "release build: extension, floor extension, bench harness"
cargo build --release -p lambdawatch-extension -p lambdawatch-bench
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

step "extension: whole process (init overhead, post-runtime time, size, RSS)"
"$target_dir/release/lambdawatch-bench" --out docs/BENCHMARKS.md "$@"

for pkg in lambdawatch-extension lambdawatch-collector; do
  if compgen -G "${pkg#lambdawatch-}/benches/*.rs" >/dev/null; then
    step "$pkg: criterion benches"
    cargo bench -p "$pkg"
  fi
done

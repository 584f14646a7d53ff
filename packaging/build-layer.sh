#!/usr/bin/env bash
# Builds the lambdawatch Lambda layer: lambdawatch-extension in release, static musl, for x86_64
# and arm64, each zipped as `extensions/lambdawatch` (Lambda starts every executable in
# /opt/extensions at INIT; a layer zip is unpacked into /opt).
#
#   packaging/build-layer.sh [x86_64|arm64 ...]     default: both
#
# Writes target/layer/lambdawatch-extension-{x86_64,arm64}.zip (+ .sha256) in the repository,
# prints the binary and zip sizes, and fails if a zip exceeds 2 MB (2,000,000 bytes) or a binary
# is not a static executable for its architecture. Tools are installed on first use (see
# packaging/lib.sh): the Rust musl targets via rustup, cargo-zigbuild and zig via PyPI.
# Zips are reproducible: fixed timestamps, fixed modes, one entry order.
set -euo pipefail
LW_NAME=build-layer.sh
# shellcheck source=packaging/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MAX_ZIP_BYTES=2000000
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(x86_64 arm64)
for a in "${archs[@]}"; do lw_target "$a" >/dev/null; done

out_dir="$LW_ROOT/target/layer"
mkdir -p "$out_dir"
lw_ensure_targets "${archs[@]}"
lw_ensure_zigbuild

for arch in "${archs[@]}"; do
  bin="$(lw_build lambdawatch-extension lambdawatch-extension "$arch")"
  lw_check_static_elf "$bin" "$arch"
  zip="$out_dir/lambdawatch-extension-$arch.zip"
  python3 - "$bin" "$zip.partial" <<'PY' || lw_die "zipping $bin failed"
import sys, zipfile
src, dst = sys.argv[1:3]
# Directory entry first, then the executable; 1980-01-01 timestamps and fixed modes so the same
# binary always gives the same zip (and the same layer CodeSha256).
with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    d = zipfile.ZipInfo("extensions/", date_time=(1980, 1, 1, 0, 0, 0))
    d.external_attr = (0o40755 << 16) | 0x10
    d.create_system = 3
    z.writestr(d, b"")
    f = zipfile.ZipInfo("extensions/lambdawatch", date_time=(1980, 1, 1, 0, 0, 0))
    f.external_attr = 0o100755 << 16
    f.create_system = 3
    f.compress_type = zipfile.ZIP_DEFLATED
    with open(src, "rb") as fh:
        z.writestr(f, fh.read(), compresslevel=9)
PY
  mv "$zip.partial" "$zip"
  (cd "$out_dir" && sha256sum "$(basename "$zip")" > "$(basename "$zip").sha256")
  bin_size="$(lw_size "$bin")"
  zip_size="$(lw_size "$zip")"
  lw_say "$arch: binary $bin_size bytes, zip $zip_size bytes -> ${zip#"$LW_ROOT"/}"
  [ "$zip_size" -le "$MAX_ZIP_BYTES" ] || lw_die "$zip is $zip_size bytes, over the $MAX_ZIP_BYTES-byte layer budget"
done
lw_say "done: ${archs[*]} (limit $MAX_ZIP_BYTES bytes per zip)"

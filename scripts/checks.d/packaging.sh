#!/usr/bin/env bash
# Checks the shipped artefacts (run by scripts/test.sh after the cargo tests; runnable on its own
# from anywhere, as root):
#
#   1. Debian tools, installed if missing: buildah, skopeo, umoci, qemu-user-static, binutils
#      (readelf), shellcheck.
#   2. shellcheck on packaging/*.sh and these checks.
#   3. packaging/healthcheck: its unit tests and clippy (it is a standalone crate, outside the
#      workspace, so `cargo test --workspace` does not cover it).
#   4. packaging/build-layer.sh (x86_64 + arm64 zips, each <= 2 MB) and packaging/build-image.sh
#      (x86_64 OCI image <= 25 MB): release musl cross builds in their own target dir; the sizes
#      they print are the measured ones.
#   5. tests/tests/packaging.rs (feature `packaging`) against those artefacts: zip layout, the image
#      unpacked with skopeo+umoci and its entrypoint run (--help, serve, probe, OTLP auth, SIGTERM),
#      the arm64 extension under qemu-aarch64-static driven by the sandbox to a capturing endpoint.
#
# Env: LAMBDAWATCH_PEERS, CARGO_TARGET_DIR (shared dev target dir, for the sandbox and the tests),
#      LAMBDAWATCH_PKG_TARGET_DIR / LAMBDAWATCH_BUILD_TOOLS (see packaging/lib.sh).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
say() { printf 'packaging.sh: %s\n' "$*"; }
die() { printf 'packaging.sh: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (apt-get, buildah, umoci unpack, chroot into the image)"

# ---------------------------------------------------------------- 1. Debian tools
need=()
for pair in buildah:buildah skopeo:skopeo umoci:umoci qemu-aarch64-static:qemu-user-static \
            readelf:binutils shellcheck:shellcheck chroot:coreutils; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  log="$(mktemp)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >"$log" 2>&1; then
    apt-get update -q >>"$log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >>"$log" 2>&1 ||
      { cat "$log" >&2; die "apt-get install ${need[*]} failed"; }
  fi
  rm -f "$log"
fi
for tool in buildah skopeo umoci qemu-aarch64-static readelf shellcheck chroot; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool still missing after apt-get install"
done

# ---------------------------------------------------------------- 2. shellcheck
shellcheck -x packaging/*.sh scripts/checks.d/packaging.sh scripts/checks.d/iac.sh ||
  die "shellcheck findings (above)"
say "shellcheck: packaging/*.sh and checks.d/{packaging,iac}.sh clean"

# ---------------------------------------------------------------- 3. the probe's own tests
pkg_target="${LAMBDAWATCH_PKG_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lambdawatch-target-pkg}"
CARGO_TARGET_DIR="$pkg_target" cargo test --quiet --manifest-path packaging/healthcheck/Cargo.toml ||
  die "packaging/healthcheck unit tests"
CARGO_TARGET_DIR="$pkg_target" cargo clippy --quiet --manifest-path packaging/healthcheck/Cargo.toml \
  --all-targets -- -D warnings || die "packaging/healthcheck clippy"
(cd packaging/healthcheck && cargo fmt --check) || die "packaging/healthcheck is not rustfmt-clean"

# ---------------------------------------------------------------- 4. artefacts
packaging/build-layer.sh x86_64 arm64
packaging/build-image.sh x86_64

# ---------------------------------------------------------------- 5. tests against the artefacts
# The sandbox and the sample function drive the arm64 test; the test locates them in the dev
# target dir (scripts/test.sh has built them already; this is a no-op then).
cargo build --quiet -p lambdawatch-sandbox -p lambdawatch-sample-function
cargo test -p lambdawatch-tests --features packaging --test packaging -- --test-threads=1
say "all checks passed"

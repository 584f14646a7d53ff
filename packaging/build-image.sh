#!/usr/bin/env bash
# Builds the lambdawatch collector image without a daemon: a static musl lambdawatch-collector (and
# the static lambdawatch-healthcheck probe) in a FROM scratch OCI image, assembled by buildah.
#
#   packaging/build-image.sh [x86_64|arm64]          default: x86_64
#
# Writes target/image/lambdawatch-collector-ARCH.oci.tar (an OCI archive: push it with
# `skopeo copy oci-archive:FILE docker://REGISTRY/REPO:TAG`, or `podman load -i FILE`), prints the
# binary, layer and archive sizes, and fails when the image is over 25 MB (25,000,000 bytes, both
# the archive and the unpacked root filesystem) or a binary is not static for ARCH.
#
# The image: /lambdawatch-collector (entrypoint, default command `serve`), /lambdawatch-healthcheck,
# /etc/ssl/certs/ca-certificates.crt (for HTTPS to AWS and alert receivers; SSL_CERT_FILE points at
# it), user 65532:65532, ports 4317/tcp (OTLP gRPC), 4318/tcp (OTLP HTTP), 9464/tcp (admin).
# No HEALTHCHECK: that is a Docker-format extension, not part of the OCI image spec, so buildah
# drops it from OCI images. Orchestrators declare it themselves: deploy/collector-fargate.yaml
# runs `/lambdawatch-healthcheck` (GET /readyz on 9464); packaging/Containerfile (Docker format)
# carries it as HEALTHCHECK.
#
# buildah runs with the vfs storage driver and chroot isolation in a throw-away storage root under
# a temp dir, so it needs no daemon, no overlay support and leaves nothing behind. As non-root, run
# the whole script under `buildah unshare` (a user namespace with subuids).
set -euo pipefail
LW_NAME=build-image.sh
# shellcheck source=packaging/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MAX_IMAGE_BYTES=25000000
arch="${1:-x86_64}"
[ $# -le 1 ] || lw_die "one architecture at a time (got $*)"
lw_target "$arch" >/dev/null
case "$arch" in x86_64) oci_arch=amd64 ;; arm64) oci_arch=arm64 ;; esac

command -v buildah >/dev/null 2>&1 || lw_die "buildah missing (Debian: apt-get install buildah)"
[ "$(id -u)" -eq 0 ] || lw_die "buildah needs root here: run as root, or as 'buildah unshare $0 $*'"
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca_bundle" ] || lw_die "$ca_bundle missing (Debian: ca-certificates)"

lw_ensure_targets "$arch"
lw_ensure_zigbuild
collector="$(lw_build lambdawatch-collector lambdawatch-collector "$arch")"
probe="$(lw_build lambdawatch-healthcheck lambdawatch-healthcheck "$arch" "$LW_ROOT/packaging/healthcheck/Cargo.toml")"
lw_check_static_elf "$collector" "$arch"
lw_check_static_elf "$probe" "$arch"

out_dir="$LW_ROOT/target/image"
mkdir -p "$out_dir"
archive="$out_dir/lambdawatch-collector-$arch.oci.tar"
version="$(cd "$LW_ROOT" && git describe --tags --always --dirty 2>/dev/null || echo unknown)"

work="$(mktemp -d)"
ctr=""
bah() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }
cleanup() {
  if [ -n "$ctr" ]; then bah rm "$ctr" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
export BUILDAH_ISOLATION=chroot

ctr="$(bah from --arch "$oci_arch" --os linux scratch)" || lw_die "buildah from scratch failed"
bah copy --chmod 0755 "$ctr" "$collector" /lambdawatch-collector >/dev/null
bah copy --chmod 0755 "$ctr" "$probe" /lambdawatch-healthcheck >/dev/null
bah copy --chmod 0644 "$ctr" "$ca_bundle" /etc/ssl/certs/ca-certificates.crt >/dev/null
bah config \
  --arch "$oci_arch" --os linux \
  --entrypoint '["/lambdawatch-collector"]' \
  --cmd serve \
  --user 65532:65532 \
  --workingdir / \
  --port 4317/tcp --port 4318/tcp --port 9464/tcp \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --env LAMBDAWATCH_OTLP_GRPC_ADDR=0.0.0.0:4317 \
  --env LAMBDAWATCH_OTLP_HTTP_ADDR=0.0.0.0:4318 \
  --env LAMBDAWATCH_ADMIN_ADDR=0.0.0.0:9464 \
  --label org.opencontainers.image.title=lambdawatch-collector \
  --label org.opencontainers.image.description="OTLP in, per-function Lambda SLOs with burn-rate alerts out" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label org.opencontainers.image.source=https://github.com/lambdawatch/lambdawatch \
  --label org.opencontainers.image.version="$version" \
  "$ctr" || lw_die "buildah config failed"
rm -f "$archive.partial"
# --timestamp 0: reproducible layer and config (file mtimes and created = epoch).
bah commit --quiet --format oci --timestamp 0 "$ctr" "oci-archive:$archive.partial:lambdawatch-collector:$version" \
  >/dev/null || lw_die "buildah commit failed"
mv "$archive.partial" "$archive"

# Sizes: the archive as pushed (gzip layers) and the unpacked root filesystem.
rootfs_bytes=$(( $(lw_size "$collector") + $(lw_size "$probe") + $(lw_size "$ca_bundle") ))
archive_bytes="$(lw_size "$archive")"
(cd "$out_dir" && sha256sum "$(basename "$archive")" > "$(basename "$archive").sha256")
lw_say "$arch: collector $(lw_size "$collector") bytes, healthcheck $(lw_size "$probe") bytes, rootfs $rootfs_bytes bytes, archive $archive_bytes bytes -> ${archive#"$LW_ROOT"/}"
[ "$archive_bytes" -le "$MAX_IMAGE_BYTES" ] || lw_die "image archive is $archive_bytes bytes, over $MAX_IMAGE_BYTES"
[ "$rootfs_bytes" -le "$MAX_IMAGE_BYTES" ] || lw_die "unpacked image is $rootfs_bytes bytes, over $MAX_IMAGE_BYTES"
lw_say "done (limit $MAX_IMAGE_BYTES bytes)"

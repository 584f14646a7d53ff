# shellcheck shell=bash
# Shared by packaging/build-layer.sh and packaging/build-image.sh (sourced, not run).
#
# What it provides:
#   lw_target ARCH              x86_64|arm64 -> the Rust musl target triple
#   lw_ensure_targets ARCH...   `rustup target add` for those targets; dies loudly if it fails
#   lw_ensure_zigbuild          cargo-zigbuild + ziglang (PyPI, pinned) in $LW_TOOLS/venv, on PATH
#   lw_build PACKAGE BIN ARCH [MANIFEST]  release build of one binary, static musl; prints its path
#   lw_check_static_elf F ARCH  dies unless F is a static ELF executable for ARCH
#   lw_size F                   size in bytes
#
# Why musl, statically linked: Lambda's provided.al2023 and the AL2023 managed runtimes ship glibc
# 2.34, older runtimes (AL2) 2.26, and a layer must run under all of them; a static musl binary
# depends on no libc at all, so one zip per architecture fits every runtime, and the same kind of
# binary runs in a FROM scratch image. cargo-zigbuild uses zig as the C compiler and linker for
# both targets, so crates with C code (ring, aws-lc-sys, zstd-sys) cross-compile too, without a
# Debian cross toolchain.
#
# Env: LAMBDAWATCH_BUILD_TOOLS (default ${XDG_CACHE_HOME:-$HOME/.cache}/lambdawatch-build): where the
#      tools venv lives, outside the clone. LAMBDAWATCH_PKG_TARGET_DIR (default
#      ${XDG_CACHE_HOME:-$HOME/.cache}/lambdawatch-target-pkg): cargo target dir for these builds,
#      kept apart from the dev target dir so a release cross build never holds its lock.

LW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LW_TOOLS="${LAMBDAWATCH_BUILD_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/lambdawatch-build}"
LW_TARGET_DIR="${LAMBDAWATCH_PKG_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lambdawatch-target-pkg}"
# Pinned: a new zig can change the linker's output; bump deliberately.
LW_ZIG_REQUIREMENTS="cargo-zigbuild==0.24.1 ziglang==0.17.1"

lw_say() { printf '%s: %s\n' "${LW_NAME:-packaging}" "$*"; }
lw_die() { printf '%s: FAILED: %s\n' "${LW_NAME:-packaging}" "$*" >&2; exit 1; }

lw_target() {
  case "$1" in
    x86_64) echo x86_64-unknown-linux-musl ;;
    arm64) echo aarch64-unknown-linux-musl ;;
    *) lw_die "unknown architecture '$1' (want x86_64 or arm64)" ;;
  esac
}

lw_ensure_targets() {
  command -v rustup >/dev/null 2>&1 || lw_die "rustup is not installed: the musl targets come from rustup (https://rustup.rs)"
  local arch targets=()
  for arch in "$@"; do targets+=("$(lw_target "$arch")"); done
  local installed
  installed="$(rustup target list --installed)" || lw_die "rustup target list failed"
  local missing=() t
  for t in "${targets[@]}"; do grep -qx "$t" <<<"$installed" || missing+=("$t"); done
  if [ ${#missing[@]} -gt 0 ]; then
    lw_say "rustup target add ${missing[*]}"
    rustup target add "${missing[@]}" || lw_die "rustup target add ${missing[*]} failed (offline? no rustup dist server?)"
  fi
  installed="$(rustup target list --installed)"
  for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed" || lw_die "rust target $t still not installed after rustup target add"
  done
}

lw_ensure_zigbuild() {
  local venv="$LW_TOOLS/venv" stamp="$LW_TOOLS/venv/.lambdawatch-zig-requirements"
  if [ ! -x "$venv/bin/cargo-zigbuild" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$LW_ZIG_REQUIREMENTS" ]; then
    command -v python3 >/dev/null 2>&1 || lw_die "python3 is needed to install cargo-zigbuild and ziglang from PyPI"
    lw_say "installing $LW_ZIG_REQUIREMENTS into $venv"
    mkdir -p "$LW_TOOLS"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || lw_die "python3 -m venv $venv failed (Debian: python3-venv)"
    # shellcheck disable=SC2086 # the pinned list is split on purpose
    "$venv/bin/python" -m pip install -q --disable-pip-version-check $LW_ZIG_REQUIREMENTS ||
      lw_die "pip install $LW_ZIG_REQUIREMENTS failed"
    echo "$LW_ZIG_REQUIREMENTS" > "$stamp"
  fi
  # cargo-zigbuild finds zig through `python3 -m ziglang` of the venv's python3.
  export PATH="$venv/bin:$PATH"
  cargo-zigbuild --version >/dev/null 2>&1 || lw_die "cargo-zigbuild does not run from $venv"
  python3 -m ziglang version >/dev/null 2>&1 || lw_die "zig (PyPI ziglang) does not run from $venv"
}

lw_build() { # lw_build PACKAGE BIN ARCH [MANIFEST] -> prints the binary's path on stdout
  local package="$1" bin="$2" arch="$3" manifest="${4:-$LW_ROOT/Cargo.toml}" target
  target="$(lw_target "$arch")"
  lw_say "cargo zigbuild --release -p $package --target $target (target dir $LW_TARGET_DIR)" >&2
  CARGO_TARGET_DIR="$LW_TARGET_DIR" cargo zigbuild --release --manifest-path "$manifest" \
    -p "$package" --bin "$bin" --target "$target" >&2 || lw_die "release build of $bin for $target failed"
  local out="$LW_TARGET_DIR/$target/release/$bin"
  [ -x "$out" ] || lw_die "build said ok but $out is missing"
  echo "$out"
}

lw_check_static_elf() { # lw_check_static_elf FILE ARCH
  local f="$1" arch="$2" want
  command -v readelf >/dev/null 2>&1 || lw_die "readelf missing (Debian: binutils)"
  case "$arch" in x86_64) want="Advanced Micro Devices X86-64" ;; arm64) want="AArch64" ;; esac
  local header
  header="$(readelf -h "$f" 2>&1)" || lw_die "$f is not an ELF file: $header"
  grep -q "Machine: *$want" <<<"$header" || lw_die "$f is not built for $arch: $(grep Machine <<<"$header")"
  grep -Eq "Type: *(EXEC|DYN)" <<<"$header" || lw_die "$f is not an executable"
  if readelf -l "$f" | grep -q "Requesting program interpreter"; then
    lw_die "$f asks for a dynamic loader: it is not statically linked"
  fi
  if readelf -d "$f" 2>/dev/null | grep -q "(NEEDED)"; then
    lw_die "$f needs shared libraries: $(readelf -d "$f" | grep NEEDED | tr -s ' ' | tr '\n' ';')"
  fi
}

lw_size() { stat -c %s "$1"; }

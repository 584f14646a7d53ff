#!/usr/bin/env bash
# Quick start command 2: install the test peers, build the workspace once, run every test.
#
#   ./scripts/test.sh          peers + build + cargo tests + scripts/checks.d/*.sh
#   ./scripts/test.sh peers    only install the peers (then `cargo test -p ...` works by hand)
#
# Peers (Contract 3 in docs/ARCHITECTURE.md) go to $LAMBDAWATCH_PEERS, default
# ${XDG_CACHE_HOME:-$HOME/.cache}/lambdawatch-peers, outside the clone:
#   - Debian: prometheus (promtool), prometheus-alertmanager
#   - venv/: Python packages pinned in scripts/peers-requirements.txt
#   - bin/aws-lambda-rie: the AWS Runtime Interface Emulator, from the aws-sam-cli wheel
# Every install step is idempotent and a no-op when its result is already present.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SAM_CLI_VERSION="1.170.0"
RIE_MEMBER="samcli/local/rapid/aws-lambda-rie-x86_64"
DEBIAN_PACKAGES=(prometheus prometheus-alertmanager)

export LAMBDAWATCH_PEERS="${LAMBDAWATCH_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/lambdawatch-peers}"
if [[ -z "${CARGO_TARGET_DIR:-}" ]]; then
  for candidate in /work/.cargo-target "$HOME/.cache/lambdawatch-target"; do
    if [[ -d "$candidate" ]]; then export CARGO_TARGET_DIR="$candidate"; break; fi
  done
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

CURRENT_STEP="setup"
TIMINGS=()
RUN_START=$SECONDS

on_error() {
  local rc=$?
  echo >&2
  echo "scripts/test.sh: FAILED in step '$CURRENT_STEP' (exit $rc)" >&2
  print_timings >&2
  exit "$rc"
}
trap on_error ERR

print_timings() {
  echo "---- timings ----"
  local t
  for t in "${TIMINGS[@]}"; do echo "  $t"; done
  echo "  total: $((SECONDS - RUN_START)) s"
}

# step NAME FUNCTION: runs FUNCTION as one named, timed step; a failure stops the run.
step() {
  CURRENT_STEP="$1"
  local start=$SECONDS
  echo "==> [$1] started"
  "$2"
  local took=$((SECONDS - start))
  TIMINGS+=("$1: ${took} s")
  echo "==> [$1] done in ${took} s"
}

# check_step NAME FUNCTION: like step, but a failure is recorded and the run goes on, so one run
# reports every failing test step; the script still exits non-zero at the end.
FAILED_STEPS=()
check_step() {
  CURRENT_STEP="$1"
  local start=$SECONDS rc=0
  echo "==> [$1] started"
  # Each check function ends with the command whose status it reports (an `if` keeps the ERR trap
  # from firing).
  if "$2"; then rc=0; else rc=$?; fi
  local took=$((SECONDS - start))
  if [[ $rc -eq 0 ]]; then
    TIMINGS+=("$1: ${took} s")
    echo "==> [$1] done in ${took} s"
  else
    TIMINGS+=("$1: ${took} s (FAILED, exit $rc)")
    FAILED_STEPS+=("$1")
    echo "==> [$1] FAILED (exit $rc) after ${took} s" >&2
  fi
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

install_debian() {
  local missing=()
  command -v promtool >/dev/null 2>&1 || [[ -x /usr/bin/promtool ]] || missing+=(prometheus)
  [[ -x /usr/bin/prometheus-alertmanager ]] || missing+=(prometheus-alertmanager)
  command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
  # The dashboard type-check (scripts/checks.d/dashboards.sh) runs tsc under Node.js.
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
  if [[ ${#missing[@]} -eq 0 ]]; then
    echo "Debian peers present: ${DEBIAN_PACKAGES[*]}"
    return
  fi
  echo "installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  # policy-rc.d-free containers: tell invoke-rc.d not to start the services it installs.
  as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_python() {
  local venv="$LAMBDAWATCH_PEERS/venv"
  local stamp="$venv/.lambdawatch-requirements"
  if [[ -x "$venv/bin/python" ]] && cmp -s scripts/peers-requirements.txt "$stamp"; then
    echo "Python peers present in $venv"
    return
  fi
  mkdir -p "$LAMBDAWATCH_PEERS"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r scripts/peers-requirements.txt
  "$venv/bin/python" -c 'import awslambdaric, aws_lambda_powertools, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc.trace_exporter, opentelemetry.exporter.otlp.proto.http.trace_exporter, moto.server'
  cp scripts/peers-requirements.txt "$stamp"
}

install_rie() {
  local bin_dir="$LAMBDAWATCH_PEERS/bin"
  local rie="$bin_dir/aws-lambda-rie"
  local stamp="$bin_dir/.aws-lambda-rie-version"
  if [[ -x "$rie" ]] && [[ "$(cat "$stamp" 2>/dev/null)" == "aws-sam-cli==$SAM_CLI_VERSION" ]]; then
    echo "AWS RIE present: $rie (aws-sam-cli==$SAM_CLI_VERSION)"
    return
  fi
  mkdir -p "$bin_dir"
  local tmp
  tmp="$(mktemp -d)"
  "$LAMBDAWATCH_PEERS/venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
    -d "$tmp" "aws-sam-cli==$SAM_CLI_VERSION"
  "$LAMBDAWATCH_PEERS/venv/bin/python" - "$tmp" "$RIE_MEMBER" "$rie.tmp" <<'PY'
import glob, shutil, sys, zipfile
tmp, member, out = sys.argv[1:4]
wheels = glob.glob(f"{tmp}/aws_sam_cli-*.whl")
if len(wheels) != 1:
    sys.exit(f"expected one aws_sam_cli wheel in {tmp}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod +x "$rie.tmp"
  mv "$rie.tmp" "$rie"
  echo "aws-sam-cli==$SAM_CLI_VERSION" > "$stamp"
  rm -rf "$tmp"
  echo "AWS RIE installed: $rie"
}

fmt_check() {
  cargo fmt --all -- --check
}

build() {
  echo "CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-<default: $ROOT/target>}"
  cargo build --workspace --bins --tests
}

HAVE_NEXTEST=0
if cargo nextest --version >/dev/null 2>&1; then HAVE_NEXTEST=1; fi

run_tests() {
  if [[ $HAVE_NEXTEST -eq 1 ]]; then
    # Every test runs: no filters, no ignored tests left out, all failures reported.
    cargo nextest run --config-file scripts/nextest.toml --workspace --no-fail-fast --run-ignored all
  else
    cargo test --workspace --no-fail-fast -- --include-ignored
  fi
}

run_doctests() {
  # nextest does not run doctests (cargo test above already did).
  cargo test --workspace --doc --no-fail-fast
}

run_checks() {
  local check found=0 failed=()
  shopt -s nullglob
  for check in scripts/checks.d/*.sh; do
    found=1
    if [[ ! -x "$check" ]]; then
      echo "$check is not executable: chmod +x it" >&2
      return 1
    fi
    echo "--> $check"
    if "$check"; then
      echo "--> $check passed"
    else
      echo "--> $check FAILED" >&2
      failed+=("$check")
    fi
  done
  [[ $found -eq 1 ]] || echo "no checks registered in scripts/checks.d"
  if [[ ${#failed[@]} -gt 0 ]]; then
    echo "failed checks: ${failed[*]}" >&2
    return 1
  fi
}

echo "LAMBDAWATCH_PEERS=$LAMBDAWATCH_PEERS"
step "debian peers" install_debian
step "python peers" install_python
step "aws rie" install_rie
if [[ "${1:-}" == "peers" ]]; then
  print_timings
  exit 0
fi
check_step "cargo fmt" fmt_check
step "cargo build" build
check_step "cargo tests" run_tests
if [[ $HAVE_NEXTEST -eq 1 ]]; then check_step "doctests" run_doctests; fi
check_step "checks.d" run_checks
print_timings
if [[ ${#FAILED_STEPS[@]} -gt 0 ]]; then
  echo "scripts/test.sh: FAILED steps: ${FAILED_STEPS[*]}" >&2
  exit 1
fi
echo "scripts/test.sh: all steps passed"

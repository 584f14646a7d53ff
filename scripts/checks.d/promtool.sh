#!/usr/bin/env bash
# Checks the generated Prometheus rules with the real promtool (run by scripts/test.sh after the
# cargo tests; runnable on its own from anywhere):
#
#   1. `promtool check rules alerts/lambdawatch-rules.yml` (the rules generated for the embedded
#      default spec; the cargo test `rules::tests::checked_in_rules_match_the_embedded_default`
#      fails when the file drifts from the generator).
#   2. `promtool test rules alerts/tests/*.yml`: fires on an outage (two collectors summed), does
#      not fire on low traffic (one failure in six invocations an hour), resolves; cold start,
#      throttle budget, DLQ ratio, no-data and pipeline-drops cases.
#   3. Self-tests that the suite can fail: the low-traffic test must FAIL against a copy of the
#      rules with the low-traffic guard removed, and the error-rate test (pending for `for: 1m`
#      before paging) against a copy without `for:`, and the pipeline-drops test (a single burst
#      never fires) against a copy whose earlier window is the same as the latest.
#
# promtool comes from Debian's `prometheus` package, installed with apt-get when missing.
# Exits non-zero with a message on the first failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
say() { printf 'promtool.sh: %s\n' "$*"; }
die() { printf 'promtool.sh: FAILED: %s\n' "$*" >&2; exit 1; }

if ! command -v promtool >/dev/null 2>&1; then
  say "installing Debian package prometheus (for promtool)"
  command -v apt-get >/dev/null 2>&1 || die "promtool missing and no apt-get to install Debian package prometheus"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -q >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -q --no-install-recommends prometheus >/dev/null \
    || die "apt-get install prometheus failed"
  command -v promtool >/dev/null 2>&1 || die "promtool still missing after installing prometheus"
fi
say "$(promtool --version 2>&1 | head -1)"

rules="$root/alerts/lambdawatch-rules.yml"
[ -f "$rules" ] || die "$rules is missing"
promtool check rules "$rules" || die "promtool check rules $rules"

shopt -s nullglob
tests=("$root"/alerts/tests/*.yml)
[ "${#tests[@]}" -gt 0 ] || die "no promtool tests in alerts/tests/"
(cd "$root/alerts/tests" && promtool test rules "${tests[@]##*/}") || die "promtool test rules alerts/tests/*.yml"
say "promtool test rules: ${#tests[@]} files passed"

# The suite must be able to fail: without the guard, one failure in six pages.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tests"
sed -E 's/(slo_valid_events:increase[0-9a-z]+\{slo="[a-z_]+"\}\)) >= [0-9]+$/\1 >= 0/' "$rules" >"$work/lambdawatch-rules.yml"
cmp -s "$rules" "$work/lambdawatch-rules.yml" && die "self-test: could not remove the guard from a copy of the rules"
cp "$root/alerts/tests/low_traffic.yml" "$work/tests/"
if (cd "$work/tests" && promtool test rules low_traffic.yml >"$work/out.txt" 2>&1); then
  die "self-test: low_traffic.yml passed against rules without the low-traffic guard"
fi
say "self-test: low_traffic.yml fails without the guard, as it must"

# ... and the pending checks prove the `for:` delay: without it the outage pages a minute early.
grep -q '^        for: ' "$rules" || die "self-test: no \`for:\` in $rules"
grep -v '^        for: ' "$rules" >"$work/lambdawatch-rules.yml"
cp "$root/alerts/tests/error_rate.yml" "$work/tests/"
if (cd "$work/tests" && promtool test rules error_rate.yml >"$work/out.txt" 2>&1); then
  die "self-test: error_rate.yml passed against rules without \`for:\`"
fi
say "self-test: error_rate.yml fails without \`for:\`, as it must"
# ... and pipeline drops need drops in two adjacent windows: with one window, one burst raises a ticket.
sed 's/\] offset 5m)/])/' "$rules" >"$work/lambdawatch-rules.yml"
cmp -s "$rules" "$work/lambdawatch-rules.yml" && die "self-test: no \`offset 5m\` drops window in $rules"
cp "$root/alerts/tests/pipeline_drops.yml" "$work/tests/"
if (cd "$work/tests" && promtool test rules pipeline_drops.yml >"$work/out.txt" 2>&1); then
  die "self-test: pipeline_drops.yml passed against rules with a single drops window"
fi
say "self-test: pipeline_drops.yml fails with a single drops window, as it must"
say "ok: check rules + ${#tests[@]} unit-test files"

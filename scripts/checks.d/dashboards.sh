#!/usr/bin/env bash
# Checks dashboards/ and alerts/alertmanager.example.yml with the real tools (run by
# scripts/test.sh after the cargo tests; runnable on its own from anywhere).
#
#   1. tsc: every dashboards/*.json, as an object literal, against @grafana/schema's Dashboard
#      type (dashboards/typecheck/). npm packages are installed once per package-lock into
#      $LAMBDAWATCH_PEERS/npm (outside the clone) and symlinked into a throw-away work dir.
#      Self-tests: copies of the dashboards with a string `gridPos.h`, a misspelt panel field and
#      an out-of-enum value must each FAIL the type-check (this script re-run on each copy).
#   2. amtool check-config on the example Alertmanager config, and amtool route tests with the
#      labels real alerts carry: every alerting rule of alerts/lambdawatch-rules.yml (alertname,
#      slo, severity read from the file) and the collector's two built-in alerts (names and slo
#      labels read from collector/src/serve.rs, tickets) go to pager (page) or tickets (ticket);
#      an alert of someone else's without a severity falls back to tickets.
#   3. A real Alertmanager on 127.0.0.1 with that config (receivers pointed at a closed loopback
#      port), fed the rules' own error-rate page and ticket and cold-start ticket: a page
#      inhibits the ticket of the same function+slo and nothing else.
#
# Env: LAMBDAWATCH_PEERS (default ${XDG_CACHE_HOME:-$HOME/.cache}/lambdawatch-peers);
#      LAMBDAWATCH_DASHBOARDS_DIR to type-check another directory of dashboards (used to prove the
#      check fails on a broken copy); LAMBDAWATCH_ALERTMANAGER_CONFIG likewise for the
#      Alertmanager config. Exits non-zero with a message on the first failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
peers="${LAMBDAWATCH_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/lambdawatch-peers}"
typecheck="$root/dashboards/typecheck"
dashboards="${LAMBDAWATCH_DASHBOARDS_DIR:-$root/dashboards}"
am_config="${LAMBDAWATCH_ALERTMANAGER_CONFIG:-$root/alerts/alertmanager.example.yml}"

say() { printf 'dashboards.sh: %s\n' "$*"; }
die() { printf 'dashboards.sh: FAILED: %s\n' "$*" >&2; exit 1; }

work="$(mktemp -d)"
am_pid=""
cleanup() {
  if [ -n "$am_pid" ]; then kill "$am_pid" 2>/dev/null || true; wait "$am_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

apt_install() { # apt_install PACKAGE BINARY
  command -v "$2" >/dev/null 2>&1 && return 0
  say "installing Debian package $1 (for $2)"
  command -v apt-get >/dev/null 2>&1 || die "$2 missing and no apt-get to install Debian package $1"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >"$work/apt.log" 2>&1; then
    apt-get update -q >>"$work/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >>"$work/apt.log" 2>&1 ||
      { cat "$work/apt.log" >&2; die "apt-get install $1 failed"; }
  fi
  command -v "$2" >/dev/null 2>&1 || die "Debian package $1 installed but $2 is not on PATH"
}

# ---------------------------------------------------------------- 1. tsc against @grafana/schema
command -v node >/dev/null 2>&1 || die "node is not installed (needed for the dashboard type-check)"
command -v npm >/dev/null 2>&1 || die "npm is not installed (needed for the dashboard type-check)"
key="$(cat "$typecheck/package.json" "$typecheck/package-lock.json" | sha256sum | cut -c1-16)"
modules="$peers/npm/dashboards-typecheck-$key"
if [ ! -x "$modules/node_modules/.bin/tsc" ] || [ ! -d "$modules/node_modules/@grafana/schema" ]; then
  say "npm ci into $modules"
  rm -rf "$modules.partial"
  mkdir -p "$modules.partial"
  cp "$typecheck/package.json" "$typecheck/package-lock.json" "$modules.partial/"
  (cd "$modules.partial" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) ||
    die "npm ci failed for dashboards/typecheck"
  rm -rf "$modules"
  mv "$modules.partial" "$modules"
  # Installs for older package-locks are no longer used.
  for old in "$peers"/npm/dashboards-typecheck-*; do
    [ "$old" = "$modules" ] || rm -rf "$old"
  done
fi
mkdir -p "$work/tc"
cp -r "$typecheck/src" "$typecheck/tsconfig.json" "$typecheck/gen.mjs" "$typecheck/package.json" "$work/tc/"
ln -s "$modules/node_modules" "$work/tc/node_modules"
node "$work/tc/gen.mjs" "$dashboards" "$work/tc/generated" || die "could not read the dashboards in $dashboards"
if ! "$work/tc/node_modules/.bin/tsc" -p "$work/tc/tsconfig.json" --noEmit --pretty false; then
  die "dashboards in $dashboards do not type-check against @grafana/schema (errors above; line numbers are in the generated .ts, same order as the JSON)"
fi
say "ok: $(ls "$work/tc/generated" | wc -l) dashboards type-check against @grafana/schema $(node -p "require('$modules/node_modules/@grafana/schema/package.json').version")"

# Self-tests that the type-check can fail (only when checking the repository's own dashboards, so
# the re-run below does not recurse): a copy of the dashboards with one mistake, checked by this
# script through LAMBDAWATCH_DASHBOARDS_DIR, must fail tsc with the error the mistake causes.
#   - gridPos.h as a string: a wrong field type;
#   - `descripton` on a panel: a misspelt field no panel type has (an excess property);
#   - a threshold step's colour mode `rainbow`: a value outside a string enum.
if [ -z "${LAMBDAWATCH_DASHBOARDS_DIR:-}" ]; then
  break_copy() { # break_copy NAME JS_MUTATION (the mutation gets `d`, the parsed pipeline-health.json)
    mkdir -p "$work/broken-$1"
    cp "$root"/dashboards/*.json "$work/broken-$1/"
    node -e '
      const fs = require("fs"); const [path, body] = process.argv.slice(1);
      const d = JSON.parse(fs.readFileSync(path, "utf8"));
      new Function("d", body)(d);
      fs.writeFileSync(path, JSON.stringify(d, null, 2));
    ' "$work/broken-$1/pipeline-health.json" "$2" || die "self-test $1: could not break a copy of pipeline-health.json"
    cmp -s "$root/dashboards/pipeline-health.json" "$work/broken-$1/pipeline-health.json" &&
      die "self-test $1: the copy of pipeline-health.json is unchanged"
    return 0
  }
  must_fail() { # must_fail NAME EXPECTED_TSC_ERROR_REGEX
    if LAMBDAWATCH_DASHBOARDS_DIR="$work/broken-$1" bash "${BASH_SOURCE[0]}" >"$work/self-$1.log" 2>&1; then
      cat "$work/self-$1.log" >&2
      die "self-test $1: the type-check passed a dashboard with that mistake"
    fi
    grep -Eq "generated/pipeline-health\.ts\([0-9]+,[0-9]+\): error TS[0-9]+: .*$2" "$work/self-$1.log" || {
      cat "$work/self-$1.log" >&2
      die "self-test $1: tsc failed, but not with an error matching /$2/ in pipeline-health"
    }
    say "self-test: $1 fails the type-check, as it must ($(grep -Eo 'error TS[0-9]+' "$work/self-$1.log" | head -1))"
  }
  break_copy string-gridpos-h 'd.panels[0].gridPos.h = "8";'
  must_fail string-gridpos-h "Type 'string' is not assignable to type 'number'"
  break_copy misspelt-field 'd.panels[1].descripton = d.panels[1].description;'
  must_fail misspelt-field "'\"?descripton\"?' does not exist"
  break_copy bad-enum 'd.panels[2].fieldConfig.defaults.thresholds.mode = "rainbow";'
  must_fail bad-enum "'\"rainbow\"' is not assignable"
fi

# ---------------------------------------------------------------- 2. amtool
apt_install prometheus-alertmanager amtool
amtool check-config "$am_config" >"$work/amtool.log" 2>&1 || { cat "$work/amtool.log" >&2; die "amtool check-config $am_config"; }
route_test() { # route_test EXPECTED_RECEIVER LABEL...
  local expected="$1"; shift
  amtool config routes test --config.file="$am_config" --verify.receivers="$expected" "$@" >"$work/route.log" 2>&1 ||
    { cat "$work/route.log" >&2; die "route for {$*} is not $expected"; }
}
# The alerts that really exist: "alertname slo severity" per alerting rule of the generated rules
# (an SLO alert's slo label comes from the recorded series its expression reads).
rules="$root/alerts/lambdawatch-rules.yml"
[ -f "$rules" ] || die "$rules is missing"
python3 - "$rules" >"$work/alerts.txt" <<'PY' || die "cannot read the alerts of $rules"
import re, sys
text = open(sys.argv[1]).read()
blocks = text.split("\n      - alert: ")[1:]
for block in blocks:
    block = block.split("\n      - record: ")[0].split("\n  - name: ")[0]
    name = block.splitlines()[0].strip()
    labels = dict(re.findall(r'^          (\w+): "([^"]*)"$', block.split("\n        labels:\n", 1)[1].split("\n        annotations:", 1)[0], re.M))
    slos = set(re.findall(r'slo="([^"]+)"', block.split("\n        labels:\n", 1)[0]))
    slo = labels.get("slo") or (slos.pop() if len(slos) == 1 else None)
    if not slo or "severity" not in labels:
        sys.exit(f"{name}: no single slo label ({slos}) or no severity ({labels})")
    print(name, slo, labels["severity"])
PY
serve="$root/collector/src/serve.rs"
const() { grep -Eo "pub const $1: &str = \"[^\"]+\"" "$serve" | cut -d'"' -f2; }
for kind in COST_SURPRISE RETRY_STORM; do
  name="$(const "${kind}_ALERT_NAME")"; slo="$(const "${kind}_SLO")"
  [ -n "$name" ] && [ -n "$slo" ] || die "no ${kind}_ALERT_NAME / ${kind}_SLO in $serve"
  echo "$name $slo ticket" >>"$work/alerts.txt"
done
[ "$(wc -l <"$work/alerts.txt")" -ge 13 ] || { cat "$work/alerts.txt" >&2; die "too few alerts read from $rules and $serve"; }
while read -r name slo severity; do
  case "$severity" in
    page) receiver=pager ;;
    ticket) receiver=tickets ;;
    *) die "$name: severity $severity is neither page nor ticket" ;;
  esac
  route_test "$receiver" alertname="$name" slo="$slo" severity="$severity" \
    function=orders version=3 region=eu-west-1 account=123456789012
done <"$work/alerts.txt"
route_test tickets alertname=SomeOtherTeamsAlert function=orders
say "ok: amtool check-config and route tests ($(wc -l <"$work/alerts.txt") real alerts, $(grep -c ' page$' "$work/alerts.txt") of them pages)"
alert_named() { # alert_named SLO SEVERITY: the rules' alertname with those labels
  awk -v slo="$1" -v sev="$2" '$2 == slo && $3 == sev { print $1; exit }' "$work/alerts.txt"
}
error_page="$(alert_named error_rate page)"; error_ticket="$(alert_named error_rate ticket)"
cold_ticket="$(alert_named cold_start ticket)"
[ -n "$error_page" ] && [ -n "$error_ticket" ] && [ -n "$cold_ticket" ] ||
  die "the rules lack an error_rate page, an error_rate ticket or a cold_start ticket"

# ---------------------------------------------------------------- 3. inhibition on a real Alertmanager
apt_install prometheus-alertmanager prometheus-alertmanager
command -v curl >/dev/null 2>&1 || apt_install curl curl
command -v python3 >/dev/null 2>&1 || die "python3 is needed to pick a free port and read the API answer"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# Receivers point at a closed loopback port so no notification leaves this machine.
sed -e 's#^\(\s*\)- routing_key: .*#&\n\1  url: http://127.0.0.1:9/pagerduty#' \
    -e 's#url: https://tickets\.example\.invalid/.*#url: http://127.0.0.1:9/tickets#' \
    "$am_config" >"$work/am.yml"
grep -q 'http://127.0.0.1:9/pagerduty' "$work/am.yml" || die "could not point the pager receiver at loopback"
grep -q 'example.invalid' "$work/am.yml" && die "ticket webhook still points off-machine"
amtool check-config "$work/am.yml" >/dev/null || die "loopback copy of the config is invalid"
prometheus-alertmanager --config.file="$work/am.yml" --storage.path="$work/am-data" \
  --web.listen-address="127.0.0.1:$port" --cluster.listen-address= --log.level=warn \
  >"$work/am.log" 2>&1 &
am_pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -fsS "$url/-/ready" >/dev/null 2>&1 && break
  kill -0 "$am_pid" 2>/dev/null || { cat "$work/am.log" >&2; die "alertmanager exited"; }
  sleep 0.1
done
curl -fsS "$url/-/ready" >/dev/null 2>&1 || { cat "$work/am.log" >&2; die "alertmanager not ready within 10 s"; }
add() { amtool alert add --alertmanager.url="$url" version=3 region=eu-west-1 account=123456789012 "$@" >/dev/null || die "amtool alert add $*"; }
add alertname="$error_page" severity=page function=orders slo=error_rate
add alertname="$error_ticket" severity=ticket function=orders slo=error_rate
add alertname="$cold_ticket" severity=ticket function=orders slo=cold_start
add alertname="$error_ticket" severity=ticket function=billing slo=error_rate
curl -fsS "$url/api/v2/alerts?inhibited=true&silenced=true&active=true" >"$work/alerts.json" || die "GET /api/v2/alerts"
python3 - "$work/alerts.json" <<'PY' || die "inhibition does not behave as documented (see above)"
import json, sys
alerts = json.load(open(sys.argv[1]))
state = {(a["labels"]["severity"], a["labels"]["function"], a["labels"]["slo"]): a["status"] for a in alerts}
want = {
    ("page", "orders", "error_rate"): [],
    ("ticket", "orders", "error_rate"): ["inhibited"],
    ("ticket", "orders", "cold_start"): [],
    ("ticket", "billing", "error_rate"): [],
}
bad = 0
for key, inhibited in want.items():
    st = state.get(key)
    if st is None:
        print(f"missing alert {key}", file=sys.stderr); bad += 1; continue
    got = ["inhibited"] if st["inhibitedBy"] else []
    if got != inhibited:
        print(f"{key}: inhibitedBy={st['inhibitedBy']} state={st['state']}, wanted {inhibited or 'not inhibited'}", file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
PY
say "ok: a page inhibits only the ticket of the same function+slo (real Alertmanager $(prometheus-alertmanager --version 2>&1 | head -1 | awk '{print $3}'))"
echo "dashboards.sh: 3 passed, 0 failed"

#!/usr/bin/env bash
# Checks the CloudFormation/SAM templates in deploy/ (run by scripts/test.sh after the cargo tests;
# runnable on its own from anywhere).
#
#   1. cfn-lint on every deploy/*.yaml (SAM templates are transformed first); any error, warning or
#      informational finding fails.
#   2. checkov (framework cloudformation, offline) on the same files; any failed check fails. A
#      check may only be suppressed in the template's Metadata (checkov: skip: - id, comment) with a
#      written justification: a skip without a comment of at least 40 characters fails, and so does
#      a skip of a check that would not fail anyway (stale suppressions hide nothing but rot).
#   3. Contract assertions on deploy/collector-fargate.yaml: the task role grants exactly the AWS
#      calls the collector makes (no more, no wildcard actions, "*" resources only for the two
#      actions without resource-level permissions); the OTLP token comes from Secrets Manager as
#      LAMBDAWATCH_AUTH_TOKEN; stopTimeout 30 s; health checks on /readyz via 9464; OTLP ports open
#      only to FunctionsSecurityGroup.
#      And docs/DEPLOY.md: every parameter it passes and every stack output it reads exist.
#   4. Self-test: three broken copies (a cfn-lint error, an unjustified skip, an extra IAM action)
#      must each be rejected, so this check is known to be able to fail.
#
# cfn-lint and checkov are pinned and installed into $LAMBDAWATCH_PEERS/venv-iac. Not into the
# shared $LAMBDAWATCH_PEERS/venv: checkov pins ~80 packages (boto3/botocore, PyYAML, jsonschema, ...)
# and would silently move the versions moto and the OpenTelemetry SDK run with in the other tests.
#
# Env: LAMBDAWATCH_PEERS (default ${XDG_CACHE_HOME:-$HOME/.cache}/lambdawatch-peers);
#      LAMBDAWATCH_DEPLOY_DIR to check another directory of templates (the self-test uses it).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
peers="${LAMBDAWATCH_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/lambdawatch-peers}"
deploy="${LAMBDAWATCH_DEPLOY_DIR:-$root/deploy}"
venv="$peers/venv-iac"
requirements="cfn-lint==1.58.0 checkov==3.3.30"

say() { printf 'iac.sh: %s\n' "$*"; }
die() { printf 'iac.sh: FAILED: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- 0. tools (idempotent)
stamp="$venv/.lambdawatch-iac-requirements"
if [ ! -x "$venv/bin/cfn-lint" ] || [ ! -x "$venv/bin/checkov" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$requirements" ]; then
  say "installing $requirements into $venv"
  mkdir -p "$peers"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || die "python3 -m venv $venv failed (Debian: python3-venv)"
  # shellcheck disable=SC2086 # word splitting of the pinned list is intended
  "$venv/bin/python" -m pip install -q --disable-pip-version-check $requirements ||
    die "pip install $requirements failed"
  echo "$requirements" > "$stamp"
fi
py="$venv/bin/python"

shopt -s nullglob
templates=("$deploy"/*.yaml)
[ ${#templates[@]} -ge 3 ] || die "expected deploy/layer.yaml, collector-fargate.yaml, example-function.yaml in $deploy, found ${#templates[@]} templates"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------- 1. cfn-lint
run_cfn_lint() { # run_cfn_lint FILE...
  "$venv/bin/cfn-lint" --format parseable -- "$@"
}
if ! run_cfn_lint "${templates[@]}" > "$work/cfn-lint.out" 2>&1; then
  cat "$work/cfn-lint.out" >&2
  die "cfn-lint found problems (above) in $deploy"
fi
say "cfn-lint $("$venv/bin/cfn-lint" --version | awk '{print $2}'): ${#templates[@]} templates clean"

# ---------------------------------------------------------------- 2. checkov + justified skips
# The policy script prints one line per template and exits non-zero on any finding.
cat > "$work/checkov_gate.py" <<'PY'
"""Runs checkov on each template twice: as written (must have no failed check) and with its skip
metadata disabled (every skip must name a check that then fails); every skip needs a comment."""
import json, pathlib, subprocess, sys
from cfnlint.decode import decode

checkov, out_dir, *files = sys.argv[1:]
bad = []

def scan(path):
    r = subprocess.run([checkov, "-f", str(path), "--framework", "cloudformation", "--skip-download",
                        "-o", "json"], capture_output=True, text=True)
    if r.returncode not in (0, 1) or not r.stdout.strip().startswith(("{", "[")):
        sys.exit(f"checkov crashed on {path} (exit {r.returncode}):\n{r.stderr[-3000:]}")
    data = json.loads(r.stdout)
    reports = data if isinstance(data, list) else [data]
    failed, skipped, passed = [], [], 0
    for rep in reports:
        if rep.get("summary", rep).get("parsing_errors", 0):
            sys.exit(f"checkov could not parse {path}")
        res = rep.get("results", {})
        failed += [(c["check_id"], c["resource"]) for c in res.get("failed_checks", [])]
        skipped += [(c["check_id"], c["resource"]) for c in res.get("skipped_checks", [])]
        passed += len(res.get("passed_checks", []))
    return failed, skipped, passed

total_passed = 0
for f in map(pathlib.Path, files):
    text = f.read_text()
    # every skip has a written justification
    tpl, errs = decode(str(f))
    if errs:
        sys.exit(f"cannot parse {f}: {errs}")
    skip_ids = set()
    for name, r in tpl.get("Resources", {}).items():
        for sk in (r.get("Metadata") or {}).get("checkov", {}).get("skip", []):
            cid, comment = sk.get("id", "?"), sk.get("comment")
            skip_ids.add(cid)
            if not isinstance(comment, str) or len(comment.strip()) < 40:
                bad.append(f"{f.name}: {name}: checkov skip {cid} has no written justification (comment: of >= 40 chars)")
    failed, skipped, passed = scan(f)
    for cid, res in failed:
        bad.append(f"{f.name}: checkov {cid} FAILED for {res}")
    # stale skips: with the skips disabled, every skipped id must fail
    unskipped = pathlib.Path(out_dir) / f.name
    unskipped.write_text(text.replace("checkov:\n", "checkov_disabled:\n"))
    failed_raw, _, _ = scan(unskipped)
    failing_ids = {cid for cid, _ in failed_raw}
    for cid in sorted(skip_ids - failing_ids):
        bad.append(f"{f.name}: checkov skip {cid} suppresses nothing (the check passes without it): remove it")
    total_passed += passed
    print(f"checkov {f.name}: {passed} passed, {len(failed)} failed, {len(skipped)} skipped with justification"
          + ("" if passed or failed or skipped else " (no checkov policy covers its resource types)"))
if total_passed == 0:
    bad.append("checkov passed no check on any template: is it reading them as CloudFormation?")
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
PY
mkdir -p "$work/unskipped"
"$py" "$work/checkov_gate.py" "$venv/bin/checkov" "$work/unskipped" "${templates[@]}" ||
  die "checkov findings (above)"

# ---------------------------------------------------------------- 3. contract assertions
cat > "$work/contract.py" <<'PY'
"""Asserts what docs/DEPLOY.md and the collector rely on in deploy/collector-fargate.yaml."""
import sys
from cfnlint.decode import decode

path = sys.argv[1]
tpl, errs = decode(path)
if errs:
    sys.exit(f"{path}: cannot parse: {errs}")
res = tpl["Resources"]
bad = []

def fn_if_items(x):
    """Statements guarded by Fn::If [cond, A, AWS::NoValue] count as A."""
    if isinstance(x, dict) and "Fn::If" in x:
        out = []
        for branch in x["Fn::If"][1:]:
            out += fn_if_items(branch)
        return out
    if isinstance(x, dict) and x.get("Ref") == "AWS::NoValue":
        return []
    return [x]

def as_list(x):
    return x if isinstance(x, list) else [x]

def statements(role):
    out = []
    for pol in res[role]["Properties"].get("Policies", []):
        for st in pol["PolicyDocument"]["Statement"]:
            out += fn_if_items(st)
    if res[role]["Properties"].get("ManagedPolicyArns"):
        bad.append(f"{role}: managed policies grant more than the listed calls; use inline statements")
    return out

# The AWS calls the collector makes (aws/src: GetMetricData, CreateLogGroup/CreateLogStream/
# PutLogEvents, PutTraceSegments, Publish, checkpoints GetItem/PutItem/Scan or
# GetObject/PutObject/ListObjectsV2): nothing more may be granted to the task.
TASK_ACTIONS = {
    "cloudwatch:GetMetricData",
    "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
    "xray:PutTraceSegments",
    "sns:Publish",
    "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Scan",
    "s3:GetObject", "s3:PutObject", "s3:ListBucket",
}
# Actions whose service offers no resource-level permissions (Service Authorization Reference).
STAR_OK = {"cloudwatch:GetMetricData", "xray:PutTraceSegments", "ecr:GetAuthorizationToken"}

def check_role(role, expected):
    granted = set()
    for st in statements(role):
        if st.get("Effect") != "Allow":
            continue
        acts = as_list(st["Action"])
        for a in acts:
            if "*" in a:
                bad.append(f"{role}: wildcard action {a}")
            granted.add(a)
        if st.get("Resource") == "*" or "*" in as_list(st.get("Resource")):
            for a in acts:
                if a not in STAR_OK:
                    bad.append(f"{role}: {a} on Resource '*' (it supports resource-level permissions)")
        if "NotAction" in st or "NotResource" in st:
            bad.append(f"{role}: NotAction/NotResource grants are open-ended")
    if granted != expected:
        if granted - expected:
            bad.append(f"{role}: grants calls the collector does not make: {sorted(granted - expected)}")
        if expected - granted:
            bad.append(f"{role}: misses calls the collector makes: {sorted(expected - granted)}")

check_role("TaskRole", TASK_ACTIONS)
check_role("ExecutionRole", {
    "ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer", "logs:CreateLogStream", "logs:PutLogEvents",
    "secretsmanager:GetSecretValue",
})

td = res["TaskDefinition"]["Properties"]
c = td["ContainerDefinitions"][0]
if c.get("StopTimeout") != 30:
    bad.append(f"collector container StopTimeout is {c.get('StopTimeout')}, want 30 (SIGTERM drain is 25 s)")
hc = c.get("HealthCheck", {}).get("Command", [])
if hc != ["CMD", "/lambdawatch-healthcheck"]:
    bad.append(f"container health check must exec the binary's readiness probe, got {hc}")
secrets = {s["Name"]: s["ValueFrom"] for s in c.get("Secrets", [])}
if secrets.get("LAMBDAWATCH_AUTH_TOKEN") != {"Ref": "AuthTokenSecret"}:
    bad.append("LAMBDAWATCH_AUTH_TOKEN must come from the AuthTokenSecret secret")
env = [e for item in c.get("Environment", []) for e in fn_if_items(item)]
if any(e["Name"] == "LAMBDAWATCH_AUTH_TOKEN" for e in env):
    bad.append("LAMBDAWATCH_AUTH_TOKEN must not be a plain environment value")
if c.get("LogConfiguration", {}).get("LogDriver") != "awslogs":
    bad.append("collector logs must use the awslogs driver")
ports = sorted(p["ContainerPort"] for p in c.get("PortMappings", []))
if ports != [4317, 4318, 9464]:
    bad.append(f"container ports {ports}, want [4317, 4318, 9464]")
tg = res["HttpTargetGroup"]["Properties"]
if (tg.get("HealthCheckPath"), str(tg.get("HealthCheckPort"))) != ("/readyz", "9464"):
    bad.append("HttpTargetGroup must health-check /readyz on 9464")
if res["GrpcTargetGroup"]["Properties"].get("ProtocolVersion") != "GRPC":
    bad.append("GrpcTargetGroup must use ProtocolVersion GRPC")
if res["LoadBalancer"]["Properties"].get("Scheme") != "internal":
    bad.append("the load balancer must be internal")
# OTLP reaches the load balancer only from FunctionsSecurityGroup; nothing is open to a CIDR.
for name, r in res.items():
    if r["Type"] == "AWS::EC2::SecurityGroupIngress":
        p = r["Properties"]
        if "CidrIp" in p or "CidrIpv6" in p:
            bad.append(f"{name}: ingress from a CIDR")
        if p["GroupId"] == {"Ref": "LoadBalancerSecurityGroup"} and p.get("SourceSecurityGroupId") != {"Ref": "FunctionsSecurityGroup"}:
            bad.append(f"{name}: load balancer ingress from something other than FunctionsSecurityGroup")
    if r["Type"] == "AWS::EC2::SecurityGroup":
        if not r["Properties"].get("SecurityGroupEgress"):
            bad.append(f"{name}: no inline SecurityGroupEgress, so it keeps the default allow-all egress")
        for ing in r["Properties"].get("SecurityGroupIngress", []):
            bad.append(f"{name}: inline ingress rule {ing} (use a SecurityGroupIngress with a source group)")
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
print(f"contract {path.rsplit('/', 1)[-1]}: task role = {len(TASK_ACTIONS)} collector calls exactly, token from Secrets Manager, stopTimeout 30, /readyz via 9464, OTLP only from FunctionsSecurityGroup")
PY
"$py" "$work/contract.py" "$deploy/collector-fargate.yaml" || die "deploy/collector-fargate.yaml breaks the deployment contract (above)"

# docs/DEPLOY.md in step with the templates: every parameter it passes and every output it reads exist.
cat > "$work/docs.py" <<'PY'
import pathlib, re, sys
from cfnlint.decode import decode

doc, deploy = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
stacks = {"lambdawatch-layer": "layer.yaml", "lambdawatch-collector": "collector-fargate.yaml",
          "lambdawatch-example": "example-function.yaml"}
tpl = {}
for f in stacks.values():
    t, errs = decode(str(deploy / f))
    if errs:
        sys.exit(f"cannot parse {f}: {errs}")
    tpl[f] = (set(t.get("Parameters", {})), set(t.get("Outputs", {})))
text = doc.read_text()
bad, checked = [], 0
for block in re.findall(r"```sh\n(.*?)```", text, re.S):
    for cmd in block.replace("\\\n", " ").splitlines():
        m = re.search(r"--template-file deploy/(\S+)", cmd)
        if m and "--parameter-overrides" in cmd:
            params = tpl.get(m.group(1), (set(), set()))[0]
            for name in re.findall(r"\b([A-Z][A-Za-z0-9]+)=", cmd.split("--parameter-overrides", 1)[1]):
                checked += 1
                if name not in params:
                    bad.append(f"DEPLOY.md passes {name}= to deploy/{m.group(1)}, which has no such parameter")
for stack, key in re.findall(r"\bout (lambdawatch-[a-z]+) ([A-Za-z0-9]+)", text):
    checked += 1
    if stack not in stacks or key not in tpl[stacks[stack]][1]:
        bad.append(f"DEPLOY.md reads output {key} of {stack}, which {stacks.get(stack, 'no template')} does not have")
if checked < 8:
    bad.append(f"DEPLOY.md: only {checked} parameter/output references found; is the parser still matching?")
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
print(f"docs/DEPLOY.md: {checked} parameter and output references match the templates")
PY
if [ -z "${LAMBDAWATCH_DEPLOY_DIR:-}" ]; then
  "$py" "$work/docs.py" "$root/docs/DEPLOY.md" "$deploy" || die "docs/DEPLOY.md and deploy/ disagree (above)"
fi

# ---------------------------------------------------------------- 4. self-test: the gates bite
if [ -z "${LAMBDAWATCH_IAC_SELFTEST:-}" ]; then
  selftest() { # selftest NAME FROM TO EXPECTED: deploy/ with FROM replaced by TO must fail for EXPECTED
    local dir="$work/broken-$1"
    mkdir -p "$dir"
    cp "$deploy"/*.yaml "$dir/"
    "$py" - "$dir/collector-fargate.yaml" "$2" "$3" <<'PY' || die "self-test $1: cannot mutate the template"
import sys
path, old, new = sys.argv[1:4]
s = open(path).read()
if s.count(old) != 1:
    sys.exit(f"expected exactly one {old!r} in {path}, found {s.count(old)}")
open(path, "w").write(s.replace(old, new))
PY
    if LAMBDAWATCH_IAC_SELFTEST=1 LAMBDAWATCH_DEPLOY_DIR="$dir" "$0" > "$dir/out" 2>&1; then
      cat "$dir/out" >&2
      die "self-test $1: a broken template passed"
    fi
    grep -q "$4" "$dir/out" || { cat "$dir/out" >&2; die "self-test $1: failed, but not for the expected reason ($4)"; }
    say "self-test $1: rejected as expected ($4)"
  }
  selftest cfn-lint "StopTimeout: 30
" "StopTimeout: 30
          NotAProperty: 1
" "cfn-lint found problems"
  selftest unjustified-skip "          - id: CKV_AWS_91
            comment: >-
" "          - id: CKV_AWS_91
            comment: fine
            x: >-
" "no written justification"
  selftest extra-action "Action: sns:Publish
" "Action: [sns:Publish, sns:Subscribe]
" "grants calls the collector does not make"
fi
say "all checks passed"

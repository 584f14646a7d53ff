#!/usr/bin/env bash
# The layer's size is a cold-start cost: the extension must never link the AWS SDK (the collector
# does), nor grow a second HTTP stack or an async runtime other than tokio.
set -euo pipefail
cd "$(dirname "$0")/../.."
tree=$(cargo tree -p lambdawatch-extension -e normal --prefix none)
bad=$(printf '%s\n' "$tree" | grep -E '^(aws-sdk-[a-z0-9-]+|aws-config|aws-smithy-[a-z0-9-]+|reqwest|async-std|openssl) ' | sort -u || true)
if [ -n "$bad" ]; then
  echo "lambdawatch-extension must not depend on:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "extension dependency guard: $(printf '%s\n' "$tree" | sort -u | wc -l) crates, no AWS SDK"

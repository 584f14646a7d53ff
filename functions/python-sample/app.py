"""Python sample function for the sandbox and the end-to-end tests.

Run by AWS's Runtime Interface Client: ``python -m awslambdaric app.handler`` (cwd = this folder,
or ``/var/task`` under the AWS RIE). Logs through ``aws_lambda_powertools.Logger``, which writes
one structured JSON object per line to stdout.

Payload convention (shared with ``functions/rust-sample`` and ``sandbox::workload``), every field
optional: ``{"fail": bool, "sleep_ms": int, "log_lines": int, "log_json": bool}``.

- ``log_lines`` lines are emitted first: through the Powertools ``Logger`` (JSON) when ``log_json``
  is true, else as plain ``print`` lines ``[INFO] log line i of n``.
- ``sleep_ms`` makes the handler slow (or, beyond the function timeout, time out).
- ``fail`` raises ``SampleFailure``; awslambdaric posts it to ``/invocation/{id}/error``.

Environment: ``INIT_SLEEP_MS`` sleeps during init (module import, before the first ``/next``).
A payload that is not a JSON object is treated as the empty payload, so the function still answers.
"""

import os
import time

from aws_lambda_powertools import Logger

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "python-sample"))

_INIT_SLEEP_MS = int(os.environ.get("INIT_SLEEP_MS", "0") or "0")
print(f"python-sample init (init_sleep_ms={_INIT_SLEEP_MS})", flush=True)
if _INIT_SLEEP_MS > 0:
    time.sleep(_INIT_SLEEP_MS / 1000.0)


class SampleFailure(Exception):
    """Raised when the payload asks for a failure."""


def _payload(event):
    if not isinstance(event, dict):
        return {}
    return event


@logger.inject_lambda_context
def handler(event, context):
    payload = _payload(event)
    log_lines = int(payload.get("log_lines", 0) or 0)
    log_json = bool(payload.get("log_json", False))
    for i in range(log_lines):
        message = f"log line {i} of {log_lines}"
        if log_json:
            logger.info(message, extra={"line": i})
        else:
            print(f"[INFO] {message}", flush=True)
    sleep_ms = int(payload.get("sleep_ms", 0) or 0)
    if sleep_ms > 0:
        time.sleep(sleep_ms / 1000.0)
    if payload.get("fail", False):
        logger.error("failing on purpose")
        raise SampleFailure(f"python sample failed on purpose for {context.aws_request_id}")
    return {"ok": True, "requestId": context.aws_request_id, "echo": event}

//! `lambdawatch-extension`: an AWS Lambda external extension that turns every lifecycle event,
//! log line and platform span into OTLP (Contract 1 in `docs/ARCHITECTURE.md`), loses nothing it
//! can keep, and never slows or breaks the function.
//!
//! ```text
//!                 ┌──────────────── extensions_api (register, /event/next) ─────────────┐
//!                 ▼                                                                      │
//! Lambda ──POST batches──► telemetry_api ──bounded chan──► lifecycle (the one loop) ──────┘
//!   (platform, function,   (listener, 200 always;           │  asks flush::decide(state, now)
//!    extension streams)     events::parse_batch)            ▼
//!                                                 translate (by requestId) ──► buffer
//!                                                 (spans, metrics, logs)       (bounded, drops
//!                                                                               oldest, counts)
//!                                                                                  │ drain
//!                                                                                  ▼
//!                                                   export (OTLP/HTTP(S) protobuf, gzip, retries
//!                                                   within the time available) ──► collector
//! ```
//!
//! | stage | consumes | produces | when full / failing |
//! |---|---|---|---|
//! | [`telemetry_api`] | Lambda's POSTs | parsed batches on a channel of [`lifecycle::TELEMETRY_CHANNEL`] | awaits (Lambda buffers, reports `logsDropped`); answers 200 always |
//! | [`events`] | a POST body | events + counts of what was odd | skips and counts the bad element, keeps the rest |
//! | [`translate`] | events, INVOKE | spans, metrics, log records (written straight to protobuf bytes by [`log_proto`]) | open invocations bounded; oldest emitted early; trace contexts of the last 256 emitted kept for late log records |
//! | [`buffer`] | items | batches | drops oldest, counts `dropped{reason=buffer_full}` |
//! | [`export`] | a batch, a deadline | an export report | retries within the deadline, then hands the unsent items back (`lifecycle` returns them to the buffer for the next flush); permanent refusals counted as `rejected` / `export_failed` / `unsupported_endpoint`; unsent at the final flush counted as `export_failed` |
//! | [`flush`] | flush facts, now | a decision | a collector not proven healthy (no answer yet, refusing, black-holed, bad certificate) never holds `/next` |
//! | [`lifecycle`] | everything | calls to `/next`, flushes | shutdown within `deadlineMs` |
//!
//! **What the extension costs the function** (the time `/next` is held after the runtime is
//! done, Lambda's `extensionOverhead`; the response has already gone to the caller, but the
//! environment is busy and billed):
//!
//! - collector not proven healthy (a new environment before its first answer, connection
//!   refused, black-holed, untrusted certificate, unusable endpoint): **0** — `/next` follows
//!   each INVOKE at once; exports and health probes run in the background, one at a time.
//! - collector healthy (its last export succeeded), invocations rare (`adaptive`) or `end`: at
//!   most the wait for `platform.runtimeDone` (the Telemetry API's 25 ms buffering plus
//!   delivery) plus [`lifecycle::BEFORE_NEXT_BUDGET`] (250 ms) for the flush; past the budget,
//!   or at the first failed attempt, the export goes on in the background and the collector
//!   counts as unhealthy until a background export succeeds. Measured with the debug build on a
//!   loaded 2-core machine: median 12–47 ms, worst 82–150 ms.
//! - invocations frequent (`adaptive`) or `periodic`: 0.
//!
//! The only unbounded wait is for `platform.runtimeDone` itself, which Lambda always sends: it
//! ends at the invocation's deadline plus [`lifecycle::RUNTIME_DONE_GRACE`] if it never comes.
//! `tests/e2e_sandbox.rs` checks the first two against the real sandbox's `extensionOverhead`.
//!
//! Settings (every name is a const in [`config`] beside its default; a bad value logs one line
//! and falls back to the default):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | `http://localhost:4318` | base URL; `/v1/{traces,metrics,logs}` appended |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `_METRICS_` / `_LOGS_` | derived | full URL per signal |
//! | `OTEL_EXPORTER_OTLP_HEADERS` | none | `k=v,k2=v2`, values percent-decoded |
//! | `OTEL_EXPORTER_OTLP_COMPRESSION` | `gzip` | `gzip` or `none` |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT` | `10000` | ms per export request |
//! | `OTEL_EXPORTER_OTLP_CERTIFICATE` | none | PEM file of CA certificates trusted for `https://` endpoints, in addition to Mozilla's roots built in |
//! | `OTEL_SERVICE_NAME` | function name | `service.name` |
//! | `OTEL_RESOURCE_ATTRIBUTES` | none | `k=v,…` added to the resource (they win) |
//! | `LAMBDAWATCH_FLUSH` | `adaptive` | `adaptive`, `end` or `periodic,<ms>` |
//! | `LAMBDAWATCH_CAPTURE_LOGS` | `true` | subscribe to `function`/`extension` logs |
//! | `LAMBDAWATCH_REDACT` | `default` | regexes separated by `;;`; `default` = the built-in set (AWS secret keys, access key ids, bearer tokens, URL passwords, and the whole value of a JSON log field whose key names a secret: password, authorization, api key, private key or secret access key anywhere in the key, `token` or `secret` as its ending, so `access_token` is masked and `tokens_used` is not); `none` = off; a `(?P<secret>…)` group masks only itself |
//! | `LAMBDAWATCH_BUFFER_MAX_ITEMS` | `20000` | export buffer items |
//! | `LAMBDAWATCH_BUFFER_MAX_BYTES` | `8388608` | export buffer encoded bytes |
//! | `LAMBDAWATCH_TELEMETRY_LISTENER` | `0.0.0.0:0` | listener bind address (port 0 = ephemeral); the subscription URI is `http://sandbox.localdomain:<bound port>` |
//!
//! Read from Lambda: `AWS_LAMBDA_RUNTIME_API`, `AWS_LAMBDA_FUNCTION_NAME`,
//! `AWS_LAMBDA_FUNCTION_VERSION`, `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`,
//! `AWS_LAMBDA_LOG_STREAM_NAME`, `AWS_REGION`, `AWS_LAMBDA_INITIALIZATION_TYPE`.
//!
//! Endpoints may be `http://` or `https://` (rustls with the `ring` provider, TLS 1.2/1.3,
//! HTTP/1; Mozilla's roots compiled in, plus `OTEL_EXPORTER_OTLP_CERTIFICATE`; no client
//! certificates). A certificate that does not verify is not retried: the items are counted as
//! `dropped{reason=export_failed}` and the function is not held. Any other scheme is counted as
//! `dropped{reason=unsupported_endpoint}` (the config already refuses one with a warning).

pub mod buffer;
pub mod config;
pub mod diag;
pub mod events;
pub mod export;
pub mod extensions_api;
pub mod flush;
pub mod http;
pub mod lifecycle;
pub mod log_proto;
pub mod observe;
pub mod telemetry_api;
pub mod translate;

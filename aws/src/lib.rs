//! The collector's AWS edges. Pure translation and batching live beside the SDK calls that use
//! them, so each limit of the AWS API is enforced (and tested) in one place.
//!
//! ```text
//! sources:  cloudwatch::Poller ──GetMetricData (≤ 500 queries/call)──► PlatformCount ──► collector::aggregate
//!           firehose::handle (Metric Streams, OTel 1.0.0) ───────────► PlatformCount ──► collector::aggregate
//! sinks:    collector logs ──► logs::Batcher (10,000 events, 1 MiB, 24 h, sorted) ──► PutLogEvents
//!           collector spans ─► xray::segments (≤ 64 KiB documents, 50 per call) ──────► PutTraceSegments
//!           alerts ──────────► sns::Publisher (≤ 256 KiB, message attributes) ────────► Publish
//! state:    checkpoint::Store (DynamoDB / S3, conditional writes) ◄──► collector state
//!           lease (one record in the same store) ──► which task polls and pages
//! ```
//!
//! Credentials come from the standard chain (the Fargate task role in production); the endpoint is
//! overridable (`AWS_ENDPOINT_URL` or [`client::AwsSettings::endpoint_url`]) for tests against an
//! AWS API emulator. Throttling and 5xx errors are retried by the SDK's standard retry strategy
//! with backoff; every call and every retry is counted in [`client::AwsCounters`].
//! The extension never links this crate: the layer's size is a cold-start cost.

pub mod checkpoint;
pub mod client;
pub mod cloudwatch;
pub mod firehose;
pub mod lease;
pub mod logs;
pub mod sns;
pub mod xray;

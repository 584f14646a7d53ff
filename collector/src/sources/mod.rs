//! Sources other than OTLP receivers. Platform counts (Throttles, DeadLetterErrors,
//! AsyncEventsReceived/Dropped, SQS DLQ NumberOfMessagesSent) reach aggregation through
//! [`crate::ingest::decode::Decoder::platform_batch`], whatever produced them: Metric-Streams-shaped
//! OTLP metrics (decoded in `ingest`), or the CloudWatch poller and Firehose receiver of the `aws`
//! crate, which hand their `PlatformCount`s to that function and offer the batch to the same
//! bounded ingest queue (`Ingest::enqueue` answers `QueueFull` when it is full; the caller
//! decides whether to retry, and counts it).

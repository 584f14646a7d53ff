//! The bounded export buffer between `translate` and `export`.
//!
//! Consumes spans, metrics and log records as `translate` produces them; produces a [`Batch`]
//! when `lifecycle` flushes. Bounded by item count and by encoded bytes
//! (`LAMBDAWATCH_BUFFER_MAX_ITEMS` / `_BYTES`). **When full it drops the oldest items** and counts
//! each one in [`Buffer::dropped`]: fresh telemetry is worth more than old, and the function must
//! never wait for us. A single item larger than the byte limit is dropped on arrival. A batch
//! whose export failed for a passing reason comes back through [`Buffer::requeue`] as the oldest
//! items, so the same drop-oldest rule decides what survives a long outage.

use std::collections::VecDeque;

use opentelemetry_proto::tonic::{metrics::v1::Metric, trace::v1::Span};
use prost::Message;

use crate::log_proto::EncodedLog;

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Spans and metrics are boxed so an item stays small: the buffer mostly holds log records,
    /// which move in and out of it by value.
    Span(Box<Span>),
    Metric(Box<Metric>),
    /// Log records arrive already encoded ([`crate::log_proto`]).
    Log(EncodedLog),
}

impl Item {
    fn encoded_len(&self) -> usize {
        match self {
            Item::Span(s) => s.encoded_len(),
            Item::Metric(m) => m.encoded_len(),
            Item::Log(l) => l.len(),
        }
    }
}

/// What one flush takes out of the buffer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub spans: Vec<Span>,
    pub metrics: Vec<Metric>,
    pub logs: Vec<EncodedLog>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty() && self.metrics.is_empty() && self.logs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.spans.len() + self.metrics.len() + self.logs.len()
    }
}

#[derive(Debug)]
pub struct Buffer {
    items: VecDeque<(Item, usize)>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
    dropped: u64,
}

impl Buffer {
    pub fn new(max_items: usize, max_bytes: usize) -> Self {
        Self {
            items: VecDeque::new(),
            bytes: 0,
            max_items: max_items.max(1),
            max_bytes: max_bytes.max(1),
            dropped: 0,
        }
    }

    pub fn push(&mut self, item: Item) {
        let size = item.encoded_len();
        self.push_sized(item, size);
    }

    fn push_sized(&mut self, item: Item, size: usize) {
        if size > self.max_bytes {
            self.dropped += 1;
            return;
        }
        while self.items.len() >= self.max_items || self.bytes + size > self.max_bytes {
            match self.items.pop_front() {
                Some((_, s)) => {
                    self.bytes -= s;
                    self.dropped += 1;
                }
                None => break,
            }
        }
        self.bytes += size;
        self.items.push_back((item, size));
    }

    pub fn span(&mut self, s: Span) {
        self.push(Item::Span(Box::new(s)));
    }

    pub fn metric(&mut self, m: Metric) {
        self.push(Item::Metric(Box::new(m)));
    }

    /// A log record, encoded or as prost's `LogRecord` (encoded here).
    pub fn log(&mut self, l: impl Into<EncodedLog>) {
        self.push(Item::Log(l.into()));
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Fill level in [0, 1], the larger of the item and byte ratios.
    pub fn fill(&self) -> f64 {
        let a = self.items.len() as f64 / self.max_items as f64;
        let b = self.bytes as f64 / self.max_bytes as f64;
        a.max(b)
    }

    /// Items dropped because the buffer was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Returns `batch` (taken by an export that failed for a passing reason) ahead of what
    /// arrived since, as the oldest items; when that overflows, the oldest go first (counted in
    /// [`Buffer::dropped`]). Nothing else is lost.
    pub fn requeue(&mut self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let newer = std::mem::take(&mut self.items);
        self.bytes = 0;
        for s in batch.spans {
            self.push(Item::Span(Box::new(s)));
        }
        for m in batch.metrics {
            self.push(Item::Metric(Box::new(m)));
        }
        for l in batch.logs {
            self.push(Item::Log(l));
        }
        for (item, size) in newer {
            self.push_sized(item, size);
        }
    }

    /// Takes everything, oldest first.
    pub fn drain(&mut self) -> Batch {
        // Sized up front: no reallocation (and copy of every record) while filling.
        let (mut spans, mut metrics) = (0, 0);
        for (item, _) in &self.items {
            match item {
                Item::Span(_) => spans += 1,
                Item::Metric(_) => metrics += 1,
                Item::Log(_) => {}
            }
        }
        let mut b = Batch {
            spans: Vec::with_capacity(spans),
            metrics: Vec::with_capacity(metrics),
            logs: Vec::with_capacity(self.items.len() - spans - metrics),
        };
        for (item, _) in self.items.drain(..) {
            match item {
                Item::Span(s) => b.spans.push(*s),
                Item::Metric(m) => b.metrics.push(*m),
                Item::Log(l) => b.logs.push(l),
            }
        }
        self.bytes = 0;
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::logs::v1::LogRecord;

    fn text(l: &EncodedLog) -> String {
        l.decode().unwrap().severity_text
    }

    fn log(body: &str) -> LogRecord {
        LogRecord {
            severity_text: body.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn drops_oldest_by_count() {
        let mut b = Buffer::new(3, 1 << 20);
        for i in 0..5 {
            b.log(log(&i.to_string()));
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.dropped(), 2);
        let batch = b.drain();
        let kept: Vec<_> = batch.logs.iter().map(text).collect();
        assert_eq!(kept, ["2", "3", "4"]);
        assert!(b.is_empty());
        assert_eq!(b.bytes(), 0);
    }

    #[test]
    fn requeued_items_come_first_and_overflow_drops_the_oldest() {
        let mut b = Buffer::new(4, 1 << 20);
        b.log(log("a"));
        b.log(log("b"));
        let first = b.drain();
        b.requeue(Batch::default());
        assert!(b.is_empty());
        b.log(log("c"));
        b.requeue(first);
        assert_eq!(b.dropped(), 0);
        let texts = |batch: &Batch| -> Vec<String> { batch.logs.iter().map(text).collect() };
        let again = b.drain();
        assert_eq!(texts(&again), ["a", "b", "c"]);
        assert_eq!(b.bytes(), 0);
        // Full: the requeued (oldest) items are the ones dropped.
        b.log(log("d"));
        b.log(log("e"));
        b.requeue(again);
        assert_eq!(b.len(), 4);
        assert_eq!(b.dropped(), 1);
        assert_eq!(texts(&b.drain()), ["b", "c", "d", "e"]);
    }

    #[test]
    fn drops_oldest_by_bytes_and_oversized_on_arrival() {
        let one = log(&"x".repeat(100)).encoded_len();
        let mut b = Buffer::new(1000, one * 2);
        b.log(log(&"a".repeat(100)));
        b.log(log(&"b".repeat(100)));
        b.log(log(&"c".repeat(100)));
        assert_eq!(b.len(), 2);
        assert_eq!(b.dropped(), 1);
        assert!(b.fill() > 0.99);
        b.log(log(&"z".repeat(1000)));
        assert_eq!(b.len(), 2, "oversized item must not evict others");
        assert_eq!(b.dropped(), 2);
        let batch = b.drain();
        assert!(text(&batch.logs[0]).starts_with('b'));
    }
}

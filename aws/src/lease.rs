//! A leader lease in the checkpoint store, so that N collector tasks behind a load balancer poll
//! CloudWatch once and page through SNS once.
//!
//! The lease is one small record (`lease/leader`: a DynamoDB item or an S3 object beside the
//! checkpoints) written only with the store's conditional writes ([`Store::save`]: DynamoDB
//! `ConditionExpression` on a version number, S3 `If-Match` on the ETag). It holds the holder's
//! identity, a **fencing token** (incremented on every change of holder) and the CloudWatch
//! poller's [`Ledger`], so a new holder continues the old one's cursor instead of re-counting the
//! lookback window.
//!
//! [`LeasePolicy`] is the pure part: given what the store holds and the local monotonic time
//! (milliseconds, injected), it decides to create, renew, take over or wait, and whether this
//! task holds the lease *now*. No wall clock is compared across tasks:
//!
//! - a non-holder remembers when it first saw the record's current version; once that version
//!   has stood unchanged for `ttl` on its own clock (the holder stopped renewing), it takes over
//!   with a write conditional on that version (so of several contenders exactly one wins) and
//!   token + 1;
//! - the holder renews every `ttl / 3` and believes it holds the lease only until
//!   `start of its last successful write + ttl × 0.8`: every observer started its `ttl` after
//!   that write landed, so the old holder has stopped acting (`is_holder` false) before anyone
//!   can take over, with 20 % of the ttl as margin for clock-rate drift and a stalled process;
//! - a released record (graceful shutdown) can be taken over at once.
//!
//! A write that fails for another reason (throttling, 5xx) leaves the holder's deadline as it
//! was: it stops acting when the deadline passes, never later.

use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointError, Store, Versioned};
use crate::cloudwatch::Ledger;

/// The key of the lease record in the checkpoint store (not under the checkpoints' `task/`).
pub const LEASE_KEY: &str = "lease/leader";

/// The stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The holding instance (`<task id>/<instance nonce>`).
    pub holder: String,
    /// The fencing token: +1 on every change of holder; stamped on what the holder sends.
    pub token: u64,
    /// True once the holder let go (graceful shutdown): no need to wait for the ttl.
    #[serde(default)]
    pub released: bool,
    /// The CloudWatch poller's cursor as of the holder's last renewal.
    #[serde(default)]
    pub ledger: Option<Ledger>,
    /// Different on every write of one holder: S3's version is the ETag, the MD5 of the content,
    /// so a renewal writing identical bytes would not change the version observers watch and
    /// they would take over from a live holder.
    #[serde(default)]
    pub seq: u64,
}

/// What to do after reading the record.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// No record: create one (conditional on absence).
    Create { token: u64 },
    /// Write our record conditionally on `expected`. `takeover` when it changes the holder.
    Write {
        expected: String,
        token: u64,
        takeover: bool,
    },
    /// Someone else holds a live lease.
    Wait,
}

/// The pure lease state machine of one instance. Times are local monotonic milliseconds.
#[derive(Debug, Clone)]
pub struct LeasePolicy {
    pub me: String,
    pub ttl_ms: u64,
    /// Token of the lease we hold or last held (0: never).
    token: u64,
    /// We act as holder while `now < held_until`.
    held_until: Option<u64>,
    /// The record version we are watching and when we first saw it.
    observed: Option<(String, u64)>,
}

impl LeasePolicy {
    pub fn new(me: String, ttl_ms: u64) -> Self {
        Self {
            me,
            ttl_ms: ttl_ms.max(1),
            token: 0,
            held_until: None,
            observed: None,
        }
    }

    /// How often to read and renew: a third of the ttl.
    pub fn renew_every_ms(&self) -> u64 {
        (self.ttl_ms / 3).max(1)
    }

    /// The fencing token while this instance holds the lease at `now`.
    pub fn holding(&self, now_ms: u64) -> Option<u64> {
        self.held_until
            .filter(|until| now_ms < *until)
            .map(|_| self.token)
    }

    /// The holder's deadline after a write that started at `start_ms` succeeded.
    fn deadline(&self, start_ms: u64) -> u64 {
        start_ms + self.ttl_ms * 8 / 10
    }

    /// Decides what to do with `current` (the record and its version) read at `now_ms`.
    pub fn step(&mut self, now_ms: u64, current: Option<(&Record, &str)>) -> Step {
        let Some((rec, version)) = current else {
            self.held_until = None;
            self.observed = None;
            return Step::Create { token: 1 };
        };
        if rec.holder == self.me && rec.token == self.token && !rec.released {
            return Step::Write {
                expected: version.to_owned(),
                token: rec.token,
                takeover: false,
            };
        }
        // Someone else's record (or our released one): we hold nothing.
        self.held_until = None;
        let since = match &self.observed {
            Some((v, since)) if v == version => *since,
            _ => {
                self.observed = Some((version.to_owned(), now_ms));
                now_ms
            }
        };
        if rec.released || now_ms.saturating_sub(since) >= self.ttl_ms {
            Step::Write {
                expected: version.to_owned(),
                token: rec.token + 1,
                takeover: true,
            }
        } else {
            Step::Wait
        }
    }

    /// The outcome of the write [`LeasePolicy::step`] asked for, started at `start_ms`.
    /// `Ok(true)`: written; `Ok(false)`: lost the conditional write; `Err(())`: the store failed.
    pub fn written(&mut self, start_ms: u64, token: u64, outcome: Result<bool, ()>) {
        match outcome {
            Ok(true) => {
                self.token = token;
                self.held_until = Some(self.deadline(start_ms));
                self.observed = None;
            }
            Ok(false) => {
                self.held_until = None;
            }
            // Unknown: keep the deadline we had (it only runs out).
            Err(()) => {}
        }
    }

    /// Forgets the lease (after releasing it).
    pub fn released(&mut self) {
        self.held_until = None;
    }

    /// The local time until which this instance acts as holder, if it holds the lease.
    pub fn held_until(&self) -> Option<u64> {
        self.held_until
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Store(#[from] CheckpointError),
    #[error("lease record not serialisable: {0}")]
    Malformed(String),
}

/// Reads the lease record. A malformed record is reported as an error (it is never overwritten
/// blindly: its version is returned so a takeover can replace it conditionally).
pub async fn read(store: &Store) -> Result<Option<(Record, String)>, LeaseError> {
    let Some(Versioned { body, version }) = store.load(LEASE_KEY).await? else {
        return Ok(None);
    };
    match serde_json::from_slice::<Record>(&body) {
        Ok(r) => Ok(Some((r, version))),
        // A record nobody can read is treated as released, so it gets replaced.
        Err(_) => Ok(Some((
            Record {
                holder: String::new(),
                token: 0,
                released: true,
                ledger: None,
                seq: 0,
            },
            version,
        ))),
    }
}

/// Writes `record` conditionally (`expected: None`: only if absent). `Ok(Some(new version))`
/// when written, `Ok(None)` when another writer got there first.
pub async fn write(
    store: &Store,
    record: &Record,
    expected: Option<&str>,
) -> Result<Option<String>, LeaseError> {
    let body = serde_json::to_vec(record).map_err(|e| LeaseError::Malformed(e.to_string()))?;
    match store.save(LEASE_KEY, body, expected).await {
        Ok(v) => Ok(Some(v)),
        Err(CheckpointError::Conflict { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 3_000;

    fn rec(holder: &str, token: u64) -> Record {
        Record {
            holder: holder.into(),
            token,
            released: false,
            ledger: None,
            seq: 0,
        }
    }

    #[test]
    fn the_first_instance_creates_holds_and_renews() {
        let mut a = LeasePolicy::new("a".into(), TTL);
        assert_eq!(a.step(0, None), Step::Create { token: 1 });
        a.written(0, 1, Ok(true));
        assert_eq!(a.holding(0), Some(1));
        assert_eq!(
            a.step(1_000, Some((&rec("a", 1), "1"))),
            Step::Write {
                expected: "1".into(),
                token: 1,
                takeover: false
            }
        );
        a.written(1_000, 1, Ok(true));
        assert_eq!(a.holding(3_000), Some(1), "renewed at 1 s: valid to 3.4 s");
        assert_eq!(a.holding(3_400), None);
    }

    #[test]
    fn a_holder_that_cannot_renew_stops_acting_before_anyone_takes_over() {
        let mut a = LeasePolicy::new("a".into(), TTL);
        let mut b = LeasePolicy::new("b".into(), TTL);
        a.step(0, None);
        a.written(0, 1, Ok(true));
        // b saw a's record just after a's write landed.
        assert_eq!(b.step(10, Some((&rec("a", 1), "1"))), Step::Wait);
        // a's renewals fail (store errors): a keeps its deadline and then lets go.
        a.written(1_000, 1, Err(()));
        assert_eq!(a.holding(2_399), Some(1));
        assert_eq!(a.holding(2_400), None, "a stops at 80 % of the ttl");
        assert_eq!(b.step(2_500, Some((&rec("a", 1), "1"))), Step::Wait);
        assert_eq!(
            b.step(3_010, Some((&rec("a", 1), "1"))),
            Step::Write {
                expected: "1".into(),
                token: 2,
                takeover: true
            },
            "b takes over once the version stood for the ttl on b's clock"
        );
        b.written(3_010, 2, Ok(true));
        assert_eq!(b.holding(3_010), Some(2));
        // a comes back, reads b's record: it holds nothing.
        assert_eq!(a.step(3_100, Some((&rec("b", 2), "2"))), Step::Wait);
        assert_eq!(a.holding(3_100), None);
    }

    #[test]
    fn renewals_keep_the_lease_and_reset_the_observers_clock() {
        let mut b = LeasePolicy::new("b".into(), TTL);
        for (t, v) in [
            (0, "1"),
            (1_000, "2"),
            (2_000, "3"),
            (3_000, "4"),
            (4_000, "5"),
        ] {
            assert_eq!(b.step(t, Some((&rec("a", 1), v))), Step::Wait, "at {t}");
        }
        assert_eq!(b.step(6_999, Some((&rec("a", 1), "5"))), Step::Wait);
        assert!(matches!(
            b.step(7_000, Some((&rec("a", 1), "5"))),
            Step::Write { takeover: true, .. }
        ));
    }

    #[test]
    fn of_two_contenders_the_one_that_loses_the_conditional_write_holds_nothing() {
        let mut b = LeasePolicy::new("b".into(), TTL);
        let mut c = LeasePolicy::new("c".into(), TTL);
        let r = rec("a", 4);
        b.step(0, Some((&r, "9")));
        c.step(0, Some((&r, "9")));
        let sb = b.step(TTL, Some((&r, "9")));
        let sc = c.step(TTL, Some((&r, "9")));
        assert_eq!(sb, sc);
        b.written(TTL, 5, Ok(true));
        c.written(TTL, 5, Ok(false));
        assert_eq!(b.holding(TTL), Some(5));
        assert_eq!(c.holding(TTL), None);
    }

    #[test]
    fn a_released_record_is_taken_over_at_once_and_absence_means_create() {
        let mut b = LeasePolicy::new("b".into(), TTL);
        let mut r = rec("a", 7);
        r.released = true;
        assert_eq!(
            b.step(0, Some((&r, "3"))),
            Step::Write {
                expected: "3".into(),
                token: 8,
                takeover: true
            }
        );
        let mut a = LeasePolicy::new("a".into(), TTL);
        a.written(0, 7, Ok(true));
        assert!(
            matches!(
                a.step(10, Some((&r, "3"))),
                Step::Write { takeover: true, .. }
            ),
            "our own released record is a takeover, not a renewal"
        );
        assert_eq!(a.holding(10), None);
    }

    #[test]
    fn a_record_of_another_token_under_our_name_is_not_ours() {
        // A previous process with the same identity (should not happen: identities carry a
        // nonce) is not renewed blindly.
        let mut a = LeasePolicy::new("a".into(), TTL);
        assert_eq!(a.step(0, Some((&rec("a", 3), "1"))), Step::Wait);
    }
}

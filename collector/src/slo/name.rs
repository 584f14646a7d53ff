//! [`SloName`]: an SLO's name shared by every function's status instead of copied into each.
//!
//! One evaluation reports every SLO for every function (10,000 functions × 5 SLOs is 50,000
//! statuses); a `String` per status was one allocation and one copy each. The evaluator makes one
//! `SloName` per SLO of the spec and hands out clones (a reference-count increment). It reads,
//! compares, prints and serialises as the plain string, so the JSON of `/api/v1/slos` and the
//! alert contents do not change.

use std::{fmt, ops::Deref, sync::Arc};

/// An SLO name, cheap to clone (shared, immutable).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SloName(Arc<str>);

impl SloName {
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` and `other` share one allocation (a clone, not an equal copy).
    pub fn shares_with(&self, other: &SloName) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for SloName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SloName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SloName {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl PartialEq<str> for SloName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for SloName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for SloName {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<SloName> for String {
    fn eq(&self, other: &SloName) -> bool {
        **self == *other.0
    }
}

impl PartialEq<SloName> for &str {
    fn eq(&self, other: &SloName) -> bool {
        **self == *other.0
    }
}

impl fmt::Display for SloName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SloName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl serde::Serialize for SloName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_allocation_and_copies_do_not() {
        let a = SloName::new("error_rate");
        let b = a.clone();
        let c = SloName::new("error_rate");
        assert!(a.shares_with(&b));
        assert!(!a.shares_with(&c));
        assert_eq!(a, c, "equal by content");
        assert_ne!(a, SloName::new("error_rat"));
    }

    #[test]
    fn reads_compares_and_serialises_as_the_string() {
        let n = SloName::new("cold_start");
        assert_eq!(n.as_str(), "cold_start");
        assert_eq!(&*n, "cold_start");
        assert!(n == "cold_start");
        assert!(n != "cold");
        assert!("cold_start" == n);
        let owned = String::from("cold_start");
        assert!(n == owned);
        assert!(owned == n);
        assert_eq!(n.to_string(), "cold_start");
        assert_eq!(format!("{n:?}"), "\"cold_start\"");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"cold_start\"");
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            serde_json::json!("cold_start")
        );
        assert!(SloName::new("a") < SloName::new("b"));
    }
}

//! (stage module: see crate docs)
pub mod alert;
pub mod sinks;

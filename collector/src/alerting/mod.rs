//! (stage module: see crate docs)
pub mod sinks;

//! (stage module: see crate docs)
pub mod spec;

//! (stage module: see crate docs)

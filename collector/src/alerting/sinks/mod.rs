//! Alert sinks.

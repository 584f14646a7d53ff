//! SLOs: the spec (`spec`, YAML in, checked types out) and the evaluation (`eval`, a pure function
//! of aggregated counts, spec and time producing SLIs, budgets, burn rates and alert conditions).
pub mod cold_start_ms;
pub mod conditions;
pub mod eval;
pub mod name;
pub mod spec;

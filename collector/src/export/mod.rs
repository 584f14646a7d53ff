//! Exporters: `prometheus` renders Contract 2 for `/metrics` (served by `api`).
pub mod prometheus;

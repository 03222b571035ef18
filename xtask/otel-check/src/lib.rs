//! Nothing here: `tests/otel.rs` checks lb-core's OpenTelemetry exporter against
//! the real SDK (see `Cargo.toml` for why this is a project of its own).

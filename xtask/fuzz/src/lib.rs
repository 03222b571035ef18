//! The bodies of the fuzz targets, as a library the one-line targets in
//! `fuzz_targets/` call.
//!
//! Each module holds the targets of one crate and is also included, with `#[path]`, by
//! that crate's regression test, which replays `seeds/` and `regressions/` through it
//! under plain `cargo test`:
//!
//! - [`bodies`]: lb-transport and lb-core (`lb-transport/tests/fuzz_regressions.rs`).
//! - [`rls_bodies`]: lb-rls (`lb-rls/tests/fuzz_regressions.rs`), using only lb-rls
//!   and its own dependencies, so lb-rls's test can include it.

pub mod bodies;
pub mod rls_bodies;

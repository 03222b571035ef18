//! The bodies of the fuzz targets, as a library the one-line targets in
//! `fuzz_targets/` call.
//!
//! Each module holds the targets of one crate and is also included, with `#[path]`, by
//! that crate's regression test, which replays `seeds/` and `regressions/` through it
//! under plain `cargo test`:
//!
//! - [`bodies`]: lb-transport and lb-core (`lb-transport/tests/fuzz_regressions.rs`).
//!
//! RLS targets get a module of their own (using only lb-rls and what it re-exports),
//! replayed by a test in lb-rls.

pub mod bodies;

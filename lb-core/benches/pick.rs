//! Pick benchmarks (written below).
fn main() {}

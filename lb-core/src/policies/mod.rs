//! The built-in leaf policies.
//!
//! - [`pick_first`]: tries addresses in order, stays on the first that connects.
//! - [`round_robin`]: spreads calls over every READY address.

pub mod pick_first;
pub mod round_robin;

//! The built-in leaf policies.
//!
//! - [`pick_first`]: tries addresses in order, stays on the first that connects.
//! - [`round_robin`]: spreads calls over every READY address.
//! - [`weighted_round_robin`]: round robin weighted by the load backends report (ORCA).

pub mod pick_first;
pub mod round_robin;
pub mod weighted_round_robin;

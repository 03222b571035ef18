//! The built-in leaf policies.
//!
//! - [`pick_first`]: tries addresses in order, stays on the first that connects.
//! - [`round_robin`]: spreads calls over every READY address.
//! - [`weighted_round_robin`]: round robin weighted by the load backends report (ORCA).
//! - [`least_request`]: of a few random READY addresses, the one with the fewest calls
//!   in flight (`least_request_experimental`, gRFC A48).
//! - [`ring_hash`]: consistent hashing of a request header onto a ring of endpoints
//!   (`ring_hash_experimental`, gRFCs A42 and A76).
//! - [`ready_list`]: the subchannel list `round_robin` and `least_request` share.

pub mod least_request;
pub mod pick_first;
pub mod ready_list;
pub mod ring_hash;
pub mod round_robin;
pub mod weighted_round_robin;

//! The mio drivers: thin loops that move bytes between sockets and sans-IO
//! connections.

pub mod call;
pub(crate) mod channelz;
pub mod client;
pub mod poller;
pub mod proxy;
pub mod socket;
pub(crate) mod stream;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;

pub use client::{ChannelSecurity, H2Transport, TransportConfig};

/// A map keyed by the driver's own small integers (connection tokens, and the
/// stream ids this client chose), hashed with one multiplication instead of
/// SipHash: a call looks these up several times, and no peer picks the keys.
pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, IdHasherBuilder>;

/// Builds [`IdHasher`]s for an [`IdMap`].
pub(crate) type IdHasherBuilder = std::hash::BuildHasherDefault<IdHasher>;

/// A multiplicative hasher for integer keys (see [`IdMap`]); the rotation in
/// `finish` brings the well-mixed high bits down to where the table indexes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::IdMap;

    #[test]
    fn id_maps_keep_every_key_apart() {
        let mut map: IdMap<u32, u32> = IdMap::default();
        for id in (1..20_001).step_by(2) {
            map.insert(id, id * 3);
        }
        assert_eq!(map.len(), 10_000);
        assert!((1..20_001).step_by(2).all(|id| map[&id] == id * 3));
        assert!(!map.contains_key(&2));
    }
}

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
/// stream ids this client chose), hashed with foldhash instead of SipHash: a call
/// looks these up several times.
pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

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

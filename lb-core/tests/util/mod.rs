//! What the channel scenario tests share: a manual clock and an in-memory transport
//! on it, and channels built over both.

// Each test binary uses part of this.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use lb_core::channel::{CallOptions, Channel, ChannelBuilder};
use lb_core::{SharedRandom, SplitMix64};
use lb_testkit::{InMemoryTransport, ManualClock, ManualResolver};

/// The longest a test waits for another thread (a safety bound, never a pause).
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// A manual clock and an in-memory transport whose latencies and deadlines run on
/// it.
pub(crate) struct Env {
    pub(crate) clock: ManualClock,
    pub(crate) transport: InMemoryTransport,
}

impl Env {
    pub(crate) fn new() -> Self {
        let clock = ManualClock::new();
        let transport = InMemoryTransport::with_clock(clock.shared());
        Self { clock, transport }
    }

    /// A channel builder on this clock and transport, with a seeded random source.
    pub(crate) fn builder(&self, target: &str) -> ChannelBuilder {
        Channel::builder(target)
            .transport(Arc::new(self.transport.clone()))
            .clock(self.clock.shared())
            .random(SharedRandom::new(SplitMix64::seeded(7)))
    }

    /// A channel builder for target `test:///svc` and the manual resolver it uses.
    pub(crate) fn resolved_builder(&self) -> (ChannelBuilder, ManualResolver) {
        let resolver = ManualResolver::default();
        let builder = self
            .builder("test:///svc")
            .resolver_registry(resolver.registry());
        (builder, resolver)
    }

    /// Serves `addresses` and builds a channel over them whose service config holds
    /// `lb_config` as its only `loadBalancingConfig` entry.
    pub(crate) fn serving_channel(&self, addresses: &[&str], lb_config: &str) -> Channel {
        for a in addresses {
            self.transport.serve_address(a);
        }
        let (builder, resolver) = self.resolved_builder();
        let channel = builder
            .default_service_config(format!(r#"{{"loadBalancingConfig": [{lb_config}]}}"#))
            .build()
            .unwrap();
        resolver.push_addresses(addresses);
        channel
    }

    /// Moves the clock and waits for the channel to handle what that caused.
    pub(crate) fn advance(&self, channel: &Channel, by: Duration) {
        self.clock.advance(by);
        assert!(channel.settle());
    }

    pub(crate) fn deadline_in(&self, d: Duration) -> CallOptions {
        CallOptions::default().with_deadline(self.clock.now() + d)
    }
}

//! `round_robin`: spread calls over every READY address.
//!
//! - The picker cycles over the READY subchannels, starting at a random index so that
//!   many clients do not all hit the same server first.
//! - Everything else (one subchannel per address, all connected at once, sticky
//!   TRANSIENT_FAILURE, the aggregate state, re-resolution on failure) is
//!   [`ReadyList`]'s, shared with `least_request_experimental`.

use std::sync::Arc;

use super::ready_list::{ReadyList, ReadyPickers};
use crate::config::{ConfigError, Fields};
use crate::picker::{Pick, PickInfo, PickResult, Picker, RoundRobinCounter};
use crate::policy::{LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions};
use crate::random::SharedRandom;
use crate::registry::LbPolicyRegistry;
use crate::subchannel::Subchannel;

/// The policy's registered name.
pub const NAME: &str = "round_robin";

/// The `round_robin` config: it has no fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundRobinConfig;

/// Builds [`RoundRobin`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundRobinBuilder;

impl LbPolicyBuilder for RoundRobinBuilder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(RoundRobin::new(options))
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        _: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        Fields::new(config, "")?;
        Ok(LbConfig::new(RoundRobinConfig))
    }
}

/// The `round_robin` policy: a [`ReadyList`] with [`RoundRobinPickers`]. See the
/// [module docs](self).
pub type RoundRobin = ReadyList<RoundRobinPickers>;

impl RoundRobin {
    /// A policy with no addresses yet.
    pub fn new(options: LbPolicyOptions) -> Self {
        Self::with_pickers(options, RoundRobinPickers)
    }
}

/// `round_robin`'s READY pickers: a cycle over the READY subchannels from a random
/// start.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundRobinPickers;

impl ReadyPickers for RoundRobinPickers {
    fn name(&self) -> &'static str {
        NAME
    }

    fn set_config(&mut self, _: Option<&LbConfig>) -> bool {
        false
    }

    fn picker(&mut self, ready: &[Subchannel], random: &SharedRandom) -> Arc<dyn Picker> {
        let start = random.below(ready.len());
        Arc::new(RoundRobinPicker::new(ready.to_vec(), start))
    }
}

/// Cycles over READY subchannels; each thread advances its own position.
struct RoundRobinPicker {
    subchannels: Vec<Subchannel>,
    next: RoundRobinCounter,
}

impl RoundRobinPicker {
    fn new(subchannels: Vec<Subchannel>, start: usize) -> Self {
        Self {
            subchannels,
            next: RoundRobinCounter::new(start),
        }
    }
}

impl Picker for RoundRobinPicker {
    #[inline]
    fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
        let i = self.next.next_below(self.subchannels.len());
        PickResult::Pick(Pick::new(&self.subchannels[i]))
    }
}

/// Makes the round-robin picker directly, for benchmarks and tests of parents.
///
/// ```
/// # use std::sync::Arc;
/// # use lb_core::{Address, Metadata, PickInfo, Picker, Subchannel, SubchannelBackend, SubchannelId};
/// # struct Nop;
/// # impl SubchannelBackend for Nop {
/// #     fn connect(&self, _: SubchannelId) {}
/// #     fn shutdown(&self, _: SubchannelId) {}
/// #     fn as_any(&self) -> &dyn std::any::Any { self }
/// # }
/// let scs: Vec<_> = (0..3)
///     .map(|i| Subchannel::new(SubchannelId(i), Address::new(format!("a:{i}")), Arc::new(Nop)))
///     .collect();
/// let picker = lb_core::policies::round_robin::picker(scs, 1);
/// let md = Metadata::new();
/// let info = PickInfo::new("/s/m", &md);
/// let ids: Vec<u64> = (0..4).map(|_| picker.pick(&info).subchannel().unwrap().id().0).collect();
/// assert_eq!(ids, [1, 2, 0, 1]);
/// ```
///
/// # Panics
///
/// Panics if `subchannels` is empty.
pub fn picker(subchannels: Vec<Subchannel>, start: usize) -> Arc<dyn Picker> {
    assert!(
        !subchannels.is_empty(),
        "a round-robin picker needs a subchannel"
    );
    Arc::new(RoundRobinPicker::new(subchannels, start))
}

//! `least_request_experimental` (gRFC A48): of `choiceCount` randomly chosen READY
//! addresses, send the call to the one with the fewest calls in flight.
//!
//! ```text
//!  pick (any thread, no lock)
//!    choiceCount × random READY index ──> read each in-flight counter (AtomicI32)
//!    fewest wins (the first drawn on a tie) ──> counter += 1
//!    Pick { on_complete: counter -= 1 }   (also if the call's callback is dropped)
//!
//!  serializer: ReadyList (as round_robin) ──READY set──> new picker, same counters
//! ```
//!
//! - Config `{"choiceCount": n}`: default 2; below 2 is an error; above 10 becomes 10
//!   (grpc-go's rules).
//! - A counter belongs to a subchannel while it is READY and carries over to every
//!   new picker; one that leaves the READY set loses its count, as in grpc-go.
//! - Subchannel management and the aggregate state are [`ReadyList`]'s, exactly as
//!   for `round_robin`: every address is connected, TRANSIENT_FAILURE is sticky,
//!   and while nothing is READY calls queue or fail with the last connection error.
//! - Randomness comes from the policy's injected random source through a
//!   [`PickerRandom`], which threads draw from without a lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use super::ready_list::{ReadyList, ReadyPickers};
use crate::config::{ConfigError, Fields};
use crate::metadata::Metadata;
use crate::picker::{Pick, PickInfo, PickResult, Picker, PickerRandom};
use crate::policy::{LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions};
use crate::random::SharedRandom;
use crate::registry::LbPolicyRegistry;
use crate::subchannel::{Subchannel, SubchannelId};

/// The policy's registered name.
pub const NAME: &str = "least_request_experimental";

/// `choiceCount` when the config does not set it.
pub const DEFAULT_CHOICE_COUNT: u32 = 2;

/// The largest `choiceCount`; larger values are lowered to it.
pub const MAX_CHOICE_COUNT: u32 = 10;

/// The `least_request_experimental` config.
///
/// # Examples
///
/// ```
/// use lb_core::LbPolicyBuilder;
/// use lb_core::policies::least_request::{LeastRequestBuilder, LeastRequestConfig};
/// let reg = lb_core::LbPolicyRegistry::new();
/// let parse = |v| LeastRequestBuilder.parse_config(&v, &reg);
/// let c = parse(serde_json::json!({"choiceCount": 25}))?;
/// assert_eq!(c.downcast_ref::<LeastRequestConfig>().unwrap().choice_count, 10);
/// let err = parse(serde_json::json!({"choiceCount": 1})).unwrap_err();
/// assert_eq!(err.field(), "choiceCount");
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeastRequestConfig {
    /// How many random READY addresses each pick compares (2 to 10).
    pub choice_count: u32,
}

impl Default for LeastRequestConfig {
    fn default() -> Self {
        Self {
            choice_count: DEFAULT_CHOICE_COUNT,
        }
    }
}

/// Builds the `least_request_experimental` policy ([`LeastRequest`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct LeastRequestBuilder;

impl LbPolicyBuilder for LeastRequestBuilder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(LeastRequest::new(options))
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        _: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        let fields = Fields::new(config, "")?;
        let choice_count = fields.u32("choiceCount")?.unwrap_or(DEFAULT_CHOICE_COUNT);
        if choice_count < 2 {
            return Err(ConfigError::new(
                "choiceCount",
                format!("must be at least 2, not {choice_count}"),
            ));
        }
        Ok(LbConfig::new(LeastRequestConfig {
            choice_count: choice_count.min(MAX_CHOICE_COUNT),
        }))
    }
}

/// The `least_request_experimental` policy: a [`ReadyList`] with
/// [`LeastRequestPickers`]. See the [module docs](self).
///
/// # Examples
///
/// A call in flight on one of two endpoints steers the next picks to the other
/// (choiceCount 10 nearly always draws both):
///
/// ```
/// use lb_core::policies::least_request::{LeastRequest, LeastRequestConfig};
/// use lb_core::{ConnectivityState, LbConfig, LbPolicy, ResolverUpdate, endpoints};
///
/// let mut ctrl = lb_testkit::FakeController::new();
/// let mut policy = LeastRequest::new(ctrl.policy_options());
/// let config = LbConfig::new(LeastRequestConfig { choice_count: 10 });
/// let now = std::time::Instant::now();
/// let update = ResolverUpdate::from_endpoints(endpoints(["a:1", "b:1"]));
/// policy.resolver_update(update, Some(&config), &mut ctrl, now).unwrap();
/// for sc in ctrl.verify_new_subchannels(2) {
///     ctrl.update_subchannel(&mut policy, &sc, ConnectivityState::Ready, now);
/// }
/// let picker = ctrl.latest_state().picker;
/// let md = lb_core::Metadata::new();
/// let info = lb_core::PickInfo::new("/s/m", &md);
/// let lb_core::PickResult::Pick(held) = picker.pick(&info) else { unreachable!() };
/// let busy = held.subchannel.address().clone();
/// let others = (0..20)
///     .filter(|_| picker.pick(&info).subchannel().map(|s| s.address()) != Some(&busy))
///     .count();
/// assert!(others >= 18, "{others} of 20 avoided the busy endpoint");
/// ```
pub type LeastRequest = ReadyList<LeastRequestPickers>;

impl LeastRequest {
    /// A policy with no addresses yet and the default config.
    pub fn new(options: LbPolicyOptions) -> Self {
        Self::with_pickers(options, LeastRequestPickers::default())
    }
}

/// One subchannel's calls in flight, on its own cache line.
#[repr(align(128))]
#[derive(Debug, Default)]
struct InFlight(AtomicI32);

/// Held by a picked call; gives its count back when the call completes (or when the
/// callback is dropped uncalled), so a counter never leaks.
struct CallGuard(Arc<InFlight>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `least_request_experimental`'s READY pickers, and the in-flight counters they
/// share.
#[derive(Debug, Default)]
pub struct LeastRequestPickers {
    config: LeastRequestConfig,
    counters: HashMap<SubchannelId, Arc<InFlight>>,
}

impl ReadyPickers for LeastRequestPickers {
    fn name(&self) -> &'static str {
        NAME
    }

    fn set_config(&mut self, config: Option<&LbConfig>) -> bool {
        let config = config
            .and_then(|c| c.downcast_ref::<LeastRequestConfig>())
            .cloned()
            .unwrap_or_default();
        let changed = config != self.config;
        self.config = config;
        changed
    }

    fn picker(&mut self, ready: &[Subchannel], random: &SharedRandom) -> Arc<dyn Picker> {
        self.counters
            .retain(|id, _| ready.iter().any(|sc| sc.id() == *id));
        let endpoints = ready
            .iter()
            .map(|sc| Candidate {
                subchannel: sc.clone(),
                in_flight: self.counters.entry(sc.id()).or_default().clone(),
            })
            .collect();
        Arc::new(LeastRequestPicker {
            endpoints,
            choice_count: self.config.choice_count,
            random: PickerRandom::new(random),
        })
    }
}

struct Candidate {
    subchannel: Subchannel,
    in_flight: Arc<InFlight>,
}

/// Compares `choice_count` random READY subchannels and picks the least loaded.
struct LeastRequestPicker {
    endpoints: Vec<Candidate>,
    choice_count: u32,
    random: PickerRandom,
}

impl Picker for LeastRequestPicker {
    #[inline]
    fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
        let n = self.endpoints.len();
        let mut best = &self.endpoints[self.random.below(n)];
        let mut best_load = best.in_flight.0.load(Ordering::Relaxed);
        for _ in 1..self.choice_count {
            let candidate = &self.endpoints[self.random.below(n)];
            let load = candidate.in_flight.0.load(Ordering::Relaxed);
            if load < best_load {
                best = candidate;
                best_load = load;
            }
        }
        best.in_flight.0.fetch_add(1, Ordering::Relaxed);
        let guard = CallGuard(best.in_flight.clone());
        PickResult::Pick(Pick {
            subchannel: &best.subchannel,
            metadata: Metadata::new(),
            on_complete: Some(Box::new(move |_| drop(guard))),
        })
    }
}

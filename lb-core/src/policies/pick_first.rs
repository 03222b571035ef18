//! `pick_first`: try the addresses in order and stay on the first that connects.
//!
//! ```text
//!            update / exit_idle                     a subchannel READY
//!   IDLE ───────────────────────> CONNECTING (pass) ─────────────────────> READY
//!    ^                                 │ every address failed               │
//!    │ (sticky: only READY leaves it)  v                                    │ connection
//!    │                        TRANSIENT_FAILURE ── a subchannel READY ──────┤ lost
//!    └──────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! - The address list is the endpoints' addresses in order, each once; with
//!   `shuffleAddressList` the endpoints are shuffled first.
//! - A pass connects to one address at a time. If an attempt neither succeeds nor fails
//!   within 250 ms the next address is tried too, in parallel (Happy Eyeballs, gRFC
//!   A61); the first to become READY wins and every other subchannel is shut down.
//! - When every address has failed the policy reports TRANSIENT_FAILURE, asks for
//!   re-resolution, and keeps reconnecting each subchannel as its backoff ends. It stays
//!   in TRANSIENT_FAILURE (sticky, gRFC A62) until one becomes READY, refreshing its error
//!   after every round of failures.
//! - When the READY connection is lost the policy reports IDLE with a picker that asks
//!   it to reconnect on the next call, and asks for re-resolution.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::address::{Address, Endpoint, flatten_addresses};
use crate::config::{ConfigError, Fields};
use crate::picker::{ExitIdlePicker, Pick, PickInfo, PickResult, Picker};
use crate::policy::{
    ChannelController, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions, LbState, UpdateError,
};
use crate::registry::LbPolicyRegistry;
use crate::resolver::ResolverUpdate;
use crate::state::ConnectivityState;
use crate::status::Status;
use crate::subchannel::{Subchannel, SubchannelState};

/// The policy's registered name.
pub const NAME: &str = "pick_first";

/// How long an attempt runs alone before the next address is tried in parallel.
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// The `pick_first` config.
///
/// ```
/// use lb_core::{LbPolicyBuilder, LbPolicyRegistry};
/// use lb_core::policies::pick_first::{PickFirstBuilder, PickFirstConfig};
/// let reg = LbPolicyRegistry::with_builtins();
/// let c = PickFirstBuilder.parse_config(&serde_json::json!({"shuffleAddressList": true}), &reg)?;
/// assert_eq!(c.downcast_ref::<PickFirstConfig>().unwrap().shuffle_address_list, true);
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PickFirstConfig {
    /// Shuffle the endpoints before trying them, to spread clients over servers.
    pub shuffle_address_list: bool,
}

/// Builds [`PickFirst`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PickFirstBuilder;

impl LbPolicyBuilder for PickFirstBuilder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(PickFirst::new(options))
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        _: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        let fields = Fields::new(config, "")?;
        Ok(LbConfig::new(PickFirstConfig {
            shuffle_address_list: fields.bool("shuffleAddressList")?.unwrap_or(false),
        }))
    }
}

/// One address and, while it is needed, its subchannel.
#[derive(Debug)]
struct Entry {
    address: Address,
    subchannel: Option<Subchannel>,
    state: ConnectivityState,
    /// Failed during the current pass.
    failed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not connecting; waiting for an update or a call.
    Idle,
    /// Trying the addresses in order; `index` is the latest attempt.
    Pass {
        index: usize,
        next_attempt_at: Option<Instant>,
    },
    /// Connected through the entry at this index.
    Ready(usize),
    /// Every address failed; reconnecting as backoffs end.
    TransientFailure,
}

/// The `pick_first` policy. See the [module docs](self).
#[derive(Debug)]
pub struct PickFirst {
    options: LbPolicyOptions,
    entries: Vec<Entry>,
    phase: Phase,
    last_error: Option<Status>,
    failures_in_failure: usize,
}

impl PickFirst {
    /// A policy with no addresses yet.
    pub fn new(options: LbPolicyOptions) -> Self {
        Self {
            options,
            entries: Vec::new(),
            phase: Phase::Idle,
            last_error: None,
            failures_in_failure: 0,
        }
    }

    fn addresses(&self, endpoints: &[Endpoint], config: Option<&PickFirstConfig>) -> Vec<Address> {
        if config.is_some_and(|c| c.shuffle_address_list) {
            let mut shuffled = endpoints.to_vec();
            self.options.random.shuffle(&mut shuffled);
            flatten_addresses(&shuffled)
        } else {
            flatten_addresses(endpoints)
        }
    }

    /// Replaces the address list, keeping the subchannels of addresses that stay.
    /// Returns whether the connected address went away with the old list.
    fn set_addresses(&mut self, addresses: Vec<Address>) -> bool {
        let mut old: Vec<Entry> = std::mem::take(&mut self.entries);
        let selected = match self.phase {
            Phase::Ready(i) => old.get(i).map(|e| e.address.clone()),
            _ => None,
        };
        for address in addresses {
            let entry = match old.iter().position(|e| e.address == address) {
                Some(i) => old.swap_remove(i),
                None => Entry {
                    address,
                    subchannel: None,
                    state: ConnectivityState::Idle,
                    failed: false,
                },
            };
            self.entries.push(entry);
        }
        for gone in old {
            if let Some(sc) = gone.subchannel {
                sc.shutdown();
            }
        }
        let was_ready = matches!(self.phase, Phase::Ready(_));
        match selected.and_then(|a| self.entries.iter().position(|e| e.address == a)) {
            Some(i) => {
                self.phase = Phase::Ready(i);
                false
            }
            None if was_ready => {
                self.phase = Phase::Idle;
                true
            }
            None => false,
        }
    }

    fn publish_connecting(&mut self, controller: &mut dyn ChannelController) {
        controller.update_picker(LbState::queuing(ConnectivityState::Connecting));
    }

    fn publish_failure(&mut self, controller: &mut dyn ChannelController) {
        let error = self
            .last_error
            .clone()
            .unwrap_or_else(|| Status::unavailable("all addresses failed"));
        controller.update_picker(LbState::failing(Status::unavailable(format!(
            "pick_first: last connection error: {}",
            error.message()
        ))));
    }

    /// Starts a pass over every address. Stays in TRANSIENT_FAILURE if it is there.
    fn start_pass(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        for e in &mut self.entries {
            e.failed = false;
        }
        if self.phase != Phase::TransientFailure {
            self.publish_connecting(controller);
        }
        self.phase = Phase::Pass {
            index: 0,
            next_attempt_at: None,
        };
        self.attempt_from(0, controller, now);
    }

    /// Starts an attempt on the first address at or after `from` that can take one.
    fn attempt_from(&mut self, from: usize, controller: &mut dyn ChannelController, now: Instant) {
        for i in from..self.entries.len() {
            let entry = &mut self.entries[i];
            match entry.state {
                ConnectivityState::Idle => {
                    let sc = entry
                        .subchannel
                        .get_or_insert_with(|| controller.new_subchannel(&entry.address));
                    sc.connect();
                }
                ConnectivityState::Connecting => {}
                ConnectivityState::TransientFailure => {
                    // Still in backoff from an earlier attempt: counts as failed.
                    entry.failed = true;
                    continue;
                }
                ConnectivityState::Ready | ConnectivityState::Shutdown => continue,
            }
            let deadline = now + CONNECTION_ATTEMPT_DELAY;
            self.phase = Phase::Pass {
                index: i,
                next_attempt_at: Some(deadline),
            };
            controller.wake_at(deadline);
            return;
        }
        if let Phase::Pass { index, .. } = &mut self.phase {
            *index = self.entries.len();
        }
        self.finish_pass_if_failed(controller);
    }

    fn finish_pass_if_failed(&mut self, controller: &mut dyn ChannelController) {
        let Phase::Pass { index, .. } = self.phase else {
            return;
        };
        let all_tried = index >= self.entries.len().saturating_sub(1);
        if !all_tried || !self.entries.iter().all(|e| e.failed) {
            return;
        }
        self.phase = Phase::TransientFailure;
        self.failures_in_failure = 0;
        self.publish_failure(controller);
        controller.request_resolution();
        // From now on every subchannel retries as soon as its backoff ends.
        for e in &mut self.entries {
            if e.state == ConnectivityState::Idle {
                let sc = e
                    .subchannel
                    .get_or_insert_with(|| controller.new_subchannel(&e.address));
                sc.connect();
            }
        }
    }

    fn select(&mut self, index: usize, controller: &mut dyn ChannelController) {
        for (i, e) in self.entries.iter_mut().enumerate() {
            if i != index {
                if let Some(sc) = e.subchannel.take() {
                    sc.shutdown();
                }
                e.state = ConnectivityState::Idle;
                e.failed = false;
            }
        }
        self.phase = Phase::Ready(index);
        let sc = self.entries[index]
            .subchannel
            .clone()
            .expect("READY entry has a subchannel");
        controller.update_picker(LbState {
            connectivity_state: ConnectivityState::Ready,
            picker: Arc::new(PickFirstPicker { subchannel: sc }),
        });
    }

    fn go_idle(&mut self, controller: &mut dyn ChannelController) {
        self.phase = Phase::Idle;
        controller.update_picker(LbState {
            connectivity_state: ConnectivityState::Idle,
            picker: Arc::new(ExitIdlePicker::new(self.options.work_scheduler.clone())),
        });
    }
}

impl LbPolicy for PickFirst {
    fn resolver_update(
        &mut self,
        update: ResolverUpdate,
        config: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> Result<(), UpdateError> {
        let endpoints = match update.endpoints {
            Ok(endpoints) => endpoints,
            Err(status) => {
                if self.entries.is_empty() || self.phase == Phase::TransientFailure {
                    self.last_error = Some(status.clone());
                    controller.update_picker(LbState::failing(Status::unavailable(format!(
                        "name resolver error: {}",
                        status.message()
                    ))));
                    self.phase = Phase::TransientFailure;
                }
                return Ok(());
            }
        };
        let config = config.and_then(|c| c.downcast_ref::<PickFirstConfig>());
        let addresses = self.addresses(&endpoints, config);
        if addresses.is_empty() {
            let _ = self.set_addresses(Vec::new());
            self.phase = Phase::TransientFailure;
            let reason = "resolver produced zero addresses";
            controller.update_picker(LbState::failing(Status::unavailable(reason)));
            return Err(UpdateError::BadResolverState(reason.into()));
        }
        let first_update = self.entries.is_empty();
        let lost_connection = self.set_addresses(addresses);
        match self.phase {
            Phase::Ready(_) => {}
            // IDLE after a lost connection waits for a call; a first update or a lost
            // address connects now.
            Phase::Idle if !first_update && !lost_connection => {}
            _ => self.start_pass(controller, now),
        }
        Ok(())
    }

    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        let Some(index) = self
            .entries
            .iter()
            .position(|e| e.subchannel.as_ref() == Some(subchannel))
        else {
            return;
        };
        let old = std::mem::replace(&mut self.entries[index].state, state.connectivity_state);
        record_metrics(
            &self.options.metrics,
            old,
            state.connectivity_state,
            self.phase == Phase::Ready(index),
        );
        if self.phase == Phase::Ready(index) {
            // The selected connection is still up, but its health check (gRFC A17)
            // keeps calls away from it: show that until it is READY again.
            match state.connectivity_state {
                ConnectivityState::TransientFailure => {
                    let error = state
                        .last_error
                        .as_ref()
                        .map_or("unhealthy", Status::message);
                    controller.update_picker(LbState::failing(Status::unavailable(format!(
                        "pick_first: {error}"
                    ))));
                    return;
                }
                ConnectivityState::Connecting => return self.publish_connecting(controller),
                _ => {}
            }
        }
        match state.connectivity_state {
            ConnectivityState::Ready => self.select(index, controller),
            ConnectivityState::Idle => match self.phase {
                Phase::Ready(i) if i == index => {
                    controller.request_resolution();
                    self.go_idle(controller);
                }
                Phase::TransientFailure => subchannel.connect(),
                _ => {}
            },
            ConnectivityState::TransientFailure => {
                if let Some(error) = &state.last_error {
                    self.last_error = Some(error.clone());
                }
                self.entries[index].failed = true;
                match self.phase {
                    Phase::Pass { index: current, .. } if current == index => {
                        self.attempt_from(index + 1, controller, now);
                    }
                    Phase::Pass { .. } => self.finish_pass_if_failed(controller),
                    Phase::TransientFailure if old != ConnectivityState::TransientFailure => {
                        self.failures_in_failure += 1;
                        if self.failures_in_failure % self.entries.len().max(1) == 0 {
                            self.publish_failure(controller);
                            controller.request_resolution();
                        }
                    }
                    _ => {}
                }
            }
            ConnectivityState::Connecting | ConnectivityState::Shutdown => {}
        }
    }

    fn work(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        match self.phase {
            Phase::Idle if !self.entries.is_empty() => self.start_pass(controller, now),
            Phase::Pass {
                index,
                next_attempt_at: Some(at),
            } if at <= now => self.attempt_from(index + 1, controller, now),
            _ => {}
        }
    }

    fn exit_idle(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.phase == Phase::Idle && !self.entries.is_empty() {
            self.start_pass(controller, now);
        }
    }

    fn close(&mut self) {
        for e in self.entries.drain(..) {
            if let Some(sc) = e.subchannel {
                sc.shutdown();
            }
        }
        self.phase = Phase::Idle;
    }

    fn describe(&self, view: &mut crate::channelz::PolicyView) {
        view.detail("phase", format_args!("{:?}", self.phase));
        if let Some(error) = &self.last_error {
            view.detail("last error", error);
        }
        view.subchannels = self
            .entries
            .iter()
            .filter_map(|e| {
                let sc = e.subchannel.as_ref()?;
                Some(crate::channelz::SubchannelView::of(sc, e.state))
            })
            .collect();
    }
}

/// Sends every call to the one connected subchannel.
#[derive(Debug)]
struct PickFirstPicker {
    subchannel: Subchannel,
}

impl Picker for PickFirstPicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
        PickResult::Pick(Pick::new(&self.subchannel))
    }
}

/// gRFC A78's `grpc.lb.pick_first.*`: a subchannel this policy connects leaves
/// CONNECTING for READY (an attempt succeeded) or TRANSIENT_FAILURE (failed), and
/// the selected subchannel leaves READY for IDLE (a disconnection).
fn record_metrics(
    metrics: &crate::metrics::Metrics,
    old: ConnectivityState,
    new: ConnectivityState,
    selected: bool,
) {
    use crate::metrics::instruments::{
        PICK_FIRST_CONNECTION_ATTEMPTS_FAILED, PICK_FIRST_CONNECTION_ATTEMPTS_SUCCEEDED,
        PICK_FIRST_DISCONNECTIONS,
    };
    let instrument = match (old, new) {
        (ConnectivityState::Connecting, ConnectivityState::Ready) => {
            &PICK_FIRST_CONNECTION_ATTEMPTS_SUCCEEDED
        }
        (ConnectivityState::Connecting, ConnectivityState::TransientFailure) => {
            &PICK_FIRST_CONNECTION_ATTEMPTS_FAILED
        }
        (ConnectivityState::Ready, ConnectivityState::Idle) if selected => {
            &PICK_FIRST_DISCONNECTIONS
        }
        _ => return,
    };
    metrics.add_u64_counter(instrument, 1, &[metrics.target()]);
}

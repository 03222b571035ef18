//! Metrics with gRPC's instrument names: the instruments described once, the
//! [`MetricsRecorder`] a program gives a channel, and the cheap [`Metrics`] handle
//! the channel's call path, its subchannel pool and its policies record through.
//!
//! ```text
//!  ChannelBuilder::metrics_recorder(r1).metrics_recorder(r2)
//!        │ (several: a RecorderList fans out)
//!        v
//!  Metrics { recorder, target } ──> call path  (grpc.client.attempt.*, grpc.client.call.duration)
//!        │                      ──> pool       (grpc.subchannel.*)
//!        └─ LbPolicyOptions::metrics ──> policies (grpc.lb.pick_first.*, grpc.lb.wrr.*, grpc.lb.rls.*)
//!                                       recorders: InMemoryRecorder (tests),
//!                                       prometheus::PrometheusRecorder (feature `prometheus`),
//!                                       otel::OtelRecorder (feature `opentelemetry`)
//! ```
//!
//! This is the shape of grpc-go's `experimental/stats` (gRFC A79): an instrument is
//! an [`Instrument`] (name, description, unit, label keys, optional label keys,
//! kind, on by default or not), and a record passes the label *values* in the order
//! of the keys, required then optional. A recorder decides which instruments and
//! optional labels it keeps ([`MetricSelection`]).
//!
//! **Cost when nobody listens.** A channel built without a recorder gets
//! [`Metrics::none`]: every record is one branch on an `Option` that is `None`, and
//! the call path reads no clock and builds no labels for metrics
//! ([`Metrics::is_enabled`] guards them).
//!
//! The instruments themselves are in [`instruments`]; lb-rls adds the
//! `grpc.lb.rls.*` ones.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use lb_core::metrics::{InMemoryRecorder, Metrics, instruments};
//! let recorder = Arc::new(InMemoryRecorder::new());
//! let metrics = Metrics::new(recorder.clone(), "dns:///svc");
//! metrics.add_u64_counter(&instruments::CLIENT_ATTEMPT_STARTED, 1, &["echo.Echo/Say", metrics.target()]);
//! assert_eq!(
//!     recorder.counter("grpc.client.attempt.started", &[
//!         ("grpc.method", "echo.Echo/Say"),
//!         ("grpc.target", "dns:///svc"),
//!     ]),
//!     1,
//! );
//! // Nobody listens: nothing happens, at the cost of one branch.
//! assert!(!Metrics::none().is_enabled());
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

pub mod instruments;
mod memory;
#[cfg(feature = "opentelemetry")]
#[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
pub mod otel;
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub mod prometheus;

pub use memory::{InMemoryRecorder, Series, SeriesValue};

/// What an instrument measures, and so how it is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstrumentKind {
    /// A running total of `u64` increments ([`MetricsRecorder::add_u64_counter`]).
    U64Counter,
    /// A distribution of `f64` values ([`MetricsRecorder::record_f64_histogram`]),
    /// bucketed by [`Instrument::buckets`].
    F64Histogram,
    /// A current `i64` value, replaced by each record
    /// ([`MetricsRecorder::record_i64_gauge`]).
    I64Gauge,
    /// A running `i64` sum that goes up and down
    /// ([`MetricsRecorder::add_i64_up_down_counter`]).
    I64UpDownCounter,
}

/// One instrument, described once (a `static`), named as gRPC names it.
#[derive(Debug, PartialEq)]
pub struct Instrument {
    /// gRPC's name, such as `grpc.client.attempt.started`.
    pub name: &'static str,
    /// What it counts.
    pub description: &'static str,
    /// The unit in UCUM as OpenTelemetry writes it: `s`, `By`, `{attempt}`.
    pub unit: &'static str,
    /// The label keys every record carries, in order.
    pub labels: &'static [&'static str],
    /// The label keys a record also carries, after `labels`; a recorder keeps
    /// them only when asked to ([`MetricSelection::with_optional_label`]).
    pub optional_labels: &'static [&'static str],
    /// Counter, histogram, gauge or up-down counter.
    pub kind: InstrumentKind,
    /// Whether recorders keep it unless told otherwise (gRPC's per-call metrics
    /// are on by default; the experimental LB and subchannel ones are off).
    pub default_enabled: bool,
    /// A histogram's explicit bucket boundaries (empty for other kinds).
    pub buckets: &'static [f64],
}

impl Instrument {
    /// An instrument of `kind` with required `labels`, no optional labels, off
    /// unless a [`MetricSelection`] enables it, and no buckets; the `with_*`
    /// methods change those. `const`, for instruments kept in statics:
    ///
    /// ```
    /// use lb_core::metrics::{Instrument, InstrumentKind};
    /// static PICKS: Instrument = Instrument::new(
    ///     "my.lb.picks", "Picks by my policy.", "{pick}", &["grpc.target"],
    ///     InstrumentKind::U64Counter,
    /// )
    /// .enabled_by_default(true);
    /// assert_eq!(PICKS.label_keys().collect::<Vec<_>>(), ["grpc.target"]);
    /// ```
    pub const fn new(
        name: &'static str,
        description: &'static str,
        unit: &'static str,
        labels: &'static [&'static str],
        kind: InstrumentKind,
    ) -> Self {
        Self {
            name,
            description,
            unit,
            labels,
            optional_labels: &[],
            kind,
            default_enabled: false,
            buckets: &[],
        }
    }

    /// The same instrument with these optional label keys.
    pub const fn with_optional_labels(mut self, labels: &'static [&'static str]) -> Self {
        self.optional_labels = labels;
        self
    }

    /// The same instrument, kept by recorders unless told otherwise when `on`.
    pub const fn enabled_by_default(mut self, on: bool) -> Self {
        self.default_enabled = on;
        self
    }

    /// The same instrument with these histogram bucket boundaries.
    pub const fn with_buckets(mut self, buckets: &'static [f64]) -> Self {
        self.buckets = buckets;
        self
    }

    /// Every label key, required then optional: the order of the values in a
    /// record.
    pub fn label_keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.labels.iter().chain(self.optional_labels).copied()
    }
}

impl fmt::Display for Instrument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Receives metric records. Given to a channel with
/// [`ChannelBuilder::metrics_recorder`](crate::channel::ChannelBuilder::metrics_recorder).
///
/// `labels` holds one value per key of [`Instrument::label_keys`], in that order.
/// Implementations must be cheap and must not block: the per-call instruments are
/// recorded on the callers' threads and the transport's thread, the others on the
/// channel's serializer and in pickers.
pub trait MetricsRecorder: Send + Sync {
    /// Adds `value` to a [`InstrumentKind::U64Counter`].
    fn add_u64_counter(&self, instrument: &'static Instrument, value: u64, labels: &[&str]);

    /// Records `value` in a [`InstrumentKind::F64Histogram`].
    fn record_f64_histogram(&self, instrument: &'static Instrument, value: f64, labels: &[&str]);

    /// Sets a [`InstrumentKind::I64Gauge`] to `value`.
    fn record_i64_gauge(&self, instrument: &'static Instrument, value: i64, labels: &[&str]);

    /// Adds `delta` (may be negative) to a [`InstrumentKind::I64UpDownCounter`].
    fn add_i64_up_down_counter(&self, instrument: &'static Instrument, delta: i64, labels: &[&str]);
}

/// Several recorders as one: each record goes to every one, in order.
#[derive(Clone, Default)]
pub struct RecorderList(pub Vec<Arc<dyn MetricsRecorder>>);

impl fmt::Debug for RecorderList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecorderList({} recorders)", self.0.len())
    }
}

impl MetricsRecorder for RecorderList {
    fn add_u64_counter(&self, instrument: &'static Instrument, value: u64, labels: &[&str]) {
        for r in &self.0 {
            r.add_u64_counter(instrument, value, labels);
        }
    }
    fn record_f64_histogram(&self, instrument: &'static Instrument, value: f64, labels: &[&str]) {
        for r in &self.0 {
            r.record_f64_histogram(instrument, value, labels);
        }
    }
    fn record_i64_gauge(&self, instrument: &'static Instrument, value: i64, labels: &[&str]) {
        for r in &self.0 {
            r.record_i64_gauge(instrument, value, labels);
        }
    }
    fn add_i64_up_down_counter(
        &self,
        instrument: &'static Instrument,
        delta: i64,
        labels: &[&str],
    ) {
        for r in &self.0 {
            r.add_i64_up_down_counter(instrument, delta, labels);
        }
    }
}

/// What components record through: the channel's recorder (if any) and its
/// target, the value of the `grpc.target` label. Cheap to clone.
///
/// Without a recorder ([`Metrics::none`], the default) every method returns at
/// once.
#[derive(Clone)]
pub struct Metrics {
    recorder: Option<Arc<dyn MetricsRecorder>>,
    target: Arc<str>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::none()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.is_enabled())
            .field("target", &self.target)
            .finish()
    }
}

impl Metrics {
    /// Records nothing.
    pub fn none() -> Self {
        static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        Self {
            recorder: None,
            target: EMPTY.get_or_init(|| Arc::from("")).clone(),
        }
    }

    /// Records into `recorder`, with `target` as the channel's `grpc.target`.
    pub fn new(recorder: Arc<dyn MetricsRecorder>, target: impl Into<Arc<str>>) -> Self {
        Self {
            recorder: Some(recorder),
            target: target.into(),
        }
    }

    /// Records nothing, but knows the channel's target (for policies that show it).
    pub fn none_for(target: impl Into<Arc<str>>) -> Self {
        Self {
            recorder: None,
            target: target.into(),
        }
    }

    /// Whether anybody listens. Guard work done only for a record (reading a
    /// clock, formatting a label) with it.
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.recorder.is_some()
    }

    /// The channel's target, the `grpc.target` label's value.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The recorder, if any.
    pub fn recorder(&self) -> Option<&Arc<dyn MetricsRecorder>> {
        self.recorder.as_ref()
    }

    /// See [`MetricsRecorder::add_u64_counter`].
    #[inline]
    pub fn add_u64_counter(&self, instrument: &'static Instrument, value: u64, labels: &[&str]) {
        if let Some(r) = &self.recorder {
            debug_assert_kind(instrument, InstrumentKind::U64Counter, labels);
            r.add_u64_counter(instrument, value, labels);
        }
    }

    /// See [`MetricsRecorder::record_f64_histogram`].
    #[inline]
    pub fn record_f64_histogram(
        &self,
        instrument: &'static Instrument,
        value: f64,
        labels: &[&str],
    ) {
        if let Some(r) = &self.recorder {
            debug_assert_kind(instrument, InstrumentKind::F64Histogram, labels);
            r.record_f64_histogram(instrument, value, labels);
        }
    }

    /// See [`MetricsRecorder::record_i64_gauge`].
    #[inline]
    pub fn record_i64_gauge(&self, instrument: &'static Instrument, value: i64, labels: &[&str]) {
        if let Some(r) = &self.recorder {
            debug_assert_kind(instrument, InstrumentKind::I64Gauge, labels);
            r.record_i64_gauge(instrument, value, labels);
        }
    }

    /// See [`MetricsRecorder::add_i64_up_down_counter`].
    #[inline]
    pub fn add_i64_up_down_counter(
        &self,
        instrument: &'static Instrument,
        delta: i64,
        labels: &[&str],
    ) {
        if let Some(r) = &self.recorder {
            debug_assert_kind(instrument, InstrumentKind::I64UpDownCounter, labels);
            r.add_i64_up_down_counter(instrument, delta, labels);
        }
    }
}

fn debug_assert_kind(instrument: &Instrument, kind: InstrumentKind, labels: &[&str]) {
    debug_assert_eq!(
        instrument.kind, kind,
        "{} recorded as {kind:?}",
        instrument.name
    );
    debug_assert_eq!(
        labels.len(),
        instrument.labels.len() + instrument.optional_labels.len(),
        "{}: one value per label key",
        instrument.name
    );
}

/// Which instruments, and which optional labels, an exporter keeps: gRPC's
/// default set (the instruments with [`Instrument::default_enabled`]) plus the ones
/// named, minus the ones disabled.
///
/// ```
/// use lb_core::metrics::{MetricSelection, instruments};
/// let selection = MetricSelection::default().enable("grpc.lb.wrr.rr_fallback");
/// assert!(selection.is_enabled(&instruments::CLIENT_ATTEMPT_STARTED));
/// assert!(selection.is_enabled(&instruments::WRR_RR_FALLBACK));
/// assert!(!selection.is_enabled(&instruments::SUBCHANNEL_OPEN_CONNECTIONS));
/// assert!(MetricSelection::all().is_enabled(&instruments::SUBCHANNEL_OPEN_CONNECTIONS));
/// ```
#[derive(Clone, Debug, Default)]
pub struct MetricSelection {
    all: bool,
    enabled: HashSet<String>,
    disabled: HashSet<String>,
    optional_labels: HashSet<String>,
}

impl MetricSelection {
    /// Every instrument, with every optional label.
    pub fn all() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// Also keeps the instrument named `name`.
    pub fn enable(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.disabled.remove(&name);
        self.enabled.insert(name);
        self
    }

    /// Drops the instrument named `name`.
    pub fn disable(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.enabled.remove(&name);
        self.disabled.insert(name);
        self
    }

    /// Keeps the optional label `key` (such as `grpc.lb.locality`) where an
    /// instrument has it.
    pub fn with_optional_label(mut self, key: impl Into<String>) -> Self {
        self.optional_labels.insert(key.into());
        self
    }

    /// Whether records of `instrument` are kept.
    pub fn is_enabled(&self, instrument: &Instrument) -> bool {
        if self.disabled.contains(instrument.name) {
            return false;
        }
        self.all || instrument.default_enabled || self.enabled.contains(instrument.name)
    }

    /// Whether the optional label `key` is kept.
    pub fn keeps_optional_label(&self, key: &str) -> bool {
        self.all || self.optional_labels.contains(key)
    }

    /// The `(key, value)` pairs kept of a record's `labels`.
    pub fn labels<'a>(
        &self,
        instrument: &'static Instrument,
        labels: &[&'a str],
    ) -> Vec<(&'static str, &'a str)> {
        let required = instrument.labels.len();
        instrument
            .label_keys()
            .zip(labels.iter().copied())
            .enumerate()
            .filter(|(i, (key, _))| *i < required || self.keeps_optional_label(key))
            .map(|(_, kv)| kv)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_fans_out_and_none_records_nothing() {
        let a = Arc::new(InMemoryRecorder::new());
        let b = Arc::new(InMemoryRecorder::new());
        let list: Arc<dyn MetricsRecorder> = Arc::new(RecorderList(vec![a.clone(), b.clone()]));
        let m = Metrics::new(list, "t");
        m.add_u64_counter(&instruments::CLIENT_ATTEMPT_STARTED, 2, &["m", "t"]);
        m.add_i64_up_down_counter(&instruments::SUBCHANNEL_OPEN_CONNECTIONS, 1, &["t", "", ""]);
        for r in [&a, &b] {
            assert_eq!(r.counter_total("grpc.client.attempt.started"), 2);
            assert_eq!(r.gauge_value("grpc.subchannel.open_connections"), Some(1));
        }
        Metrics::none().add_u64_counter(&instruments::CLIENT_ATTEMPT_STARTED, 1, &["m", "t"]);
    }

    #[test]
    fn a_selection_keeps_required_labels_and_the_optional_ones_asked_for() {
        let i = &instruments::SUBCHANNEL_DISCONNECTIONS;
        let values = ["t", "svc", "loc", "unknown"];
        let none = MetricSelection::default();
        assert_eq!(none.labels(i, &values), [("grpc.target", "t")]);
        let some = MetricSelection::default().with_optional_label("grpc.lb.locality");
        assert_eq!(
            some.labels(i, &values),
            [("grpc.target", "t"), ("grpc.lb.locality", "loc")]
        );
        assert_eq!(MetricSelection::all().labels(i, &values).len(), 4);
        let off = MetricSelection::default().disable("grpc.client.call.duration");
        assert!(!off.is_enabled(&instruments::CLIENT_CALL_DURATION));
        assert!(off.is_enabled(&instruments::CLIENT_ATTEMPT_DURATION));
    }
}

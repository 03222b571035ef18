//! The RLS metrics gRPC defines (experimental, off unless a recorder is given).
//!
//! | metric | kind | unit | labels |
//! |---|---|---|---|
//! | `grpc.lb.rls.cache_entries` | gauge | `{entry}` | target, server target, instance uuid |
//! | `grpc.lb.rls.cache_size` | gauge | `By` | target, server target, instance uuid |
//! | `grpc.lb.rls.default_target_picks` | counter | `{pick}` | target, server target, data-plane target, pick result |
//! | `grpc.lb.rls.target_picks` | counter | `{pick}` | target, server target, data-plane target, pick result |
//! | `grpc.lb.rls.failed_picks` | counter | `{pick}` | target, server target |
//!
//! A pick's result is `complete` (routed), `drop` (failed even for wait-for-ready
//! calls) or `fail`; queued picks are not counted. A pick that reaches the default
//! target through a cache entry (RLS returned it) is a target pick.
//!
//! The instruments are [`lb_core::metrics::Instrument`]s recorded through the
//! channel's recorder: the policy gets it, with the channel's target, in
//! [`LbPolicyOptions::metrics`](lb_core::LbPolicyOptions::metrics) (a channel's
//! [`ChannelBuilder::metrics_recorder`](lb_core::channel::ChannelBuilder::metrics_recorder)).
//! [`RlsMetrics`] fills in the labels so every record carries the right set.
//! Like gRPC's, they are off by default in exporters
//! ([`Instrument::default_enabled`](lb_core::metrics::Instrument::default_enabled)).

use std::fmt;

use lb_core::metrics::{Instrument, InstrumentKind, Metrics};

/// Keeps every series in memory, for tests (lb-core's recorder).
pub use lb_core::metrics::InMemoryRecorder;

/// The label naming the channel's target.
pub const LABEL_TARGET: &str = "grpc.target";
/// The label naming the RLS server's target (`lookupService`).
pub const LABEL_SERVER_TARGET: &str = "grpc.lb.rls.server_target";
/// The label naming the target a pick was routed to.
pub const LABEL_DATA_PLANE_TARGET: &str = "grpc.lb.rls.data_plane_target";
/// The label holding a pick's result.
pub const LABEL_PICK_RESULT: &str = "grpc.lb.pick_result";
/// The label identifying one policy instance (for the cache gauges).
pub const LABEL_INSTANCE_UUID: &str = "grpc.lb.rls.instance_uuid";

const CACHE_LABELS: &[&str] = &[LABEL_TARGET, LABEL_SERVER_TARGET, LABEL_INSTANCE_UUID];
const PICK_LABELS: &[&str] = &[
    LABEL_TARGET,
    LABEL_SERVER_TARGET,
    LABEL_DATA_PLANE_TARGET,
    LABEL_PICK_RESULT,
];

/// `grpc.lb.rls.cache_entries`.
pub static CACHE_ENTRIES: Instrument = Instrument::new(
    "grpc.lb.rls.cache_entries",
    "EXPERIMENTAL. Number of entries in the RLS cache.",
    "{entry}",
    CACHE_LABELS,
    InstrumentKind::I64Gauge,
);
/// `grpc.lb.rls.cache_size`.
pub static CACHE_SIZE: Instrument = Instrument::new(
    "grpc.lb.rls.cache_size",
    "EXPERIMENTAL. The current size of the RLS cache.",
    "By",
    CACHE_LABELS,
    InstrumentKind::I64Gauge,
);
/// `grpc.lb.rls.default_target_picks`.
pub static DEFAULT_TARGET_PICKS: Instrument = Instrument::new(
    "grpc.lb.rls.default_target_picks",
    "EXPERIMENTAL. Number of LB picks sent to the default target.",
    "{pick}",
    PICK_LABELS,
    InstrumentKind::U64Counter,
);
/// `grpc.lb.rls.target_picks`.
pub static TARGET_PICKS: Instrument = Instrument::new(
    "grpc.lb.rls.target_picks",
    "EXPERIMENTAL. Number of LB picks sent to each RLS target. Note that if the default \
     target is also returned by the RLS server, RPCs sent to that target from the cache \
     will be counted in this metric, not in grpc.rls.default_target_picks.",
    "{pick}",
    PICK_LABELS,
    InstrumentKind::U64Counter,
);
/// `grpc.lb.rls.failed_picks`.
pub static FAILED_PICKS: Instrument = Instrument::new(
    "grpc.lb.rls.failed_picks",
    "EXPERIMENTAL. Number of LB picks failed due to either a failed RLS request or the \
     RLS channel being throttled.",
    "{pick}",
    &[LABEL_TARGET, LABEL_SERVER_TARGET],
    InstrumentKind::U64Counter,
);

/// The RLS metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RlsMetric {
    /// `grpc.lb.rls.cache_entries`: entries in the data cache.
    CacheEntries,
    /// `grpc.lb.rls.cache_size`: the data cache's size in bytes.
    CacheSize,
    /// `grpc.lb.rls.default_target_picks`: picks routed to the default target.
    DefaultTargetPicks,
    /// `grpc.lb.rls.target_picks`: picks routed to a target RLS returned.
    TargetPicks,
    /// `grpc.lb.rls.failed_picks`: picks failed for want of RLS data and of a default
    /// target.
    FailedPicks,
}

/// Whether a metric is a gauge or a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// A current value, replaced by each record.
    Gauge,
    /// A running total, increased by each record.
    Counter,
}

impl RlsMetric {
    /// Every metric.
    pub const ALL: [Self; 5] = [
        Self::CacheEntries,
        Self::CacheSize,
        Self::DefaultTargetPicks,
        Self::TargetPicks,
        Self::FailedPicks,
    ];

    /// The instrument.
    pub fn instrument(self) -> &'static Instrument {
        match self {
            Self::CacheEntries => &CACHE_ENTRIES,
            Self::CacheSize => &CACHE_SIZE,
            Self::DefaultTargetPicks => &DEFAULT_TARGET_PICKS,
            Self::TargetPicks => &TARGET_PICKS,
            Self::FailedPicks => &FAILED_PICKS,
        }
    }

    /// The metric's name.
    pub fn name(self) -> &'static str {
        self.instrument().name
    }

    /// The metric's unit, in UCUM as OpenTelemetry writes it.
    pub fn unit(self) -> &'static str {
        self.instrument().unit
    }

    /// Gauge or counter.
    pub fn kind(self) -> MetricKind {
        match self.instrument().kind {
            InstrumentKind::I64Gauge => MetricKind::Gauge,
            _ => MetricKind::Counter,
        }
    }

    /// The labels every record of the metric carries.
    pub fn labels(self) -> &'static [&'static str] {
        self.instrument().labels
    }
}

impl AsRef<str> for RlsMetric {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl fmt::Display for RlsMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of a counted pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PickOutcome {
    /// Routed to a subchannel (`complete`).
    Complete,
    /// Failed even for wait-for-ready calls (`drop`).
    Drop,
    /// Failed (`fail`).
    Fail,
}

impl PickOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Drop => "drop",
            Self::Fail => "fail",
        }
    }
}

/// The RLS metrics of one policy instance: the channel's [`Metrics`] plus the
/// labels that do not change per record.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lb_core::metrics::Metrics;
/// use lb_rls::metrics::{InMemoryRecorder, PickOutcome, RlsMetric, RlsMetrics};
/// let recorder = Arc::new(InMemoryRecorder::new());
/// let metrics = RlsMetrics::new(Metrics::new(recorder.clone(), "dns:///svc"), "dns:///rls", "uuid-1");
/// metrics.target_pick("backend-a", PickOutcome::Complete);
/// metrics.target_pick("backend-a", PickOutcome::Complete);
/// metrics.record_cache(1, 35);
/// assert_eq!(recorder.counter_total(RlsMetric::TargetPicks), 2);
/// assert_eq!(
///     recorder.counter(RlsMetric::TargetPicks, &[
///         ("grpc.target", "dns:///svc"),
///         ("grpc.lb.rls.server_target", "dns:///rls"),
///         ("grpc.lb.rls.data_plane_target", "backend-a"),
///         ("grpc.lb.pick_result", "complete"),
///     ]),
///     2,
/// );
/// assert_eq!(recorder.gauge_value(RlsMetric::CacheSize), Some(35));
/// ```
#[derive(Clone)]
pub struct RlsMetrics {
    metrics: Metrics,
    server_target: String,
    instance_uuid: String,
}

impl RlsMetrics {
    /// Metrics recorded through `metrics` (whose target is the channel's), looking
    /// up routes at `server_target`, identified by `instance_uuid`.
    pub fn new(
        metrics: Metrics,
        server_target: impl Into<String>,
        instance_uuid: impl Into<String>,
    ) -> Self {
        Self {
            metrics,
            server_target: server_target.into(),
            instance_uuid: instance_uuid.into(),
        }
    }

    /// Metrics that go nowhere.
    pub fn disabled() -> Self {
        Self::new(Metrics::none(), "", "")
    }

    /// Changes the RLS server's target (a config update changed `lookupService`).
    pub fn set_server_target(&mut self, server_target: impl Into<String>) {
        self.server_target = server_target.into();
    }

    /// Records the cache gauges.
    pub fn record_cache(&self, entries: usize, size_bytes: usize) {
        let m = &self.metrics;
        if !m.is_enabled() {
            return;
        }
        let labels = [
            m.target(),
            self.server_target.as_str(),
            self.instance_uuid.as_str(),
        ];
        let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        m.record_i64_gauge(&CACHE_ENTRIES, to_i64(entries), &labels);
        m.record_i64_gauge(&CACHE_SIZE, to_i64(size_bytes), &labels);
    }

    /// Counts a pick routed via a cache entry to `data_plane_target`.
    pub fn target_pick(&self, data_plane_target: &str, outcome: PickOutcome) {
        self.pick(&TARGET_PICKS, data_plane_target, outcome);
    }

    /// Counts a pick routed to the default target.
    pub fn default_target_pick(&self, data_plane_target: &str, outcome: PickOutcome) {
        self.pick(&DEFAULT_TARGET_PICKS, data_plane_target, outcome);
    }

    /// Counts a pick failed for want of RLS data and of a default target.
    pub fn failed_pick(&self) {
        let m = &self.metrics;
        m.add_u64_counter(&FAILED_PICKS, 1, &[m.target(), self.server_target.as_str()]);
    }

    fn pick(&self, instrument: &'static Instrument, data_plane_target: &str, outcome: PickOutcome) {
        let m = &self.metrics;
        let labels = [
            m.target(),
            self.server_target.as_str(),
            data_plane_target,
            outcome.as_str(),
        ];
        m.add_u64_counter(instrument, 1, &labels);
    }
}

impl fmt::Debug for RlsMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RlsMetrics")
            .field("target", &self.metrics.target())
            .field("server_target", &self.server_target)
            .field("instance_uuid", &self.instance_uuid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn names_units_and_labels_are_grpcs() {
        let names: Vec<&str> = RlsMetric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "grpc.lb.rls.cache_entries",
                "grpc.lb.rls.cache_size",
                "grpc.lb.rls.default_target_picks",
                "grpc.lb.rls.target_picks",
                "grpc.lb.rls.failed_picks",
            ]
        );
        assert_eq!(RlsMetric::CacheSize.unit(), "By");
        assert_eq!(RlsMetric::CacheEntries.kind(), MetricKind::Gauge);
        assert_eq!(RlsMetric::FailedPicks.kind(), MetricKind::Counter);
        assert_eq!(
            [PickOutcome::Complete, PickOutcome::Drop, PickOutcome::Fail].map(PickOutcome::as_str),
            ["complete", "drop", "fail"]
        );
    }

    #[test]
    fn every_record_carries_exactly_the_metrics_labels() {
        let recorder = Arc::new(InMemoryRecorder::new());
        let m = RlsMetrics::new(
            lb_core::metrics::Metrics::new(recorder.clone(), "t"),
            "s",
            "u",
        );
        m.record_cache(3, 100);
        m.target_pick("a", PickOutcome::Complete);
        m.default_target_pick("d", PickOutcome::Fail);
        m.failed_pick();
        for series in recorder.snapshot() {
            let metric = RlsMetric::ALL
                .into_iter()
                .find(|m| m.name() == series.name)
                .expect("an RLS metric");
            let got: Vec<&str> = series.labels.keys().map(String::as_str).collect();
            let mut want = metric.labels().to_vec();
            want.sort_unstable();
            assert_eq!(got, want, "{metric}");
        }
        assert_eq!(recorder.gauge_value(RlsMetric::CacheEntries), Some(3));
        assert_eq!(recorder.counter_total(RlsMetric::DefaultTargetPicks), 1);
        assert_eq!(
            recorder.counter(
                RlsMetric::FailedPicks,
                &[(LABEL_TARGET, "t"), (LABEL_SERVER_TARGET, "s")]
            ),
            1
        );
        // Gauges replace, counters add.
        m.record_cache(1, 10);
        m.failed_pick();
        assert_eq!(recorder.gauge_value(RlsMetric::CacheSize), Some(10));
        assert_eq!(recorder.counter_total(RlsMetric::FailedPicks), 2);
        recorder.clear();
        assert!(recorder.snapshot().is_empty());
        // The disabled metrics accept records and keep nothing.
        RlsMetrics::disabled().failed_pick();
    }
}

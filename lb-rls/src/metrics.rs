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
//! [`MetricsRecorder`] is the seam to a metrics system (an OpenTelemetry bridge, say);
//! [`RlsMetrics`] fills in the labels so every record carries the right set.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

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

    /// The metric's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::CacheEntries => "grpc.lb.rls.cache_entries",
            Self::CacheSize => "grpc.lb.rls.cache_size",
            Self::DefaultTargetPicks => "grpc.lb.rls.default_target_picks",
            Self::TargetPicks => "grpc.lb.rls.target_picks",
            Self::FailedPicks => "grpc.lb.rls.failed_picks",
        }
    }

    /// The metric's unit, in UCUM as OpenTelemetry writes it.
    pub fn unit(self) -> &'static str {
        match self {
            Self::CacheEntries => "{entry}",
            Self::CacheSize => "By",
            Self::DefaultTargetPicks | Self::TargetPicks | Self::FailedPicks => "{pick}",
        }
    }

    /// Gauge or counter.
    pub fn kind(self) -> MetricKind {
        match self {
            Self::CacheEntries | Self::CacheSize => MetricKind::Gauge,
            _ => MetricKind::Counter,
        }
    }

    /// The labels every record of the metric carries.
    pub fn labels(self) -> &'static [&'static str] {
        match self {
            Self::CacheEntries | Self::CacheSize => {
                &[LABEL_TARGET, LABEL_SERVER_TARGET, LABEL_INSTANCE_UUID]
            }
            Self::DefaultTargetPicks | Self::TargetPicks => &[
                LABEL_TARGET,
                LABEL_SERVER_TARGET,
                LABEL_DATA_PLANE_TARGET,
                LABEL_PICK_RESULT,
            ],
            Self::FailedPicks => &[LABEL_TARGET, LABEL_SERVER_TARGET],
        }
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

/// Labels of one record: `(label, value)` pairs.
pub type Labels<'a> = [(&'static str, &'a str)];

/// Receives RLS metric records. Implementations must be cheap: counters are
/// recorded on the picking threads.
pub trait MetricsRecorder: Send + Sync {
    /// Sets a gauge's current value.
    fn record_gauge(&self, metric: RlsMetric, value: i64, labels: &Labels<'_>);

    /// Adds `delta` to a counter.
    fn add_counter(&self, metric: RlsMetric, delta: u64, labels: &Labels<'_>);
}

/// A recorder that drops everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopRecorder;

impl MetricsRecorder for NoopRecorder {
    fn record_gauge(&self, _: RlsMetric, _: i64, _: &Labels<'_>) {}
    fn add_counter(&self, _: RlsMetric, _: u64, _: &Labels<'_>) {}
}

type SeriesKey = (RlsMetric, BTreeMap<String, String>);

/// A recorder that keeps every series in memory, for tests.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lb_rls::metrics::{InMemoryRecorder, PickOutcome, RlsMetric, RlsMetrics};
/// let recorder = Arc::new(InMemoryRecorder::new());
/// let metrics = RlsMetrics::new(recorder.clone(), "dns:///svc", "dns:///rls", "uuid-1");
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
#[derive(Debug, Default)]
pub struct InMemoryRecorder {
    series: Mutex<BTreeMap<SeriesKey, i64>>,
}

impl InMemoryRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn key(metric: RlsMetric, labels: &Labels<'_>) -> SeriesKey {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        (metric, labels)
    }

    /// The counter's value for exactly these labels (0 if never recorded).
    pub fn counter(&self, metric: RlsMetric, labels: &Labels<'_>) -> u64 {
        let v = self
            .series
            .lock()
            .get(&Self::key(metric, labels))
            .copied()
            .unwrap_or(0);
        u64::try_from(v).unwrap_or(0)
    }

    /// The counter's total over all label sets.
    pub fn counter_total(&self, metric: RlsMetric) -> u64 {
        self.series
            .lock()
            .iter()
            .filter(|((m, _), _)| *m == metric)
            .map(|(_, v)| u64::try_from(*v).unwrap_or(0))
            .sum()
    }

    /// The gauge's value for exactly these labels.
    pub fn gauge(&self, metric: RlsMetric, labels: &Labels<'_>) -> Option<i64> {
        self.series.lock().get(&Self::key(metric, labels)).copied()
    }

    /// The gauge's value, if it was recorded under exactly one label set.
    pub fn gauge_value(&self, metric: RlsMetric) -> Option<i64> {
        let series = self.series.lock();
        let mut values = series.iter().filter(|((m, _), _)| *m == metric);
        match (values.next(), values.next()) {
            (Some((_, v)), None) => Some(*v),
            _ => None,
        }
    }

    /// Every series: metric, labels and value, sorted.
    pub fn snapshot(&self) -> Vec<(RlsMetric, BTreeMap<String, String>, i64)> {
        self.series
            .lock()
            .iter()
            .map(|((m, l), v)| (*m, l.clone(), *v))
            .collect()
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.series.lock().clear();
    }
}

impl MetricsRecorder for InMemoryRecorder {
    fn record_gauge(&self, metric: RlsMetric, value: i64, labels: &Labels<'_>) {
        self.series.lock().insert(Self::key(metric, labels), value);
    }

    fn add_counter(&self, metric: RlsMetric, delta: u64, labels: &Labels<'_>) {
        let delta = i64::try_from(delta).unwrap_or(i64::MAX);
        let mut series = self.series.lock();
        let v = series.entry(Self::key(metric, labels)).or_insert(0);
        *v = v.saturating_add(delta);
    }
}

/// The RLS metrics of one policy instance: a recorder plus the labels that do not
/// change per record.
#[derive(Clone)]
pub struct RlsMetrics {
    recorder: Arc<dyn MetricsRecorder>,
    target: String,
    server_target: String,
    instance_uuid: String,
}

impl RlsMetrics {
    /// Metrics for the policy of the channel to `target`, looking up routes at
    /// `server_target`, identified by `instance_uuid`.
    pub fn new(
        recorder: Arc<dyn MetricsRecorder>,
        target: impl Into<String>,
        server_target: impl Into<String>,
        instance_uuid: impl Into<String>,
    ) -> Self {
        Self {
            recorder,
            target: target.into(),
            server_target: server_target.into(),
            instance_uuid: instance_uuid.into(),
        }
    }

    /// Metrics that go nowhere.
    pub fn disabled() -> Self {
        Self::new(Arc::new(NoopRecorder), "", "", "")
    }

    /// Changes the RLS server's target (a config update changed `lookupService`).
    pub fn set_server_target(&mut self, server_target: impl Into<String>) {
        self.server_target = server_target.into();
    }

    /// Records the cache gauges.
    pub fn record_cache(&self, entries: usize, size_bytes: usize) {
        let labels = [
            (LABEL_TARGET, self.target.as_str()),
            (LABEL_SERVER_TARGET, self.server_target.as_str()),
            (LABEL_INSTANCE_UUID, self.instance_uuid.as_str()),
        ];
        let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.recorder
            .record_gauge(RlsMetric::CacheEntries, to_i64(entries), &labels);
        self.recorder
            .record_gauge(RlsMetric::CacheSize, to_i64(size_bytes), &labels);
    }

    /// Counts a pick routed via a cache entry to `data_plane_target`.
    pub fn target_pick(&self, data_plane_target: &str, outcome: PickOutcome) {
        self.pick(RlsMetric::TargetPicks, data_plane_target, outcome);
    }

    /// Counts a pick routed to the default target.
    pub fn default_target_pick(&self, data_plane_target: &str, outcome: PickOutcome) {
        self.pick(RlsMetric::DefaultTargetPicks, data_plane_target, outcome);
    }

    /// Counts a pick failed for want of RLS data and of a default target.
    pub fn failed_pick(&self) {
        let labels = [
            (LABEL_TARGET, self.target.as_str()),
            (LABEL_SERVER_TARGET, self.server_target.as_str()),
        ];
        self.recorder
            .add_counter(RlsMetric::FailedPicks, 1, &labels);
    }

    fn pick(&self, metric: RlsMetric, data_plane_target: &str, outcome: PickOutcome) {
        let labels = [
            (LABEL_TARGET, self.target.as_str()),
            (LABEL_SERVER_TARGET, self.server_target.as_str()),
            (LABEL_DATA_PLANE_TARGET, data_plane_target),
            (LABEL_PICK_RESULT, outcome.as_str()),
        ];
        self.recorder.add_counter(metric, 1, &labels);
    }
}

impl fmt::Debug for RlsMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RlsMetrics")
            .field("target", &self.target)
            .field("server_target", &self.server_target)
            .field("instance_uuid", &self.instance_uuid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let m = RlsMetrics::new(recorder.clone(), "t", "s", "u");
        m.record_cache(3, 100);
        m.target_pick("a", PickOutcome::Complete);
        m.default_target_pick("d", PickOutcome::Fail);
        m.failed_pick();
        for (metric, labels, _) in recorder.snapshot() {
            let got: Vec<&str> = labels.keys().map(String::as_str).collect();
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

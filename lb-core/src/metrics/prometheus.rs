//! A [`MetricsRecorder`] that keeps gRPC's instruments in a `prometheus-client`
//! registry and renders them as the Prometheus `/metrics` body (feature
//! `prometheus`).
//!
//! Names follow OpenTelemetry's Prometheus conversion, as gRPC's OTel plugins
//! exported to Prometheus show them: dots become underscores, the unit is
//! appended for seconds and bytes (`grpc_client_attempt_duration_seconds`,
//! `..._size_bytes`; curly-brace units such as `{attempt}` are dropped), and
//! counters end in `_total` (`grpc_client_attempt_started_total`). Labels keep
//! their dots turned to underscores too (`grpc_method`, `grpc_status`).
//!
//! The text is OpenMetrics 1.0 (what `prometheus-client` writes, which every
//! Prometheus server scrapes), so [`CONTENT_TYPE`] is OpenMetrics'.
//!
//! Instruments are registered the first time they are recorded: one that never
//! was has no `# TYPE` line. Only the instruments of the recorder's
//! [`MetricSelection`] are kept (gRPC's default set unless told otherwise).
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use lb_core::metrics::{Metrics, instruments, prometheus::PrometheusRecorder};
//! let prom = Arc::new(PrometheusRecorder::new());
//! let metrics = Metrics::new(prom.clone(), "dns:///svc");
//! metrics.add_u64_counter(&instruments::CLIENT_ATTEMPT_STARTED, 1, &["echo.Echo/Say", "dns:///svc"]);
//! // What an HTTP server answers on /metrics:
//! let scrape = prom.handler();
//! let (content_type, body) = scrape();
//! assert!(content_type.starts_with("application/openmetrics-text"));
//! assert!(body.contains(r#"grpc_client_attempt_started_total{grpc_method="echo.Echo/Say",grpc_target="dns:///svc"} 1"#));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};

use super::{Instrument, InstrumentKind, MetricSelection, MetricsRecorder};

/// The `Content-Type` of [`PrometheusRecorder::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// Makes a histogram with an instrument's buckets.
#[derive(Clone, Copy, Debug)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

#[derive(Clone, Debug)]
enum Fam {
    Counter(Family<Labels, Counter>),
    Gauge(Family<Labels, Gauge>),
    Histogram(Family<Labels, Histogram, Buckets>),
}

/// gRPC's metrics as Prometheus text. Give it to channels with
/// [`ChannelBuilder::metrics_recorder`](crate::channel::ChannelBuilder::metrics_recorder)
/// (and to a server's metrics hook), and serve [`PrometheusRecorder::handler`] on
/// `/metrics`.
pub struct PrometheusRecorder {
    selection: MetricSelection,
    registry: Mutex<Registry>,
    families: RwLock<HashMap<&'static str, Fam>>,
}

impl Default for PrometheusRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PrometheusRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusRecorder")
            .field("selection", &self.selection)
            .finish_non_exhaustive()
    }
}

/// The Prometheus form of a gRPC name: dots (and anything else Prometheus does
/// not allow) become underscores.
pub fn prometheus_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn unit(unit: &str) -> Option<Unit> {
    match unit {
        "s" => Some(Unit::Seconds),
        "By" => Some(Unit::Bytes),
        _ => None,
    }
}

fn register(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: impl Metric,
) {
    match unit {
        Some(u) => registry.register_with_unit(name, help, u, metric),
        None => registry.register(name, help, metric),
    }
}

impl PrometheusRecorder {
    /// A recorder of gRPC's default instruments (the per-call ones).
    pub fn new() -> Self {
        Self::with_selection(MetricSelection::default())
    }

    /// A recorder of the instruments (and optional labels) `selection` keeps.
    pub fn with_selection(selection: MetricSelection) -> Self {
        Self {
            selection,
            registry: Mutex::new(Registry::default()),
            families: RwLock::new(HashMap::new()),
        }
    }

    /// The exposition text of everything recorded so far.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock())
            .expect("writing to a String does not fail");
        out
    }

    /// A `/metrics` handler: each call answers the content type and the text.
    /// An HTTP server (the admin server's `route`) calls it per scrape.
    pub fn handler(
        self: &Arc<Self>,
    ) -> impl Fn() -> (&'static str, String) + Send + Sync + 'static {
        let this = self.clone();
        move || (CONTENT_TYPE, this.encode())
    }

    /// The family of `instrument`, registered on first use; `None` when the
    /// selection leaves it out.
    fn family(&self, instrument: &'static Instrument) -> Option<Fam> {
        if let Some(f) = self.families.read().get(instrument.name) {
            return Some(f.clone());
        }
        if !self.selection.is_enabled(instrument) {
            return None;
        }
        let mut families = self.families.write();
        if let Some(f) = families.get(instrument.name) {
            return Some(f.clone());
        }
        let fam = match instrument.kind {
            InstrumentKind::U64Counter => Fam::Counter(Family::default()),
            InstrumentKind::I64Gauge | InstrumentKind::I64UpDownCounter => {
                Fam::Gauge(Family::default())
            }
            InstrumentKind::F64Histogram => {
                Fam::Histogram(Family::new_with_constructor(Buckets(instrument.buckets)))
            }
        };
        let name = prometheus_name(instrument.name);
        let help = instrument.description;
        let mut registry = self.registry.lock();
        let unit = unit(instrument.unit);
        match &fam {
            Fam::Counter(f) => register(&mut registry, &name, help, unit, f.clone()),
            Fam::Gauge(f) => register(&mut registry, &name, help, unit, f.clone()),
            Fam::Histogram(f) => register(&mut registry, &name, help, unit, f.clone()),
        }
        families.insert(instrument.name, fam.clone());
        Some(fam)
    }

    fn labels(&self, instrument: &'static Instrument, labels: &[&str]) -> Labels {
        self.selection
            .labels(instrument, labels)
            .into_iter()
            .map(|(k, v)| (prometheus_name(k), v.to_owned()))
            .collect()
    }
}

impl MetricsRecorder for PrometheusRecorder {
    fn add_u64_counter(&self, instrument: &'static Instrument, value: u64, labels: &[&str]) {
        if let Some(Fam::Counter(f)) = self.family(instrument) {
            f.get_or_create(&self.labels(instrument, labels))
                .inc_by(value);
        }
    }

    fn record_f64_histogram(&self, instrument: &'static Instrument, value: f64, labels: &[&str]) {
        if let Some(Fam::Histogram(f)) = self.family(instrument) {
            f.get_or_create(&self.labels(instrument, labels))
                .observe(value);
        }
    }

    fn record_i64_gauge(&self, instrument: &'static Instrument, value: i64, labels: &[&str]) {
        if let Some(Fam::Gauge(f)) = self.family(instrument) {
            f.get_or_create(&self.labels(instrument, labels)).set(value);
        }
    }

    fn add_i64_up_down_counter(
        &self,
        instrument: &'static Instrument,
        delta: i64,
        labels: &[&str],
    ) {
        if let Some(Fam::Gauge(f)) = self.family(instrument) {
            f.get_or_create(&self.labels(instrument, labels))
                .inc_by(delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::instruments;

    #[test]
    fn names_units_and_kinds_follow_the_otel_prometheus_conversion() {
        let p = PrometheusRecorder::with_selection(MetricSelection::all());
        p.add_u64_counter(&instruments::CLIENT_ATTEMPT_STARTED, 3, &["a.B/C", "t"]);
        p.record_f64_histogram(
            &instruments::CLIENT_CALL_DURATION,
            0.002,
            &["a.B/C", "t", "OK"],
        );
        p.add_i64_up_down_counter(&instruments::SUBCHANNEL_OPEN_CONNECTIONS, 2, &["t", "", ""]);
        p.add_i64_up_down_counter(
            &instruments::SUBCHANNEL_OPEN_CONNECTIONS,
            -1,
            &["t", "", ""],
        );
        let text = p.encode();
        assert!(
            text.contains("# TYPE grpc_client_attempt_started counter"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"grpc_client_attempt_started_total{grpc_method="a.B/C",grpc_target="t"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE grpc_client_call_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("# UNIT grpc_client_call_duration_seconds seconds"),
            "{text}"
        );
        assert!(text.contains(r#"grpc_client_call_duration_seconds_count{grpc_method="a.B/C",grpc_target="t",grpc_status="OK"} 1"#), "{text}");
        assert!(text.contains(r#"grpc_subchannel_open_connections{grpc_target="t",grpc_lb_backend_service="",grpc_lb_locality=""} 1"#), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn instruments_off_by_default_are_left_out() {
        let p = PrometheusRecorder::new();
        p.add_u64_counter(&instruments::WRR_RR_FALLBACK, 1, &["t", "loc"]);
        p.add_u64_counter(&instruments::CLIENT_ATTEMPT_STARTED, 1, &["m", "t"]);
        let text = p.encode();
        assert!(!text.contains("wrr"), "{text}");
        assert!(text.contains("grpc_client_attempt_started_total"), "{text}");
    }
}

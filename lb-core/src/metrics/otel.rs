//! A [`MetricsRecorder`] that records gRPC's instruments into an OpenTelemetry
//! [`Meter`] the program gives it (feature `opentelemetry`).
//!
//! Only the `opentelemetry` API crate is a dependency (without its default
//! features): the program brings the SDK, its readers and exporters, so no async
//! runtime enters lb-core's graph. Instruments keep gRPC's names, units and
//! descriptions; histograms get gRPC's bucket boundaries as advice
//! ([`Instrument::buckets`]). Instruments are created on first record; only those
//! of the recorder's [`MetricSelection`] are kept.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use lb_core::metrics::otel::OtelRecorder;
//! // A program passes its SDK's meter; the global one is a no-op until set.
//! let meter = opentelemetry::global::meter("lb-sync");
//! let recorder = Arc::new(OtelRecorder::new(meter));
//! # let _ = recorder;
//! ```

use std::collections::HashMap;
use std::fmt;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};
use parking_lot::RwLock;

use super::{Instrument, InstrumentKind, MetricSelection, MetricsRecorder};

#[derive(Clone)]
enum Inst {
    Counter(Counter<u64>),
    Histogram(Histogram<f64>),
    Gauge(Gauge<i64>),
    UpDown(UpDownCounter<i64>),
}

/// gRPC's metrics recorded into an OpenTelemetry [`Meter`].
pub struct OtelRecorder {
    meter: Meter,
    selection: MetricSelection,
    instruments: RwLock<HashMap<&'static str, Inst>>,
}

impl fmt::Debug for OtelRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelRecorder")
            .field("selection", &self.selection)
            .finish_non_exhaustive()
    }
}

impl OtelRecorder {
    /// Records gRPC's default instruments (the per-call ones) into `meter`.
    pub fn new(meter: Meter) -> Self {
        Self::with_selection(meter, MetricSelection::default())
    }

    /// Records the instruments (and optional labels) `selection` keeps.
    pub fn with_selection(meter: Meter, selection: MetricSelection) -> Self {
        Self {
            meter,
            selection,
            instruments: RwLock::new(HashMap::new()),
        }
    }

    fn instrument(&self, i: &'static Instrument) -> Option<Inst> {
        if let Some(inst) = self.instruments.read().get(i.name) {
            return Some(inst.clone());
        }
        if !self.selection.is_enabled(i) {
            return None;
        }
        let mut instruments = self.instruments.write();
        if let Some(inst) = instruments.get(i.name) {
            return Some(inst.clone());
        }
        let m = &self.meter;
        let inst = match i.kind {
            InstrumentKind::U64Counter => Inst::Counter(
                m.u64_counter(i.name)
                    .with_description(i.description)
                    .with_unit(i.unit)
                    .build(),
            ),
            InstrumentKind::F64Histogram => Inst::Histogram(
                m.f64_histogram(i.name)
                    .with_description(i.description)
                    .with_unit(i.unit)
                    .with_boundaries(i.buckets.to_vec())
                    .build(),
            ),
            InstrumentKind::I64Gauge => Inst::Gauge(
                m.i64_gauge(i.name)
                    .with_description(i.description)
                    .with_unit(i.unit)
                    .build(),
            ),
            InstrumentKind::I64UpDownCounter => Inst::UpDown(
                m.i64_up_down_counter(i.name)
                    .with_description(i.description)
                    .with_unit(i.unit)
                    .build(),
            ),
        };
        instruments.insert(i.name, inst.clone());
        Some(inst)
    }

    fn attributes(&self, i: &'static Instrument, labels: &[&str]) -> Vec<KeyValue> {
        self.selection
            .labels(i, labels)
            .into_iter()
            .map(|(k, v)| KeyValue::new(k, v.to_owned()))
            .collect()
    }
}

impl MetricsRecorder for OtelRecorder {
    fn add_u64_counter(&self, i: &'static Instrument, value: u64, labels: &[&str]) {
        if let Some(Inst::Counter(c)) = self.instrument(i) {
            c.add(value, &self.attributes(i, labels));
        }
    }

    fn record_f64_histogram(&self, i: &'static Instrument, value: f64, labels: &[&str]) {
        if let Some(Inst::Histogram(h)) = self.instrument(i) {
            h.record(value, &self.attributes(i, labels));
        }
    }

    fn record_i64_gauge(&self, i: &'static Instrument, value: i64, labels: &[&str]) {
        if let Some(Inst::Gauge(g)) = self.instrument(i) {
            g.record(value, &self.attributes(i, labels));
        }
    }

    fn add_i64_up_down_counter(&self, i: &'static Instrument, delta: i64, labels: &[&str]) {
        if let Some(Inst::UpDown(u)) = self.instrument(i) {
            u.add(delta, &self.attributes(i, labels));
        }
    }
}

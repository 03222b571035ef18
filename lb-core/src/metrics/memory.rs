//! [`InMemoryRecorder`]: every series in memory, for tests and for programs that
//! show their own numbers (the demo's progress lines).

use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::{Instrument, MetricsRecorder};

/// One series' value.
#[derive(Clone, Debug, PartialEq)]
pub enum SeriesValue {
    /// A counter's total.
    Counter(u64),
    /// A gauge's latest value, or an up-down counter's sum.
    Gauge(i64),
    /// A histogram's count, sum and every value recorded (in order).
    Histogram {
        /// How many values were recorded.
        count: u64,
        /// Their sum.
        sum: f64,
        /// The values.
        values: Vec<f64>,
    },
}

/// One series: an instrument's name, the labels of its records, and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The instrument's name.
    pub name: &'static str,
    /// Every label (required and optional) as recorded.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: SeriesValue,
}

type Key = (&'static str, BTreeMap<String, String>);

/// A recorder that keeps every series (every instrument, every label, optional
/// ones included) in memory, histograms with every value they got (so memory
/// grows with the records). One mutex: for tests and demos, not for a busy
/// program's call path.
///
/// # Examples
///
/// ```
/// use lb_core::metrics::{InMemoryRecorder, MetricsRecorder, instruments};
/// let r = InMemoryRecorder::new();
/// let labels = ["echo.Echo/Say", "dns:///svc", "OK"];
/// r.record_f64_histogram(&instruments::CLIENT_CALL_DURATION, 0.25, &labels);
/// r.record_f64_histogram(&instruments::CLIENT_CALL_DURATION, 0.5, &labels);
/// assert_eq!(r.histogram_count("grpc.client.call.duration", &[("grpc.status", "OK")]), 2);
/// assert_eq!(r.histogram_sum("grpc.client.call.duration"), 0.75);
/// r.add_u64_counter(&instruments::CLIENT_ATTEMPT_STARTED, 2, &["a.B/C", "t"]);
/// r.add_u64_counter(&instruments::CLIENT_ATTEMPT_STARTED, 1, &["a.B/D", "t"]);
/// let by_method = r.counter_by("grpc.client.attempt.started", "grpc.method");
/// assert_eq!(by_method.into_iter().collect::<Vec<_>>(), [("a.B/C".into(), 2), ("a.B/D".into(), 1)]);
/// ```
#[derive(Debug, Default)]
pub struct InMemoryRecorder {
    series: Mutex<BTreeMap<Key, SeriesValue>>,
}

fn key(instrument: &'static Instrument, labels: &[&str]) -> Key {
    let labels = instrument
        .label_keys()
        .zip(labels.iter())
        .map(|(k, v)| (k.to_owned(), (*v).to_owned()))
        .collect();
    (instrument.name, labels)
}

fn exact(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn matches(have: &BTreeMap<String, String>, want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(k, v)| have.get(*k).is_some_and(|h| h == v))
}

impl InMemoryRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter's total for exactly these labels (0 if never recorded).
    pub fn counter(&self, name: impl AsRef<str>, labels: &[(&str, &str)]) -> u64 {
        let want = exact(labels);
        self.fold(name.as_ref(), |l| *l == want, counter_of)
    }

    /// The counter's total over the series whose labels include `labels`.
    pub fn counter_matching(&self, name: impl AsRef<str>, labels: &[(&str, &str)]) -> u64 {
        self.fold(name.as_ref(), |l| matches(l, labels), counter_of)
    }

    /// The counter's total over every label set.
    pub fn counter_total(&self, name: impl AsRef<str>) -> u64 {
        self.fold(name.as_ref(), |_| true, counter_of)
    }

    /// The counter's totals grouped by the value of the label `key` (series
    /// without it are left out).
    pub fn counter_by(&self, name: impl AsRef<str>, key: &str) -> BTreeMap<String, u64> {
        let name = name.as_ref();
        let mut out = BTreeMap::new();
        for ((n, labels), v) in self.series.lock().iter() {
            if let (true, Some(value)) = (*n == name, labels.get(key)) {
                *out.entry(value.clone()).or_default() += counter_of(v);
            }
        }
        out
    }

    /// How many values the histogram got, grouped by the value of the label
    /// `key` (series without it are left out).
    pub fn histogram_count_by(&self, name: impl AsRef<str>, key: &str) -> BTreeMap<String, u64> {
        let name = name.as_ref();
        let mut out = BTreeMap::new();
        for ((n, labels), v) in self.series.lock().iter() {
            if let (true, Some(value), SeriesValue::Histogram { count, .. }) =
                (*n == name, labels.get(key), v)
            {
                *out.entry(value.clone()).or_default() += count;
            }
        }
        out
    }

    /// A text table of every series for people: instrument, labels (except
    /// `hidden_labels`, and empty ones), and the value (a histogram's count and
    /// mean; durations in milliseconds).
    ///
    /// ```
    /// use lb_core::metrics::{InMemoryRecorder, MetricsRecorder, instruments};
    /// let r = InMemoryRecorder::new();
    /// r.add_u64_counter(&instruments::CLIENT_ATTEMPT_STARTED, 3, &["a.B/C", "dns:///t"]);
    /// let table = r.table(&["grpc.target"]);
    /// assert!(table.contains("grpc.client.attempt.started | grpc.method=a.B/C | 3"), "{table}");
    /// ```
    pub fn table(&self, hidden_labels: &[&str]) -> String {
        let mut rows = vec![[
            "instrument".to_owned(),
            "labels".to_owned(),
            "value".to_owned(),
        ]];
        for s in self.snapshot() {
            let labels: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, v)| !v.is_empty() && !hidden_labels.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let value = match &s.value {
                SeriesValue::Counter(n) => n.to_string(),
                SeriesValue::Gauge(n) => format!("{n} (now)"),
                SeriesValue::Histogram { count, sum, .. } => {
                    let mean = sum / (*count).max(1) as f64;
                    match s.name.ends_with(".duration") {
                        true => format!("{count} (mean {:.3} ms)", mean * 1e3),
                        false => format!("{count} (mean {mean:.1})"),
                    }
                }
            };
            rows.push([s.name.to_owned(), labels.join(" "), value]);
        }
        let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
        let (w0, w1) = (width(0), width(1));
        let mut out = String::new();
        for [a, b, c] in &rows {
            out.push_str(&format!("{a:<w0$} | {b:<w1$} | {c}\n"));
        }
        out
    }

    /// The gauge's (or up-down counter's) value for exactly these labels.
    pub fn gauge(&self, name: impl AsRef<str>, labels: &[(&str, &str)]) -> Option<i64> {
        let want = exact(labels);
        let name = name.as_ref();
        self.series
            .lock()
            .iter()
            .find(|((n, l), _)| *n == name && *l == want)
            .and_then(|(_, v)| gauge_of(v))
    }

    /// The gauge's value, if it was recorded under exactly one label set.
    pub fn gauge_value(&self, name: impl AsRef<str>) -> Option<i64> {
        let name = name.as_ref();
        let series = self.series.lock();
        let mut values = series.iter().filter(|((n, _), _)| *n == name);
        match (values.next(), values.next()) {
            (Some((_, v)), None) => gauge_of(v),
            _ => None,
        }
    }

    /// How many values the histogram got, over the series whose labels include
    /// `labels`.
    pub fn histogram_count(&self, name: impl AsRef<str>, labels: &[(&str, &str)]) -> u64 {
        self.fold(
            name.as_ref(),
            |l| matches(l, labels),
            |v| match v {
                SeriesValue::Histogram { count, .. } => *count,
                _ => 0,
            },
        )
    }

    /// The sum of every value the histogram got.
    pub fn histogram_sum(&self, name: impl AsRef<str>) -> f64 {
        let name = name.as_ref();
        self.series
            .lock()
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, v)| match v {
                SeriesValue::Histogram { sum, .. } => *sum,
                _ => 0.0,
            })
            .sum()
    }

    /// Every value the histogram got under the series whose labels include
    /// `labels`, series by series.
    pub fn histogram_values(&self, name: impl AsRef<str>, labels: &[(&str, &str)]) -> Vec<f64> {
        let name = name.as_ref();
        self.series
            .lock()
            .iter()
            .filter(|((n, l), _)| *n == name && matches(l, labels))
            .flat_map(|(_, v)| match v {
                SeriesValue::Histogram { values, .. } => values.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Every series, sorted by name then labels.
    pub fn snapshot(&self) -> Vec<Series> {
        self.series
            .lock()
            .iter()
            .map(|((name, labels), value)| Series {
                name,
                labels: labels.clone(),
                value: value.clone(),
            })
            .collect()
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.series.lock().clear();
    }

    fn fold(
        &self,
        name: &str,
        filter: impl Fn(&BTreeMap<String, String>) -> bool,
        value: impl Fn(&SeriesValue) -> u64,
    ) -> u64 {
        self.series
            .lock()
            .iter()
            .filter(|((n, l), _)| *n == name && filter(l))
            .map(|(_, v)| value(v))
            .sum()
    }
}

fn counter_of(v: &SeriesValue) -> u64 {
    match v {
        SeriesValue::Counter(n) => *n,
        _ => 0,
    }
}

fn gauge_of(v: &SeriesValue) -> Option<i64> {
    match v {
        SeriesValue::Gauge(n) => Some(*n),
        _ => None,
    }
}

impl MetricsRecorder for InMemoryRecorder {
    fn add_u64_counter(&self, instrument: &'static Instrument, value: u64, labels: &[&str]) {
        let mut series = self.series.lock();
        let v = series
            .entry(key(instrument, labels))
            .or_insert(SeriesValue::Counter(0));
        if let SeriesValue::Counter(n) = v {
            *n = n.saturating_add(value);
        }
    }

    fn record_f64_histogram(&self, instrument: &'static Instrument, value: f64, labels: &[&str]) {
        let mut series = self.series.lock();
        let v = series
            .entry(key(instrument, labels))
            .or_insert(SeriesValue::Histogram {
                count: 0,
                sum: 0.0,
                values: Vec::new(),
            });
        if let SeriesValue::Histogram { count, sum, values } = v {
            *count += 1;
            *sum += value;
            values.push(value);
        }
    }

    fn record_i64_gauge(&self, instrument: &'static Instrument, value: i64, labels: &[&str]) {
        self.series
            .lock()
            .insert(key(instrument, labels), SeriesValue::Gauge(value));
    }

    fn add_i64_up_down_counter(
        &self,
        instrument: &'static Instrument,
        delta: i64,
        labels: &[&str],
    ) {
        let mut series = self.series.lock();
        let v = series
            .entry(key(instrument, labels))
            .or_insert(SeriesValue::Gauge(0));
        if let SeriesValue::Gauge(n) = v {
            *n = n.saturating_add(delta);
        }
    }
}

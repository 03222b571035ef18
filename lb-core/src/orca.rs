//! ORCA (Open Request Cost Aggregation, gRFC A51): backends reporting their load to
//! clients, here for policies such as `weighted_round_robin` (gRFC A58).
//!
//! ```text
//!   per call (gRFC A51 "per-request"):
//!     server handler ──trailer `endpoint-load-metrics-bin`──> call's final Status
//!        └─ the picker's on_complete: orca::report_from(&status) ─> the policy's weights
//!
//!   out of band (one stream per READY subchannel, only when a policy asks):
//!     channel ──OrcaLoadReportRequest{report_interval}──> /xds.service.orca.v3.
//!             <──OrcaLoadReport, OrcaLoadReport, … ──────  OpenRcaService/StreamCoreMetrics
//! ```
//!
//! This module holds the method names and a hand-written codec for the two messages:
//!
//! ```text
//!   message OrcaLoadReport {                  // xds.data.orca.v3
//!     double cpu_utilization = 1;      double mem_utilization = 2;
//!     uint64 rps = 3 [deprecated];     map<string, double> request_cost = 4;
//!     map<string, double> utilization = 5;     double rps_fractional = 6;
//!     double eps = 7;                  map<string, double> named_metrics = 8;
//!     double application_utilization = 9;
//!   }
//!   message OrcaLoadReportRequest {           // xds.service.orca.v3
//!     google.protobuf.Duration report_interval = 1;
//!     repeated string request_cost_names = 2;
//!   }
//! ```
//!
//! Decoding follows protobuf's rules (any order, the last of a repeated scalar wins,
//! unknown fields skipped); bytes that are not a message are an [`OrcaDecodeError`]
//! naming the byte and the reason, never a panic.
//!
//! ```
//! use lb_core::orca::{self, OrcaLoadReport};
//! use lb_core::{Metadata, Status};
//!
//! // A server puts a report in the trailers …
//! let report = OrcaLoadReport { cpu_utilization: 0.5, rps_fractional: 10.0, ..Default::default() };
//! let mut trailers = Metadata::new();
//! report.write_trailer(&mut trailers);
//! // … and a policy's completion callback reads it from the call's final status.
//! let status = Status::ok().with_trailers(trailers);
//! assert_eq!(orca::report_from(&status), Some(Ok(report)));
//! assert_eq!(orca::report_from(&Status::ok()), None);
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use crate::metadata::Metadata;
use crate::protowire::{Reader, put_bytes, put_double, put_tag, put_varint, wire};
use crate::status::Status;

/// The trailer that carries a per-call report (binary metadata, a serialized
/// [`OrcaLoadReport`]).
pub const TRAILER: &str = "endpoint-load-metrics-bin";

/// The out-of-band service, as it appears in method paths.
pub const SERVICE: &str = "xds.service.orca.v3.OpenRcaService";

/// The out-of-band server-streaming method's path.
pub const STREAM_CORE_METRICS_METHOD: &str =
    "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics";

/// The shortest out-of-band reporting interval a server honours by default (gRFC
/// A51): a request for less gets this.
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Receives a subchannel's out-of-band reports, on the channel's serializer. It must
/// not block (it runs between policy methods).
pub type OobListener = std::sync::Arc<dyn Fn(&OrcaLoadReport) + Send + Sync>;

/// A policy's request for out-of-band reports, as a
/// [`SubchannelBackend`](crate::SubchannelBackend) receives it from
/// [`Subchannel::request_oob_reports`](crate::Subchannel::request_oob_reports).
#[derive(Clone)]
pub struct OobRequest {
    /// How often the server should report (`report_interval`).
    pub period: Duration,
    /// Who gets the reports.
    pub listener: OobListener,
}

impl std::fmt::Debug for OobRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OobRequest")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

/// One load report, `xds.data.orca.v3.OrcaLoadReport`.
///
/// Utilizations are fractions (1.0 is fully used; more is over a soft limit);
/// `rps_fractional` and `eps` are queries and errors per second.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrcaLoadReport {
    /// Field 1: CPU utilization.
    pub cpu_utilization: f64,
    /// Field 2: memory utilization.
    pub mem_utilization: f64,
    /// Field 3 (deprecated in the proto, kept for old servers): whole queries per second.
    pub rps: u64,
    /// Field 4: per-call costs by name.
    pub request_cost: BTreeMap<String, f64>,
    /// Field 5: other utilizations by name.
    pub utilization: BTreeMap<String, f64>,
    /// Field 6: queries per second.
    pub rps_fractional: f64,
    /// Field 7: errors per second.
    pub eps: f64,
    /// Field 8: application-defined metrics by name.
    pub named_metrics: BTreeMap<String, f64>,
    /// Field 9: the application's own notion of utilization (preferred over CPU by
    /// `weighted_round_robin`).
    pub application_utilization: f64,
}

/// `xds.service.orca.v3.OrcaLoadReportRequest`: what an out-of-band stream asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrcaLoadReportRequest {
    /// Field 1 (`google.protobuf.Duration`): how often to report. A negative duration
    /// on the wire reads as zero.
    pub report_interval: Duration,
    /// Field 2: the request costs to include (empty: all).
    pub request_cost_names: Vec<String>,
}

/// Bytes that are not an ORCA message: what is wrong, in which field, at which byte.
///
/// ```
/// let err = lb_core::orca::OrcaLoadReport::decode(&[0x09, 0x00]).unwrap_err();
/// assert_eq!(err.to_string(), "field 1 at byte 1: the input ends inside a fixed-width value");
/// ```
pub type OrcaDecodeError = crate::protowire::DecodeError;

/// Reads one `map<string, double>` entry, whose bytes start at `base`.
fn map_entry(bytes: &[u8], base: usize) -> Result<(String, f64), OrcaDecodeError> {
    let mut r = Reader::new(bytes, base);
    let (mut key, mut value) = (String::new(), 0.0);
    while let Some((field, wire_type)) = r.tag()? {
        match (field, wire_type) {
            (1, wire::LEN) => key = r.string(field)?,
            (2, wire::FIXED64) => value = r.double(field)?,
            _ => r.skip(field, wire_type)?,
        }
    }
    Ok((key, value))
}

fn put_map(out: &mut Vec<u8>, field: u32, map: &BTreeMap<String, f64>) {
    let mut entry = Vec::new();
    for (key, value) in map {
        entry.clear();
        put_bytes(&mut entry, 1, key.as_bytes());
        put_double(&mut entry, 2, *value);
        put_bytes(out, field, &entry);
    }
}

impl OrcaLoadReport {
    /// Serializes the report (zero scalars are left out, as proto3 does).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for (field, value) in [(1, self.cpu_utilization), (2, self.mem_utilization)] {
            if value != 0.0 {
                put_double(&mut out, field, value);
            }
        }
        if self.rps != 0 {
            put_tag(&mut out, 3, wire::VARINT);
            put_varint(&mut out, self.rps);
        }
        put_map(&mut out, 4, &self.request_cost);
        put_map(&mut out, 5, &self.utilization);
        for (field, value) in [(6, self.rps_fractional), (7, self.eps)] {
            if value != 0.0 {
                put_double(&mut out, field, value);
            }
        }
        put_map(&mut out, 8, &self.named_metrics);
        if self.application_utilization != 0.0 {
            put_double(&mut out, 9, self.application_utilization);
        }
        out
    }

    /// Parses a serialized report.
    ///
    /// # Errors
    ///
    /// The bytes are not an `OrcaLoadReport` (truncated, a field of the wrong wire
    /// type, a map key that is not UTF-8).
    pub fn decode(bytes: &[u8]) -> Result<Self, OrcaDecodeError> {
        let mut report = Self::default();
        let mut r = Reader::new(bytes, 0);
        while let Some((field, wire_type)) = r.tag()? {
            match (field, wire_type) {
                (1, wire::FIXED64) => report.cpu_utilization = r.double(field)?,
                (2, wire::FIXED64) => report.mem_utilization = r.double(field)?,
                (3, wire::VARINT) => report.rps = r.varint(field)?,
                (4 | 5 | 8, wire::LEN) => {
                    let (at, entry) = r.len_delimited(field)?;
                    let (key, value) = map_entry(entry, at).map_err(|e| e.within(field))?;
                    let map = match field {
                        4 => &mut report.request_cost,
                        5 => &mut report.utilization,
                        _ => &mut report.named_metrics,
                    };
                    map.insert(key, value);
                }
                (6, wire::FIXED64) => report.rps_fractional = r.double(field)?,
                (7, wire::FIXED64) => report.eps = r.double(field)?,
                (9, wire::FIXED64) => report.application_utilization = r.double(field)?,
                _ => r.skip(field, wire_type)?,
            }
        }
        Ok(report)
    }

    /// Adds the report to `trailers` as [`TRAILER`], replacing any report there.
    pub fn write_trailer(&self, trailers: &mut Metadata) {
        trailers.remove(TRAILER);
        trailers
            .insert_bin(TRAILER, &self.encode())
            .expect("TRAILER is a valid binary key");
    }
}

/// The per-call report in a call's final status, if the server sent one: `None`
/// without the trailer, `Some(Err(_))` when it does not decode. A policy's picker
/// calls this from its [`Pick::on_complete`](crate::Pick::on_complete) callback, so
/// only policies that want reports pay for decoding them.
pub fn report_from(status: &Status) -> Option<Result<OrcaLoadReport, OrcaDecodeError>> {
    status
        .trailers()
        .get_bin(TRAILER)
        .map(OrcaLoadReport::decode)
}

impl OrcaLoadReportRequest {
    /// A request for reports every `report_interval`.
    pub fn every(report_interval: Duration) -> Self {
        Self {
            report_interval,
            request_cost_names: Vec::new(),
        }
    }

    /// Serializes the request.
    ///
    /// ```
    /// use lb_core::orca::OrcaLoadReportRequest;
    /// use std::time::Duration;
    /// let req = OrcaLoadReportRequest::every(Duration::from_millis(1500));
    /// assert_eq!(OrcaLoadReportRequest::decode(&req.encode())?, req);
    /// # Ok::<(), lb_core::orca::OrcaDecodeError>(())
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        let mut duration = Vec::with_capacity(12);
        let (secs, nanos) = (
            self.report_interval.as_secs().min(i64::MAX as u64),
            self.report_interval.subsec_nanos(),
        );
        if secs != 0 {
            put_tag(&mut duration, 1, wire::VARINT);
            put_varint(&mut duration, secs);
        }
        if nanos != 0 {
            put_tag(&mut duration, 2, wire::VARINT);
            put_varint(&mut duration, u64::from(nanos));
        }
        put_bytes(&mut out, 1, &duration);
        for name in &self.request_cost_names {
            put_bytes(&mut out, 2, name.as_bytes());
        }
        out
    }

    /// Parses a serialized request.
    ///
    /// # Errors
    ///
    /// The bytes are not an `OrcaLoadReportRequest`.
    pub fn decode(bytes: &[u8]) -> Result<Self, OrcaDecodeError> {
        let mut request = Self::default();
        let mut r = Reader::new(bytes, 0);
        while let Some((field, wire_type)) = r.tag()? {
            match (field, wire_type) {
                (1, wire::LEN) => {
                    let (at, bytes) = r.len_delimited(field)?;
                    request.report_interval = duration(bytes, at).map_err(|e| e.within(field))?;
                }
                (2, wire::LEN) => request.request_cost_names.push(r.string(field)?),
                _ => r.skip(field, wire_type)?,
            }
        }
        Ok(request)
    }
}

/// Reads a `google.protobuf.Duration` (a negative one is zero), whose bytes start at
/// `base`.
fn duration(bytes: &[u8], base: usize) -> Result<Duration, OrcaDecodeError> {
    let mut r = Reader::new(bytes, base);
    let (mut secs, mut nanos) = (0i64, 0i32);
    while let Some((field, wire_type)) = r.tag()? {
        match (field, wire_type) {
            (1, wire::VARINT) => secs = r.varint(field)? as i64,
            (2, wire::VARINT) => nanos = r.varint(field)? as i32,
            _ => r.skip(field, wire_type)?,
        }
    }
    Ok(if secs < 0 || nanos < 0 {
        Duration::ZERO
    } else {
        Duration::from_secs(secs as u64).saturating_add(Duration::from_nanos(nanos as u64))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_report() -> OrcaLoadReport {
        let map = |k: &str, v: f64| BTreeMap::from([(k.to_string(), v), ("z".into(), 0.0)]);
        OrcaLoadReport {
            cpu_utilization: 0.25,
            mem_utilization: 0.5,
            rps: 7,
            request_cost: map("db", 1.5),
            utilization: map("gpu", 0.75),
            rps_fractional: 12.5,
            eps: 0.125,
            named_metrics: map("queue", 3.0),
            application_utilization: 0.375,
        }
    }

    #[test]
    fn reports_round_trip_and_match_the_proto_field_numbers() {
        for report in [OrcaLoadReport::default(), full_report()] {
            assert_eq!(OrcaLoadReport::decode(&report.encode()).unwrap(), report);
        }
        assert!(OrcaLoadReport::default().encode().is_empty());
        // application_utilization = 9, double: key (9 << 3 | 1) = 0x49.
        let only_app = OrcaLoadReport {
            application_utilization: 1.0,
            ..Default::default()
        };
        let mut want = vec![0x49];
        want.extend_from_slice(&1.0f64.to_le_bytes());
        assert_eq!(only_app.encode(), want);
        // rps_fractional = 6 (0x31), eps = 7 (0x39), cpu = 1 (0x09).
        let bytes: Vec<u8> = [(0x31u8, 4.0f64), (0x39, 2.0), (0x09, 0.5)]
            .iter()
            .flat_map(|(k, v)| std::iter::once(*k).chain(v.to_le_bytes()))
            .collect();
        let r = OrcaLoadReport::decode(&bytes).unwrap();
        assert_eq!(
            (r.rps_fractional, r.eps, r.cpu_utilization),
            (4.0, 2.0, 0.5)
        );
    }

    #[test]
    fn unknown_fields_are_skipped_and_the_last_scalar_wins() {
        let mut bytes = vec![
            0x50, 0x96, 0x01, // field 10 varint
            0x5a, 0x01, b'x', // field 11 bytes
            0x65, 1, 2, 3, 4, // field 12 fixed32
        ];
        bytes.extend(full_report().encode());
        put_double(&mut bytes, 1, 0.875);
        let r = OrcaLoadReport::decode(&bytes).unwrap();
        assert_eq!(r.cpu_utilization, 0.875);
        assert_eq!(r.named_metrics["queue"], 3.0);
    }

    #[test]
    fn requests_round_trip() {
        let req = OrcaLoadReportRequest {
            report_interval: Duration::new(3, 250),
            request_cost_names: vec!["a".into(), "b".into()],
        };
        assert_eq!(OrcaLoadReportRequest::decode(&req.encode()).unwrap(), req);
        // A negative duration reads as zero.
        let mut neg = Vec::new();
        let mut d = Vec::new();
        put_tag(&mut d, 1, wire::VARINT);
        put_varint(&mut d, (-5i64) as u64);
        put_bytes(&mut neg, 1, &d);
        let r = OrcaLoadReportRequest::decode(&neg).unwrap();
        assert_eq!(r.report_interval, Duration::ZERO);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for (bytes, want) in [
            (
                &[0x09, 1, 2][..],
                "field 1 at byte 1: the input ends inside a fixed-width value",
            ),
            (
                &[0x22, 0x02, 0x0a, 0x01],
                "field 4.1 at byte 3: length 1 runs past the end",
            ),
            (&[0x2a, 0x02, 0x0a, 0x01, 0xff], "field 5.1 at byte 3"),
            (
                &[0x42, 0x03, 0x0a, 0x01, 0xff],
                "field 8.1 at byte 4: string is not valid UTF-8",
            ),
            (&[0x4b], "wire type 3 (groups) is not supported"),
            (&[0x00], "invalid field number 0"),
        ] {
            let err = OrcaLoadReport::decode(bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{bytes:?}: {err}");
        }
        // A known field of another wire type is skipped, as protobuf parsers do.
        for bytes in [&[0x08, 0x01][..], &[0x19, 0, 0, 0, 0, 0, 0, 0, 0]] {
            assert_eq!(
                OrcaLoadReport::decode(bytes).unwrap(),
                OrcaLoadReport::default()
            );
        }
        let err = OrcaLoadReportRequest::decode(&[0x0a, 0x02, 0x09, 0x00])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("field 1.1 at byte 3"), "{err}");
        // Every prefix and single-byte corruption decodes or errs, without panicking.
        let good = full_report().encode();
        for cut in 0..good.len() {
            let _ = OrcaLoadReport::decode(&good[..cut]);
            for byte in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[cut] = byte;
                let _ = OrcaLoadReport::decode(&bad);
                let _ = OrcaLoadReportRequest::decode(&bad);
            }
        }
    }

    #[test]
    fn report_from_reads_the_trailer() {
        let mut md = Metadata::new();
        md.insert_bin(TRAILER, &[0x4b]).unwrap();
        let status = Status::unavailable("x").with_trailers(md);
        assert!(matches!(report_from(&status), Some(Err(_))));
        let mut md = Metadata::new();
        full_report().write_trailer(&mut md);
        full_report().write_trailer(&mut md);
        assert_eq!(md.len(), 1, "write_trailer replaces");
        assert_eq!(
            report_from(&Status::ok().with_trailers(md)),
            Some(Ok(full_report()))
        );
    }
}

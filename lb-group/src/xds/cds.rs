//! Cluster (CDS) resources, read from `envoy.config.cluster.v3.Cluster` and
//! checked as gRFCs A27 (EDS clusters), A37 (aggregate and logical DNS
//! clusters), A32 (circuit breaking), A42 (ring hash) and A48 (least request)
//! ask.
//!
//! A cluster is invalid (and NACKed) when its discovery type is none of EDS,
//! LOGICAL_DNS and the aggregate custom type; when an EDS cluster's config
//! source is neither `ads` nor `self`; when a logical DNS cluster has other
//! than exactly one endpoint; when its `lb_policy` is none of ROUND_ROBIN,
//! RING_HASH and LEAST_REQUEST, or their settings are out of range. The newer
//! `load_balancing_policy` field (gRFC A52, [`super::lb_policy`]) wins over
//! `lb_policy` when present; a list with no policy gRPC supports is invalid.
//! An `outlier_detection` becomes `outlier_detection_experimental`'s config
//! (gRFC A50).

use std::collections::BTreeMap;
use std::time::Duration;

use lb_core::DecodeError;
use lb_core::protowire::{Reader, wire};

use super::ads::{CLUSTER_TYPE, ResourceType};
use super::pb;

/// The aggregate cluster's custom type name (gRFC A37).
pub const AGGREGATE_CLUSTER: &str = "envoy.clusters.aggregate";

/// The largest ring a cluster may ask for (gRFC A42).
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;

/// Calls in flight to a cluster when its circuit breaker says nothing (A32).
pub const DEFAULT_MAX_REQUESTS: u32 = 1024;

/// A cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Where its endpoints come from.
    pub kind: ClusterKind,
    /// How calls are spread over its endpoints.
    pub lb_policy: ClusterLbPolicy,
    /// Calls in flight at most (the DEFAULT priority's `max_requests`).
    pub max_requests: u32,
    /// Load reports go to the management server this cluster came from.
    pub lrs_to_self: bool,
    /// The `outlier_detection_experimental` config (without `childPolicy`)
    /// from the cluster's `outlier_detection` (gRFC A50), which wraps each
    /// priority's child; `None` when the cluster has none.
    pub outlier_detection: Option<serde_json::Value>,
}

/// Where a cluster's endpoints come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterKind {
    /// EDS: the endpoint resource named `service_name`, or the cluster's own
    /// name when it is `None`.
    Eds {
        /// The endpoint resource's name, if not the cluster's.
        service_name: Option<String>,
    },
    /// One DNS name, resolved as a whole.
    LogicalDns {
        /// `host:port`.
        target: String,
    },
    /// Other clusters, in priority order (gRFC A37).
    Aggregate {
        /// Their names.
        clusters: Vec<String>,
    },
}

/// A cluster's endpoint-picking policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterLbPolicy {
    /// `round_robin`.
    RoundRobin,
    /// `ring_hash_experimental` with its ring sizes.
    RingHash {
        /// The smallest ring.
        min_ring_size: u64,
        /// The largest ring.
        max_ring_size: u64,
    },
    /// `least_request_experimental` with its choice count.
    LeastRequest {
        /// How many endpoints each pick compares.
        choice_count: u32,
    },
    /// A policy (a `loadBalancingConfig` entry) run in each locality, the
    /// localities weighted (gRFC A52's `WrrLocality`).
    PerLocality(serde_json::Value),
    /// A policy (a `loadBalancingConfig` entry) over all of a priority's
    /// endpoints, localities ignored (A52: a top-level policy other than
    /// `WrrLocality` and ring hash, such as `pick_first` or a custom one).
    Whole(serde_json::Value),
}

impl ClusterLbPolicy {
    /// The policy as a service-config `loadBalancingConfig` entry, for the
    /// channel's policy registry.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::RoundRobin => serde_json::json!({"round_robin": {}}),
            Self::RingHash {
                min_ring_size,
                max_ring_size,
            } => serde_json::json!({"ring_hash_experimental": {
                "minRingSize": min_ring_size, "maxRingSize": max_ring_size}}),
            Self::LeastRequest { choice_count } => {
                serde_json::json!({"least_request_experimental": {"choiceCount": choice_count}})
            }
            Self::PerLocality(config) | Self::Whole(config) => config.clone(),
        }
    }
}

/// The [`ResourceType`] of cluster resources.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterType;

impl ResourceType for ClusterType {
    type Resource = Cluster;

    fn type_url(&self) -> &'static str {
        CLUSTER_TYPE
    }

    fn decode(&self, bytes: &[u8]) -> Result<(String, Cluster), (Option<String>, String)> {
        let raw = RawCluster::decode(bytes).map_err(|e| (None, e.to_string()))?;
        pb::named(raw.name.clone(), || validate(raw))
    }
}

#[derive(Default)]
struct RawCluster {
    name: String,
    discovery_type: Option<u64>,
    custom: Option<(String, Vec<u8>)>,
    eds_source_ok: Option<bool>,
    service_name: String,
    lb_policy: u64,
    ring_hash: Option<(Option<u64>, Option<u64>, u64)>,
    choice_count: Option<u32>,
    max_requests: Option<u32>,
    lrs_to_self: bool,
    outlier_detection: Option<RawOutlierDetection>,
    /// `load_balancing_policy` (gRFC A52), converted; it wins over `lb_policy`.
    load_balancing_policy: Option<Result<ClusterLbPolicy, String>>,
    /// The logical DNS endpoints as (host, port).
    dns_endpoints: Vec<(String, u32)>,
}

fn validate(raw: RawCluster) -> Result<Cluster, String> {
    let kind = match (raw.discovery_type, raw.custom) {
        (_, Some((name, config))) if name == AGGREGATE_CLUSTER => {
            let clusters = aggregate_clusters(&config)
                .map_err(|e| format!("aggregate cluster config: {e}"))?;
            if clusters.is_empty() {
                return Err("an aggregate cluster lists no clusters".to_owned());
            }
            ClusterKind::Aggregate { clusters }
        }
        (_, Some((name, _))) => return Err(format!("cluster type {name:?} is not supported")),
        (Some(3), None) => {
            if raw.eds_source_ok != Some(true) {
                return Err("an EDS cluster's eds_config must be ads or self".to_owned());
            }
            if raw.name.starts_with("xdstp:") && raw.service_name.is_empty() {
                return Err("an xdstp: EDS cluster needs a service_name".to_owned());
            }
            ClusterKind::Eds {
                service_name: (!raw.service_name.is_empty()).then_some(raw.service_name),
            }
        }
        (Some(2), None) => match raw.dns_endpoints.as_slice() {
            [(host, port)] => {
                let port = u16::try_from(*port)
                    .map_err(|_| format!("logical DNS port {port} is out of range"))?;
                ClusterKind::LogicalDns {
                    target: format!("{host}:{port}"),
                }
            }
            other => {
                return Err(format!(
                    "a logical DNS cluster needs exactly one endpoint, not {}",
                    other.len()
                ));
            }
        },
        (t, None) => {
            let t = t.unwrap_or(0);
            let name = ["STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST"]
                .get(t as usize)
                .copied()
                .unwrap_or("unknown");
            return Err(format!(
                "cluster discovery type {name} ({t}) is not supported"
            ));
        }
    };
    let lb_policy = match (raw.load_balancing_policy, raw.lb_policy) {
        (Some(converted), _) => converted?,
        (None, 0) => ClusterLbPolicy::RoundRobin,
        (None, 2) => {
            let (min, max, hash) = raw.ring_hash.unwrap_or((None, None, 0));
            if hash != 0 {
                return Err("ring hash needs hash_function XX_HASH".to_owned());
            }
            let min_ring_size = min.unwrap_or(1024);
            let max_ring_size = max.unwrap_or(MAX_RING_SIZE);
            if max_ring_size > MAX_RING_SIZE || min_ring_size > max_ring_size || min_ring_size == 0
            {
                return Err(format!(
                    "ring sizes {min_ring_size}..{max_ring_size} are out of range (1 <= min <= max <= {MAX_RING_SIZE})"
                ));
            }
            ClusterLbPolicy::RingHash {
                min_ring_size,
                max_ring_size,
            }
        }
        (None, 1) => {
            let choice_count = raw.choice_count.unwrap_or(2);
            if choice_count < 2 {
                return Err(format!(
                    "least request choice_count {choice_count} is below 2"
                ));
            }
            ClusterLbPolicy::LeastRequest { choice_count }
        }
        (None, other) => {
            let name = match other {
                3 => "RANDOM",
                5 => "MAGLEV",
                6 => "CLUSTER_PROVIDED",
                7 => "LOAD_BALANCING_POLICY_CONFIG",
                _ => "unknown",
            };
            return Err(format!("lb_policy {name} ({other}) is not supported"));
        }
    };
    Ok(Cluster {
        kind,
        lb_policy,
        max_requests: raw.max_requests.unwrap_or(DEFAULT_MAX_REQUESTS),
        lrs_to_self: raw.lrs_to_self,
        outlier_detection: raw.outlier_detection.map(outlier_config).transpose()?,
    })
}

/// The `OutlierDetection` fields gRPC reads (gRFC A50), as sent.
#[derive(Default)]
struct RawOutlierDetection {
    interval: Option<Duration>,
    base_ejection_time: Option<Duration>,
    max_ejection_time: Option<Duration>,
    /// UInt32Value fields by number: max_ejection_percent (4),
    /// enforcing_success_rate (6), success_rate_minimum_hosts (7),
    /// success_rate_request_volume (8), success_rate_stdev_factor (9),
    /// failure_percentage_threshold (16), enforcing_failure_percentage (17),
    /// failure_percentage_minimum_hosts (19), failure_percentage_request_volume
    /// (20).
    numbers: BTreeMap<u32, u32>,
}

fn read_outlier_detection(bytes: &[u8], base: usize) -> Result<RawOutlierDetection, DecodeError> {
    let mut out = RawOutlierDetection::default();
    pb::fields(bytes, base, |f, w, r| {
        match (f, w) {
            (2 | 3 | 21, wire::LEN) => {
                let (base, b) = r.len_delimited(f)?;
                let d = Some(pb::duration(b, base)?);
                match f {
                    2 => out.interval = d,
                    3 => out.base_ejection_time = d,
                    _ => out.max_ejection_time = d,
                }
            }
            (4 | 6..=9 | 16 | 17 | 19 | 20, wire::LEN) => {
                let (base, b) = r.len_delimited(f)?;
                out.numbers.insert(f, pb::wrapped_u32(b, base)?);
            }
            _ => r.skip(f, w)?,
        }
        Ok(())
    })?;
    Ok(out)
}

/// gRFC A50's translation, with its defaults and its limits (percentages of
/// at most 100, else the resource is rejected).
fn outlier_config(raw: RawOutlierDetection) -> Result<serde_json::Value, String> {
    use lb_core::config::format_duration;
    let n = |field: u32, default: u32| raw.numbers.get(&field).copied().unwrap_or(default);
    let percent = |field: u32, default: u32, name: &str| {
        let v = n(field, default);
        if v > 100 {
            Err(format!("outlier_detection.{name} {v} is over 100"))
        } else {
            Ok(v)
        }
    };
    let base = raw.base_ejection_time.unwrap_or(Duration::from_secs(30));
    let mut config = serde_json::json!({
        "interval": format_duration(raw.interval.unwrap_or(Duration::from_secs(10))),
        "baseEjectionTime": format_duration(base),
        "maxEjectionTime": format_duration(
            raw.max_ejection_time.unwrap_or(Duration::from_secs(300)).max(base)
        ),
        "maxEjectionPercent": percent(4, 10, "max_ejection_percent")?,
    });
    let success = percent(6, 100, "enforcing_success_rate")?;
    if success > 0 {
        config["successRateEjection"] = serde_json::json!({
            "stdevFactor": n(9, 1900),
            "enforcementPercentage": success,
            "minimumHosts": n(7, 5),
            "requestVolume": n(8, 100),
        });
    }
    let failure = percent(17, 0, "enforcing_failure_percentage")?;
    if failure > 0 {
        config["failurePercentageEjection"] = serde_json::json!({
            "threshold": percent(16, 85, "failure_percentage_threshold")?,
            "enforcementPercentage": failure,
            "minimumHosts": n(19, 5),
            "requestVolume": n(20, 50),
        });
    }
    Ok(config)
}

/// `envoy.extensions.clusters.aggregate.v3.ClusterConfig.clusters`, from the
/// custom type's `typed_config` Any.
fn aggregate_clusters(any: &[u8]) -> Result<Vec<String>, DecodeError> {
    let mut value: &[u8] = &[];
    let mut base = 0;
    let mut r = Reader::new(any, 0);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (2, wire::LEN) => (base, value) = r.len_delimited(field)?,
            _ => r.skip(field, wt)?,
        }
    }
    let mut clusters = Vec::new();
    let mut r = Reader::new(value, base);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (1, wire::LEN) => clusters.push(r.string(field)?),
            _ => r.skip(field, wt)?,
        }
    }
    Ok(clusters)
}

impl RawCluster {
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        let mut r = Reader::new(bytes, 0);
        while let Some((field, wt)) = r.tag()? {
            let within = |e: DecodeError| e.within(field);
            match (field, wt) {
                (1, wire::LEN) => out.name = r.string(field)?,
                (2, wire::VARINT) => out.discovery_type = Some(r.varint(field)?),
                (38, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    out.custom = Some(custom_type(b, base).map_err(within)?);
                }
                (3, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    let (ok, service) = eds_config(b, base).map_err(within)?;
                    out.eds_source_ok = Some(ok);
                    out.service_name = service;
                }
                (6, wire::VARINT) => out.lb_policy = r.varint(field)?,
                (23, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    out.ring_hash = Some(ring_hash(b, base).map_err(within)?);
                }
                (37, wire::LEN) => {
                    // LeastRequestLbConfig { choice_count: UInt32Value = 1 }
                    let (base, b) = r.len_delimited(field)?;
                    for (base, count) in pb::messages(b, base, 1).map_err(within)? {
                        let v =
                            pb::wrapped_u32(count, base).map_err(|e| e.within(1).within(field))?;
                        out.choice_count = Some(v);
                    }
                }
                (10, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    out.max_requests = max_requests(b, base).map_err(within)?;
                }
                (33, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    out.dns_endpoints = super::eds::socket_addresses(b, base).map_err(within)?;
                }
                (41, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    out.load_balancing_policy = Some(super::lb_policy::convert(b, base));
                }
                (19, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    out.outlier_detection = Some(read_outlier_detection(b, base).map_err(within)?);
                }
                (42, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    out.lrs_to_self = config_source_is_self(b, base).map_err(within)?;
                }
                _ => r.skip(field, wt)?,
            }
        }
        Ok(out)
    }
}

/// `CustomClusterType`: its name and the encoded `typed_config` Any.
fn custom_type(bytes: &[u8], base: usize) -> Result<(String, Vec<u8>), DecodeError> {
    let (mut name, mut config) = (String::new(), Vec::new());
    let mut r = Reader::new(bytes, base);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (1, wire::LEN) => name = r.string(field)?,
            (2, wire::LEN) => config = r.len_delimited(field)?.1.to_vec(),
            _ => r.skip(field, wt)?,
        }
    }
    Ok((name, config))
}

/// `EdsClusterConfig`: whether its `eds_config` is `ads` or `self`, and its
/// service name.
fn eds_config(bytes: &[u8], base: usize) -> Result<(bool, String), DecodeError> {
    let (mut ok, mut service) = (false, String::new());
    let mut r = Reader::new(bytes, base);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (1, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                ok = pb::ads_or_self(b, base).map_err(|e| e.within(field))?;
            }
            (2, wire::LEN) => service = r.string(field)?,
            _ => r.skip(field, wt)?,
        }
    }
    Ok((ok, service))
}

fn config_source_is_self(bytes: &[u8], base: usize) -> Result<bool, DecodeError> {
    Ok(pb::config_source_kind(bytes, base)? == Some(5))
}

/// `RingHashLbConfig`: minimum and maximum ring sizes and the hash function.
fn ring_hash(bytes: &[u8], base: usize) -> Result<(Option<u64>, Option<u64>, u64), DecodeError> {
    let (mut min, mut max, mut hash) = (None, None, 0);
    let mut r = Reader::new(bytes, base);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (1, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                min = Some(pb::wrapped(b, base).map_err(|e| e.within(field))?);
            }
            (3, wire::VARINT) => hash = r.varint(field)?,
            (4, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                max = Some(pb::wrapped(b, base).map_err(|e| e.within(field))?);
            }
            _ => r.skip(field, wt)?,
        }
    }
    Ok((min, max, hash))
}

/// `CircuitBreakers`: the DEFAULT priority's `max_requests`, if set.
fn max_requests(bytes: &[u8], base: usize) -> Result<Option<u32>, DecodeError> {
    let mut found = None;
    let mut r = Reader::new(bytes, base);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (1, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                let mut t = Reader::new(b, base);
                let (mut priority, mut max) = (0, None);
                while let Some((f, w)) = t.tag().map_err(|e| e.within(field))? {
                    match (f, w) {
                        (1, wire::VARINT) => priority = t.varint(f).map_err(|e| e.within(field))?,
                        (4, wire::LEN) => {
                            let (base, v) = t.len_delimited(f).map_err(|e| e.within(field))?;
                            max = Some(
                                pb::wrapped_u32(v, base).map_err(|e| e.within(f).within(field))?,
                            );
                        }
                        _ => t.skip(f, w).map_err(|e| e.within(field))?,
                    }
                }
                if priority == 0 && max.is_some() {
                    found = max;
                }
            }
            _ => r.skip(field, wt)?,
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::protowire::{put_bytes, put_string};

    use crate::xds::pb::build::{msg, varint, wrapped};

    /// A ConfigSource with variant `field` set (3: ads, 5: self, 2: api).
    fn source(field: u32) -> Vec<u8> {
        msg(|b| put_bytes(b, field, &[]))
    }

    fn eds_cluster(name: &str, service: &str, config_source: u32) -> Vec<u8> {
        msg(|b| {
            put_string(b, 1, name);
            varint(b, 2, 3);
            let eds = msg(|e| {
                put_bytes(e, 1, &source(config_source));
                if !service.is_empty() {
                    put_string(e, 2, service);
                }
            });
            put_bytes(b, 3, &eds);
        })
    }

    fn with(mut cluster: Vec<u8>, extra: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        extra(&mut cluster);
        cluster
    }

    fn decode(bytes: &[u8]) -> Result<Cluster, String> {
        ClusterType
            .decode(bytes)
            .map(|(_, c)| c)
            .map_err(|(_, e)| e)
    }

    #[test]
    fn an_eds_cluster_gets_round_robin_and_the_default_limit() {
        let (name, c) = ClusterType.decode(&eds_cluster("c1", "", 3)).unwrap();
        assert_eq!(name, "c1");
        assert_eq!(
            c,
            Cluster {
                kind: ClusterKind::Eds { service_name: None },
                lb_policy: ClusterLbPolicy::RoundRobin,
                max_requests: DEFAULT_MAX_REQUESTS,
                lrs_to_self: false,
                outlier_detection: None,
            }
        );
        assert_eq!(
            c.lb_policy.to_json(),
            serde_json::json!({"round_robin": {}})
        );
        let c = decode(&eds_cluster("c1", "svc-eds", 5)).unwrap();
        assert_eq!(
            c.kind,
            ClusterKind::Eds {
                service_name: Some("svc-eds".into())
            }
        );
    }

    #[test]
    fn policies_limits_and_load_reporting_are_read() {
        let ring = with(eds_cluster("c", "", 3), |b| {
            varint(b, 6, 2);
            let cfg = msg(|r| {
                put_bytes(r, 1, &wrapped(64));
                put_bytes(r, 4, &wrapped(4096));
            });
            put_bytes(b, 23, &cfg);
            let thresholds = [(1u64, 7u64), (0, 99)];
            let breakers = msg(|cb| {
                for (priority, max) in thresholds {
                    let t = msg(|t| {
                        varint(t, 1, priority);
                        put_bytes(t, 4, &wrapped(max));
                    });
                    put_bytes(cb, 1, &t);
                }
            });
            put_bytes(b, 10, &breakers);
            put_bytes(b, 42, &source(5));
        });
        let c = decode(&ring).unwrap();
        assert_eq!(
            c.lb_policy,
            ClusterLbPolicy::RingHash {
                min_ring_size: 64,
                max_ring_size: 4096
            }
        );
        assert_eq!(c.max_requests, 99, "the DEFAULT priority's threshold");
        assert!(c.lrs_to_self);
        assert_eq!(
            c.lb_policy.to_json(),
            serde_json::json!({"ring_hash_experimental": {"minRingSize": 64, "maxRingSize": 4096}})
        );
        let least = with(eds_cluster("c", "", 3), |b| {
            varint(b, 6, 1);
            put_bytes(b, 37, &msg(|l| put_bytes(l, 1, &wrapped(3))));
        });
        assert_eq!(
            decode(&least).unwrap().lb_policy,
            ClusterLbPolicy::LeastRequest { choice_count: 3 }
        );
    }

    #[test]
    fn aggregate_and_logical_dns_clusters_are_read() {
        let config = msg(|c| {
            put_string(c, 1, "primary");
            put_string(c, 1, "secondary");
        });
        let any = msg(|a| {
            put_string(
                a,
                1,
                "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
            );
            put_bytes(a, 2, &config);
        });
        let aggregate = msg(|b| {
            put_string(b, 1, "agg");
            put_bytes(
                b,
                38,
                &msg(|t| {
                    put_string(t, 1, AGGREGATE_CLUSTER);
                    put_bytes(t, 2, &any);
                }),
            );
        });
        assert_eq!(
            decode(&aggregate).unwrap().kind,
            ClusterKind::Aggregate {
                clusters: vec!["primary".into(), "secondary".into()]
            }
        );
        let dns = |endpoints: &[(&str, u64)]| {
            let locality = msg(|l| {
                for (host, port) in endpoints {
                    let socket = msg(|s| {
                        put_string(s, 2, host);
                        varint(s, 3, *port);
                    });
                    let address = msg(|a| put_bytes(a, 1, &socket));
                    let endpoint = msg(|e| put_bytes(e, 1, &address));
                    put_bytes(l, 2, &msg(|lb| put_bytes(lb, 1, &endpoint)));
                }
            });
            msg(|b| {
                put_string(b, 1, "dns");
                varint(b, 2, 2);
                put_bytes(b, 33, &msg(|la| put_bytes(la, 2, &locality)));
            })
        };
        assert_eq!(
            decode(&dns(&[("backend.example", 8443)])).unwrap().kind,
            ClusterKind::LogicalDns {
                target: "backend.example:8443".into()
            }
        );
        assert_eq!(
            decode(&dns(&[("a", 1), ("b", 2)])).unwrap_err(),
            "a logical DNS cluster needs exactly one endpoint, not 2"
        );
    }

    #[test]
    fn unsupported_or_invalid_clusters_are_rejected_with_their_reason() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                msg(|b| put_string(b, 1, "c")),
                "cluster discovery type STATIC (0) is not supported",
            ),
            (
                msg(|b| {
                    put_string(b, 1, "c");
                    varint(b, 2, 1);
                }),
                "cluster discovery type STRICT_DNS (1) is not supported",
            ),
            (
                eds_cluster("c", "", 2),
                "an EDS cluster's eds_config must be ads or self",
            ),
            (
                eds_cluster("xdstp://a/c", "", 3),
                "an xdstp: EDS cluster needs a service_name",
            ),
            (
                with(eds_cluster("c", "", 3), |b| varint(b, 6, 5)),
                "lb_policy MAGLEV (5) is not supported",
            ),
            (
                with(eds_cluster("c", "", 3), |b| {
                    varint(b, 6, 2);
                    put_bytes(
                        b,
                        23,
                        &msg(|r| put_bytes(r, 4, &wrapped(MAX_RING_SIZE + 1))),
                    );
                }),
                "ring sizes 1024..8388609 are out of range",
            ),
            (
                with(eds_cluster("c", "", 3), |b| {
                    varint(b, 6, 2);
                    put_bytes(b, 23, &msg(|r| varint(r, 3, 1)));
                }),
                "ring hash needs hash_function XX_HASH",
            ),
            (
                with(eds_cluster("c", "", 3), |b| {
                    varint(b, 6, 1);
                    put_bytes(b, 37, &msg(|l| put_bytes(l, 1, &wrapped(1))));
                }),
                "least request choice_count 1 is below 2",
            ),
            (
                with(eds_cluster("c", "", 3), |b| put_bytes(b, 41, &[])),
                "load_balancing_policy has no policy gRPC supports (skipped: none listed)",
            ),
            (
                msg(|b| {
                    put_string(b, 1, "c");
                    put_bytes(b, 38, &msg(|t| put_string(t, 1, "envoy.clusters.redis")));
                }),
                "cluster type \"envoy.clusters.redis\" is not supported",
            ),
        ];
        for (bytes, want) in cases {
            let got = decode(&bytes).unwrap_err();
            assert!(got.starts_with(want), "got {got:?}, want {want:?}");
        }
        assert_eq!(
            ClusterType.decode(&[]).unwrap_err(),
            (None, "name is empty".to_owned())
        );
        assert!(ClusterType.decode(&[0x0a, 0x09]).unwrap_err().0.is_none());
    }
}

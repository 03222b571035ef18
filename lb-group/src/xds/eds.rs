//! Endpoint (EDS) resources: a cluster's endpoints by priority and locality, and
//! its drop overloads, read from `envoy.config.endpoint.v3.ClusterLoadAssignment`
//! and checked as gRFC A27 (and grpc-go's and C-core's validation) asks.
//!
//! What makes a resource invalid (and NACKed): an endpoint that is not an IP
//! socket address, the same address twice, a locality twice in one priority,
//! priorities with a gap, and weights whose sum does not fit in 32 bits.
//! Localities without a weight (or weight 0) are left out, as gRPC does.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use lb_core::DecodeError;
use lb_core::protowire::{Reader, wire};

use super::ads::{ENDPOINT_TYPE, ResourceType};
use super::bootstrap::Locality;
use super::pb;

/// A cluster's endpoints: what the priority and locality policies are built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterEndpoints {
    /// The localities, sorted by priority (0 first), in the order sent within
    /// a priority.
    pub localities: Vec<LocalityEndpoints>,
    /// Drop overloads, applied one after the other.
    pub drops: Vec<DropOverload>,
}

/// One locality's endpoints at one priority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalityEndpoints {
    /// Where they run.
    pub locality: Locality,
    /// 0 is the highest.
    pub priority: u32,
    /// The locality's weight within its priority (at least 1).
    pub weight: u32,
    /// The endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub address: SocketAddr,
    /// Its health as the control plane reports it.
    pub health: HealthStatus,
    /// Its weight within the locality (1 if not given).
    pub weight: u32,
}

/// `envoy.config.core.v3.HealthStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthStatus {
    /// Not known: used as healthy.
    Unknown,
    /// Healthy.
    Healthy,
    /// Unhealthy.
    Unhealthy,
    /// Draining: takes no new calls.
    Draining,
    /// Health checks timed out.
    Timeout,
    /// Degraded.
    Degraded,
}

impl HealthStatus {
    fn from_wire(v: u64) -> Self {
        match v {
            1 => Self::Healthy,
            2 => Self::Unhealthy,
            3 => Self::Draining,
            4 => Self::Timeout,
            5 => Self::Degraded,
            _ => Self::Unknown,
        }
    }

    /// Whether calls may go to an endpoint in this state (unknown and healthy).
    pub fn usable(self) -> bool {
        matches!(self, Self::Unknown | Self::Healthy)
    }
}

/// A share of calls to drop before they are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropOverload {
    /// Its category, for load reports.
    pub category: String,
    /// Calls dropped per million (at most 1,000,000).
    pub per_million: u32,
}

/// The [`ResourceType`] of endpoint resources.
#[derive(Clone, Copy, Debug, Default)]
pub struct EndpointType;

impl ResourceType for EndpointType {
    type Resource = ClusterEndpoints;

    fn type_url(&self) -> &'static str {
        ENDPOINT_TYPE
    }

    fn decode(&self, bytes: &[u8]) -> Result<(String, ClusterEndpoints), (Option<String>, String)> {
        let raw = RawAssignment::decode(bytes, 0).map_err(|e| (None, e.to_string()))?;
        pb::named(raw.cluster_name.clone(), || validate(raw))
    }
}

/// The message as read, before validation.
#[derive(Default)]
struct RawAssignment {
    cluster_name: String,
    localities: Vec<RawLocality>,
    drops: Vec<(String, u32, u64)>,
}

struct RawLocality {
    locality: Locality,
    weight: Option<u32>,
    priority: u32,
    endpoints: Vec<RawEndpoint>,
}

struct RawEndpoint {
    address: Option<(String, u32)>,
    health: u64,
    weight: Option<u32>,
}

fn validate(raw: RawAssignment) -> Result<ClusterEndpoints, String> {
    let mut localities = Vec::new();
    let mut addresses = BTreeSet::new();
    let mut seen_localities = BTreeSet::new();
    let mut priorities = BTreeSet::new();
    for l in raw.localities {
        // gRPC leaves out a locality without weight.
        let weight = match l.weight {
            Some(w) if w > 0 => w,
            _ => continue,
        };
        let key = (
            l.priority,
            l.locality.region.clone(),
            l.locality.zone.clone(),
            l.locality.sub_zone.clone(),
        );
        if !seen_localities.insert(key) {
            return Err(format!(
                "locality {}/{}/{} appears twice in priority {}",
                l.locality.region, l.locality.zone, l.locality.sub_zone, l.priority
            ));
        }
        let mut endpoints = Vec::with_capacity(l.endpoints.len());
        let mut sum: u64 = 0;
        for e in l.endpoints {
            let Some((host, port)) = e.address else {
                return Err("an endpoint has no socket address".to_owned());
            };
            let ip: IpAddr = host
                .parse()
                .map_err(|_| format!("endpoint address {host:?} is not an IP address"))?;
            let port =
                u16::try_from(port).map_err(|_| format!("endpoint port {port} is out of range"))?;
            let address = SocketAddr::new(ip, port);
            if !addresses.insert(address) {
                return Err(format!("endpoint {address} appears twice"));
            }
            let weight = e.weight.unwrap_or(1);
            if weight == 0 {
                return Err(format!("endpoint {address} has weight 0"));
            }
            sum += u64::from(weight);
            endpoints.push(Endpoint {
                address,
                health: HealthStatus::from_wire(e.health),
                weight,
            });
        }
        if sum > u64::from(u32::MAX) {
            return Err(format!(
                "endpoint weights in priority {} sum past 2^32 - 1",
                l.priority
            ));
        }
        priorities.insert(l.priority);
        localities.push(LocalityEndpoints {
            locality: l.locality,
            priority: l.priority,
            weight,
            endpoints,
        });
    }
    // Priorities run 0, 1, 2, ... without a gap.
    if let Some(gap) = priorities
        .iter()
        .enumerate()
        .find(|&(i, &p)| p as usize != i)
    {
        return Err(format!(
            "priority {} is missing (priorities must start at 0 without gaps)",
            gap.0
        ));
    }
    for p in &priorities {
        let sum: u64 = localities
            .iter()
            .filter(|l| l.priority == *p)
            .map(|l| u64::from(l.weight))
            .sum();
        if sum > u64::from(u32::MAX) {
            return Err(format!(
                "locality weights in priority {p} sum past 2^32 - 1"
            ));
        }
    }
    localities.sort_by_key(|l| l.priority);
    let mut drops = Vec::with_capacity(raw.drops.len());
    for (category, numerator, denominator) in raw.drops {
        let per_million = pb::per_million(numerator, denominator)
            .map_err(|d| format!("drop {category:?} has unknown denominator {d}"))?;
        drops.push(DropOverload {
            category,
            per_million,
        });
    }
    Ok(ClusterEndpoints { localities, drops })
}

/// The socket addresses of a `ClusterLoadAssignment`'s endpoints as (host,
/// port), unchecked: a logical DNS cluster's one endpoint is a host name.
pub(super) fn socket_addresses(
    bytes: &[u8],
    base: usize,
) -> Result<Vec<(String, u32)>, DecodeError> {
    let raw = RawAssignment::decode(bytes, base)?;
    Ok(raw
        .localities
        .into_iter()
        .flat_map(|l| l.endpoints)
        .filter_map(|e| e.address)
        .collect())
}

impl RawAssignment {
    fn decode(bytes: &[u8], base: usize) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        let mut r = Reader::new(bytes, base);
        while let Some((field, wt)) = r.tag()? {
            match (field, wt) {
                (1, wire::LEN) => out.cluster_name = r.string(field)?,
                (2, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    out.localities
                        .push(RawLocality::decode(b, base).map_err(|e| e.within(field))?);
                }
                (4, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    read_policy(b, base, &mut out.drops).map_err(|e| e.within(field))?;
                }
                _ => r.skip(field, wt)?,
            }
        }
        Ok(out)
    }
}

impl RawLocality {
    fn decode(bytes: &[u8], base: usize) -> Result<Self, DecodeError> {
        let mut out = Self {
            locality: Locality::default(),
            weight: None,
            priority: 0,
            endpoints: Vec::new(),
        };
        let mut r = Reader::new(bytes, base);
        while let Some((field, wt)) = r.tag()? {
            match (field, wt) {
                (1, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    out.locality = read_locality(b, base).map_err(|e| e.within(field))?;
                }
                (2, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    out.endpoints
                        .push(RawEndpoint::decode(b, base).map_err(|e| e.within(field))?);
                }
                (3, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    out.weight = Some(pb::wrapped_u32(b, base).map_err(|e| e.within(field))?);
                }
                (5, wire::VARINT) => out.priority = r.varint(field)? as u32,
                _ => r.skip(field, wt)?,
            }
        }
        Ok(out)
    }
}

impl RawEndpoint {
    fn decode(bytes: &[u8], base: usize) -> Result<Self, DecodeError> {
        let mut out = Self {
            address: None,
            health: 0,
            weight: None,
        };
        let mut r = Reader::new(bytes, base);
        while let Some((field, wt)) = r.tag()? {
            match (field, wt) {
                // endpoint: Endpoint { address: Address { socket_address } }
                (1, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    out.address = read_endpoint_address(b, base).map_err(|e| e.within(field))?;
                }
                (2, wire::VARINT) => out.health = r.varint(field)?,
                (4, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    out.weight = Some(pb::wrapped_u32(b, base).map_err(|e| e.within(field))?);
                }
                _ => r.skip(field, wt)?,
            }
        }
        Ok(out)
    }
}

/// `Endpoint.address.socket_address` as (address, port).
fn read_endpoint_address(bytes: &[u8], base: usize) -> Result<Option<(String, u32)>, DecodeError> {
    let mut found = None;
    let mut r = Reader::new(bytes, base);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (1, wire::LEN) => {
                let (base, address) = r.len_delimited(field)?;
                let mut a = Reader::new(address, base);
                while let Some((f, w)) = a.tag().map_err(|e| e.within(field))? {
                    match (f, w) {
                        (1, wire::LEN) => {
                            let (base, socket) = a.len_delimited(f).map_err(|e| e.within(field))?;
                            found = Some(
                                read_socket_address(socket, base)
                                    .map_err(|e| e.within(f).within(field))?,
                            );
                        }
                        _ => a.skip(f, w).map_err(|e| e.within(field))?,
                    }
                }
            }
            _ => r.skip(field, wt)?,
        }
    }
    Ok(found)
}

fn read_socket_address(bytes: &[u8], base: usize) -> Result<(String, u32), DecodeError> {
    let (mut host, mut port) = (String::new(), 0u32);
    let mut r = Reader::new(bytes, base);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (2, wire::LEN) => host = r.string(field)?,
            (3, wire::VARINT) => port = r.varint(field)? as u32,
            _ => r.skip(field, wt)?,
        }
    }
    Ok((host, port))
}

fn read_locality(bytes: &[u8], base: usize) -> Result<Locality, DecodeError> {
    let mut l = Locality::default();
    let mut r = Reader::new(bytes, base);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (1, wire::LEN) => l.region = r.string(field)?,
            (2, wire::LEN) => l.zone = r.string(field)?,
            (3, wire::LEN) => l.sub_zone = r.string(field)?,
            _ => r.skip(field, wt)?,
        }
    }
    Ok(l)
}

/// `ClusterLoadAssignment.Policy`: its drop overloads as (category, numerator,
/// denominator).
fn read_policy(
    bytes: &[u8],
    base: usize,
    drops: &mut Vec<(String, u32, u64)>,
) -> Result<(), DecodeError> {
    pb::fields(bytes, base, |field, wt, r| {
        match (field, wt) {
            // drop_overloads: DropOverload { category = 1, drop_percentage = 2 }
            (2, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                let (mut category, mut fraction) = (String::new(), (0, 0));
                pb::fields(b, base, |f, w, d| {
                    match (f, w) {
                        (1, wire::LEN) => category = d.string(f)?,
                        (2, wire::LEN) => {
                            let (base, p) = d.len_delimited(f)?;
                            fraction = pb::fraction(p, base)?;
                        }
                        _ => d.skip(f, w)?,
                    }
                    Ok(())
                })?;
                drops.push((category, fraction.0, fraction.1));
            }
            _ => r.skip(field, wt)?,
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::protowire::{put_bytes, put_string};

    use crate::xds::pb::build::{msg, varint, wrapped};

    fn endpoint(host: &str, port: u32, health: u64, weight: Option<u32>) -> Vec<u8> {
        let socket = msg(|b| {
            put_string(b, 2, host);
            varint(b, 3, u64::from(port));
        });
        let address = msg(|b| put_bytes(b, 1, &socket));
        let ep = msg(|b| put_bytes(b, 1, &address));
        msg(|b| {
            put_bytes(b, 1, &ep);
            varint(b, 2, health);
            if let Some(w) = weight {
                put_bytes(b, 4, &wrapped(u64::from(w)));
            }
        })
    }

    fn locality(zone: &str, priority: u32, weight: Option<u32>, endpoints: &[Vec<u8>]) -> Vec<u8> {
        let loc = msg(|b| {
            put_string(b, 1, "r");
            put_string(b, 2, zone);
        });
        msg(|b| {
            put_bytes(b, 1, &loc);
            for e in endpoints {
                put_bytes(b, 2, e);
            }
            if let Some(w) = weight {
                put_bytes(b, 3, &wrapped(u64::from(w)));
            }
            varint(b, 5, u64::from(priority));
        })
    }

    fn assignment(name: &str, localities: &[Vec<u8>], drops: &[(&str, u32, u64)]) -> Vec<u8> {
        msg(|b| {
            put_string(b, 1, name);
            for l in localities {
                put_bytes(b, 2, l);
            }
            if !drops.is_empty() {
                let policy = msg(|p| {
                    for (category, numerator, denominator) in drops {
                        let pct = msg(|f| {
                            varint(f, 1, u64::from(*numerator));
                            varint(f, 2, *denominator);
                        });
                        let d = msg(|d| {
                            put_string(d, 1, category);
                            put_bytes(d, 2, &pct);
                        });
                        put_bytes(p, 2, &d);
                    }
                });
                put_bytes(b, 4, &policy);
            }
        })
    }

    fn decode(bytes: &[u8]) -> Result<(String, ClusterEndpoints), (Option<String>, String)> {
        EndpointType.decode(bytes)
    }

    #[test]
    fn priorities_localities_endpoints_and_drops_are_read() {
        let bytes = assignment(
            "c1",
            &[
                locality("b", 1, Some(5), &[endpoint("10.0.0.3", 80, 2, None)]),
                locality(
                    "a",
                    0,
                    Some(3),
                    &[
                        endpoint("10.0.0.1", 80, 1, Some(7)),
                        endpoint("::1", 81, 0, None),
                    ],
                ),
                // No weight: left out, as gRPC does.
                locality("c", 0, None, &[endpoint("10.0.0.9", 80, 1, None)]),
            ],
            &[("lb", 5, 0), ("throttle", 25, 1), ("over", 2_000_000, 2)],
        );
        let (name, e) = decode(&bytes).unwrap();
        assert_eq!(name, "c1");
        let zones: Vec<(&str, u32, u32)> = e
            .localities
            .iter()
            .map(|l| (l.locality.zone.as_str(), l.priority, l.weight))
            .collect();
        assert_eq!(zones, [("a", 0, 3), ("b", 1, 5)]);
        let a = &e.localities[0].endpoints;
        assert_eq!(a[0].address, "10.0.0.1:80".parse().unwrap());
        assert_eq!((a[0].health, a[0].weight), (HealthStatus::Healthy, 7));
        assert_eq!(a[1].address, "[::1]:81".parse().unwrap());
        assert_eq!((a[1].health, a[1].weight), (HealthStatus::Unknown, 1));
        assert!(a[1].health.usable() && !e.localities[1].endpoints[0].health.usable());
        assert_eq!(
            e.drops,
            [
                DropOverload {
                    category: "lb".into(),
                    per_million: 50_000
                },
                DropOverload {
                    category: "throttle".into(),
                    per_million: 2_500
                },
                DropOverload {
                    category: "over".into(),
                    per_million: 1_000_000
                },
            ]
        );
    }

    #[test]
    fn invalid_assignments_are_rejected_with_their_reason() {
        let ep = |h: &str| endpoint(h, 80, 1, None);
        let cases: [(Vec<u8>, &str); 6] = [
            (
                assignment(
                    "c",
                    &[locality("a", 0, Some(1), &[ep("host.example")])],
                    &[],
                ),
                "endpoint address \"host.example\" is not an IP address",
            ),
            (
                assignment(
                    "c",
                    &[locality("a", 0, Some(1), &[ep("10.0.0.1"), ep("10.0.0.1")])],
                    &[],
                ),
                "endpoint 10.0.0.1:80 appears twice",
            ),
            (
                assignment(
                    "c",
                    &[
                        locality("a", 0, Some(1), &[ep("10.0.0.1")]),
                        locality("a", 0, Some(1), &[ep("10.0.0.2")]),
                    ],
                    &[],
                ),
                "locality r/a/ appears twice in priority 0",
            ),
            (
                assignment(
                    "c",
                    &[
                        locality("a", 0, Some(1), &[ep("10.0.0.1")]),
                        locality("b", 2, Some(1), &[ep("10.0.0.2")]),
                    ],
                    &[],
                ),
                "priority 1 is missing",
            ),
            (
                assignment(
                    "c",
                    &[locality(
                        "a",
                        0,
                        Some(1),
                        &[endpoint("10.0.0.1", 70000, 1, None)],
                    )],
                    &[],
                ),
                "endpoint port 70000 is out of range",
            ),
            (
                assignment(
                    "c",
                    &[
                        locality("a", 0, Some(u32::MAX), &[ep("10.0.0.1")]),
                        locality("b", 0, Some(2), &[ep("10.0.0.2")]),
                    ],
                    &[],
                ),
                "locality weights in priority 0 sum past 2^32 - 1",
            ),
        ];
        for (bytes, want) in cases {
            let (name, reason) = decode(&bytes).unwrap_err();
            assert_eq!(name.as_deref(), Some("c"));
            assert!(reason.starts_with(want), "got {reason:?}, want {want:?}");
        }
        let (name, reason) = decode(&assignment("", &[], &[])).unwrap_err();
        assert_eq!((name, reason.as_str()), (None, "name is empty"));
        // Garbage: a reason, no name, no panic.
        let (name, reason) = decode(&[0x0a, 0x7f, b'x']).unwrap_err();
        assert!(name.is_none() && !reason.is_empty());
    }

    #[test]
    fn an_empty_assignment_is_valid_and_means_no_endpoints() {
        let (_, e) = decode(&assignment("c", &[], &[])).unwrap();
        assert_eq!(e, ClusterEndpoints::default());
    }
}

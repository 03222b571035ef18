//! Listener (LDS) resources for clients: the `api_listener`'s
//! `HttpConnectionManager`, which names the route configuration (by RDS name,
//! or inline), the HTTP filters and the default max stream duration (gRFCs
//! A27, A31 and A39).
//!
//! A listener is invalid (NACKed) when it has no `api_listener`, the
//! `api_listener` is not an `HttpConnectionManager`, its routes come from
//! scoped routes or an RDS config source other than `ads`/`self`, its inline
//! route configuration is invalid, or its HTTP filters are not a list of
//! supported (or optional) filters ending with the router.

use std::time::Duration;

use lb_core::DecodeError;
use lb_core::protowire::{Reader, wire};

use super::ads::{LISTENER_TYPE, ResourceType};
use super::pb;
use super::rds::{RouteConfig, decode_route_config};

/// The `HttpConnectionManager` type, the only `api_listener` a client reads.
pub const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// The router filter, which must end a client's filter chain.
pub const ROUTER_FILTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// A client listener.
#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    /// Where the routes come from.
    pub routes: RouteSource,
    /// The longest a call may last unless its route says otherwise (A31).
    pub max_stream_duration: Option<Duration>,
    /// The HTTP filters' names, in order, the router last.
    pub http_filters: Vec<String>,
}

/// Where a listener's routes come from.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteSource {
    /// The RDS resource of this name.
    Rds(String),
    /// Carried in the listener.
    Inline(RouteConfig),
}

/// The [`ResourceType`] of listener resources.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListenerType;

impl ResourceType for ListenerType {
    type Resource = Listener;

    fn type_url(&self) -> &'static str {
        LISTENER_TYPE
    }

    fn decode(&self, bytes: &[u8]) -> Result<(String, Listener), (Option<String>, String)> {
        let (name, hcm) = read_listener(bytes).map_err(|e| (None, e.to_string()))?;
        if name.is_empty() {
            return Err((None, "name is empty".to_owned()));
        }
        let named = |e: String| (Some(name.clone()), e);
        let Some((type_url, hcm)) = hcm else {
            return Err(named("a client listener needs an api_listener".to_owned()));
        };
        if type_url != HCM_TYPE {
            return Err(named(format!(
                "api_listener has type {type_url}, not HttpConnectionManager"
            )));
        }
        let raw = read_hcm(&hcm).map_err(|e| named(format!("HttpConnectionManager: {e}")))?;
        let routes = match raw.routes {
            RawRoutes::Rds {
                name: rds,
                ads_or_self: true,
            } if !rds.is_empty() => RouteSource::Rds(rds),
            RawRoutes::Rds {
                ads_or_self: true, ..
            } => {
                return Err(named("rds.route_config_name is empty".to_owned()));
            }
            RawRoutes::Rds { .. } => {
                return Err(named("rds.config_source must be ads or self".to_owned()));
            }
            RawRoutes::Inline(bytes) => {
                let (_, config) = decode_route_config(&bytes)
                    .map_err(|(_, e)| named(format!("route_config: {e}")))?;
                RouteSource::Inline(config)
            }
            RawRoutes::Scoped => return Err(named("scoped_routes are not supported".to_owned())),
            RawRoutes::None => return Err(named("HttpConnectionManager has no routes".to_owned())),
        };
        let http_filters = filters(raw.filters).map_err(named)?;
        Ok((
            name.clone(),
            Listener {
                routes,
                max_stream_duration: raw.max_stream_duration,
                http_filters,
            },
        ))
    }
}

/// Checks the filter chain (gRFC A39): names are set and unique, a filter
/// this client does not support is an error unless it is optional (then it is
/// skipped), and what remains ends with the router and has no router before.
/// The router is the only filter supported so far.
fn filters(raw: Vec<RawFilter>) -> Result<Vec<String>, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut kept = Vec::new();
    for (i, f) in raw.into_iter().enumerate() {
        if f.name.is_empty() {
            return Err(format!("http_filters[{i}] has no name"));
        }
        if !seen.insert(f.name.clone()) {
            return Err(format!("http filter {:?} appears twice", f.name));
        }
        if f.type_url == ROUTER_FILTER_TYPE {
            kept.push(f.name);
        } else if !f.optional {
            let type_url = if f.type_url.is_empty() {
                "(none)"
            } else {
                &f.type_url
            };
            return Err(format!(
                "http filter {:?} has unsupported type {type_url}",
                f.name
            ));
        }
    }
    match kept.len() {
        0 => Err("http_filters do not include the router".to_owned()),
        1 => Ok(kept),
        _ => Err("the router must be the last http filter".to_owned()),
    }
}

// ----- The messages as read -----

enum RawRoutes {
    None,
    Rds { name: String, ads_or_self: bool },
    Inline(Vec<u8>),
    Scoped,
}

struct RawHcm {
    routes: RawRoutes,
    filters: Vec<RawFilter>,
    max_stream_duration: Option<Duration>,
}

struct RawFilter {
    name: String,
    type_url: String,
    optional: bool,
}

/// The listener's name and its `api_listener` Any.
fn read_listener(bytes: &[u8]) -> Result<(String, Option<pb::RawAny>), DecodeError> {
    let (mut name, mut api) = (String::new(), None);
    let mut r = Reader::new(bytes, 0);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (1, wire::LEN) => name = r.string(field)?,
            (19, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                let mut a = Reader::new(b, base);
                while let Some((f, w)) = a.tag().map_err(|e| e.within(field))? {
                    match (f, w) {
                        (1, wire::LEN) => {
                            let (base, any) = a.len_delimited(f).map_err(|e| e.within(field))?;
                            api = Some(pb::any(any, base).map_err(|e| e.within(f).within(field))?);
                        }
                        _ => a.skip(f, w).map_err(|e| e.within(field))?,
                    }
                }
            }
            _ => r.skip(field, wt)?,
        }
    }
    Ok((name, api))
}

fn read_hcm(bytes: &[u8]) -> Result<RawHcm, DecodeError> {
    let mut hcm = RawHcm {
        routes: RawRoutes::None,
        filters: Vec::new(),
        max_stream_duration: None,
    };
    let mut r = Reader::new(bytes, 0);
    while let Some((field, wt)) = r.tag()? {
        let within = |e: DecodeError| e.within(field);
        match (field, wt) {
            (3, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                hcm.routes = read_rds(b, base).map_err(within)?;
            }
            (4, wire::LEN) => hcm.routes = RawRoutes::Inline(r.len_delimited(field)?.1.to_vec()),
            (31, wire::LEN) => {
                r.len_delimited(field)?;
                hcm.routes = RawRoutes::Scoped;
            }
            (5, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                hcm.filters.push(read_filter(b, base).map_err(within)?);
            }
            (35, wire::LEN) => {
                // HttpProtocolOptions { max_stream_duration = 4 }
                let (base, b) = r.len_delimited(field)?;
                let mut o = Reader::new(b, base);
                while let Some((f, w)) = o.tag().map_err(within)? {
                    match (f, w) {
                        (4, wire::LEN) => {
                            let (base, d) = o.len_delimited(f).map_err(within)?;
                            hcm.max_stream_duration =
                                Some(pb::duration(d, base).map_err(|e| e.within(f).within(field))?);
                        }
                        _ => o.skip(f, w).map_err(within)?,
                    }
                }
            }
            _ => r.skip(field, wt)?,
        }
    }
    Ok(hcm)
}

fn read_rds(bytes: &[u8], base: usize) -> Result<RawRoutes, DecodeError> {
    let (mut name, mut ads_or_self) = (String::new(), false);
    pb::fields(bytes, base, |field, wt, r| {
        match (field, wt) {
            (1, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                ads_or_self = pb::ads_or_self(b, base)?;
            }
            (2, wire::LEN) => name = r.string(field)?,
            _ => r.skip(field, wt)?,
        }
        Ok(())
    })?;
    Ok(RawRoutes::Rds { name, ads_or_self })
}

fn read_filter(bytes: &[u8], base: usize) -> Result<RawFilter, DecodeError> {
    let mut f = RawFilter {
        name: String::new(),
        type_url: String::new(),
        optional: false,
    };
    let mut r = Reader::new(bytes, base);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (1, wire::LEN) => f.name = r.string(field)?,
            (4, wire::LEN) => {
                let (base, any) = r.len_delimited(field)?;
                f.type_url = pb::any(any, base).map_err(|e| e.within(field))?.0;
            }
            (6, wire::VARINT) => f.optional = r.varint(field)? != 0,
            _ => r.skip(field, wt)?,
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::routing::RouteAction;
    use lb_core::protowire::{put_bytes, put_string};

    use crate::xds::pb::build::{any, msg, varint};

    fn filter(name: &str, type_url: &str, optional: bool) -> Vec<u8> {
        msg(|f| {
            put_string(f, 1, name);
            put_bytes(f, 4, &any(type_url, &[]));
            varint(f, 6, u64::from(optional));
        })
    }

    fn router() -> Vec<u8> {
        filter("router", ROUTER_FILTER_TYPE, false)
    }

    fn rds(name: &str, source_field: u32) -> Vec<u8> {
        msg(|r| {
            put_bytes(r, 1, &msg(|c| put_bytes(c, source_field, &[])));
            put_string(r, 2, name);
        })
    }

    fn listener(name: &str, hcm: &[u8]) -> Vec<u8> {
        msg(|l| {
            put_string(l, 1, name);
            put_bytes(l, 19, &msg(|a| put_bytes(a, 1, &any(HCM_TYPE, hcm))));
        })
    }

    fn decode(bytes: &[u8]) -> Result<Listener, String> {
        ListenerType
            .decode(bytes)
            .map(|(_, l)| l)
            .map_err(|(_, e)| e)
    }

    #[test]
    fn a_listener_names_its_routes_by_rds_with_its_defaults() {
        let hcm = msg(|h| {
            put_bytes(h, 3, &rds("routes-1", 3));
            put_bytes(h, 5, &filter("opt", "type.googleapis.com/x.Unknown", true));
            put_bytes(h, 5, &router());
            put_bytes(h, 35, &msg(|o| put_bytes(o, 4, &msg(|d| varint(d, 1, 30)))));
        });
        let (name, l) = ListenerType.decode(&listener("svc", &hcm)).unwrap();
        assert_eq!(name, "svc");
        assert_eq!(l.routes, RouteSource::Rds("routes-1".into()));
        assert_eq!(l.max_stream_duration, Some(Duration::from_secs(30)));
        assert_eq!(
            l.http_filters,
            ["router"],
            "the unknown optional filter is skipped"
        );
    }

    #[test]
    fn an_inline_route_configuration_is_decoded() {
        let route = msg(|r| {
            put_bytes(r, 1, &msg(|m| put_bytes(m, 1, b"/")));
            put_bytes(r, 2, &msg(|a| put_string(a, 1, "cluster-a")));
        });
        let config = msg(|c| {
            put_string(c, 1, "inline");
            put_bytes(
                c,
                2,
                &msg(|v| {
                    put_string(v, 2, "*");
                    put_bytes(v, 3, &route);
                }),
            );
        });
        let hcm = msg(|h| {
            put_bytes(h, 4, &config);
            put_bytes(h, 5, &router());
        });
        let l = decode(&listener("svc", &hcm)).unwrap();
        let RouteSource::Inline(rc) = l.routes else {
            panic!("inline routes");
        };
        assert_eq!(
            rc.virtual_hosts[0].routes[0].action,
            RouteAction::Cluster("cluster-a".into())
        );
        assert_eq!(l.max_stream_duration, None);
    }

    #[test]
    fn invalid_listeners_name_their_fault() {
        let with_filters = |filters: &[Vec<u8>]| {
            listener(
                "svc",
                &msg(|h| {
                    put_bytes(h, 3, &rds("r", 3));
                    for f in filters {
                        put_bytes(h, 5, f);
                    }
                }),
            )
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                msg(|l| put_string(l, 1, "svc")),
                "a client listener needs an api_listener",
            ),
            (
                msg(|l| {
                    put_string(l, 1, "svc");
                    put_bytes(
                        l,
                        19,
                        &msg(|a| put_bytes(a, 1, &any("type.googleapis.com/x.Other", &[]))),
                    );
                }),
                "api_listener has type type.googleapis.com/x.Other",
            ),
            (
                listener("svc", &msg(|h| put_bytes(h, 5, &router()))),
                "HttpConnectionManager has no routes",
            ),
            (
                listener(
                    "svc",
                    &msg(|h| {
                        put_bytes(h, 3, &rds("r", 2));
                        put_bytes(h, 5, &router());
                    }),
                ),
                "rds.config_source must be ads or self",
            ),
            (
                listener(
                    "svc",
                    &msg(|h| {
                        put_bytes(h, 31, &[]);
                        put_bytes(h, 5, &router());
                    }),
                ),
                "scoped_routes are not supported",
            ),
            (with_filters(&[]), "http_filters do not include the router"),
            (
                with_filters(&[
                    router(),
                    filter("late", "type.googleapis.com/x.Unknown", false),
                ]),
                "http filter \"late\" has unsupported type",
            ),
            (
                with_filters(&[router(), router()]),
                "http filter \"router\" appears twice",
            ),
            (
                listener(
                    "svc",
                    &msg(|h| {
                        put_bytes(
                            h,
                            4,
                            &msg(|c| {
                                put_bytes(
                                    c,
                                    2,
                                    &msg(|v| put_bytes(v, 3, &msg(|r| put_bytes(r, 1, &[])))),
                                )
                            }),
                        );
                        put_bytes(h, 5, &router());
                    }),
                ),
                "route_config: a route match has no path specifier",
            ),
        ];
        for (bytes, want) in cases {
            let got = decode(&bytes).unwrap_err();
            assert!(got.starts_with(want), "got {got:?}, want {want:?}");
        }
        assert_eq!(
            ListenerType.decode(&[]).unwrap_err(),
            (None, "name is empty".to_owned())
        );
    }
}

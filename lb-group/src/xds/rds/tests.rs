//! Route configurations built with protowire's writers, read back.

use super::*;
use crate::xds::pb::build::{duration, msg, varint, wrapped};
use lb_core::protowire::{put_bytes, put_string};

fn regex(re: &str) -> Vec<u8> {
    msg(|b| put_string(b, 2, re))
}

/// A route: `matcher` and `action` are encoded RouteMatch and RouteAction.
fn route(matcher: Vec<u8>, action: Option<Vec<u8>>) -> Vec<u8> {
    msg(|b| {
        put_bytes(b, 1, &matcher);
        match action {
            Some(a) => put_bytes(b, 2, &a),
            None => put_bytes(b, 18, &[]),
        }
    })
}

/// A oneof string member: written even when empty, as protobuf does for oneofs
/// (`put_string` leaves empty strings out).
fn prefix(p: &str) -> Vec<u8> {
    msg(|b| put_bytes(b, 1, p.as_bytes()))
}

fn to_cluster(c: &str) -> Vec<u8> {
    msg(|b| put_bytes(b, 1, c.as_bytes()))
}

fn config(hosts: &[Vec<u8>], plugins: &[Vec<u8>]) -> Vec<u8> {
    msg(|b| {
        put_string(b, 1, "rc");
        for h in hosts {
            put_bytes(b, 2, h);
        }
        for p in plugins {
            put_bytes(b, 12, p);
        }
    })
}

fn host(domains: &[&str], routes: &[Vec<u8>]) -> Vec<u8> {
    msg(|b| {
        put_string(b, 1, "vh");
        for d in domains {
            put_string(b, 2, d);
        }
        for r in routes {
            put_bytes(b, 3, r);
        }
    })
}

fn rls_plugin(name: &str, optional: bool, type_url: &str) -> Vec<u8> {
    let specifier = msg(|s| put_bytes(s, 1, b"\x0a\x03rls"));
    let any = msg(|a| {
        put_string(a, 1, type_url);
        put_bytes(a, 2, &specifier);
    });
    let ext = msg(|e| {
        put_string(e, 1, name);
        put_bytes(e, 2, &any);
    });
    msg(|b| {
        put_bytes(b, 1, &ext);
        varint(b, 2, u64::from(optional));
    })
}

fn decode(bytes: &[u8]) -> Result<RouteConfig, String> {
    RouteConfigType
        .decode(bytes)
        .map(|(_, c)| c)
        .map_err(|(_, e)| e)
}

#[test]
fn a_full_route_configuration_is_read() {
    let header_exact = msg(|h| {
        put_string(h, 1, "X-User");
        put_bytes(
            h,
            13,
            &msg(|s| {
                put_string(s, 1, "Alice");
                varint(s, 6, 1);
            }),
        );
    });
    let matcher = msg(|m| {
        put_string(m, 2, "/pkg.Svc/Do");
        put_bytes(m, 4, &wrapped(0));
        put_bytes(m, 6, &header_exact);
        put_bytes(
            m,
            9,
            &msg(|f| {
                put_bytes(
                    f,
                    1,
                    &msg(|p| {
                        varint(p, 1, 25);
                        varint(p, 2, 0);
                    }),
                )
            }),
        );
    });
    let weighted = msg(|a| {
        let w = |name: &str, weight: u64| {
            msg(|c| {
                put_string(c, 1, name);
                put_bytes(c, 2, &wrapped(weight));
            })
        };
        put_bytes(
            a,
            3,
            &msg(|wc| {
                put_bytes(wc, 1, &w("a", 70));
                put_bytes(wc, 1, &w("b", 30));
                put_bytes(wc, 1, &w("zero", 0));
            }),
        );
        put_bytes(
            a,
            36,
            &msg(|d| {
                put_bytes(d, 1, &duration(10, 0));
                put_bytes(d, 2, &duration(2, 500_000_000));
            }),
        );
        put_bytes(
            a,
            15,
            &msg(|h| {
                put_bytes(h, 1, &msg(|hh| put_string(hh, 1, "X-Key")));
                varint(h, 4, 1);
            }),
        );
        put_bytes(
            a,
            15,
            &msg(|h| put_bytes(h, 6, &msg(|f| put_string(f, 1, "io.grpc.channel_id")))),
        );
        put_bytes(
            a,
            9,
            &msg(|r| {
                put_string(r, 1, "unavailable, cancelled,5xx");
                put_bytes(r, 2, &wrapped(3));
                put_bytes(r, 8, &msg(|bo| put_bytes(bo, 1, &duration(0, 100_000_000))));
            }),
        );
    });
    let regex_route = route(
        msg(|m| put_bytes(m, 10, &regex("/pkg\\.Svc/.*"))),
        Some(to_cluster("re")),
    );
    let plugin_route = route(prefix("/rls/"), Some(msg(|a| put_string(a, 37, "lookup"))));
    let bytes = config(
        &[host(
            &["*.example.com"],
            &[
                route(matcher, Some(weighted)),
                regex_route,
                plugin_route,
                route(prefix(""), None),
            ],
        )],
        &[rls_plugin("lookup", false, RLS_PLUGIN_TYPE)],
    );
    let (name, rc) = RouteConfigType.decode(&bytes).unwrap();
    assert_eq!(name, "rc");
    assert_eq!(rc.plugins["lookup"], b"\x0a\x03rls");
    let vh = &rc.virtual_hosts[0];
    assert_eq!(vh.domains, ["*.example.com"]);
    assert_eq!(vh.routes.len(), 4);

    let r0 = &vh.routes[0];
    assert_eq!(
        r0.action,
        RouteAction::Weighted(vec![("a".into(), 70), ("b".into(), 30)])
    );
    assert_eq!(
        r0.max_stream_duration,
        Some(Duration::from_millis(2500)),
        "grpc_timeout_header_max wins"
    );
    assert_eq!(
        r0.hash_policies,
        [
            HashPolicy::Header {
                name: "x-key".into(),
                terminal: true
            },
            HashPolicy::ChannelId { terminal: false },
        ]
    );
    let retry = r0.retry.as_ref().unwrap();
    assert_eq!(retry.retry_on, [Code::Unavailable, Code::Cancelled]);
    assert_eq!(retry.max_attempts, 4);
    assert_eq!(
        (retry.base_interval, retry.max_interval),
        (Duration::from_millis(100), Duration::from_secs(1))
    );
    let m = &r0.matcher;
    assert!(!m.case_sensitive);
    assert_eq!(m.fraction_per_million, Some(250_000));
    // Case-insensitive path and header value; the header name is lower-cased.
    let header = |n: &str| (n == "x-user").then(|| "ALICE".to_owned());
    assert!(m.matches("/PKG.svc/do", &header, 0), "{m:?}");
    assert!(
        !m.matches("/PKG.svc/do", &header, 250_000),
        "outside the fraction"
    );
    assert!(
        !m.matches("/PKG.svc/do", &|_| None, 0),
        "the header is required"
    );

    assert!(
        vh.routes[1]
            .matcher
            .matches("/pkg.Svc/Anything", &|_| None, 0)
    );
    assert_eq!(vh.routes[2].action, RouteAction::Plugin("lookup".into()));
    assert_eq!(vh.routes[3].action, RouteAction::NonForwarding);
}

#[test]
fn routes_grpc_cannot_serve_are_left_out() {
    let query = route(
        msg(|m| {
            put_string(m, 1, "/q/");
            put_bytes(m, 7, &msg(|q| put_string(q, 1, "debug")));
        }),
        Some(to_cluster("q")),
    );
    let separated = route(msg(|m| put_string(m, 14, "/sep")), Some(to_cluster("s")));
    let by_header = route(prefix("/h/"), Some(msg(|a| put_string(a, 2, "x-cluster"))));
    let optional = route(prefix("/o/"), Some(msg(|a| put_string(a, 37, "fancy"))));
    let kept = route(prefix("/"), Some(to_cluster("default")));
    let rc = decode(&config(
        &[host(&["*"], &[query, separated, by_header, optional, kept])],
        &[rls_plugin("fancy", true, "type.googleapis.com/x.Fancy")],
    ))
    .unwrap();
    let routes = &rc.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].action, RouteAction::Cluster("default".into()));
    assert!(rc.plugins.is_empty());
}

#[test]
fn a_virtual_host_retry_policy_applies_to_routes_without_their_own() {
    let vh = msg(|b| {
        put_string(b, 2, "*");
        put_bytes(b, 3, &route(prefix("/"), Some(to_cluster("c"))));
        put_bytes(b, 16, &msg(|r| put_string(r, 1, "internal")));
    });
    let rc = decode(&config(&[vh], &[])).unwrap();
    let retry = rc.virtual_hosts[0].routes[0].retry.as_ref().unwrap();
    assert_eq!(retry.retry_on, [Code::Internal]);
    assert_eq!(retry.max_attempts, 2, "num_retries defaults to 1");
    assert_eq!(
        (retry.base_interval, retry.max_interval),
        (Duration::from_millis(25), Duration::from_millis(250))
    );
}

#[test]
fn invalid_route_configurations_name_their_fault() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            config(
                &[host(
                    &["*"],
                    &[route(
                        msg(|m| put_bytes(m, 10, &regex("(unclosed"))),
                        Some(to_cluster("c")),
                    )],
                )],
                &[],
            ),
            "regex \"(unclosed\" does not compile",
        ),
        (
            config(
                &[host(
                    &["*"],
                    &[route(prefix("/"), Some(msg(|a| put_bytes(a, 3, &[]))))],
                )],
                &[],
            ),
            "weighted clusters weigh nothing",
        ),
        (
            config(
                &[host(
                    &["*"],
                    &[route(
                        prefix("/"),
                        Some(msg(|a| put_string(a, 37, "missing"))),
                    )],
                )],
                &[],
            ),
            "a route names cluster specifier plugin \"missing\", which is not listed",
        ),
        (
            config(
                &[],
                &[rls_plugin("p", false, "type.googleapis.com/x.Unknown")],
            ),
            "cluster specifier plugin \"p\" has unsupported type type.googleapis.com/x.Unknown",
        ),
        (
            config(
                &[host(
                    &["*"],
                    &[route(
                        prefix("/"),
                        Some(msg(|a| {
                            put_string(a, 1, "c");
                            put_bytes(a, 9, &msg(|r| put_bytes(r, 2, &wrapped(0))));
                        })),
                    )],
                )],
                &[],
            ),
            "retry policy num_retries is 0",
        ),
        (
            config(
                &[host(
                    &["*"],
                    &[route(
                        msg(|m| put_bytes(m, 6, &msg(|h| put_string(h, 1, "x")))),
                        Some(to_cluster("c")),
                    )],
                )],
                &[],
            ),
            "a route match has no path specifier",
        ),
        (
            config(
                &[host(&["*"], &[route(prefix("/"), Some(to_cluster("")))])],
                &[],
            ),
            "a route's cluster is empty",
        ),
    ];
    for (bytes, want) in cases {
        let (name, got) = RouteConfigType.decode(&bytes).unwrap_err();
        assert_eq!(name.as_deref(), Some("rc"));
        assert!(got.starts_with(want), "got {got:?}, want {want:?}");
    }
    assert!(
        RouteConfigType
            .decode(&[0x12, 0x05])
            .unwrap_err()
            .0
            .is_none(),
        "garbage: no name"
    );
}

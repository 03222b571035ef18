//! The Prometheus exporter end to end: real calls through a `Channel` over
//! `H2Transport` to our server (some succeed, some fail, some are retried), then
//! the `/metrics` text, fetched over HTTP from lb-transport's admin page
//! (`AdminServer`, where the exporter is mounted as programs mount it), parsed by
//! the Prometheus project's own OpenMetrics parser
//! (Python `prometheus_client`, from the peers venv), checking the instruments,
//! their types and units, the label sets and the counts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use lb_core::channel::{CallOptions, Channel};
use lb_core::metrics::MetricSelection;
use lb_core::metrics::prometheus::{CONTENT_TYPE, PrometheusRecorder};
use lb_core::{Code, Metadata};
use lb_testkit::peers::{self, PeerEnv};
use lb_testkit::services;
use lb_transport::admin::AdminServer;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::Server;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// Parses OpenMetrics text with `prometheus_client.openmetrics.parser` and prints
/// each family as JSON: name, type, unit and samples (name, labels, value).
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({"name": f.name, "type": f.type, "unit": f.unit,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]})
print(json.dumps(families))
"#;

/// One parsed family.
struct Family {
    kind: String,
    unit: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

fn parse(env: &PeerEnv, text: &str) -> BTreeMap<String, Family> {
    let dir = env.temp_dir("metrics").expect("temp dir");
    let input = dir.path().join("metrics.txt");
    std::fs::write(&input, text).expect("write the scrape");
    let script = format!(
        "import sys; sys.stdin = open({:?}); exec({:?})",
        input.display().to_string(),
        PARSE
    );
    let out = peers::run_python(env, ["-c", script.as_str()], WAIT).expect("run the parser");
    assert!(
        out.status.success(),
        "the parser rejected the text: {}\n{text}",
        out.stderr
    );
    let json: Value = serde_json::from_str(out.stdout.trim()).expect("the parser's JSON");
    json.as_array()
        .expect("a list of families")
        .iter()
        .map(|f| {
            let samples = f["samples"]
                .as_array()
                .expect("samples")
                .iter()
                .map(|s| {
                    let labels = s["labels"]
                        .as_object()
                        .expect("labels")
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().expect("a string").to_owned()))
                        .collect();
                    let name = s["name"].as_str().expect("name").to_owned();
                    (name, labels, s["value"].as_f64().expect("a number"))
                })
                .collect();
            let family = Family {
                kind: f["type"].as_str().expect("type").to_owned(),
                unit: f["unit"].as_str().unwrap_or("").to_owned(),
                samples,
            };
            (f["name"].as_str().expect("name").to_owned(), family)
        })
        .collect()
}

impl Family {
    /// The value of the sample `name` whose labels include `want`, summed.
    fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// The label keys of the samples named `name` (minus histogram's `le`).
    fn label_keys(&self, name: &str) -> BTreeSet<Vec<String>> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, _)| l.keys().filter(|k| *k != "le").cloned().collect())
            .collect()
    }
}

#[test]
fn real_calls_show_up_in_the_prometheus_text_with_grpcs_names_and_labels() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    // One recorder for the client's and the servers' metrics, as in one process.
    let prom = Arc::new(PrometheusRecorder::with_selection(
        MetricSelection::default()
            .enable("grpc.subchannel.connection_attempts_succeeded")
            .enable("grpc.subchannel.open_connections"),
    ));
    let servers: Vec<Server> = (0..2)
        .map(|i| {
            services::mount(Server::builder(), &format!("backend-{i}"))
                .metrics_recorder(prom.clone())
                .bind("127.0.0.1:0")
                .expect("bind")
        })
        .collect();
    let addresses: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    let target = format!("ipv4:{}", addresses.join(","));
    // UNAVAILABLE from /test.Echo/Status is retried: three attempts per call.
    let service_config = r#"{
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{
            "name": [{"service": "test.Echo", "method": "Status"}],
            "retryPolicy": {
                "maxAttempts": 3, "initialBackoff": "0.001s", "maxBackoff": "0.01s",
                "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]
            }
        }]
    }"#;
    let channel = Channel::builder(&target)
        .transport(Arc::new(
            H2Transport::new(TransportConfig::default()).unwrap(),
        ))
        .default_service_config(service_config)
        .metrics_recorder(prom.clone())
        .build()
        .expect("channel");
    let options = || CallOptions::default().with_timeout(WAIT);
    const OK_CALLS: usize = 10;
    for i in 0..OK_CALLS {
        let body = vec![b'x'; 100 * (i + 1)];
        channel
            .unary(services::ECHO, body, options())
            .expect("echo");
    }
    let status_call = |code: Code| {
        let mut md = Metadata::new();
        md.insert("x-status-code", &code.as_i32().to_string())
            .unwrap();
        channel.unary(
            services::STATUS,
            b"fail".to_vec(),
            options().with_metadata(md),
        )
    };
    for _ in 0..3 {
        assert_eq!(
            status_call(Code::NotFound).unwrap_err().code(),
            Code::NotFound
        );
    }
    for _ in 0..2 {
        assert_eq!(
            status_call(Code::Unavailable).unwrap_err().code(),
            Code::Unavailable
        );
    }
    let unknown = channel.unary("/test.Echo/Nope", Vec::new(), options());
    assert_eq!(unknown.unwrap_err().code(), Code::Unimplemented);
    let stats = channel.retry_stats();
    channel.close();
    // The servers have sent every status; shutting them down settles their books.
    for s in servers {
        s.shutdown(Duration::from_secs(5));
    }

    let admin = AdminServer::bind("127.0.0.1:0").expect("admin page");
    let scrape = prom.handler();
    admin.route("/metrics", move |_| scrape());
    let (content_type, text) = http_get(&admin, "/metrics");
    assert_eq!(content_type, CONTENT_TYPE);
    let families = parse(&env, &text);
    let canonical = target.as_str();

    // Attempts: one per call, plus the two retries of each UNAVAILABLE call.
    let started = &families["grpc_client_attempt_started"];
    assert_eq!(started.kind, "counter");
    let total = "grpc_client_attempt_started_total";
    assert_eq!(
        started.label_keys(total),
        BTreeSet::from([vec!["grpc_method".to_owned(), "grpc_target".to_owned()]])
    );
    let echo = [
        ("grpc_method", "test.Echo/Echo"),
        ("grpc_target", canonical),
    ];
    assert_eq!(started.value(total, &echo), OK_CALLS as f64);
    let status = [("grpc_method", "test.Echo/Status")];
    assert_eq!(started.value(total, &status), (3 + 2 * 3) as f64);
    assert_eq!(stats.retries, 4, "{stats:?}");
    assert_eq!(
        started.value(total, &[("grpc_method", "test.Echo/Nope")]),
        1.0
    );

    let keys = BTreeSet::from([vec![
        "grpc_method".to_owned(),
        "grpc_status".to_owned(),
        "grpc_target".to_owned(),
    ]]);
    let attempt = &families["grpc_client_attempt_duration_seconds"];
    assert_eq!(
        (attempt.kind.as_str(), attempt.unit.as_str()),
        ("histogram", "seconds")
    );
    let count = "grpc_client_attempt_duration_seconds_count";
    assert_eq!(attempt.label_keys(count), keys);
    assert_eq!(
        attempt.value(count, &[("grpc_status", "OK")]),
        OK_CALLS as f64
    );
    assert_eq!(attempt.value(count, &[("grpc_status", "NOT_FOUND")]), 3.0);
    assert_eq!(attempt.value(count, &[("grpc_status", "UNAVAILABLE")]), 6.0);
    assert_eq!(
        attempt.value(count, &[("grpc_status", "UNIMPLEMENTED")]),
        1.0
    );
    // A66's buckets: 41 boundaries, then +Inf.
    let buckets = attempt
        .samples
        .iter()
        .filter(|(n, l, _)| {
            n == "grpc_client_attempt_duration_seconds_bucket"
                && l.get("grpc_status").map(String::as_str) == Some("OK")
        })
        .count();
    assert_eq!(buckets, 42);

    let call = &families["grpc_client_call_duration_seconds"];
    let count = "grpc_client_call_duration_seconds_count";
    assert_eq!(call.label_keys(count), keys);
    assert_eq!(
        call.value(count, &[("grpc_status", "UNAVAILABLE")]),
        2.0,
        "calls, not attempts"
    );
    assert_eq!(call.value(count, &[]), (OK_CALLS + 3 + 2 + 1) as f64);

    // Echo answers what it got: 100 + 200 + ... + 1000 bytes each way.
    let sent = &families["grpc_client_attempt_sent_total_compressed_message_size_bytes"];
    let sum = "grpc_client_attempt_sent_total_compressed_message_size_bytes_sum";
    assert_eq!(sent.unit, "bytes");
    assert_eq!(sent.value(sum, &echo), 5500.0);
    let rcvd = &families["grpc_client_attempt_rcvd_total_compressed_message_size_bytes"];
    let sum = "grpc_client_attempt_rcvd_total_compressed_message_size_bytes_sum";
    assert!(
        rcvd.value(sum, &echo) >= 5500.0,
        "the echo adds the server's id"
    );

    // The subchannel instruments asked for: two connections made; the channel
    // closed them all.
    let ok = &families["grpc_subchannel_connection_attempts_succeeded"];
    let t = [("grpc_target", canonical)];
    assert_eq!(
        ok.value("grpc_subchannel_connection_attempts_succeeded_total", &t),
        2.0
    );
    let open = &families["grpc_subchannel_open_connections"];
    assert_eq!(open.kind, "gauge");
    assert_eq!(open.value("grpc_subchannel_open_connections", &t), 0.0);
    // Off by default, so absent.
    assert!(!families.contains_key("grpc_subchannel_disconnections"));
    assert!(
        families.keys().all(|k| !k.starts_with("grpc_lb_")),
        "{:?}",
        families.keys()
    );

    // The servers' side (gRFC A66): one call per attempt they saw; a method they
    // do not have is `other`.
    let started = &families["grpc_server_call_started"];
    let total = "grpc_server_call_started_total";
    assert_eq!(
        started.label_keys(total),
        BTreeSet::from([vec!["grpc_method".to_owned()]])
    );
    assert_eq!(
        started.value(total, &[("grpc_method", "test.Echo/Echo")]),
        OK_CALLS as f64
    );
    assert_eq!(
        started.value(total, &[("grpc_method", "test.Echo/Status")]),
        9.0
    );
    assert_eq!(started.value(total, &[("grpc_method", "other")]), 1.0);
    let duration = &families["grpc_server_call_duration_seconds"];
    let count = "grpc_server_call_duration_seconds_count";
    assert_eq!(
        duration.label_keys(count),
        BTreeSet::from([vec!["grpc_method".to_owned(), "grpc_status".to_owned()]])
    );
    assert_eq!(
        duration.value(count, &[("grpc_status", "OK")]),
        OK_CALLS as f64
    );
    assert_eq!(
        duration.value(count, &[("grpc_status", "UNAVAILABLE")]),
        6.0
    );
    assert_eq!(duration.value(count, &[("grpc_status", "NOT_FOUND")]), 3.0);
    assert_eq!(
        duration.value(
            count,
            &[("grpc_method", "other"), ("grpc_status", "UNIMPLEMENTED")]
        ),
        1.0
    );
    // Each echo request is its body plus gRPC's 5-byte prefix on the wire.
    let rcvd = &families["grpc_server_call_rcvd_total_compressed_message_size_bytes"];
    let sum = "grpc_server_call_rcvd_total_compressed_message_size_bytes_sum";
    assert_eq!(
        rcvd.value(sum, &[("grpc_method", "test.Echo/Echo")]),
        (5500 + 5 * OK_CALLS) as f64
    );
}

/// `GET path` from the admin page over a plain socket: the answer's content type
/// and body (it must be 200).
fn http_get(admin: &AdminServer, path: &str) -> (String, String) {
    let mut socket = TcpStream::connect(admin.local_addr()).expect("connect to the admin page");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    socket
        .read_to_string(&mut answer)
        .expect("the whole answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .expect("a content-type");
    (content_type, body.to_owned())
}

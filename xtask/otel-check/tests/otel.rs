//! lb-core's OpenTelemetry exporter against the real SDK: real calls through a
//! `Channel` over `H2Transport` to our server, recorded by `OtelRecorder` into an
//! `SdkMeterProvider` whose reader exports to the SDK's in-memory exporter; the
//! exported instruments keep gRPC's names, units, kinds, buckets and attributes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lb_core::channel::{CallOptions, Channel};
use lb_core::metrics::otel::OtelRecorder;
use lb_core::metrics::{MetricSelection, instruments};
use lb_core::{Code, Metadata};
use lb_testkit::services;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::Server;
use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

type Attributes = BTreeMap<String, String>;

fn attributes<'a>(kvs: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Attributes {
    kvs.map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

fn find<'a>(metrics: &[&'a Metric], name: &str) -> &'a Metric {
    metrics
        .iter()
        .find(|m| m.name() == name)
        .unwrap_or_else(|| {
            let names: Vec<&str> = metrics.iter().map(|m| m.name()).collect();
            panic!("no {name} in {names:?}")
        })
}

#[test]
fn calls_are_recorded_into_the_sdk_with_grpcs_instruments() {
    let server = services::mount(Server::builder(), "backend")
        .bind("127.0.0.1:0")
        .expect("bind");
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let recorder = Arc::new(OtelRecorder::with_selection(
        provider.meter("lb-sync"),
        MetricSelection::default().enable("grpc.subchannel.open_connections"),
    ));
    let target = format!("ipv4:{}", server.local_addr());
    let channel = Channel::builder(&target)
        .transport(Arc::new(
            H2Transport::new(TransportConfig::default()).unwrap(),
        ))
        .metrics_recorder(recorder)
        .build()
        .expect("channel");
    let options = || CallOptions::default().with_timeout(Duration::from_secs(20));
    for _ in 0..4 {
        channel
            .unary(services::ECHO, b"hi".to_vec(), options())
            .expect("echo");
    }
    for _ in 0..2 {
        let mut md = Metadata::new();
        md.insert("x-status-code", "5").unwrap();
        let err = channel
            .unary(services::STATUS, Vec::new(), options().with_metadata(md))
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    provider.force_flush().expect("flush");
    let exported = exporter.get_finished_metrics().expect("metrics");
    let metrics: Vec<&Metric> = exported
        .iter()
        .flat_map(|rm| rm.scope_metrics())
        .flat_map(|sm| sm.metrics())
        .collect();

    // A counter: a monotonic u64 sum per (method, target).
    let started = find(&metrics, "grpc.client.attempt.started");
    assert_eq!(started.unit(), "{attempt}");
    let AggregatedMetrics::U64(MetricData::Sum(sum)) = started.data() else {
        panic!("not a u64 sum: {:?}", started.data());
    };
    assert!(sum.is_monotonic());
    let by_method: BTreeMap<String, u64> = sum
        .data_points()
        .map(|p| {
            let attrs = attributes(p.attributes());
            assert_eq!(
                attrs.keys().collect::<Vec<_>>(),
                ["grpc.method", "grpc.target"]
            );
            assert_eq!(attrs["grpc.target"], target);
            (attrs["grpc.method"].clone(), p.value())
        })
        .collect();
    assert_eq!(
        by_method,
        BTreeMap::from([
            ("test.Echo/Echo".to_owned(), 4),
            ("test.Echo/Status".to_owned(), 2)
        ])
    );

    // A histogram with A66's buckets, per status.
    let duration = find(&metrics, "grpc.client.call.duration");
    assert_eq!(duration.unit(), "s");
    let AggregatedMetrics::F64(MetricData::Histogram(h)) = duration.data() else {
        panic!("not an f64 histogram: {:?}", duration.data());
    };
    let mut by_status = BTreeMap::new();
    for p in h.data_points() {
        assert_eq!(p.bounds().collect::<Vec<_>>(), instruments::LATENCY_BUCKETS);
        let attrs = attributes(p.attributes());
        by_status.insert(attrs["grpc.status"].clone(), p.count());
    }
    assert_eq!(
        by_status,
        BTreeMap::from([("NOT_FOUND".to_owned(), 2), ("OK".to_owned(), 4)])
    );
    let sent = find(
        &metrics,
        "grpc.client.attempt.sent_total_compressed_message_size",
    );
    assert_eq!(sent.unit(), "By");

    // An up-down counter asked for: a non-monotonic i64 sum.
    let open = find(&metrics, "grpc.subchannel.open_connections");
    let AggregatedMetrics::I64(MetricData::Sum(sum)) = open.data() else {
        panic!("not an i64 sum: {:?}", open.data());
    };
    assert!(!sum.is_monotonic());
    assert_eq!(sum.data_points().map(|p| p.value()).sum::<i64>(), 1);
    // Off by default, so never created.
    assert!(metrics.iter().all(|m| !m.name().starts_with("grpc.lb.")));

    channel.close();
    server.shutdown(Duration::ZERO);
    provider.shutdown().expect("shutdown");
}

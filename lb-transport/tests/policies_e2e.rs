//! `ring_hash_experimental` and `least_request_experimental` end to end: a `Channel`
//! with our HTTP/2 transport against three of our servers on loopback. Real time
//! here, every wait and loop bounded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lb_core::Metadata;
use lb_core::channel::{CallOptions, Channel};
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::{Request, Response, Server};

const WAIT: Duration = Duration::from_secs(20);

fn server(id: &str) -> Server {
    lb_testkit::services::mount(Server::builder(), id)
        .workers(4)
        .bind("127.0.0.1:0")
        .unwrap()
}

fn channel(servers: &[&Server], lb_config: &str) -> Channel {
    let list: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    Channel::builder(format!("ipv4:{}", list.join(",")))
        .transport(transport)
        .default_service_config(format!(r#"{{"loadBalancingConfig": [{lb_config}]}}"#))
        .build()
        .unwrap()
}

/// Calls `/test.Echo/Who` (waiting for a connection if need be) and returns the
/// answering server's id.
fn who(channel: &Channel, metadata: Metadata) -> String {
    let options = CallOptions::default()
        .with_metadata(metadata)
        .with_wait_for_ready(true)
        .with_timeout(WAIT);
    let r = channel
        .unary("/test.Echo/Who", Vec::new(), options)
        .unwrap();
    String::from_utf8(r.message).unwrap()
}

fn key(k: &str) -> Metadata {
    let mut md = Metadata::new();
    md.insert("x-key", k).unwrap();
    md
}

/// Where each of 50 keys goes, checking that 10 calls with one key all reach one
/// backend.
fn homes(channel: &Channel) -> Vec<String> {
    (0..50)
        .map(|i| {
            let k = format!("user-{i}");
            let seen: HashSet<String> = (0..10).map(|_| who(channel, key(&k))).collect();
            assert_eq!(seen.len(), 1, "{k} reached {seen:?}");
            seen.into_iter().next().unwrap()
        })
        .collect()
}

#[test]
fn ring_hash_keeps_keys_on_their_backend_and_stopping_one_moves_only_its_keys() {
    let (s0, s1, s2) = (server("s0"), server("s1"), server("s2"));
    let channel = channel(
        &[&s0, &s1, &s2],
        r#"{"ring_hash_experimental": {"requestHashHeader": "x-key"}}"#,
    );
    let before = homes(&channel);
    let used: HashSet<&String> = before.iter().collect();
    assert_eq!(used.len(), 3, "50 keys use every backend: {used:?}");

    // Stop s0; its keys walk on along the ring (the resolver still lists it, so
    // the ring is unchanged and every other key stays put).
    let stopped = "s0";
    let on_stopped = before.iter().filter(|h| *h == stopped).count();
    let survivors: Vec<Server> = [("s0", s0), ("s1", s1), ("s2", s2)]
        .into_iter()
        .filter_map(|(id, s)| {
            if id == stopped {
                s.shutdown(Duration::ZERO);
                None
            } else {
                Some(s)
            }
        })
        .collect();
    assert_eq!(survivors.len(), 2);
    let after = homes(&channel);
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(a, &stopped);
        if *b == stopped {
            moved += 1;
        } else {
            assert_eq!(a, b, "a key on a running backend stayed there");
        }
    }
    println!(
        "ring_hash over 3 servers: stopping {stopped} moved {moved} of 50 keys ({:.2})",
        moved as f64 / 50.0
    );
    assert_eq!(moved, on_stopped);
    assert!((5..=30).contains(&moved), "moved {moved} of 50");
    channel.close();
    for s in survivors {
        s.shutdown(Duration::ZERO);
    }
}

#[test]
fn least_request_sends_fewer_calls_to_a_backend_that_holds_them_longer() {
    let slow = lb_testkit::services::mount(Server::builder(), "slow")
        .unary("/test.Echo/Who", |_: Request| {
            thread::sleep(Duration::from_millis(20));
            Ok(Response::new(b"slow".to_vec()))
        })
        .workers(8)
        .bind("127.0.0.1:0")
        .unwrap();
    let (f1, f2) = (server("fast-1"), server("fast-2"));
    let channel = channel(
        &[&slow, &f1, &f2],
        r#"{"least_request_experimental": {"choiceCount": 2}}"#,
    );
    // Warm up: every backend answers once (bounded).
    let deadline = Instant::now() + WAIT;
    let mut seen = HashSet::new();
    while seen.len() < 3 {
        assert!(Instant::now() < deadline, "only {seen:?} became ready");
        seen.insert(who(&channel, Metadata::new()));
    }
    // 8 callers, 1 s or 2,000 calls each, whichever ends first.
    let stop_at = Instant::now() + Duration::from_secs(1);
    let counts: Vec<HashMap<String, usize>> = thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let channel = &channel;
                s.spawn(move || {
                    let mut m = HashMap::new();
                    for _ in 0..2000 {
                        if Instant::now() >= stop_at {
                            break;
                        }
                        *m.entry(who(channel, Metadata::new())).or_insert(0) += 1;
                    }
                    m
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total: HashMap<String, usize> = HashMap::new();
    for m in counts {
        for (k, n) in m {
            *total.entry(k).or_default() += n;
        }
    }
    let all: usize = total.values().sum();
    let share = |id: &str| total.get(id).copied().unwrap_or(0) as f64 / all as f64;
    println!(
        "least_request, 8 callers, slow backend sleeping 20 ms: {all} calls, shares \
         slow {:.3}, fast-1 {:.3}, fast-2 {:.3}",
        share("slow"),
        share("fast-1"),
        share("fast-2")
    );
    assert!(all > 100, "{total:?}");
    // By count, round_robin would give each backend a third. Here the slow backend
    // holds more calls in flight, so it wins fewer comparisons.
    assert!(share("slow") < 0.2, "{total:?}");
    assert!(
        share("slow") * 2.0 < share("fast-1").min(share("fast-2")),
        "{total:?}"
    );
    channel.close();
    for s in [slow, f1, f2] {
        s.shutdown(Duration::ZERO);
    }
}

//! The admin page in a real browser: Debian's `chromium`, headless, loads the page
//! from our [`AdminServer`], runs its script (which fetches `/api/channels`) and
//! dumps the DOM, which the tests check through the page's `data-*` attributes.
//! Each test also saves a screenshot under the cargo target directory and prints
//! its path.
//!
//! - `a_described_tree_is_drawn`: a hand-made channel registered in channelz with a
//!   hand-made policy tree (weighted_target → round_robin → subchannels, an RLS-like
//!   cache table, trace events), and a hand-made `/api/xds` (xDS resources).
//! - `a_real_channel_over_h2_is_drawn`: a `Channel` over `H2Transport` to three of
//!   our servers with `weighted_target_experimental` → `round_robin`. What it checks
//!   of the channel (listed, its tree, its subchannels) is filled in by the channel,
//!   its pool and its policies' `describe`.
//!
//! `cargo xtask peers` (and `cargo xtask test`) install chromium. Without it the
//! tests print "skipped", unless `LB_REQUIRE_PEERS=1`, when they fail.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use lb_core::channel::{CallOptions, Channel};
use lb_core::channelz::{
    self, CallCounts, ChannelSnapshot, Entity, Kind, PolicyView, Severity, Snapshot,
    SubchannelSnapshot, SubchannelView, Table, TraceEvent, TraceSnapshot,
};
use lb_core::{ConnectivityState, Endpoint, LbPolicyRegistry, ResolverUpdate};
use lb_testkit::ManualResolver;
use lb_transport::admin::AdminServer;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::Server;

/// The longest one chromium run may take before it is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest wait for calls and for the channel to settle.
const WAIT: Duration = Duration::from_secs(20);

/// Where chromium is, or `None` (test skipped) when it is missing and not
/// required.
fn chromium() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("LB_CHROMIUM").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromium")),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Some(found);
    }
    if std::env::var("LB_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
        panic!("chromium is missing (/usr/bin/chromium): run `cargo xtask peers`");
    }
    println!("skipped: chromium is missing (`cargo xtask peers` installs it)");
    None
}

/// A directory under the cargo target directory for this test's files.
fn work_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("admin-browser");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs chromium headless on `url` with `extra` arguments and a fresh profile;
/// returns its standard output. Killed after [`BROWSER_TIMEOUT`].
fn run_chromium(bin: &Path, url: &str, extra: &[String]) -> String {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let dir = work_dir().join(format!("run-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let profile = dir.join("profile");
    fs::create_dir_all(&profile).unwrap();
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("chromium starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let err = fs::read_to_string(&err_path).unwrap_or_default();
            panic!("chromium took over {BROWSER_TIMEOUT:?}; killed. stderr:\n{err}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let out = fs::read_to_string(&out_path).unwrap();
    let err = fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.success(),
        "chromium failed ({status}); stderr:\n{err}"
    );
    println!("chromium {extra:?} took {:?}", started.elapsed());
    let _ = fs::remove_dir_all(&dir);
    out
}

/// The page's DOM after its script ran (and fetched the data a few times), also
/// saved as `name` under the target directory.
fn dump_dom(bin: &Path, url: &str, name: &str) -> String {
    let dom = run_chromium(bin, url, &["--dump-dom".into()]);
    let path = work_dir().join(name);
    fs::write(&path, &dom).unwrap();
    println!("admin page DOM: {}", path.display());
    assert!(dom.contains("<html"), "a DOM: {dom}");
    dom
}

/// Saves a screenshot of `url` as `name` under the target directory and prints its
/// path.
fn screenshot(bin: &Path, url: &str, name: &str) -> PathBuf {
    let path = work_dir().join(name);
    let _ = fs::remove_file(&path);
    run_chromium(
        bin,
        url,
        &[
            format!("--screenshot={}", path.display()),
            "--window-size=1280,1000".into(),
        ],
    );
    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 1000,
        "a screenshot at {} ({size} bytes)",
        path.display()
    );
    println!("admin page screenshot: {}", path.display());
    path
}

/// The attributes of every element with `data-node`, `data-row`, `data-table`,
/// `data-status`, `data-refreshes`, `data-field` or `data-socket-id` in `dom`
/// (Chromium's serialization: double-quoted values with `&amp;`, `&quot;`, `&lt;`,
/// `&gt;` escaped), plus the text right after the tag.
fn elements(dom: &str) -> Vec<HashMap<String, String>> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let Some(end) = rest.find('>') else { break };
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('/') || tag.starts_with('!') {
            continue;
        }
        let mut attrs = HashMap::new();
        let (name, mut t) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        attrs.insert("<tag>".to_owned(), name.to_owned());
        loop {
            t = t.trim_start();
            let Some(eq) = t.find("=\"") else { break };
            let key = t[..eq].trim().to_owned();
            let after = &t[eq + 2..];
            let Some(close) = after.find('"') else { break };
            let value = after[..close]
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            attrs.insert(key, value);
            t = &after[close + 1..];
        }
        let text_end = rest.find('<').unwrap_or(rest.len());
        attrs.insert("<text>".to_owned(), rest[..text_end].to_owned());
        if [
            "data-node",
            "data-row",
            "data-table",
            "data-status",
            "data-refreshes",
            "data-field",
            "data-socket-id",
        ]
        .iter()
        .any(|k| attrs.contains_key(*k))
        {
            out.push(attrs);
        }
    }
    out
}

/// The part of `dom` that draws the channel `target` (its card, up to the next
/// channel's card or the servers), so that tests running at once, whose channels
/// the page also shows, do not see each other's.
fn channel_part<'a>(dom: &'a str, target: &str) -> &'a str {
    let attr = format!(r#"data-target="{target}""#);
    let at = dom
        .find(&attr)
        .unwrap_or_else(|| panic!("the channel {target} is drawn: {dom}"));
    let start = dom[..at].rfind("<section").unwrap();
    let after = &dom[at..];
    let end = [
        after.find(r#"data-node="channel""#),
        after.find(r#"id="servers""#),
    ]
    .into_iter()
    .flatten()
    .min()
    .map_or(dom.len(), |e| at + after[..e].rfind('<').unwrap_or(e));
    &dom[start..end]
}

fn find<'a>(
    els: &'a [HashMap<String, String>],
    want: &[(&str, &str)],
) -> Vec<&'a HashMap<String, String>> {
    els.iter()
        .filter(|e| {
            want.iter()
                .all(|(k, v)| e.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn attr<'a>(e: &'a HashMap<String, String>, k: &str) -> &'a str {
    e.get(k).map_or("", String::as_str)
}

/// The page fetched the data and drew it again at least once, and shows no error.
fn check_loaded(els: &[HashMap<String, String>], dom: &str) {
    let body = els
        .iter()
        .find(|e| e.contains_key("data-refreshes"))
        .unwrap_or_else(|| panic!("the script drew the data: {dom}"));
    let refreshes: u32 = attr(body, "data-refreshes").parse().unwrap();
    // Every 1.5 s within chromium's 5 s of virtual time: the first load and at
    // least one redraw.
    assert!(refreshes >= 2, "{refreshes}");
    let status = els
        .iter()
        .find(|e| attr(e, "id") == "status")
        .expect("a status line");
    assert_eq!(attr(status, "data-status"), "ok", "{status:?}");
}

struct FakeChannel(ChannelSnapshot, PolicyView);

impl Entity for FakeChannel {
    fn snapshot(&self) -> Snapshot {
        Snapshot::Channel(self.0.clone())
    }
    fn policy(&self, _wait: Duration) -> Option<PolicyView> {
        Some(self.1.clone())
    }
}

struct FakeSubchannel(SubchannelSnapshot);

impl Entity for FakeSubchannel {
    fn snapshot(&self) -> Snapshot {
        Snapshot::Subchannel(self.0.clone())
    }
}

fn policy(name: &str, policy: &str, state: ConnectivityState) -> PolicyView {
    PolicyView {
        name: name.into(),
        policy: policy.into(),
        state: Some(state),
        ..PolicyView::default()
    }
}

#[test]
fn a_described_tree_is_drawn() {
    let Some(bin) = chromium() else { return };
    let now = SystemTime::now();
    let ago = |s: u64| now - Duration::from_secs(s);
    let addresses = ["10.0.0.1:443", "10.0.0.2:443", "10.0.0.3:443"];
    let states = [
        ConnectivityState::Ready,
        ConnectivityState::Ready,
        ConnectivityState::TransientFailure,
    ];
    let ids: Vec<u64> = addresses.iter().map(|_| channelz::next_id()).collect();
    let subs: Vec<Arc<FakeSubchannel>> = (0..3)
        .map(|i| {
            Arc::new(FakeSubchannel(SubchannelSnapshot {
                id: ids[i],
                target: addresses[i].into(),
                state: states[i],
                calls: CallCounts {
                    started: 10 * (i as u64 + 1),
                    succeeded: 10 * (i as u64 + 1) - i as u64,
                    failed: i as u64,
                    last_started: Some(ago(2)),
                },
                trace: TraceSnapshot {
                    created: ago(60),
                    events_logged: 1,
                    events: vec![TraceEvent {
                        at: ago(30 - i as u64),
                        severity: if i == 2 {
                            Severity::Error
                        } else {
                            Severity::Info
                        },
                        description: format!("{} → {}", addresses[i], states[i]),
                        child: None,
                    }],
                },
                sockets: vec![],
            }))
        })
        .collect();
    let view = |i: usize| SubchannelView {
        id: ids[i],
        address: addresses[i].into(),
        state: states[i],
        details: vec![],
    };
    let mut t0 = policy("t0", "round_robin", ConnectivityState::Ready);
    t0.subchannels = vec![view(0), view(1)];
    let mut t1 = policy("t1", "round_robin", ConnectivityState::TransientFailure);
    t1.subchannels = vec![view(2)];
    let mut rls = policy("lookup", "rls_experimental", ConnectivityState::Connecting);
    rls.config = Some(r#"{"routeLookupConfig": {"lookupService": "rls.example:443"}}"#.into());
    rls.tables = vec![Table {
        title: "RLS cache".into(),
        columns: [
            "key",
            "targets",
            "header data",
            "age",
            "stale",
            "expired",
            "backoff",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![
            ["/s/m k=<v>", "t0", "x", "3 s", "no", "no", "-"]
                .map(String::from)
                .to_vec(),
            ["/s/m k=w", "", "", "40 s", "yes", "no", "2 s"]
                .map(String::from)
                .to_vec(),
        ],
    }];
    let mut root = policy("", "weighted_target_experimental", ConnectivityState::Ready);
    root.config = Some(r#"{"targets": {"t0": {"weight": 2}, "t1": {"weight": 1}}}"#.into());
    t0.details = vec![("weight".into(), "2".into())];
    t1.details = vec![("weight".into(), "1".into())];
    root.children = vec![t0, t1, rls];

    let id = channelz::next_id();
    let target = "test:///admin-browser-fake";
    let channel = Arc::new(FakeChannel(
        ChannelSnapshot {
            id,
            target: target.into(),
            state: ConnectivityState::Ready,
            calls: CallCounts {
                started: 60,
                succeeded: 57,
                failed: 3,
                last_started: Some(ago(2)),
            },
            trace: TraceSnapshot {
                created: ago(60),
                events_logged: 2,
                events: vec![
                    TraceEvent {
                        at: ago(59),
                        severity: Severity::Info,
                        description: "resolver: 3 endpoints".into(),
                        child: None,
                    },
                    TraceEvent {
                        at: ago(58),
                        severity: Severity::Warning,
                        description: "<script>alert(1)</script> stays text".into(),
                        child: None,
                    },
                ],
            },
            subchannels: ids.clone(),
            channels: vec![],
        },
        root,
    ));
    let _regs: Vec<channelz::Registration> = subs
        .iter()
        .zip(&ids)
        .map(|(s, &id)| channelz::registry().register(id, Kind::Subchannel, Arc::downgrade(s) as _))
        .chain([channelz::registry().register(id, Kind::TopChannel, Arc::downgrade(&channel) as _)])
        .collect();

    let admin = AdminServer::bind("127.0.0.1:0").unwrap();
    // An /api/xds as lb-group's xds::csds::dump_json writes it.
    admin.route("/api/xds", |_| {
        let xds = r#"{"clients": [{"node": "n1", "resources": [
            {"type": "Listener", "name": "svc", "version": "1", "status": "ACKED", "error": null},
            {"type": "Cluster", "name": "c1", "version": "3", "status": "NACKED",
             "error": {"version": "4", "details": "<b>MAGLEV</b> is not supported"}}]}]}"#;
        ("application/json", xds.to_owned())
    });
    let page = dump_dom(&bin, &admin.url(), "admin-fake.html");
    check_loaded(&elements(&page), &page);
    let all = elements(&page);
    assert_eq!(
        find(&all, &[("data-node", "xds-client")]).len(),
        1,
        "{page}"
    );
    assert_eq!(find(&all, &[("data-status", "ACKED")]).len(), 1, "{page}");
    assert_eq!(find(&all, &[("data-status", "NACKED")]).len(), 1, "{page}");
    assert!(
        page.contains("4: &lt;b&gt;MAGLEV&lt;/b&gt; is not supported"),
        "the rejection is shown, as text: {page}"
    );
    let dom = channel_part(&page, target);
    let els = elements(dom);

    let card = find(&els, &[("data-node", "channel"), ("data-target", target)]);
    assert_eq!(card.len(), 1, "{dom}");
    assert_eq!(attr(card[0], "data-state"), "READY");
    assert_eq!(attr(card[0], "data-channel-id"), id.to_string());
    assert!(dom.contains(r#"data-field="started">60<"#), "{dom}");

    let wt = find(
        &els,
        &[
            ("data-node", "policy"),
            ("data-path", "weighted_target_experimental"),
        ],
    );
    assert_eq!(wt.len(), 1, "{dom}");
    assert_eq!(attr(wt[0], "data-state"), "READY");
    for (child, state) in [("t0", "READY"), ("t1", "TRANSIENT_FAILURE")] {
        let path = format!("weighted_target_experimental/{child}:round_robin");
        let node = find(&els, &[("data-node", "policy"), ("data-path", &path)]);
        assert_eq!(node.len(), 1, "{path}: {dom}");
        assert_eq!(
            (
                attr(node[0], "data-policy"),
                attr(node[0], "data-name"),
                attr(node[0], "data-state")
            ),
            ("round_robin", child, state)
        );
    }
    for (i, child) in ["t0", "t0", "t1"].into_iter().enumerate() {
        let path = format!(
            "weighted_target_experimental/{child}:round_robin/@{}",
            addresses[i]
        );
        let node = find(&els, &[("data-node", "subchannel"), ("data-path", &path)]);
        assert_eq!(node.len(), 1, "{path}: {dom}");
        assert_eq!(attr(node[0], "data-state"), states[i].as_str());
        assert_eq!(attr(node[0], "data-subchannel-id"), ids[i].to_string());
    }
    assert!(
        dom.contains(&format!("{} calls ({} ok, 1 failed)", 20, 19)),
        "{dom}"
    );

    let cache = find(&els, &[("data-table", "RLS cache")]);
    assert_eq!(cache.len(), 1, "{dom}");
    let rows = find(&els, &[("data-row", "table")]);
    assert_eq!(rows.len(), 2, "{dom}");
    assert!(
        dom.contains("<td>/s/m k=&lt;v&gt;</td>"),
        "cells are text: {dom}"
    );

    let sub_rows = find(&els, &[("data-row", "subchannel")]);
    let mine: Vec<_> = sub_rows
        .iter()
        .filter(|r| {
            ids.iter()
                .any(|id| attr(r, "data-subchannel-id") == id.to_string())
        })
        .collect();
    assert_eq!(mine.len(), 3, "{dom}");

    let events: Vec<_> = find(&els, &[("data-row", "event")]);
    assert!(events.len() >= 5, "channel and subchannel events: {dom}");
    assert!(events.iter().any(|e| attr(e, "data-severity") == "ERROR"));
    for source in ["channel", "subchannel"] {
        assert!(
            events.iter().any(|e| attr(e, "data-source") == source),
            "{source}"
        );
    }
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt; stays text"),
        "a description is text, not markup: {dom}"
    );
    assert!(!page.contains("<script>alert(1)"));

    screenshot(&bin, &admin.url(), "admin-fake.png");
    admin.shutdown();
}

fn server(id: &str) -> Server {
    lb_testkit::services::mount(Server::builder(), id)
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap()
}

#[test]
fn a_real_channel_over_h2_is_drawn() {
    let Some(bin) = chromium() else { return };
    let servers = [server("s0"), server("s1"), server("s2")];
    let addrs: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    let mut registry = LbPolicyRegistry::with_builtins();
    lb_group::register(&mut registry);
    let resolver = ManualResolver::default();
    let target = "test:///admin-browser-e2e";
    let channel = Channel::builder(target)
        .transport(Arc::new(
            H2Transport::new(TransportConfig::default()).unwrap(),
        ))
        .resolver_registry(resolver.registry())
        .lb_policy_registry(registry)
        .default_service_config(
            r#"{"loadBalancingConfig": [{"weighted_target_experimental": {"targets": {
                "t0": {"weight": 2, "childPolicy": [{"round_robin": {}}]},
                "t1": {"weight": 1, "childPolicy": [{"round_robin": {}}]}}}}]}"#,
        )
        .build()
        .unwrap();
    // s0 and s1 under t0, s2 under t1.
    let children = ["t0", "t0", "t1"];
    let endpoints: Vec<Endpoint> = addrs
        .iter()
        .zip(children)
        .map(|(a, c)| lb_group::hierarchy::with_path(Endpoint::new([a.as_str()]), &[c]))
        .collect();
    resolver.push(ResolverUpdate::from_endpoints(endpoints));

    let options = CallOptions::default()
        .with_wait_for_ready(true)
        .with_timeout(WAIT);
    let mut answered = HashMap::<String, usize>::new();
    for _ in 0..30 {
        let r = channel
            .unary("/test.Echo/Who", Vec::new(), options.clone())
            .unwrap();
        *answered
            .entry(String::from_utf8(r.message).unwrap())
            .or_default() += 1;
    }
    assert_eq!(answered.len(), 3, "every backend answered: {answered:?}");
    // Every subchannel READY before the page looks (round_robin connects them all).
    let deadline = Instant::now() + WAIT;
    while answered.len() < 3 || channel.state(false) != ConnectivityState::Ready {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(10));
    }

    // From here on, every check needs the channel integration of channelz: channels
    // and subchannels registered with their counters and traces, policies'
    // `describe`, the transport's sockets and the server's registration.
    let (listed, _) = channelz::registry().list(Kind::TopChannel, 0, 1000);
    assert!(
        listed
            .iter()
            .any(|s| matches!(s, Snapshot::Channel(c) if c.target == target)),
        "the channel is in channelz (channels register themselves once the channelz \
         integration of lb-core is in)"
    );
    let admin = AdminServer::bind("127.0.0.1:0").unwrap();
    let page = dump_dom(&bin, &admin.url(), "admin.html");
    check_loaded(&elements(&page), &page);
    let dom = channel_part(&page, target);
    let els = elements(dom);
    let card = find(&els, &[("data-node", "channel"), ("data-target", target)]);
    assert_eq!(card.len(), 1, "the channel is listed: {dom}");
    assert_eq!(attr(card[0], "data-state"), "READY", "{dom}");
    let channel_id = attr(card[0], "data-channel-id").to_owned();
    assert!(
        dom.contains(r#"data-field="started">30<"#),
        "30 calls counted: {dom}"
    );

    let policies: Vec<_> = find(&els, &[("data-node", "policy")]);
    let root = policies
        .iter()
        .find(|p| {
            let path = attr(p, "data-path");
            path == "weighted_target_experimental" || path == "weighted_target"
        })
        .unwrap_or_else(|| panic!("weighted_target is the root: {dom}"));
    let root_path = attr(root, "data-path").to_owned();
    assert_eq!(attr(root, "data-state"), "READY", "{dom}");
    for (i, addr) in addrs.iter().enumerate() {
        let child = children[i];
        // A subchannel node under the child's round_robin (there may be wrapper
        // levels between the root and the child, and between the child and
        // round_robin).
        let node = find(&els, &[("data-node", "subchannel"), ("data-address", addr)])
            .into_iter()
            .find(|n| {
                let path = attr(n, "data-path");
                let segments: Vec<&str> = path.split('/').collect();
                let rr = segments.iter().position(|s| s.ends_with("round_robin"));
                let named = segments
                    .iter()
                    .position(|s| s.starts_with(&format!("{child}:")));
                path.starts_with(&root_path) && matches!((named, rr), (Some(a), Some(b)) if a <= b)
            })
            .unwrap_or_else(|| panic!("{addr} under {child} → round_robin: {dom}"));
        assert_eq!(attr(node, "data-state"), "READY", "{addr}: {dom}");
    }
    let rr_nodes: Vec<_> = policies
        .iter()
        .filter(|p| attr(p, "data-policy") == "round_robin")
        .filter(|p| attr(p, "data-path").starts_with(&root_path))
        .collect();
    assert_eq!(rr_nodes.len(), 2, "one round_robin per target: {dom}");
    let events = find(&els, &[("data-row", "event")]);
    for source in ["channel", "subchannel"] {
        assert!(
            events.iter().any(|e| attr(e, "data-source") == source),
            "{source} events: {dom}"
        );
    }
    let sub_rows: Vec<_> = find(&els, &[("data-row", "subchannel"), ("data-state", "READY")]);
    assert!(sub_rows.len() >= 3, "three READY subchannels: {dom}");

    // The JSON of the one channel agrees.
    let json = lb_transport_get(&admin, &format!("/api/channel/{channel_id}"));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let sockets: usize = v["subchannels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sockets"].as_array().map_or(0, Vec::len))
        .sum();
    let subchannels = v["subchannels"].as_array().unwrap().len();
    println!("channel {channel_id}: {subchannels} subchannels, {sockets} sockets");
    assert_eq!(subchannels, 3);
    // Sockets need the transport to register its connections (and the pool to list
    // them); servers, the server to register itself.
    assert!(sockets >= 3, "a socket per READY subchannel: {json}");
    assert!(
        els.iter()
            .filter(|e| e.contains_key("data-socket-id"))
            .count()
            >= 3,
        "sockets drawn in the subchannel table: {dom}"
    );
    let drawn_servers = find(&elements(&page), &[("data-node", "server")]).len();
    assert!(drawn_servers >= 3, "our three servers are drawn: {page}");

    screenshot(&bin, &admin.url(), "admin.png");
    admin.shutdown();
    channel.close();
    for s in servers {
        s.shutdown(Duration::ZERO);
    }
}

/// One GET over a fresh connection; the body.
fn lb_transport_get(admin: &AdminServer, path: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(admin.local_addr()).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = String::new();
    conn.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    body.to_owned()
}

//! The client side of one ADS stream, as a state machine (state of the world,
//! gRFCs A27, A46, A53 and A57's resource timers): what to request, what to ACK
//! or NACK, which resources changed, and which do not exist.
//!
//! It does no I/O and reads no clock: the owner feeds it stream events and
//! [`DiscoveryResponse`]s with `now`, sends the [`DiscoveryRequest`]s it queues,
//! hands the [`AdsEvent`]s to watchers, and calls [`AdsState::handle_timeout`]
//! at [`AdsState::next_timeout`].
//!
//! ```text
//!   subscribe / unsubscribe ──> AdsState ──poll_request()──> DiscoveryRequest (stream)
//!   stream_started / stream_failed ─┘  ^  └──poll_event()──> Changed / Invalid / DoesNotExist
//!   DiscoveryResponse (stream) ────────┘
//! ```
//!
//! # The rules
//!
//! - Each resource type has its own version (the last one accepted) and nonce
//!   (the last response's, on this stream). A request carries every name
//!   subscribed for its type.
//! - A response is ACKed (its version and nonce) when every resource in it is
//!   valid, else NACKed: the old version, the new nonce and an error detail
//!   that names each bad resource. Valid resources of a NACKed response are
//!   still used, and each bad one is reported to its watchers (gRFC A46).
//! - For Listener and Cluster resources the response is the whole set: a cached
//!   resource it leaves out no longer exists, unless the server has
//!   `ignore_resource_deletion` (gRFC A53).
//! - A subscribed resource the server has not sent 15 s after it was requested
//!   does not exist. The timer runs only while the stream is up, and a
//!   resource that is cached never times out.
//! - A new stream starts over: the first request of each type carries the node
//!   and the last version accepted, no nonce.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::wire::{DiscoveryRequest, DiscoveryResponse, NodeInfo, RpcStatus};

/// How long a requested resource may take to arrive before it is taken not to
/// exist (gRFC A27).
pub const RESOURCE_TIMEOUT: Duration = Duration::from_secs(15);

/// Listener resources.
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// RouteConfiguration resources.
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Cluster resources.
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// ClusterLoadAssignment (endpoint) resources.
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// A resource type's decoder: the bytes of one resource to its name and parsed
/// value, or why it is invalid.
pub trait ResourceType: Send + Sync + 'static {
    /// The parsed resource.
    type Resource: Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static;

    /// The type URL it decodes.
    fn type_url(&self) -> &'static str;

    /// Decodes and validates one resource. `Err` carries the name if it could
    /// be read (so the error reaches that resource's watchers) and the reason.
    ///
    /// # Errors
    ///
    /// The resource is malformed or fails validation.
    fn decode(&self, bytes: &[u8]) -> Result<(String, Self::Resource), (Option<String>, String)>;

    /// Whether a response holds every resource of this type the client has
    /// (Listener and Cluster: yes), so one it leaves out was deleted.
    fn full_state(&self) -> bool {
        matches!(self.type_url(), LISTENER_TYPE | CLUSTER_TYPE)
    }
}

/// What the owner tells watchers of one resource.
#[derive(Clone, Debug, PartialEq)]
pub enum AdsEvent<R> {
    /// The resource is new or changed.
    Changed {
        /// Its name.
        name: String,
        /// Its value.
        resource: R,
    },
    /// The server sent an invalid version of it; a cached value stays in use.
    Invalid {
        /// Its name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// It does not exist: deleted, or never sent within [`RESOURCE_TIMEOUT`].
    DoesNotExist {
        /// Its name.
        name: String,
    },
}

struct Watched<R> {
    cached: Option<R>,
    /// When it is taken not to exist, if it has not come by then.
    deadline: Option<Instant>,
    /// What a dump shows of it (CSDS, the admin page).
    seen: Seen,
}

/// A resource as the server last sent it, for dumps.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// The version of the response that carried the value in use.
    version: String,
    /// The value in use, encoded (the resource message, not its `Any`).
    raw: Option<Vec<u8>>,
    /// Deleted, or not sent in time.
    does_not_exist: bool,
    /// The last rejected version, while no later one was accepted.
    failure: Option<UpdateFailure>,
}

/// How the client stands with one resource (CSDS's `ClientResourceStatus`,
/// gRFC A40).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceStatus {
    /// Subscribed, not received yet.
    Requested,
    /// Deleted by the server, or not sent in time.
    DoesNotExist,
    /// Received and accepted.
    Acked,
    /// The last version was rejected (an earlier one may be in use).
    Nacked,
}

impl ResourceStatus {
    /// Its value in CSDS's `ClientResourceStatus` enum.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::Requested => 1,
            Self::DoesNotExist => 2,
            Self::Acked => 3,
            Self::Nacked => 4,
        }
    }

    /// Its name in CSDS's enum (`ACKED`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Requested => "REQUESTED",
            Self::DoesNotExist => "DOES_NOT_EXIST",
            Self::Acked => "ACKED",
            Self::Nacked => "NACKED",
        }
    }
}

/// A rejected version of a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateFailure {
    /// The rejected response's version.
    pub version: String,
    /// Why it was rejected.
    pub details: String,
}

/// One subscribed resource, as a dump shows it (gRFC A40's
/// `GenericXdsConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceDump {
    /// Its type URL.
    pub type_url: &'static str,
    /// Its name.
    pub name: String,
    /// The version of the response that carried the value in use (empty
    /// before one).
    pub version: String,
    /// Where it stands.
    pub status: ResourceStatus,
    /// The value in use, encoded, if there is one.
    pub raw: Option<Vec<u8>>,
    /// The last rejected version, while no later one was accepted.
    pub failure: Option<UpdateFailure>,
}

/// The ADS state of one resource type on one server's stream.
pub struct AdsState<T: ResourceType> {
    kind: T,
    node: NodeInfo,
    ignore_resource_deletion: bool,
    resources: BTreeMap<String, Watched<T::Resource>>,
    version: String,
    nonce: String,
    stream_up: bool,
    /// The stream has not carried a request of this type yet: the next one
    /// carries the node.
    first_on_stream: bool,
    /// A request is due (subscriptions changed, or a response to answer).
    pending: Option<PendingRequest>,
    /// Bounded by the subscribed names: at most three events per name per
    /// response or timeout, and the owner drains them after each input.
    events: VecDeque<AdsEvent<T::Resource>>,
}

enum PendingRequest {
    Subscription,
    Ack,
    Nack(String),
}

impl<T: ResourceType> AdsState<T> {
    /// The state for resources of `kind`, identifying the client as `node` to a
    /// server with or without `ignore_resource_deletion`.
    pub fn new(kind: T, node: NodeInfo, ignore_resource_deletion: bool) -> Self {
        Self {
            kind,
            node,
            ignore_resource_deletion,
            resources: BTreeMap::new(),
            version: String::new(),
            nonce: String::new(),
            stream_up: false,
            first_on_stream: true,
            pending: None,
            events: VecDeque::new(),
        }
    }

    /// Starts watching `name`. A cached value is reported again at once, so a
    /// new watcher learns it.
    pub fn subscribe(&mut self, name: &str, now: Instant) {
        if let Some(w) = self.resources.get(name) {
            if let Some(r) = &w.cached {
                self.events.push_back(AdsEvent::Changed {
                    name: name.to_owned(),
                    resource: r.clone(),
                });
            }
            return;
        }
        let deadline = self.stream_up.then_some(now + RESOURCE_TIMEOUT);
        self.resources.insert(
            name.to_owned(),
            Watched {
                cached: None,
                deadline,
                seen: Seen::default(),
            },
        );
        self.pending.get_or_insert(PendingRequest::Subscription);
    }

    /// Stops watching `name` and forgets its value.
    pub fn unsubscribe(&mut self, name: &str) {
        if self.resources.remove(name).is_some() {
            self.pending.get_or_insert(PendingRequest::Subscription);
        }
    }

    /// A new stream is up: every subscription is requested again, with the
    /// node, and the resources not yet received get their timers.
    pub fn stream_started(&mut self, now: Instant) {
        self.stream_up = true;
        self.first_on_stream = true;
        self.nonce.clear();
        for w in self.resources.values_mut() {
            w.deadline = w.cached.is_none().then_some(now + RESOURCE_TIMEOUT);
        }
        if !self.resources.is_empty() {
            self.pending = Some(PendingRequest::Subscription);
        }
    }

    /// The stream ended: timers stop (a resource is not missing because the
    /// server is unreachable) and cached values stay in use (gRFC A57).
    pub fn stream_failed(&mut self) {
        self.stream_up = false;
        self.pending = None;
        for w in self.resources.values_mut() {
            w.deadline = None;
        }
    }

    /// Takes in a response of this type.
    pub fn handle_response(&mut self, response: &DiscoveryResponse) {
        self.nonce.clone_from(&response.nonce);
        let mut errors = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, any) in response.resources.iter().enumerate() {
            let mut raw = Vec::new();
            let decoded = match any.unwrap_resource() {
                Err(e) => Err((None, format!("resource wrapper: {e}"))),
                Ok((_, inner)) if inner.type_url != self.kind.type_url() => Err((
                    None,
                    format!(
                        "type {} in a response of {}",
                        inner.type_url,
                        self.kind.type_url()
                    ),
                )),
                Ok((_, inner)) => {
                    let decoded = self.kind.decode(&inner.value);
                    raw = inner.value;
                    decoded
                }
            };
            match decoded {
                Ok((name, resource)) => {
                    if !seen.insert(name.clone()) {
                        errors.push(format!("{name}: sent twice in one response"));
                        continue;
                    }
                    self.accept(name, resource, raw, &response.version_info);
                }
                Err((name, reason)) => match &name {
                    Some(name) => {
                        seen.insert(name.clone());
                        errors.push(format!("{name}: {reason}"));
                        if let Some(w) = self.resources.get_mut(name) {
                            w.seen.failure = Some(UpdateFailure {
                                version: response.version_info.clone(),
                                details: reason.clone(),
                            });
                            self.events.push_back(AdsEvent::Invalid {
                                name: name.clone(),
                                reason,
                            });
                        }
                    }
                    None => errors.push(format!("resource {i}: {reason}")),
                },
            }
        }
        if self.kind.full_state() && !self.ignore_resource_deletion {
            for (name, w) in &mut self.resources {
                if w.cached.is_some() && !seen.contains(name) {
                    w.cached = None;
                    w.seen = Seen {
                        does_not_exist: true,
                        ..Seen::default()
                    };
                    self.events
                        .push_back(AdsEvent::DoesNotExist { name: name.clone() });
                }
            }
        }
        if errors.is_empty() {
            self.version.clone_from(&response.version_info);
            self.pending = Some(PendingRequest::Ack);
        } else {
            self.pending = Some(PendingRequest::Nack(errors.join("; ")));
        }
    }

    fn accept(&mut self, name: String, resource: T::Resource, raw: Vec<u8>, version: &str) {
        // A resource nobody subscribed to is not kept.
        let Some(w) = self.resources.get_mut(&name) else {
            return;
        };
        w.deadline = None;
        w.seen = Seen {
            version: version.to_owned(),
            raw: Some(raw),
            does_not_exist: false,
            failure: None,
        };
        if w.cached.as_ref() != Some(&resource) {
            w.cached = Some(resource.clone());
            self.events.push_back(AdsEvent::Changed { name, resource });
        }
    }

    /// The request to send now, if one is due and the stream is up.
    pub fn poll_request(&mut self) -> Option<DiscoveryRequest> {
        if !self.stream_up {
            return None;
        }
        let pending = self.pending.take()?;
        let error_detail = match pending {
            PendingRequest::Nack(message) => Some(RpcStatus {
                // INVALID_ARGUMENT, as grpc-go and C-core send.
                code: 3,
                message,
            }),
            PendingRequest::Subscription | PendingRequest::Ack => None,
        };
        let node = std::mem::take(&mut self.first_on_stream).then(|| self.node.clone());
        Some(DiscoveryRequest {
            version_info: self.version.clone(),
            node,
            resource_names: self.resources.keys().cloned().collect(),
            type_url: self.kind.type_url().to_owned(),
            response_nonce: self.nonce.clone(),
            error_detail,
        })
    }

    /// The next event for watchers.
    pub fn poll_event(&mut self) -> Option<AdsEvent<T::Resource>> {
        self.events.pop_front()
    }

    /// When [`AdsState::handle_timeout`] next has something to do.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.resources.values().filter_map(|w| w.deadline).min()
    }

    /// Resources whose time ran out do not exist.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (name, w) in &mut self.resources {
            if w.deadline.is_some_and(|d| d <= now) {
                w.deadline = None;
                w.seen.does_not_exist = true;
                self.events
                    .push_back(AdsEvent::DoesNotExist { name: name.clone() });
            }
        }
    }

    /// The cached value of `name`.
    pub fn cached(&self, name: &str) -> Option<&T::Resource> {
        self.resources.get(name)?.cached.as_ref()
    }

    /// The resource type's URL.
    pub fn type_url(&self) -> &'static str {
        self.kind.type_url()
    }

    /// The version last accepted (empty before any).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Every subscribed resource as it stands (CSDS, the admin page).
    pub fn dump(&self) -> Vec<ResourceDump> {
        self.resources
            .iter()
            .map(|(name, w)| {
                let seen = &w.seen;
                let status = if seen.does_not_exist {
                    ResourceStatus::DoesNotExist
                } else if seen.failure.is_some() {
                    ResourceStatus::Nacked
                } else if seen.raw.is_some() {
                    ResourceStatus::Acked
                } else {
                    ResourceStatus::Requested
                };
                ResourceDump {
                    type_url: self.kind.type_url(),
                    name: name.clone(),
                    version: seen.version.clone(),
                    status,
                    raw: seen.raw.clone(),
                    failure: seen.failure.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::wire::AnyResource;

    /// A test resource type: `name=value` text; a value of `bad` is invalid.
    struct Text(&'static str);

    impl ResourceType for Text {
        type Resource = String;
        fn type_url(&self) -> &'static str {
            self.0
        }
        fn decode(&self, bytes: &[u8]) -> Result<(String, String), (Option<String>, String)> {
            let text = std::str::from_utf8(bytes).map_err(|_| (None, "not UTF-8".to_owned()))?;
            let (name, value) = text.split_once('=').ok_or((None, "no name".to_owned()))?;
            if value == "bad" {
                return Err((Some(name.to_owned()), "value is bad".to_owned()));
            }
            Ok((name.to_owned(), value.to_owned()))
        }
    }

    fn response(
        kind: &'static str,
        version: &str,
        nonce: &str,
        items: &[&str],
    ) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            resources: items
                .iter()
                .map(|i| AnyResource {
                    type_url: kind.into(),
                    value: i.as_bytes().to_vec(),
                })
                .collect(),
            type_url: kind.into(),
            nonce: nonce.into(),
        }
    }

    fn events<T: ResourceType>(s: &mut AdsState<T>) -> Vec<AdsEvent<T::Resource>> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn node() -> NodeInfo {
        let mut n = NodeInfo::default();
        n.node.id = "n1".into();
        n
    }

    #[test]
    fn the_first_request_carries_the_node_and_an_ack_repeats_version_and_nonce() {
        let t0 = Instant::now();
        let mut s = AdsState::new(Text(LISTENER_TYPE), node(), false);
        s.subscribe("a", t0);
        assert_eq!(s.poll_request(), None, "no stream yet");
        s.stream_started(t0);
        let first = s.poll_request().unwrap();
        assert_eq!(first.node.as_ref().map(|n| n.node.id.as_str()), Some("n1"));
        assert_eq!(first.resource_names, ["a"]);
        assert_eq!(
            (first.version_info.as_str(), first.response_nonce.as_str()),
            ("", "")
        );
        assert_eq!(s.poll_request(), None, "nothing more is due");

        s.handle_response(&response(LISTENER_TYPE, "1", "n-1", &["a=x"]));
        assert_eq!(
            events(&mut s),
            [AdsEvent::Changed {
                name: "a".into(),
                resource: "x".into()
            }]
        );
        let ack = s.poll_request().unwrap();
        assert_eq!(
            (ack.version_info.as_str(), ack.response_nonce.as_str()),
            ("1", "n-1")
        );
        assert_eq!(
            ack.node, None,
            "only the stream's first request has the node"
        );
        assert_eq!(ack.error_detail, None);

        // The same value again is acknowledged but not reported.
        s.handle_response(&response(LISTENER_TYPE, "2", "n-2", &["a=x"]));
        assert_eq!(events(&mut s), []);
        assert_eq!(s.poll_request().unwrap().version_info, "2");
    }

    #[test]
    fn a_nack_keeps_the_old_version_names_the_bad_resource_and_uses_the_good_ones() {
        let t0 = Instant::now();
        let mut s = AdsState::new(Text(CLUSTER_TYPE), node(), false);
        s.stream_started(t0);
        s.subscribe("a", t0);
        s.subscribe("b", t0);
        let _ = s.poll_request();
        s.handle_response(&response(CLUSTER_TYPE, "1", "n1", &["a=1", "b=1"]));
        let _ = events(&mut s);
        let _ = s.poll_request();

        s.handle_response(&response(CLUSTER_TYPE, "2", "n2", &["a=2", "b=bad"]));
        assert_eq!(
            events(&mut s),
            [
                AdsEvent::Changed {
                    name: "a".into(),
                    resource: "2".into()
                },
                AdsEvent::Invalid {
                    name: "b".into(),
                    reason: "value is bad".into()
                },
            ]
        );
        let nack = s.poll_request().unwrap();
        assert_eq!(
            (nack.version_info.as_str(), nack.response_nonce.as_str()),
            ("1", "n2")
        );
        let detail = nack.error_detail.unwrap();
        assert_eq!(detail.code, 3);
        assert_eq!(detail.message, "b: value is bad");
        assert_eq!(
            s.cached("b"),
            Some(&"1".to_owned()),
            "the old b stays in use"
        );
        assert_eq!(s.version(), "1");
    }

    #[test]
    fn whole_state_types_delete_what_a_response_leaves_out_unless_told_not_to() {
        let t0 = Instant::now();
        for (ignore, deleted) in [(false, true), (true, false)] {
            let mut s = AdsState::new(Text(LISTENER_TYPE), node(), ignore);
            s.stream_started(t0);
            s.subscribe("a", t0);
            s.subscribe("b", t0);
            s.handle_response(&response(LISTENER_TYPE, "1", "n1", &["a=1", "b=1"]));
            let _ = events(&mut s);
            s.handle_response(&response(LISTENER_TYPE, "2", "n2", &["a=1"]));
            let got = events(&mut s);
            assert_eq!(
                got.contains(&AdsEvent::DoesNotExist { name: "b".into() }),
                deleted,
                "ignore_resource_deletion = {ignore}: {got:?}"
            );
            assert_eq!(s.cached("b").is_some(), !deleted);
        }
        // Route and endpoint responses hold only what changed: nothing is deleted.
        let mut s = AdsState::new(Text(ROUTE_TYPE), node(), false);
        s.stream_started(t0);
        s.subscribe("r1", t0);
        s.subscribe("r2", t0);
        s.handle_response(&response(ROUTE_TYPE, "1", "n1", &["r1=1", "r2=1"]));
        let _ = events(&mut s);
        s.handle_response(&response(ROUTE_TYPE, "2", "n2", &["r1=2"]));
        assert!(
            !events(&mut s)
                .iter()
                .any(|e| matches!(e, AdsEvent::DoesNotExist { .. }))
        );
    }

    #[test]
    fn a_resource_not_sent_in_time_does_not_exist_but_only_while_the_stream_is_up() {
        let t0 = Instant::now();
        let mut s = AdsState::new(Text(ENDPOINT_TYPE), node(), false);
        s.subscribe("e", t0);
        assert_eq!(s.next_timeout(), None, "no timer before the stream is up");
        s.stream_started(t0);
        assert_eq!(s.next_timeout(), Some(t0 + RESOURCE_TIMEOUT));
        s.handle_timeout(t0 + RESOURCE_TIMEOUT - Duration::from_millis(1));
        assert_eq!(events(&mut s), []);
        // The stream fails: no timer while the server cannot answer.
        s.stream_failed();
        assert_eq!(s.next_timeout(), None);
        // A new stream starts the timer again, from its start.
        let t1 = t0 + Duration::from_secs(60);
        s.stream_started(t1);
        assert_eq!(s.next_timeout(), Some(t1 + RESOURCE_TIMEOUT));
        s.handle_timeout(t1 + RESOURCE_TIMEOUT);
        assert_eq!(
            events(&mut s),
            [AdsEvent::DoesNotExist { name: "e".into() }]
        );
        assert_eq!(s.next_timeout(), None);
        // A resource that arrives in time stops its timer.
        s.subscribe("f", t1);
        s.handle_response(&response(ENDPOINT_TYPE, "1", "n1", &["f=1"]));
        assert_eq!(s.next_timeout(), None);
    }

    #[test]
    fn a_new_stream_resends_subscriptions_with_the_last_version_and_no_nonce() {
        let t0 = Instant::now();
        let mut s = AdsState::new(Text(CLUSTER_TYPE), node(), false);
        s.stream_started(t0);
        s.subscribe("a", t0);
        let _ = s.poll_request();
        s.handle_response(&response(CLUSTER_TYPE, "7", "n9", &["a=1"]));
        let _ = s.poll_request();
        s.stream_failed();
        assert_eq!(
            s.cached("a"),
            Some(&"1".to_owned()),
            "kept while the server is away"
        );
        s.stream_started(t0);
        let again = s.poll_request().unwrap();
        assert_eq!(again.version_info, "7");
        assert_eq!(again.response_nonce, "");
        assert!(again.node.is_some());
        assert_eq!(again.resource_names, ["a"]);
        assert_eq!(s.next_timeout(), None, "a cached resource has no timer");
    }

    #[test]
    fn subscriptions_change_the_request_and_a_new_watcher_hears_the_cached_value() {
        let t0 = Instant::now();
        let mut s = AdsState::new(Text(ROUTE_TYPE), node(), false);
        s.stream_started(t0);
        s.subscribe("b", t0);
        s.subscribe("a", t0);
        assert_eq!(s.poll_request().unwrap().resource_names, ["a", "b"]);
        s.handle_response(&response(ROUTE_TYPE, "1", "n1", &["a=1", "zz=unasked"]));
        let _ = events(&mut s);
        assert_eq!(s.cached("zz"), None, "unsubscribed resources are not kept");
        let _ = s.poll_request();
        s.subscribe("a", t0);
        assert_eq!(
            events(&mut s),
            [AdsEvent::Changed {
                name: "a".into(),
                resource: "1".into()
            }]
        );
        assert_eq!(
            s.poll_request(),
            None,
            "an existing subscription needs no request"
        );
        s.unsubscribe("b");
        let r = s.poll_request().unwrap();
        assert_eq!(r.resource_names, ["a"]);
        assert_eq!(r.response_nonce, "n1");
    }

    #[test]
    fn undecodable_and_mistyped_resources_are_nacked_by_position() {
        let t0 = Instant::now();
        let mut s = AdsState::new(Text(CLUSTER_TYPE), node(), false);
        s.stream_started(t0);
        s.subscribe("a", t0);
        let _ = s.poll_request();
        let mut r = response(CLUSTER_TYPE, "1", "n1", &["no-equals-sign", "a=1"]);
        r.resources.push(AnyResource {
            type_url: LISTENER_TYPE.into(),
            value: b"a=2".to_vec(),
        });
        r.resources.push(AnyResource {
            type_url: CLUSTER_TYPE.into(),
            value: b"a=3".to_vec(),
        });
        s.handle_response(&r);
        let detail = s.poll_request().unwrap().error_detail.unwrap().message;
        assert!(detail.contains("resource 0: no name"), "{detail}");
        assert!(
            detail.contains("resource 2: type type.googleapis.com/envoy.config.listener"),
            "{detail}"
        );
        assert!(detail.contains("a: sent twice in one response"), "{detail}");
        assert_eq!(
            s.cached("a"),
            Some(&"1".to_owned()),
            "the first copy is used"
        );
    }
}

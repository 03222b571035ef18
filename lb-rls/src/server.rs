//! The server side of the Route Lookup Service: a handler trait, a ready handler
//! that answers from a JSON routing table, and (feature `server`) `mount`, which
//! serves a handler at `/grpc.lookup.v1.RouteLookupService/RouteLookup` on
//! `lb-transport`'s synchronous gRPC server.
//!
//! ```text
//!  RLS client ══ RouteLookup ══> lb_transport::server::Server
//!                                   │ mount: decode RouteLookupRequest
//!                                   │        (malformed → INVALID_ARGUMENT)
//!                                   v
//!                          RouteLookupHandler::answer
//!                                   │ default: route_lookup, then encode
//!                                   v
//!                    RoutingTable (records, delays, fails, garbles)
//! ```
//!
//! The handler trait and [`RoutingTable`] need no transport and are always compiled.
//!
//! # The routing table's JSON
//!
//! ```json
//! {"routes": [{"keys": {"user": "alice"},
//!              "targets": ["backend-a:443", "backend-b:443"],
//!              "headerData": "for-alice"},
//!             {"keys": {}, "targets": ["global:443"]}],
//!  "default": {"targets": ["fallback:443"], "headerData": "fallback"}}
//! ```
//!
//! - `routes` (required, may be empty): every route has `keys` (required: an object
//!   whose values are strings), `targets` (required: an array of strings; may be
//!   empty, which RLS clients treat as a failed lookup) and `headerData` (optional
//!   string, default empty).
//! - A request matches a route when its key map **equals** the route's `keys`: the
//!   same keys with the same values, nothing more, nothing less. `"keys": {}` thus
//!   matches exactly the requests with an empty key map (a call no key builder
//!   covered). Two routes with equal `keys` are an error. `target_type`, `reason`
//!   and `stale_header_data` play no part in matching.
//! - `default` (optional): `targets` and `headerData`, the answer when no route
//!   matches. Without it, such a request fails with NOT_FOUND.
//! - Unknown fields are errors; every error names the field
//!   (`routes[1].keys.user: must be a string, not a number`).
//!
//! `xtask/peers/rls_server.py` (grpcio) reads the same format with the same rules,
//! so one file drives either server.
//!
//! # Examples
//!
//! ```
//! use lb_core::Code;
//! use lb_rls::keys::KeyMap;
//! use lb_rls::proto::{Reason, RouteLookupRequest};
//! use lb_rls::server::{RouteLookupHandler, RoutingTable};
//!
//! let table = RoutingTable::from_json(&serde_json::json!({
//!     "routes": [{"keys": {"user": "alice"}, "targets": ["a:443"], "headerData": "hd"}],
//! }))?;
//! let request = |user: &str| RouteLookupRequest {
//!     target_type: "grpc".into(),
//!     reason: Reason::Miss,
//!     stale_header_data: String::new(),
//!     key_map: [("user", user)].into_iter().collect::<KeyMap>(),
//! };
//! let response = table.route_lookup(&request("alice")).unwrap();
//! assert_eq!((response.targets, response.header_data), (vec!["a:443".to_string()], "hd".to_string()));
//! assert_eq!(table.route_lookup(&request("bob")).unwrap_err().code(), Code::NotFound);
//! assert_eq!(table.requests().len(), 2);
//! # Ok::<(), lb_core::ConfigError>(())
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use lb_core::config::{Fields, json_type};
use lb_core::{Code, ConfigError, Status};
use parking_lot::{Condvar, Mutex};
use serde_json::{Map, Value};

use crate::keys::KeyMap;
use crate::proto::{RouteLookupRequest, RouteLookupResponse};

/// Answers RouteLookup calls.
///
/// Implement [`route_lookup`](Self::route_lookup); a closure
/// `Fn(&RouteLookupRequest) -> Result<RouteLookupResponse, Status>` implements the
/// trait too. Handlers run on the server's worker threads, several at once.
pub trait RouteLookupHandler: Send + Sync + 'static {
    /// The answer to one request: targets and header data, or a status the call
    /// fails with.
    ///
    /// # Errors
    ///
    /// The status the RouteLookup call fails with.
    fn route_lookup(&self, request: &RouteLookupRequest) -> Result<RouteLookupResponse, Status>;

    /// The encoded answer, which is what `mount` sends. By default
    /// [`route_lookup`](Self::route_lookup)'s response, encoded. A handler that
    /// waits should wait with [`LookupCall::wait_cancelled`]; one that needs to send
    /// bytes no `RouteLookupResponse` encodes to (fault tests) overrides this.
    ///
    /// # Errors
    ///
    /// The status the RouteLookup call fails with.
    fn answer(
        &self,
        request: &RouteLookupRequest,
        call: &LookupCall<'_>,
    ) -> Result<Vec<u8>, Status> {
        let _ = call;
        self.route_lookup(request).map(|r| r.to_bytes())
    }
}

impl<F> RouteLookupHandler for F
where
    F: Fn(&RouteLookupRequest) -> Result<RouteLookupResponse, Status> + Send + Sync + 'static,
{
    fn route_lookup(&self, request: &RouteLookupRequest) -> Result<RouteLookupResponse, Status> {
        self(request)
    }
}

/// What a handler knows of the call it answers besides the request: its deadline,
/// and whether it was cancelled.
pub struct LookupCall<'a> {
    deadline: Option<Instant>,
    wait_cancelled: &'a (dyn Fn(Instant) -> bool + 'a),
}

impl<'a> LookupCall<'a> {
    /// A call with `deadline` whose cancellation `wait_cancelled(until)` waits for:
    /// it blocks until the call is cancelled (returning `true`) or `until` passes
    /// (returning `false`).
    pub fn new(
        deadline: Option<Instant>,
        wait_cancelled: &'a (dyn Fn(Instant) -> bool + 'a),
    ) -> Self {
        Self {
            deadline,
            wait_cancelled,
        }
    }

    /// The client's deadline, if it sent one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Blocks until the call is cancelled (returns `true`) or `until` passes
    /// (returns `false`).
    pub fn wait_cancelled(&self, until: Instant) -> bool {
        (self.wait_cancelled)(until)
    }
}

impl LookupCall<'static> {
    /// A call with no deadline that is never cancelled, for calling a handler
    /// directly: [`wait_cancelled`](Self::wait_cancelled) just sleeps.
    pub fn detached() -> Self {
        Self::new(None, &sleep_until)
    }
}

fn sleep_until(until: Instant) -> bool {
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    false
}

impl fmt::Debug for LookupCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupCall")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// One route of a [`RoutingTable`]: the key map it matches and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    keys: KeyMap,
    answer: RouteLookupResponse,
}

/// The fields a route may have.
const ROUTE_FIELDS: &[&str] = &["keys", "targets", "headerData"];

/// The parsed JSON: routes in file order, and the default answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Table {
    routes: Vec<Route>,
    default: Option<RouteLookupResponse>,
}

impl Table {
    fn parse(json: &Value) -> Result<Self, ConfigError> {
        let fields = Fields::new(json, "")?;
        reject_unknown(json, "", &["routes", "default"])?;
        let routes_json = fields
            .array("routes")?
            .ok_or_else(|| ConfigError::new("routes", "is required"))?;
        let mut routes: Vec<Route> = Vec::with_capacity(routes_json.len());
        for (i, route) in routes_json.iter().enumerate() {
            let field = format!("routes[{i}]");
            reject_unknown(route, &field, ROUTE_FIELDS)?;
            let keys = parse_route_keys(route, &field)?;
            if let Some(first) = routes.iter().position(|r| r.keys == keys) {
                return Err(ConfigError::new(
                    format!("{field}.keys"),
                    format!("same keys as routes[{first}]"),
                ));
            }
            let answer = parse_answer(route, &field, ROUTE_FIELDS)?;
            routes.push(Route { keys, answer });
        }
        let default = match fields.get("default") {
            None => None,
            Some(d) => Some(parse_answer(d, "default", &["targets", "headerData"])?),
        };
        Ok(Self { routes, default })
    }

    fn lookup(&self, keys: &KeyMap) -> Option<&RouteLookupResponse> {
        self.routes
            .iter()
            .find(|r| r.keys == *keys)
            .map(|r| &r.answer)
            .or(self.default.as_ref())
    }
}

/// The `keys` of route `field`: required, an object of strings.
fn parse_route_keys(route: &Value, field: &str) -> Result<KeyMap, ConfigError> {
    let fields = Fields::new(route, field)?;
    let keys = fields
        .object("keys")
        .map_err(|e| e.within(field))?
        .ok_or_else(|| ConfigError::new(format!("{field}.keys"), "is required"))?;
    keys.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(ConfigError::new(
                format!("{field}.keys.{k}"),
                format!("must be a string, not {}", json_type(other)),
            )),
        })
        .collect()
}

/// `targets` (required) and `headerData` (optional) of the object `field`, which
/// may hold only the fields in `allowed`.
fn parse_answer(
    json: &Value,
    field: &str,
    allowed: &[&str],
) -> Result<RouteLookupResponse, ConfigError> {
    let fields = Fields::new(json, field)?;
    reject_unknown(json, field, allowed)?;
    let targets = fields
        .array("targets")
        .map_err(|e| e.within(field))?
        .ok_or_else(|| ConfigError::new(format!("{field}.targets"), "is required"))?
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_str().map(str::to_owned).ok_or_else(|| {
                ConfigError::new(
                    format!("{field}.targets[{i}]"),
                    format!("must be a string, not {}", json_type(t)),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let header_data = fields
        .string("headerData")
        .map_err(|e| e.within(field))?
        .unwrap_or_default()
        .to_owned();
    Ok(RouteLookupResponse {
        targets,
        header_data,
    })
}

/// Fails on the first field of the object `json` (at `field`) not in `allowed`.
fn reject_unknown(json: &Value, field: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    let map: &Map<String, Value> = lb_core::config::as_object(json, field)?;
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(name) => Err(ConfigError::new(name.as_str(), "unknown field").within(field)),
        None => Ok(()),
    }
}

/// The mutable part of a [`RoutingTable`].
#[derive(Debug, Default)]
struct State {
    table: Table,
    requests: Vec<RouteLookupRequest>,
    failure: Option<Status>,
    delay: Option<Duration>,
    garbage: Option<Vec<u8>>,
}

/// A [`RouteLookupHandler`] that answers from a JSON routing table (format in the
/// [module docs](self)), records every request it serves and can be told to
/// misbehave.
///
/// Every request is recorded, in arrival order, before anything else happens to
/// it. Then, for calls served through `mount` (that is, through
/// [`answer`](RouteLookupHandler::answer)):
///
/// 1. with a [delay](Self::set_delay), the handler waits that long first (a call
///    cancelled meanwhile fails with CANCELLED, which its client never sees);
/// 2. with a [failure](Self::set_failure) set, the call fails with it;
/// 3. with [garbage](Self::set_garbage) set, those bytes are the response message;
/// 4. otherwise the table answers: the matching route, else the default, else
///    NOT_FOUND.
///
/// [`route_lookup`](RouteLookupHandler::route_lookup), called directly, records
/// and applies the failure and the table; it neither waits nor sends garbage.
///
/// Share it as `Arc<RoutingTable>`: one clone goes to `mount` (as
/// `Arc<dyn RouteLookupHandler>`), the test keeps the other.
#[derive(Debug)]
pub struct RoutingTable {
    state: Mutex<State>,
    /// Notified on every recorded request.
    recorded: Condvar,
}

impl RoutingTable {
    /// A table from its JSON form.
    ///
    /// # Errors
    ///
    /// The JSON breaks a rule of the format; the error names the field.
    pub fn from_json(json: &Value) -> Result<Self, ConfigError> {
        let table = Table::parse(json)?;
        Ok(Self {
            state: Mutex::new(State {
                table,
                ..State::default()
            }),
            recorded: Condvar::new(),
        })
    }

    /// A table from JSON text.
    ///
    /// # Errors
    ///
    /// The text is not JSON, or breaks a rule of the format.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::from_json(&lb_core::config::parse_json(text)?)
    }

    /// Replaces the routes and the default with those of `json`, for the requests
    /// that come after. The recorded requests and the faults stay.
    ///
    /// # Errors
    ///
    /// As [`from_json`](Self::from_json); the table is then unchanged.
    pub fn replace(&self, json: &Value) -> Result<(), ConfigError> {
        let table = Table::parse(json)?;
        self.state.lock().table = table;
        Ok(())
    }

    /// The answer the table gives for `keys` (the matching route's, else the
    /// default), without recording anything or applying faults.
    pub fn lookup(&self, keys: &KeyMap) -> Option<RouteLookupResponse> {
        self.state.lock().table.lookup(keys).cloned()
    }

    /// Every request served so far, in arrival order.
    pub fn requests(&self) -> Vec<RouteLookupRequest> {
        self.state.lock().requests.clone()
    }

    /// Every request served so far, in arrival order, forgetting them.
    pub fn take_requests(&self) -> Vec<RouteLookupRequest> {
        std::mem::take(&mut self.state.lock().requests)
    }

    /// Waits (at most `timeout`) until at least `n` requests are recorded. Returns
    /// them all (`Ok`), or what was recorded when the time ran out (`Err`).
    ///
    /// # Errors
    ///
    /// Fewer than `n` requests arrived in time; the error holds those that did.
    pub fn wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RouteLookupRequest>, Vec<RouteLookupRequest>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        while state.requests.len() < n {
            if self.recorded.wait_until(&mut state, deadline).timed_out() {
                return if state.requests.len() >= n {
                    Ok(state.requests.clone())
                } else {
                    Err(state.requests.clone())
                };
            }
        }
        Ok(state.requests.clone())
    }

    /// Fails every call with `status` from now on (`None`: answer again).
    pub fn set_failure(&self, status: Option<Status>) {
        self.state.lock().failure = status;
    }

    /// Waits `delay` before answering each call from now on (`None`: answer at
    /// once). The wait ends early when the call is cancelled.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state.lock().delay = delay;
    }

    /// Answers every call with the message `bytes` from now on, whatever the table
    /// says (`None`: encode the table's answers again). For fault tests: bytes that
    /// are no valid `RouteLookupResponse`, such as `b"\x1a\x05a"`.
    pub fn set_garbage(&self, bytes: Option<Vec<u8>>) {
        self.state.lock().garbage = bytes;
    }

    /// Records `request`; returns the delay and failure to apply.
    fn record(&self, request: &RouteLookupRequest) -> (Option<Duration>, Option<Status>) {
        let mut state = self.state.lock();
        state.requests.push(request.clone());
        self.recorded.notify_all();
        (state.delay, state.failure.clone())
    }

    /// The table's answer for `keys`, or NOT_FOUND naming them (cut short past
    /// [`MESSAGE_KEYS_MAX`] bytes: the message travels in a header).
    fn answer_from_table(&self, keys: &KeyMap) -> Result<RouteLookupResponse, Status> {
        self.lookup(keys).ok_or_else(|| {
            let mut shown = keys.to_string();
            if shown.len() > MESSAGE_KEYS_MAX {
                let mut cut = MESSAGE_KEYS_MAX;
                while !shown.is_char_boundary(cut) {
                    cut -= 1;
                }
                shown.truncate(cut);
                shown.push_str("...");
            }
            Status::new(Code::NotFound, format!("no route for keys {{{shown}}}"))
        })
    }
}

/// How much of a key map a NOT_FOUND message shows.
const MESSAGE_KEYS_MAX: usize = 512;

impl RouteLookupHandler for RoutingTable {
    fn route_lookup(&self, request: &RouteLookupRequest) -> Result<RouteLookupResponse, Status> {
        let (_, failure) = self.record(request);
        if let Some(status) = failure {
            return Err(status);
        }
        self.answer_from_table(&request.key_map)
    }

    fn answer(
        &self,
        request: &RouteLookupRequest,
        call: &LookupCall<'_>,
    ) -> Result<Vec<u8>, Status> {
        let (delay, _) = self.record(request);
        if let Some(delay) = delay {
            if call.wait_cancelled(Instant::now() + delay) {
                return Err(Status::cancelled("the call was cancelled during the delay"));
            }
        }
        // The faults as they are now: a test may change them during the delay.
        let (failure, garbage) = {
            let state = self.state.lock();
            (state.failure.clone(), state.garbage.clone())
        };
        if let Some(status) = failure {
            return Err(status);
        }
        if let Some(bytes) = garbage {
            return Ok(bytes);
        }
        self.answer_from_table(&request.key_map)
            .map(|r| r.to_bytes())
    }
}

/// Serves `handler` at [`ROUTE_LOOKUP_METHOD`](crate::proto::ROUTE_LOOKUP_METHOD)
/// on the server `builder` will start: the request message is decoded with
/// [`RouteLookupRequest::decode`] (a malformed one fails the call with
/// INVALID_ARGUMENT and the decode error, without reaching the handler), and the
/// handler's [`answer`](RouteLookupHandler::answer) is the response message.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lb_rls::server::{self, RoutingTable};
/// use lb_transport::server::Server;
///
/// let table = Arc::new(RoutingTable::from_json(&serde_json::json!({"routes": []}))?);
/// let server = server::mount(Server::builder(), table.clone())
///     .workers(2)
///     .bind("127.0.0.1:0")?;
/// assert_ne!(server.local_addr().port(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub fn mount(
    builder: lb_transport::server::ServerBuilder,
    handler: std::sync::Arc<dyn RouteLookupHandler>,
) -> lb_transport::server::ServerBuilder {
    use lb_transport::server::{Request, Response};
    builder.unary(crate::proto::ROUTE_LOOKUP_METHOD, move |req: Request| {
        let request = RouteLookupRequest::decode(&req.message)
            .map_err(|e| Status::invalid_argument(format!("malformed RouteLookupRequest: {e}")))?;
        let wait = |until: Instant| req.wait_cancelled(until);
        let call = LookupCall::new(req.deadline, &wait);
        handler.answer(&request, &call).map(Response::new)
    })
}

/// Starts an RLS server serving `handler` on `addr` (`127.0.0.1:0` picks a free
/// port): [`mount`] on a default server builder.
///
/// # Errors
///
/// As [`ServerBuilder::bind`](lb_transport::server::ServerBuilder::bind).
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub fn bind(
    addr: impl std::net::ToSocketAddrs,
    handler: std::sync::Arc<dyn RouteLookupHandler>,
) -> std::io::Result<lb_transport::server::Server> {
    mount(lb_transport::server::Server::builder(), handler).bind(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Reason;
    use serde_json::json;

    fn request(pairs: &[(&str, &str)]) -> RouteLookupRequest {
        RouteLookupRequest {
            target_type: "grpc".into(),
            reason: Reason::Miss,
            stale_header_data: String::new(),
            key_map: pairs.iter().copied().collect(),
        }
    }

    fn table(json: Value) -> RoutingTable {
        RoutingTable::from_json(&json).expect("valid table")
    }

    fn answer(targets: &[&str], header_data: &str) -> RouteLookupResponse {
        RouteLookupResponse {
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            header_data: header_data.into(),
        }
    }

    #[test]
    fn a_route_matches_only_an_equal_key_map() {
        let t = table(json!({"routes": [
            {"keys": {"user": "alice"}, "targets": ["a1", "a2"], "headerData": "hd-a"},
            {"keys": {"user": "alice", "method": "Get"}, "targets": ["a-get"]},
            {"keys": {}, "targets": ["empty"]},
        ]}));
        let ok = |pairs: &[(&str, &str)]| t.route_lookup(&request(pairs)).unwrap();
        assert_eq!(ok(&[("user", "alice")]), answer(&["a1", "a2"], "hd-a"));
        assert_eq!(
            ok(&[("method", "Get"), ("user", "alice")]),
            answer(&["a-get"], "")
        );
        assert_eq!(ok(&[]), answer(&["empty"], ""));
        // A superset, a subset, another value, another key: no match.
        for pairs in [
            &[("user", "alice"), ("method", "Put")][..],
            &[("method", "Get")],
            &[("user", "Alice")],
            &[("User", "alice")],
        ] {
            let err = t.route_lookup(&request(pairs)).unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "{pairs:?}");
        }
        let err = t.route_lookup(&request(&[("user", "bob")])).unwrap_err();
        assert_eq!(err.message(), "no route for keys {user=bob}");
        // A long key map is cut short in the message (on a character boundary).
        let long = "é".repeat(600);
        let err = t.route_lookup(&request(&[("k", &long)])).unwrap_err();
        let want = format!("no route for keys {{k={}...}}", "é".repeat(255));
        assert_eq!(err.message(), want);
    }

    #[test]
    fn target_type_reason_and_stale_data_do_not_matter() {
        let t = table(json!({"routes": [{"keys": {"k": "v"}, "targets": ["t"]}]}));
        let mut r = request(&[("k", "v")]);
        r.target_type = "other".into();
        r.reason = Reason::Stale;
        r.stale_header_data = "old".into();
        assert_eq!(t.route_lookup(&r).unwrap(), answer(&["t"], ""));
    }

    #[test]
    fn the_default_answers_what_no_route_matches() {
        let t = table(json!({
            "routes": [{"keys": {"k": "v"}, "targets": ["t"]}],
            "default": {"targets": ["fallback"], "headerData": "fb"},
        }));
        assert_eq!(
            t.route_lookup(&request(&[("k", "w")])).unwrap(),
            answer(&["fallback"], "fb")
        );
        assert_eq!(
            t.route_lookup(&request(&[])).unwrap(),
            answer(&["fallback"], "fb")
        );
        assert_eq!(
            t.route_lookup(&request(&[("k", "v")])).unwrap(),
            answer(&["t"], "")
        );
        // Empty targets are allowed: the client's problem, as a fault.
        let t = table(json!({"routes": [], "default": {"targets": []}}));
        assert_eq!(t.route_lookup(&request(&[])).unwrap(), answer(&[], ""));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!([]), "must be an object, not an array"),
            (json!({}), "routes: is required"),
            (json!({"routes": null}), "routes: is required"),
            (
                json!({"routes": {}}),
                "routes: must be an array, not an object",
            ),
            (json!({"routes": [], "extra": 1}), "extra: unknown field"),
            (
                json!({"routes": [7]}),
                "routes[0]: must be an object, not a number",
            ),
            (
                json!({"routes": [{"targets": []}]}),
                "routes[0].keys: is required",
            ),
            (
                json!({"routes": [{"keys": [], "targets": []}]}),
                "routes[0].keys: must be an object, not an array",
            ),
            (
                json!({"routes": [{"keys": {}, "targets": []}, {"keys": {"user": 1}, "targets": []}]}),
                "routes[1].keys.user: must be a string, not a number",
            ),
            (
                json!({"routes": [{"keys": {"a": "1"}}]}),
                "routes[0].targets: is required",
            ),
            (
                json!({"routes": [{"keys": {}, "targets": "t"}]}),
                "routes[0].targets: must be an array, not a string",
            ),
            (
                json!({"routes": [{"keys": {}, "targets": ["t", null]}]}),
                "routes[0].targets[1]: must be a string, not null",
            ),
            (
                json!({"routes": [{"keys": {}, "targets": [], "headerData": 5}]}),
                "routes[0].headerData: must be a string, not a number",
            ),
            (
                json!({"routes": [{"keys": {}, "targets": [], "header_data": "x"}]}),
                "routes[0].header_data: unknown field",
            ),
            (
                json!({"routes": [
                    {"keys": {"a": "1", "b": "2"}, "targets": []},
                    {"keys": {}, "targets": []},
                    {"keys": {"b": "2", "a": "1"}, "targets": ["x"]},
                ]}),
                "routes[2].keys: same keys as routes[0]",
            ),
            (
                json!({"routes": [], "default": "x"}),
                "default: must be an object, not a string",
            ),
            (
                json!({"routes": [], "default": {}}),
                "default.targets: is required",
            ),
            (
                json!({"routes": [], "default": {"keys": {}, "targets": []}}),
                "default.keys: unknown field",
            ),
        ];
        for (json, want) in cases {
            let err = RoutingTable::from_json(&json).unwrap_err();
            assert_eq!(err.to_string(), want, "{json}");
        }
        let err = RoutingTable::parse("{\"routes\": [").unwrap_err();
        assert!(err.to_string().starts_with("invalid JSON"), "{err}");
    }

    #[test]
    fn every_request_is_recorded_in_order_even_failed_ones() {
        let t = table(json!({"routes": [{"keys": {"k": "1"}, "targets": ["t"]}]}));
        let mut stale = request(&[("k", "2")]);
        stale.reason = Reason::Stale;
        stale.stale_header_data = "old".into();
        let _ = t.route_lookup(&request(&[("k", "1")]));
        let _ = t.route_lookup(&stale);
        t.set_failure(Some(Status::unavailable("down")));
        let _ = t.route_lookup(&request(&[]));
        assert_eq!(
            t.requests(),
            [request(&[("k", "1")]), stale.clone(), request(&[])]
        );
        assert_eq!(t.take_requests().len(), 3);
        assert!(t.requests().is_empty());
        assert_eq!(
            t.wait_for_requests(1, Duration::from_millis(10)),
            Err(vec![])
        );
    }

    #[test]
    fn wait_for_requests_wakes_when_they_arrive() {
        let t = std::sync::Arc::new(table(json!({"routes": []})));
        let sender = {
            let t = t.clone();
            std::thread::spawn(move || {
                for i in 0..3 {
                    let _ = t.route_lookup(&request(&[("i", &i.to_string())]));
                }
            })
        };
        let got = t.wait_for_requests(3, Duration::from_secs(20)).unwrap();
        assert_eq!(got.len(), 3);
        sender.join().unwrap();
    }

    #[test]
    fn failure_garbage_and_delay_apply_until_cleared() {
        let t = table(json!({"routes": [{"keys": {}, "targets": ["t"], "headerData": "hd"}]}));
        let call = LookupCall::detached();
        let good = answer(&["t"], "hd").to_bytes();
        assert_eq!(t.answer(&request(&[]), &call).unwrap(), good);

        t.set_failure(Some(Status::new(Code::PermissionDenied, "no")));
        let err = t.answer(&request(&[]), &call).unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::PermissionDenied, "no"));
        assert_eq!(t.route_lookup(&request(&[])).unwrap_err(), err);
        t.set_failure(None);

        t.set_garbage(Some(b"\x1a\x05a".to_vec()));
        assert_eq!(t.answer(&request(&[]), &call).unwrap(), b"\x1a\x05a");
        // Called directly, the handler cannot send bytes: the table answers.
        assert_eq!(t.route_lookup(&request(&[])).unwrap(), answer(&["t"], "hd"));
        t.set_garbage(None);

        t.set_delay(Some(Duration::from_millis(30)));
        let started = Instant::now();
        assert_eq!(t.answer(&request(&[]), &call).unwrap(), good);
        assert!(started.elapsed() >= Duration::from_millis(30));
        t.set_delay(None);
        assert_eq!(t.requests().len(), 6);
    }

    #[test]
    fn a_call_cancelled_during_the_delay_fails_with_cancelled_at_once() {
        let t = table(json!({"routes": [{"keys": {}, "targets": ["t"]}]}));
        t.set_delay(Some(Duration::from_secs(3600)));
        let cancelled = |_: Instant| true;
        let call = LookupCall::new(None, &cancelled);
        let err = t.answer(&request(&[]), &call).unwrap_err();
        assert_eq!(err.code(), Code::Cancelled);
        assert_eq!(t.requests().len(), 1);
    }

    #[test]
    fn replace_swaps_the_routes_and_keeps_the_rest() {
        let t = table(json!({"routes": [{"keys": {}, "targets": ["old"]}]}));
        let _ = t.route_lookup(&request(&[]));
        t.replace(&json!({"routes": [{"keys": {}, "targets": ["new"], "headerData": "v2"}]}))
            .unwrap();
        assert_eq!(t.lookup(&KeyMap::new()), Some(answer(&["new"], "v2")));
        let err = t.replace(&json!({"routes": 1})).unwrap_err();
        assert_eq!(err.field(), "routes");
        assert_eq!(t.lookup(&KeyMap::new()), Some(answer(&["new"], "v2")));
        assert_eq!(t.requests().len(), 1);
    }

    #[test]
    fn a_closure_is_a_handler() {
        let h = |r: &RouteLookupRequest| {
            Ok(RouteLookupResponse {
                targets: vec![r.key_map.to_string()],
                header_data: String::new(),
            })
        };
        let bytes = h
            .answer(&request(&[("a", "b")]), &LookupCall::detached())
            .unwrap();
        assert_eq!(
            RouteLookupResponse::decode(&bytes).unwrap(),
            answer(&["a=b"], "")
        );
        let boxed: std::sync::Arc<dyn RouteLookupHandler> = std::sync::Arc::new(h);
        assert!(boxed.route_lookup(&request(&[])).is_ok());
    }
}

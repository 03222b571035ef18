//! CSDS (gRFC A40): what the xDS clients of this process hold, for people and
//! tools (`grpcdebug`, Envoy's `ClientStatusDiscoveryService`).
//!
//! - [`answer`] turns a `ClientStatusRequest` into a `ClientStatusResponse`
//!   with one `ClientConfig` per client: its node and, per subscribed
//!   resource, a `GenericXdsConfig` (type URL, name, version, the value in
//!   use as an `Any` unless the request sets `exclude_resource_contents`, the
//!   client status: REQUESTED, DOES_NOT_EXIST, ACKED or NACKED, and the last
//!   rejection as `error_state`). Messages are coded by hand on
//!   `lb_core::protowire`.
//! - With the `server` feature, [`mount`] serves `FetchClientStatus` and
//!   `StreamClientStatus` on lb-transport's server.
//! - [`dump_json`] is the same for the admin page (`/api/xds`).

use std::sync::Arc;
use std::time::Duration;

use lb_core::Status;
use lb_core::protowire::{DecodeError, Reader, put_bytes, put_string, put_tag, put_varint, wire};
use serde_json::{Value, json};

use super::ads::ResourceDump;
use super::client::XdsClient;
use super::wire::NodeInfo;

/// The unary method.
pub const FETCH_METHOD: &str =
    "/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus";

/// The bidi method: one response per request.
pub const STREAM_METHOD: &str =
    "/envoy.service.status.v3.ClientStatusDiscoveryService/StreamClientStatus";

/// How long a dump waits for a client's thread.
const DUMP_WAIT: Duration = Duration::from_secs(1);

/// Answers one encoded `ClientStatusRequest` about `clients`.
///
/// # Errors
///
/// INVALID_ARGUMENT for bytes that are not a request; UNAVAILABLE when a
/// client does not answer.
pub fn answer(clients: &[Arc<XdsClient>], request: &[u8]) -> Result<Vec<u8>, Status> {
    let exclude_contents = decode_request(request)
        .map_err(|e| Status::invalid_argument(format!("bad ClientStatusRequest: {e}")))?;
    let mut dumps = Vec::with_capacity(clients.len());
    for c in clients {
        dumps.push((c.node().clone(), c.dump(DUMP_WAIT)?));
    }
    Ok(encode_response(&dumps, exclude_contents))
}

/// `ClientStatusRequest.exclude_resource_contents` (field 3); node matchers
/// (1) and the node (2) are read past: this process answers for all its
/// clients.
///
/// # Errors
///
/// The bytes are not a valid encoding.
pub fn decode_request(bytes: &[u8]) -> Result<bool, DecodeError> {
    let mut exclude = false;
    let mut r = Reader::new(bytes, 0);
    while let Some((field, wire_type)) = r.tag()? {
        match (field, wire_type) {
            (3, wire::VARINT) => exclude = r.varint(field)? != 0,
            _ => r.skip(field, wire_type)?,
        }
    }
    Ok(exclude)
}

/// A `ClientStatusResponse` with a `ClientConfig` per (node, resources).
pub fn encode_response(
    clients: &[(NodeInfo, Vec<ResourceDump>)],
    exclude_contents: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (node, resources) in clients {
        let mut config = Vec::new();
        put_bytes(&mut config, 1, &node.encode());
        for r in resources {
            put_bytes(&mut config, 3, &generic_config(r, exclude_contents));
        }
        put_bytes(&mut out, 1, &config);
    }
    out
}

/// A `GenericXdsConfig`.
fn generic_config(r: &ResourceDump, exclude_contents: bool) -> Vec<u8> {
    let mut b = Vec::new();
    put_string(&mut b, 1, r.type_url);
    put_string(&mut b, 2, &r.name);
    if !r.version.is_empty() {
        put_string(&mut b, 3, &r.version);
    }
    if let (Some(raw), false) = (&r.raw, exclude_contents) {
        let mut any = Vec::new();
        put_string(&mut any, 1, r.type_url);
        put_bytes(&mut any, 2, raw);
        put_bytes(&mut b, 4, &any);
    }
    put_tag(&mut b, 7, wire::VARINT);
    put_varint(&mut b, r.status.as_i32() as u64);
    if let Some(f) = &r.failure {
        // UpdateFailureState { details = 3, version_info = 4 }
        let mut state = Vec::new();
        put_string(&mut state, 3, &f.details);
        put_string(&mut state, 4, &f.version);
        put_bytes(&mut b, 8, &state);
    }
    b
}

/// The clients' resources as JSON, for the admin page's `/api/xds`: per
/// client its node id and, per resource, type (the type URL's last part),
/// name, version, status and the last rejection.
pub fn dump_json(clients: &[Arc<XdsClient>]) -> Value {
    let clients: Vec<Value> = clients
        .iter()
        .map(|c| {
            let resources = match c.dump(DUMP_WAIT) {
                Ok(all) => all
                    .iter()
                    .map(|r| {
                        json!({
                            "type": r.type_url.rsplit('.').next().unwrap_or(r.type_url),
                            "name": r.name,
                            "version": r.version,
                            "status": r.status.name(),
                            "error": r.failure.as_ref().map(|f| json!({
                                "version": f.version, "details": f.details
                            })),
                        })
                    })
                    .collect(),
                Err(s) => vec![json!({"error": s.message()})],
            };
            json!({"node": c.node().node.id, "resources": resources})
        })
        .collect();
    json!({ "clients": clients })
}

/// Serves CSDS for `clients` on `builder`: `FetchClientStatus`, and
/// `StreamClientStatus` answering each request as it comes.
#[cfg(feature = "server")]
pub fn mount(
    builder: lb_transport::server::ServerBuilder,
    clients: Vec<Arc<XdsClient>>,
) -> lb_transport::server::ServerBuilder {
    let clients = Arc::new(clients);
    let fetch = Arc::clone(&clients);
    builder
        .unary(FETCH_METHOD, move |request| {
            answer(&fetch, &request.message).map(lb_transport::server::Response::new)
        })
        .bidi_streaming(STREAM_METHOD, move |call| {
            while let Some(request) = call.recv()? {
                let response = answer(&clients, &request)?;
                call.send(&response)?;
            }
            Ok(())
        })
}

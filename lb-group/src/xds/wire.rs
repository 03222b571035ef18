//! The Aggregated Discovery Service's messages on the wire (state of the world,
//! `envoy.service.discovery.v3`), written with lb-core's [`protowire`]: a
//! [`DiscoveryRequest`] a client sends and the [`DiscoveryResponse`] it reads,
//! with the `Node` it identifies itself by and the `google.rpc.Status` of a NACK.
//!
//! ```
//! use lb_group::xds::wire::{DiscoveryRequest, DiscoveryResponse};
//! let request = DiscoveryRequest {
//!     type_url: "type.googleapis.com/envoy.config.listener.v3.Listener".into(),
//!     resource_names: vec!["svc".into()],
//!     ..DiscoveryRequest::default()
//! };
//! let bytes = request.encode();
//! assert_eq!(DiscoveryRequest::decode(&bytes)?, request);
//! assert!(DiscoveryResponse::decode(&[0xff]).is_err());
//! # Ok::<(), lb_core::DecodeError>(())
//! ```
//!
//! [`protowire`]: lb_core::protowire

use lb_core::DecodeError;
use lb_core::protowire::{put_bytes, put_double, put_string, put_tag, put_varint, wire};
use serde_json::{Map, Value};

use super::bootstrap::Node;
use super::pb;

/// The type URL that wraps a resource with its name (`envoy.service.discovery.v3.Resource`).
pub const RESOURCE_WRAPPER_TYPE: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// A request for resources of one type, and the ACK or NACK of a response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiscoveryRequest {
    /// The version last accepted for this type (empty before any).
    pub version_info: String,
    /// Who asks: sent on a stream's first request only.
    pub node: Option<NodeInfo>,
    /// Every resource of this type the client wants.
    pub resource_names: Vec<String>,
    /// The resource type.
    pub type_url: String,
    /// The nonce of the response this request answers (empty before any on
    /// this stream).
    pub response_nonce: String,
    /// Set on a NACK: why the response was rejected.
    pub error_detail: Option<RpcStatus>,
}

/// The node of a request: the bootstrap's node and this client's name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeInfo {
    /// The bootstrap's node.
    pub node: Node,
    /// `user_agent_name`, for example `lb-rs`.
    pub user_agent_name: String,
    /// `user_agent_version`.
    pub user_agent_version: String,
    /// `client_features` (gRFC A27: `envoy.lb.does_not_support_overprovisioning`).
    pub client_features: Vec<String>,
}

/// A `google.rpc.Status`: a code and a message (details are not kept).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RpcStatus {
    /// The gRPC status code.
    pub code: i32,
    /// What went wrong.
    pub message: String,
}

/// A response: every resource of one type the server has for this client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryResponse {
    /// The version of this set of resources.
    pub version_info: String,
    /// The resources, as `Any`s.
    pub resources: Vec<AnyResource>,
    /// Their type.
    pub type_url: String,
    /// The nonce the client's ACK or NACK repeats.
    pub nonce: String,
}

/// A `google.protobuf.Any`: a type URL and the encoded message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnyResource {
    /// The message's type.
    pub type_url: String,
    /// The encoded message.
    pub value: Vec<u8>,
}

impl DiscoveryRequest {
    /// The request's wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        put_nonempty(&mut buf, 1, &self.version_info);
        if let Some(node) = &self.node {
            put_bytes(&mut buf, 2, &node.encode());
        }
        for name in &self.resource_names {
            put_string(&mut buf, 3, name);
        }
        put_nonempty(&mut buf, 4, &self.type_url);
        put_nonempty(&mut buf, 5, &self.response_nonce);
        if let Some(status) = &self.error_detail {
            let mut s = Vec::new();
            if status.code != 0 {
                put_tag(&mut s, 1, wire::VARINT);
                // int32 on the wire: negative values as ten-byte varints.
                put_varint(&mut s, i64::from(status.code) as u64);
            }
            put_nonempty(&mut s, 2, &status.message);
            put_bytes(&mut buf, 6, &s);
        }
        buf
    }

    /// Reads a request (what a management server does; tests use it to check
    /// what a client sent). The node is read as its id only.
    ///
    /// # Errors
    ///
    /// The bytes are not a valid message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        pb::fields(bytes, 0, |field, wt, r| {
            match (field, wt) {
                (1, wire::LEN) => out.version_info = r.string(field)?,
                (2, wire::LEN) => {
                    let (base, node) = r.len_delimited(field)?;
                    out.node = Some(NodeInfo::decode(node, base)?);
                }
                (3, wire::LEN) => out.resource_names.push(r.string(field)?),
                (4, wire::LEN) => out.type_url = r.string(field)?,
                (5, wire::LEN) => out.response_nonce = r.string(field)?,
                (6, wire::LEN) => {
                    let (base, s) = r.len_delimited(field)?;
                    out.error_detail = Some(RpcStatus::decode(s, base)?);
                }
                _ => r.skip(field, wt)?,
            }
            Ok(())
        })?;
        Ok(out)
    }
}

impl DiscoveryResponse {
    /// Reads a response.
    ///
    /// # Errors
    ///
    /// The bytes are not a valid message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        pb::fields(bytes, 0, |field, wt, r| {
            match (field, wt) {
                (1, wire::LEN) => out.version_info = r.string(field)?,
                (2, wire::LEN) => {
                    let (base, any) = r.len_delimited(field)?;
                    let (type_url, value) = pb::any(any, base)?;
                    out.resources.push(AnyResource { type_url, value });
                }
                (4, wire::LEN) => out.type_url = r.string(field)?,
                (5, wire::LEN) => out.nonce = r.string(field)?,
                _ => r.skip(field, wt)?,
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The response's wire bytes (what a management server sends; tests use it).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        put_nonempty(&mut buf, 1, &self.version_info);
        for any in &self.resources {
            let mut a = Vec::new();
            put_nonempty(&mut a, 1, &any.type_url);
            if !any.value.is_empty() {
                put_bytes(&mut a, 2, &any.value);
            }
            put_bytes(&mut buf, 2, &a);
        }
        put_nonempty(&mut buf, 4, &self.type_url);
        put_nonempty(&mut buf, 5, &self.nonce);
        buf
    }
}

impl AnyResource {
    /// The resource inside an `envoy.service.discovery.v3.Resource` wrapper, with
    /// the wrapper's name; an unwrapped resource as it is, with no name.
    ///
    /// # Errors
    ///
    /// The wrapper is not a valid message.
    pub fn unwrap_resource(&self) -> Result<(Option<String>, Self), DecodeError> {
        if self.type_url != RESOURCE_WRAPPER_TYPE {
            return Ok((None, self.clone()));
        }
        let mut name = None;
        let mut inner = Self::default();
        pb::fields(&self.value, 0, |field, wt, r| {
            match (field, wt) {
                (2, wire::LEN) => {
                    let (base, any) = r.len_delimited(field)?;
                    let (type_url, value) = pb::any(any, base)?;
                    inner = Self { type_url, value };
                }
                (3, wire::LEN) => name = Some(r.string(field)?),
                _ => r.skip(field, wt)?,
            }
            Ok(())
        })?;
        Ok((name, inner))
    }
}

impl RpcStatus {
    fn decode(bytes: &[u8], base: usize) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        pb::fields(bytes, base, |field, wt, r| {
            match (field, wt) {
                // int32: the low 32 bits of the varint.
                (1, wire::VARINT) => out.code = r.varint(field)? as i32,
                (2, wire::LEN) => out.message = r.string(field)?,
                _ => r.skip(field, wt)?,
            }
            Ok(())
        })?;
        Ok(out)
    }
}

impl NodeInfo {
    /// The `envoy.config.core.v3.Node` message's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let node = &self.node;
        let mut buf = Vec::new();
        put_nonempty(&mut buf, 1, &node.id);
        put_nonempty(&mut buf, 2, &node.cluster);
        if !node.metadata.is_empty() {
            put_bytes(&mut buf, 3, &encode_struct(&node.metadata));
        }
        let l = &node.locality;
        if !(l.region.is_empty() && l.zone.is_empty() && l.sub_zone.is_empty()) {
            let mut loc = Vec::new();
            put_nonempty(&mut loc, 1, &l.region);
            put_nonempty(&mut loc, 2, &l.zone);
            put_nonempty(&mut loc, 3, &l.sub_zone);
            put_bytes(&mut buf, 4, &loc);
        }
        put_nonempty(&mut buf, 6, &self.user_agent_name);
        put_nonempty(&mut buf, 7, &self.user_agent_version);
        for feature in &self.client_features {
            put_string(&mut buf, 10, feature);
        }
        buf
    }

    /// Reads the id, cluster, user agent and client features (enough for a
    /// test's management server to check who asked).
    fn decode(bytes: &[u8], base: usize) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        pb::fields(bytes, base, |field, wt, r| {
            match (field, wt) {
                (1, wire::LEN) => out.node.id = r.string(field)?,
                (2, wire::LEN) => out.node.cluster = r.string(field)?,
                (6, wire::LEN) => out.user_agent_name = r.string(field)?,
                (7, wire::LEN) => out.user_agent_version = r.string(field)?,
                (10, wire::LEN) => out.client_features.push(r.string(field)?),
                _ => r.skip(field, wt)?,
            }
            Ok(())
        })?;
        Ok(out)
    }
}

fn put_nonempty(buf: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_string(buf, field, s);
    }
}

/// JSON as a `google.protobuf.Struct`: the node's metadata.
fn encode_struct(map: &Map<String, Value>) -> Vec<u8> {
    let mut buf = Vec::new();
    for (key, value) in map {
        let mut entry = Vec::new();
        put_string(&mut entry, 1, key);
        put_bytes(&mut entry, 2, &encode_value(value));
        put_bytes(&mut buf, 1, &entry);
    }
    buf
}

/// JSON as a `google.protobuf.Value`.
fn encode_value(value: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    match value {
        Value::Null => {
            put_tag(&mut buf, 1, wire::VARINT);
            put_varint(&mut buf, 0);
        }
        Value::Number(n) => put_double(&mut buf, 2, n.as_f64().unwrap_or(0.0)),
        Value::String(s) => put_string(&mut buf, 3, s),
        Value::Bool(b) => {
            put_tag(&mut buf, 4, wire::VARINT);
            put_varint(&mut buf, u64::from(*b));
        }
        Value::Object(map) => put_bytes(&mut buf, 5, &encode_struct(map)),
        Value::Array(items) => {
            let mut list = Vec::new();
            for item in items {
                put_bytes(&mut list, 1, &encode_value(item));
            }
            put_bytes(&mut buf, 6, &list);
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::bootstrap::Locality;

    #[test]
    fn a_request_round_trips_with_its_node_and_error() {
        let mut metadata = Map::new();
        metadata.insert(
            "k".into(),
            serde_json::json!({"n": 1.5, "l": [true, null, "s"]}),
        );
        let request = DiscoveryRequest {
            version_info: "3".into(),
            node: Some(NodeInfo {
                node: Node {
                    id: "n1".into(),
                    cluster: "c".into(),
                    locality: Locality {
                        region: "r".into(),
                        zone: "z".into(),
                        sub_zone: String::new(),
                    },
                    metadata,
                },
                user_agent_name: "lb-rs".into(),
                user_agent_version: "0.1".into(),
                client_features: vec!["envoy.lb.does_not_support_overprovisioning".into()],
            }),
            resource_names: vec!["a".into(), "b".into()],
            type_url: "t".into(),
            response_nonce: "n7".into(),
            error_detail: Some(RpcStatus {
                code: -3,
                message: "bad".into(),
            }),
        };
        let back = DiscoveryRequest::decode(&request.encode()).unwrap();
        // The decoder reads the node's identity only (not locality or metadata).
        let node = back.node.clone().unwrap();
        assert_eq!(
            (node.node.id.as_str(), node.node.cluster.as_str()),
            ("n1", "c")
        );
        assert_eq!(node.user_agent_name, "lb-rs");
        assert_eq!(
            node.client_features,
            request.node.as_ref().unwrap().client_features
        );
        assert_eq!(back.resource_names, ["a", "b"]);
        assert_eq!(
            (
                back.version_info.as_str(),
                back.type_url.as_str(),
                back.response_nonce.as_str()
            ),
            ("3", "t", "n7")
        );
        assert_eq!(back.error_detail, request.error_detail);
    }

    #[test]
    fn a_response_round_trips_and_unwraps_named_resources() {
        let inner = AnyResource {
            type_url: "type.googleapis.com/x.Y".into(),
            value: vec![1, 2, 3],
        };
        let mut wrapper = Vec::new();
        put_string(&mut wrapper, 3, "named");
        let mut any = Vec::new();
        put_string(&mut any, 1, &inner.type_url);
        put_bytes(&mut any, 2, &inner.value);
        put_bytes(&mut wrapper, 2, &any);
        let response = DiscoveryResponse {
            version_info: "v1".into(),
            resources: vec![
                inner.clone(),
                AnyResource {
                    type_url: RESOURCE_WRAPPER_TYPE.into(),
                    value: wrapper,
                },
            ],
            type_url: "type.googleapis.com/x.Y".into(),
            nonce: "1".into(),
        };
        let back = DiscoveryResponse::decode(&response.encode()).unwrap();
        assert_eq!(back, response);
        assert_eq!(
            back.resources[0].unwrap_resource().unwrap(),
            (None, inner.clone())
        );
        assert_eq!(
            back.resources[1].unwrap_resource().unwrap(),
            (Some("named".into()), inner)
        );
    }

    #[test]
    fn garbage_is_an_error_naming_the_field_not_a_panic() {
        // Field 2 (resources) claims 100 bytes and has 1.
        let err = DiscoveryResponse::decode(&[0x12, 100, 0]).unwrap_err();
        assert_eq!(err.field_path().first(), Some(&2), "{err}");
        for bytes in [
            &[0xff][..],
            &[0x0a, 0x05, b'a'],
            &[0x12, 0x03, 0x0a, 0x05, 0x00],
        ] {
            assert!(DiscoveryResponse::decode(bytes).is_err(), "{bytes:?}");
        }
    }
}

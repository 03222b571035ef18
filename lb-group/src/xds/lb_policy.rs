//! A cluster's `load_balancing_policy` (gRFC A52): a list of typed policies,
//! the first one gRPC supports wins, turned into a `loadBalancingConfig`
//! entry for the channel's registry.
//!
//! | typed config | becomes |
//! |---|---|
//! | `…round_robin.v3.RoundRobin` | `round_robin` |
//! | `…pick_first.v3.PickFirst` | `pick_first` (`shuffleAddressList`) |
//! | `…least_request.v3.LeastRequest` | `least_request_experimental` (`choiceCount`, 2 to 10) |
//! | `…ring_hash.v3.RingHash` | `ring_hash_experimental` (XX_HASH or the default only) |
//! | `…client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin` | `weighted_round_robin` |
//! | `…wrr_locality.v3.WrrLocality` | its endpoint picking policy, per locality |
//! | `xds.type.v3.TypedStruct`, `udpa.type.v1.TypedStruct` | the policy named by the type URL's last part, with the struct as its config |
//!
//! A policy of another type is skipped; a list with none gRPC supports is
//! rejected, as is nesting deeper than [`MAX_DEPTH`]. A TypedStruct names a
//! policy the channel's registry must know; if it does not, calls to the
//! cluster fail naming it (the decoder has no registry).

use lb_core::DecodeError;
use lb_core::config::format_duration;
use lb_core::protowire::{Reader, wire};
use serde_json::{Map, Value, json};

use super::cds::ClusterLbPolicy;
use super::pb;

/// The deepest nesting of `WrrLocality` policies followed.
pub const MAX_DEPTH: usize = 16;

const EXTENSIONS: &str = "type.googleapis.com/envoy.extensions.load_balancing_policies.";

/// The cluster's policy from its encoded `LoadBalancingPolicy`.
///
/// # Errors
///
/// Malformed, invalid, or no policy gRPC supports.
pub fn convert(bytes: &[u8], base: usize) -> Result<ClusterLbPolicy, String> {
    convert_at(bytes, base, 0)
}

fn convert_at(bytes: &[u8], base: usize, depth: usize) -> Result<ClusterLbPolicy, String> {
    if depth >= MAX_DEPTH {
        return Err(format!(
            "load_balancing_policy nests deeper than {MAX_DEPTH}"
        ));
    }
    let mut skipped = Vec::new();
    // LoadBalancingPolicy { repeated Policy policies = 1 }
    for (base, policy) in pb::messages(bytes, base, 1).map_err(|e| e.to_string())? {
        // Policy { TypedExtensionConfig typed_extension_config = 4 }
        // TypedExtensionConfig { name = 1, Any typed_config = 2 }
        let mut any = None;
        for (base, ext) in pb::messages(policy, base, 4).map_err(|e| e.to_string())? {
            for (base, a) in pb::messages(ext, base, 2).map_err(|e| e.to_string())? {
                any = Some(pb::any(a, base).map_err(|e| e.to_string())?);
            }
        }
        let Some((type_url, value)) = any else {
            skipped.push("(a policy without a typed config)".to_owned());
            continue;
        };
        if let Some(policy) = one(&type_url, &value, depth)? {
            return Ok(policy);
        }
        skipped.push(type_url);
    }
    Err(format!(
        "load_balancing_policy has no policy gRPC supports (skipped: {})",
        if skipped.is_empty() {
            "none listed".to_owned()
        } else {
            skipped.join(", ")
        }
    ))
}

/// One typed policy: `None` when gRPC does not know its type.
fn one(type_url: &str, value: &[u8], depth: usize) -> Result<Option<ClusterLbPolicy>, String> {
    let Some(kind) = type_url.strip_prefix(EXTENSIONS) else {
        return match type_url {
            "type.googleapis.com/xds.type.v3.TypedStruct"
            | "type.googleapis.com/udpa.type.v1.TypedStruct" => typed_struct(value).map(Some),
            _ => Ok(None),
        };
    };
    let e = |e: DecodeError| format!("{type_url}: {e}");
    let policy = match kind {
        "round_robin.v3.RoundRobin" => ClusterLbPolicy::RoundRobin,
        "pick_first.v3.PickFirst" => {
            let shuffle = bool_field(value, 1).map_err(e)?;
            ClusterLbPolicy::Whole(json!({"pick_first": {"shuffleAddressList": shuffle}}))
        }
        "least_request.v3.LeastRequest" => {
            let mut choice_count = 2;
            for (base, w) in pb::messages(value, 0, 1).map_err(e)? {
                choice_count = pb::wrapped_u32(w, base).map_err(e)?;
            }
            if choice_count < 2 {
                return Err(format!(
                    "least request choice_count {choice_count} is below 2"
                ));
            }
            ClusterLbPolicy::LeastRequest {
                choice_count: choice_count.min(10),
            }
        }
        "ring_hash.v3.RingHash" => {
            let (mut hash, mut min, mut max) = (0, 1024, 8 * 1024 * 1024);
            let mut r = Reader::new(value, 0);
            while let Some((field, wt)) = r.tag().map_err(e)? {
                match (field, wt) {
                    (1, wire::VARINT) => hash = r.varint(field).map_err(e)?,
                    (2 | 3, wire::LEN) => {
                        let (base, b) = r.len_delimited(field).map_err(e)?;
                        let v = pb::wrapped(b, base).map_err(e)?;
                        if field == 2 { min = v } else { max = v }
                    }
                    _ => r.skip(field, wt).map_err(e)?,
                }
            }
            // DEFAULT_HASH (0) and XX_HASH (1) are xxHash for gRPC.
            if hash > 1 {
                return Err(format!("ring hash function {hash} is not XX_HASH"));
            }
            if min == 0 || min > max || max > super::cds::MAX_RING_SIZE {
                return Err(format!("ring sizes {min}..{max} are out of range"));
            }
            ClusterLbPolicy::RingHash {
                min_ring_size: min,
                max_ring_size: max,
            }
        }
        "client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin" => {
            ClusterLbPolicy::Whole(weighted_round_robin(value).map_err(e)?)
        }
        "wrr_locality.v3.WrrLocality" => {
            let mut inner = None;
            for (base, p) in pb::messages(value, 0, 1).map_err(e)? {
                inner = Some(convert_at(p, base, depth + 1)?);
            }
            let inner = inner.ok_or("WrrLocality has no endpoint_picking_policy")?;
            match inner {
                ClusterLbPolicy::RingHash { .. } => {
                    return Err("WrrLocality cannot pick endpoints with ring hash".to_owned());
                }
                other => ClusterLbPolicy::PerLocality(other.to_json()),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(policy))
}

/// A bool field of a message.
fn bool_field(bytes: &[u8], number: u32) -> Result<bool, DecodeError> {
    let mut out = false;
    let mut r = Reader::new(bytes, 0);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (f, wire::VARINT) if f == number => out = r.varint(field)? != 0,
            _ => r.skip(field, wt)?,
        }
    }
    Ok(out)
}

/// `ClientSideWeightedRoundRobin` as `weighted_round_robin`'s config.
fn weighted_round_robin(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut config = Map::new();
    let mut r = Reader::new(bytes, 0);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (1, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                config.insert(
                    "enableOobLoadReport".into(),
                    (pb::wrapped(b, base)? != 0).into(),
                );
            }
            (2..=5, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                let name = [
                    "oobReportingPeriod",
                    "blackoutPeriod",
                    "weightExpirationPeriod",
                    "weightUpdatePeriod",
                ][field as usize - 2];
                config.insert(name.into(), format_duration(pb::duration(b, base)?).into());
            }
            (6, wire::LEN) => {
                // FloatValue { float value = 1 } (fixed32)
                let (base, b) = r.len_delimited(field)?;
                let mut inner = Reader::new(b, base);
                while let Some((f, w)) = inner.tag()? {
                    match (f, w) {
                        (1, wire::FIXED32) => {
                            let v = f32::from_bits(inner.fixed32(f)?);
                            config.insert("errorUtilizationPenalty".into(), json!(v));
                        }
                        _ => inner.skip(f, w)?,
                    }
                }
            }
            _ => r.skip(field, wt)?,
        }
    }
    Ok(json!({"weighted_round_robin": config}))
}

/// A `TypedStruct`: the policy named by its type URL's last part, with its
/// `google.protobuf.Struct` as the config.
fn typed_struct(bytes: &[u8]) -> Result<ClusterLbPolicy, String> {
    let e = |e: DecodeError| format!("TypedStruct: {e}");
    let (mut type_url, mut config) = (String::new(), Value::Object(Map::new()));
    let mut r = Reader::new(bytes, 0);
    while let Some((field, wt)) = r.tag().map_err(e)? {
        match (field, wt) {
            (1, wire::LEN) => type_url = r.string(field).map_err(e)?,
            (2, wire::LEN) => {
                let (base, b) = r.len_delimited(field).map_err(e)?;
                config = struct_json(b, base, 0).map_err(e)?;
            }
            _ => r.skip(field, wt).map_err(e)?,
        }
    }
    let name = type_url.rsplit('/').next().unwrap_or("");
    if name.is_empty() {
        return Err("TypedStruct without a type_url".to_owned());
    }
    Ok(ClusterLbPolicy::Whole(json!({ name: config })))
}

/// A `google.protobuf.Struct` as JSON.
fn struct_json(bytes: &[u8], base: usize, depth: usize) -> Result<Value, DecodeError> {
    let mut out = Map::new();
    for (base, entry) in pb::messages(bytes, base, 1)? {
        let mut key = String::new();
        let mut value = Value::Null;
        let mut r = Reader::new(entry, base);
        while let Some((field, wt)) = r.tag()? {
            match (field, wt) {
                (1, wire::LEN) => key = r.string(field)?,
                (2, wire::LEN) => {
                    let (base, b) = r.len_delimited(field)?;
                    value = value_json(b, base, depth + 1)?;
                }
                _ => r.skip(field, wt)?,
            }
        }
        out.insert(key, value);
    }
    Ok(Value::Object(out))
}

/// A `google.protobuf.Value` as JSON; nesting past [`MAX_DEPTH`] is null.
fn value_json(bytes: &[u8], base: usize, depth: usize) -> Result<Value, DecodeError> {
    let mut out = Value::Null;
    let mut r = Reader::new(bytes, base);
    while let Some((field, wt)) = r.tag()? {
        out = match (field, wt) {
            (1, wire::VARINT) => {
                r.varint(field)?;
                Value::Null
            }
            (2, wire::FIXED64) => json!(r.double(field)?),
            (3, wire::LEN) => Value::String(r.string(field)?),
            (4, wire::VARINT) => Value::Bool(r.varint(field)? != 0),
            (5, wire::LEN) if depth < MAX_DEPTH => {
                let (base, b) = r.len_delimited(field)?;
                struct_json(b, base, depth)?
            }
            (6, wire::LEN) if depth < MAX_DEPTH => {
                let (base, b) = r.len_delimited(field)?;
                let mut list = Vec::new();
                for (base, v) in pb::messages(b, base, 1)? {
                    list.push(value_json(v, base, depth + 1)?);
                }
                Value::Array(list)
            }
            _ => {
                r.skip(field, wt)?;
                continue;
            }
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::pb::build::{any, msg, varint, wrapped};
    use lb_core::protowire::{put_bytes, put_string, put_tag};

    /// A `LoadBalancingPolicy` of these (type URL, value) policies.
    fn list(policies: &[(&str, Vec<u8>)]) -> Vec<u8> {
        msg(|b| {
            for (type_url, value) in policies {
                let ext = msg(|e| {
                    put_string(e, 1, "p");
                    put_bytes(e, 2, &any(type_url, value));
                });
                put_bytes(b, 1, &msg(|p| put_bytes(p, 4, &ext)));
            }
        })
    }

    fn ext(kind: &str) -> String {
        format!("{EXTENSIONS}{kind}")
    }

    #[test]
    fn the_first_supported_policy_wins_and_wrr_locality_runs_per_locality() {
        let wrr = list(&[(&ext("round_robin.v3.RoundRobin"), Vec::new())]);
        let bytes = list(&[
            ("type.googleapis.com/test.Unknown", Vec::new()),
            (
                &ext("wrr_locality.v3.WrrLocality"),
                msg(|w| put_bytes(w, 1, &wrr)),
            ),
            (&ext("pick_first.v3.PickFirst"), Vec::new()),
        ]);
        assert_eq!(
            convert(&bytes, 0),
            Ok(ClusterLbPolicy::PerLocality(json!({"round_robin": {}})))
        );
        let least = list(&[(
            &ext("least_request.v3.LeastRequest"),
            msg(|l| put_bytes(l, 1, &wrapped(4))),
        )]);
        assert_eq!(
            convert(&least, 0),
            Ok(ClusterLbPolicy::LeastRequest { choice_count: 4 })
        );
    }

    #[test]
    fn a_typed_struct_names_a_custom_policy_with_its_struct_as_config() {
        // Struct { "k": Value { number_value: 2.5 }, "s": Value { string_value: "x" } }
        let number = msg(|v| {
            put_tag(v, 2, wire::FIXED64);
            v.extend_from_slice(&2.5f64.to_bits().to_le_bytes());
        });
        let string = msg(|v| put_string(v, 3, "x"));
        let st = msg(|s| {
            put_bytes(
                s,
                1,
                &msg(|e| {
                    put_string(e, 1, "k");
                    put_bytes(e, 2, &number);
                }),
            );
            put_bytes(
                s,
                1,
                &msg(|e| {
                    put_string(e, 1, "s");
                    put_bytes(e, 2, &string);
                }),
            );
        });
        let typed = msg(|t| {
            put_string(t, 1, "type.googleapis.com/my.custom_policy");
            put_bytes(t, 2, &st);
        });
        let bytes = list(&[("type.googleapis.com/xds.type.v3.TypedStruct", typed)]);
        assert_eq!(
            convert(&bytes, 0),
            Ok(ClusterLbPolicy::Whole(
                json!({"my.custom_policy": {"k": 2.5, "s": "x"}})
            ))
        );
    }

    #[test]
    fn bad_lists_are_errors_that_say_why() {
        let none = list(&[("type.googleapis.com/test.Unknown", Vec::new())]);
        let err = convert(&none, 0).unwrap_err();
        assert!(
            err.contains("no policy gRPC supports") && err.contains("test.Unknown"),
            "{err}"
        );
        let murmur = list(&[(&ext("ring_hash.v3.RingHash"), msg(|r| varint(r, 1, 2)))]);
        assert!(convert(&murmur, 0).unwrap_err().contains("XX_HASH"));
        // WrrLocality inside WrrLocality, 17 deep.
        let mut nested = list(&[(&ext("round_robin.v3.RoundRobin"), Vec::new())]);
        for _ in 0..MAX_DEPTH {
            let inner = nested.clone();
            nested = list(&[(
                &ext("wrr_locality.v3.WrrLocality"),
                msg(|w| put_bytes(w, 1, &inner)),
            )]);
        }
        assert!(
            convert(&nested, 0).unwrap_err().contains("deeper"),
            "depth limit"
        );
    }
}

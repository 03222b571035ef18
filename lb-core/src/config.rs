//! Config errors that name their field, and helpers for reading service-config JSON.
//!
//! Every policy parses its own JSON. The helpers here make the error name the field it
//! is about, with a path a user can find in their config:
//! `targets.us.childPolicy[0].round_robin: must be an object`.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

/// A config that could not be accepted: the field it is about and what is wrong.
///
/// # Examples
///
/// ```
/// use lb_core::ConfigError;
/// let err = ConfigError::new("cacheSizeBytes", "must be greater than 0").within("routeLookupConfig");
/// assert_eq!(err.to_string(), "routeLookupConfig.cacheSizeBytes: must be greater than 0");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: String,
    message: String,
}

impl ConfigError {
    /// An error about `field` (a dotted path; empty for the whole document).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// This error with `parent` put in front of its field path. An index suffix such
    /// as `[0]` joins without a dot.
    pub fn within(mut self, parent: &str) -> Self {
        if parent.is_empty() {
            return self;
        }
        self.field = match (self.field.is_empty(), self.field.starts_with('[')) {
            (true, _) => parent.to_owned(),
            (false, true) => format!("{parent}{}", self.field),
            (false, false) => format!("{parent}.{}", self.field),
        };
        self
    }

    /// The path of the field the error is about.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses JSON text, naming the position of a syntax error.
///
/// # Errors
///
/// The text is not JSON.
pub fn parse_json(text: &str) -> Result<Value, ConfigError> {
    serde_json::from_str(text).map_err(|e| ConfigError::new("", format!("invalid JSON: {e}")))
}

/// The JSON type name of `value`, for messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `value` as an object, or an error about `field`.
///
/// # Errors
///
/// `value` is not an object.
pub fn as_object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    value.as_object().ok_or_else(|| {
        ConfigError::new(
            field,
            format!("must be an object, not {}", json_type(value)),
        )
    })
}

/// Typed reads of optional fields of a JSON object, each error naming the field.
///
/// ```
/// use lb_core::config::Fields;
/// let v = serde_json::json!({"weight": 3, "name": "x"});
/// let f = Fields::new(&v, "")?;
/// assert_eq!(f.u32("weight")?, Some(3));
/// assert_eq!(f.string("name")?, Some("x"));
/// assert!(f.bool("name").unwrap_err().to_string().starts_with("name: must be a boolean"));
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// Reads the fields of `value`, which must be an object; `field` names it.
    ///
    /// # Errors
    ///
    /// `value` is not an object.
    pub fn new(value: &'a Value, field: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            map: as_object(value, field)?,
        })
    }

    /// The raw value of `name`, if present and not null.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// A boolean field.
    ///
    /// # Errors
    ///
    /// Present but not a boolean.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ConfigError> {
        self.typed(name, "a boolean", Value::as_bool)
    }

    /// A string field.
    ///
    /// # Errors
    ///
    /// Present but not a string.
    pub fn string(&self, name: &str) -> Result<Option<&'a str>, ConfigError> {
        self.typed(name, "a string", Value::as_str)
    }

    /// A non-negative integer field that fits in `u32`.
    ///
    /// # Errors
    ///
    /// Present but not such an integer.
    pub fn u32(&self, name: &str) -> Result<Option<u32>, ConfigError> {
        self.typed(name, "an integer from 0 to 4294967295", |v| {
            v.as_u64().and_then(|n| u32::try_from(n).ok())
        })
    }

    /// An integer field. Accepts a JSON number or, as protobuf JSON does for 64-bit
    /// integers, a decimal string.
    ///
    /// # Errors
    ///
    /// Present but not an integer.
    pub fn i64(&self, name: &str) -> Result<Option<i64>, ConfigError> {
        self.typed(name, "an integer", |v| match v {
            Value::String(s) => s.parse().ok(),
            _ => v.as_i64(),
        })
    }

    /// A number field.
    ///
    /// # Errors
    ///
    /// Present but not a number.
    pub fn f64(&self, name: &str) -> Result<Option<f64>, ConfigError> {
        self.typed(name, "a number", Value::as_f64)
    }

    /// A protobuf JSON duration field (`"1.5s"`).
    ///
    /// # Errors
    ///
    /// Present but not a valid duration.
    pub fn duration(&self, name: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(v) = self.string(name)? else {
            return Ok(None);
        };
        parse_duration(v).map(Some).map_err(|e| e.within(name))
    }

    /// An array field.
    ///
    /// # Errors
    ///
    /// Present but not an array.
    pub fn array(&self, name: &str) -> Result<Option<&'a Vec<Value>>, ConfigError> {
        self.typed(name, "an array", Value::as_array)
    }

    /// An object field.
    ///
    /// # Errors
    ///
    /// Present but not an object.
    pub fn object(&self, name: &str) -> Result<Option<&'a Map<String, Value>>, ConfigError> {
        self.typed(name, "an object", Value::as_object)
    }

    fn typed<T>(
        &self,
        name: &str,
        what: &str,
        read: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        read(v)
            .map(Some)
            .ok_or_else(|| ConfigError::new(name, format!("must be {what}, not {}", json_type(v))))
    }
}

/// The largest duration protobuf allows: 315,576,000,000 seconds (10,000 years).
pub const MAX_PROTO_DURATION_SECS: u64 = 315_576_000_000;

/// Parses a protobuf JSON duration: decimal seconds with up to nine fractional digits and
/// an `s` suffix (`"1s"`, `"1.5s"`, `"0.000000001s"`). Negative durations are refused:
/// no gRPC config field accepts them.
///
/// # Errors
///
/// The text is not of that form, or exceeds 315,576,000,000 s.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_core::config::parse_duration;
/// assert_eq!(parse_duration("1.5s")?, Duration::from_millis(1500));
/// assert!(parse_duration("315576000001s").is_err());
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            "",
            format!("invalid duration {text:?}: {why} (expected decimal seconds like \"1.5s\")"),
        )
    };
    let body = text
        .strip_suffix('s')
        .ok_or_else(|| bad("missing the 's' suffix"))?;
    if body.starts_with('-') {
        return Err(bad("must not be negative"));
    }
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("seconds must be decimal digits"));
    }
    if body.contains('.') && (frac.is_empty() || frac.len() > 9) {
        return Err(bad("needs 1 to 9 fractional digits after '.'"));
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("fraction must be decimal digits"));
    }
    let secs: u64 = whole.parse().map_err(|_| bad("seconds out of range"))?;
    if secs > MAX_PROTO_DURATION_SECS {
        return Err(bad("value out of range (at most 315576000000s)"));
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: u32 = frac.parse().map_err(|_| bad("bad fraction"))?;
        digits * 10u32.pow(9 - frac.len() as u32)
    };
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration in protobuf JSON form (the inverse of [`parse_duration`]).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(lb_core::config::format_duration(Duration::from_millis(1500)), "1.500s");
/// assert_eq!(lb_core::config::format_duration(Duration::from_secs(2)), "2s");
/// ```
pub fn format_duration(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{}s", d.as_secs())
    } else if nanos % 1_000_000 == 0 {
        format!("{}.{:03}s", d.as_secs(), nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{}.{:06}s", d.as_secs(), nanos / 1_000)
    } else {
        format!("{}.{:09}s", d.as_secs(), nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_parse_like_protobuf_json() {
        let ok = [
            ("0s", Duration::ZERO),
            ("10s", Duration::from_secs(10)),
            ("0.1s", Duration::from_millis(100)),
            ("1.000000001s", Duration::new(1, 1)),
            (
                "315576000000s",
                Duration::from_secs(MAX_PROTO_DURATION_SECS),
            ),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text).unwrap(), want, "{text}");
            assert_eq!(parse_duration(&format_duration(want)).unwrap(), want);
        }
        for bad in [
            "",
            "s",
            "1",
            "1.s",
            ".5s",
            "-1s",
            "1.0000000001s",
            "1e3s",
            "315576000001s",
            "1.5ms",
            " 1s",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.message().contains("invalid duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn field_paths_compose() {
        let e = ConfigError::new("names", "must be non-empty")
            .within("[0]")
            .within("grpcKeybuilders")
            .within("routeLookupConfig");
        assert_eq!(e.field(), "routeLookupConfig.grpcKeybuilders[0].names");
        assert_eq!(ConfigError::new("", "x").within("a").to_string(), "a: x");
    }

    #[test]
    fn typed_fields_name_the_field_and_the_type() {
        let v = json!({"n": -1, "s": 3, "d": "2x", "o": [], "null": null});
        let f = Fields::new(&v, "").unwrap();
        assert_eq!(f.u32("n").unwrap_err().field(), "n");
        assert!(
            f.string("s")
                .unwrap_err()
                .message()
                .contains("not a number")
        );
        assert_eq!(f.duration("d").unwrap_err().field(), "d");
        assert!(f.object("o").unwrap_err().message().contains("an array"));
        assert_eq!(f.bool("null").unwrap(), None, "null reads as absent");
        assert_eq!(f.bool("missing").unwrap(), None);
        assert!(
            Fields::new(&json!(1), "top")
                .unwrap_err()
                .to_string()
                .starts_with("top: must be an object")
        );
    }
}

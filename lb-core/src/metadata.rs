//! Call metadata: validated ASCII and binary (`-bin`) headers.
//!
//! Keys and values are checked when they are inserted, so a `Metadata` never holds
//! something a transport could not send: a call with bad metadata fails in the caller's
//! hands, before anything goes on the wire.

use std::fmt;

/// A list of metadata entries in insertion order. Keys may repeat.
///
/// Keys are `[0-9a-z_.-]+`. Keys ending in `-bin` hold arbitrary bytes (sent base64
/// encoded); every other value is printable ASCII (0x20–0x7E).
///
/// # Examples
///
/// ```
/// use lb_core::Metadata;
/// let mut md = Metadata::new();
/// md.insert("x-user", "alice")?;
/// md.insert_bin("trace-bin", &[0, 1, 2])?;
/// assert_eq!(md.get("x-user"), Some("alice"));
/// assert_eq!(md.get_bin("trace-bin"), Some(&[0u8, 1, 2][..]));
/// assert!(md.insert("X-Upper", "v").is_err());
/// assert!(md.insert("x-crlf", "a\r\nb").is_err());
/// # Ok::<(), lb_core::InvalidMetadata>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, Vec<u8>)>,
}

impl Metadata {
    /// An empty list, usable in constants.
    pub(crate) const EMPTY: Self = Self {
        entries: Vec::new(),
    };
}

/// Why a metadata key or value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMetadata {
    /// The key is empty or holds a character outside `[0-9a-z_.-]`.
    #[error("invalid metadata key {key:?}: keys are lowercase [0-9a-z_.-]+")]
    Key {
        /// The key as given.
        key: String,
    },
    /// An ASCII value holds a byte outside 0x20–0x7E (for example CR, LF or NUL).
    #[error(
        "invalid value for metadata key {key:?}: byte 0x{byte:02x} at offset {offset} is not printable ASCII"
    )]
    Value {
        /// The key the value was for.
        key: String,
        /// The offending byte.
        byte: u8,
        /// Its offset in the value.
        offset: usize,
    },
    /// A binary value was given for a key without the `-bin` suffix, or a text value
    /// for one with it.
    #[error(
        "metadata key {key:?}: binary values need a key ending in \"-bin\", and only they may have one"
    )]
    Binary {
        /// The key as given.
        key: String,
    },
}

/// Checks a metadata key.
pub fn validate_key(key: &str) -> Result<(), InvalidMetadata> {
    let ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidMetadata::Key { key: key.into() })
    }
}

/// Checks an ASCII metadata value for `key`.
pub fn validate_ascii_value(key: &str, value: &[u8]) -> Result<(), InvalidMetadata> {
    match value.iter().position(|b| !(0x20..=0x7e).contains(b)) {
        None => Ok(()),
        Some(offset) => Err(InvalidMetadata::Value {
            key: key.into(),
            byte: value[offset],
            offset,
        }),
    }
}

/// Whether `key` names a binary header.
pub fn is_binary_key(key: &str) -> bool {
    key.ends_with("-bin")
}

impl Metadata {
    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an ASCII entry.
    ///
    /// # Errors
    ///
    /// The key is not `[0-9a-z_.-]+`, ends in `-bin`, or the value holds a byte
    /// outside 0x20–0x7E.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), InvalidMetadata> {
        validate_key(key)?;
        if is_binary_key(key) {
            return Err(InvalidMetadata::Binary { key: key.into() });
        }
        validate_ascii_value(key, value.as_bytes())?;
        self.entries.push((key.into(), value.as_bytes().to_vec()));
        Ok(())
    }

    /// Appends a binary entry; `key` must end in `-bin`.
    ///
    /// # Errors
    ///
    /// The key is not `[0-9a-z_.-]+` or does not end in `-bin`.
    pub fn insert_bin(&mut self, key: &str, value: &[u8]) -> Result<(), InvalidMetadata> {
        validate_key(key)?;
        if !is_binary_key(key) {
            return Err(InvalidMetadata::Binary { key: key.into() });
        }
        self.entries.push((key.into(), value.to_vec()));
        Ok(())
    }

    /// Appends an entry that is valid by construction elsewhere (a transport that
    /// decoded it, say), choosing ASCII or binary by the key.
    ///
    /// # Errors
    ///
    /// As [`Metadata::insert`] and [`Metadata::insert_bin`].
    pub fn insert_raw(&mut self, key: &str, value: &[u8]) -> Result<(), InvalidMetadata> {
        if is_binary_key(key) {
            return self.insert_bin(key, value);
        }
        validate_key(key)?;
        validate_ascii_value(key, value)?;
        self.entries.push((key.into(), value.to_vec()));
        Ok(())
    }

    /// The first ASCII value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every ASCII value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k == key)
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The first value of a binary key.
    pub fn get_bin(&self, key: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// Removes every entry of `key` and returns how many there were.
    pub fn remove(&mut self, key: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(k, _)| k != key);
        before - self.entries.len()
    }

    /// Appends every entry of `other`.
    pub fn extend(&mut self, other: &Self) {
        self.entries.extend(other.entries.iter().cloned());
    }

    /// Every entry as (key, raw value bytes), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.entries {
            match std::str::from_utf8(v) {
                Ok(s) if !is_binary_key(k) => map.entry(k, &s),
                _ => map.entry(k, v),
            };
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        for good in ["a", "x-user", "a.b_c-0", "grpc-trace-bin"] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        for bad in ["", "A", "x user", "x:y", "é", "x\0"] {
            assert!(
                matches!(validate_key(bad), Err(InvalidMetadata::Key { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ascii_values_reject_control_bytes_with_their_offset() {
        let mut md = Metadata::new();
        for (value, offset, byte) in [("ab\rc", 2, b'\r'), ("\n", 0, b'\n'), ("x\0", 1, 0)] {
            let err = md.insert("k", value).unwrap_err();
            assert_eq!(
                err,
                InvalidMetadata::Value {
                    key: "k".into(),
                    byte,
                    offset
                }
            );
        }
        assert!(md.is_empty(), "rejected entries must not be stored");
    }

    #[test]
    fn binary_keys_need_the_suffix_both_ways() {
        let mut md = Metadata::new();
        assert!(matches!(
            md.insert("k-bin", "v"),
            Err(InvalidMetadata::Binary { .. })
        ));
        assert!(matches!(
            md.insert_bin("k", b"v"),
            Err(InvalidMetadata::Binary { .. })
        ));
        md.insert_bin("k-bin", &[0xff, 0]).unwrap();
        assert_eq!(md.get_bin("k-bin"), Some(&[0xff, 0][..]));
    }

    #[test]
    fn repeated_keys_keep_order_and_remove_counts() {
        let mut md = Metadata::new();
        md.insert("k", "1").unwrap();
        md.insert("j", "x").unwrap();
        md.insert("k", "2").unwrap();
        assert_eq!(md.get_all("k").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(md.remove("k"), 2);
        assert_eq!(md.len(), 1);
        let mut other = Metadata::new();
        other.insert("z", "9").unwrap();
        md.extend(&other);
        assert_eq!(md.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["j", "z"]);
    }
}

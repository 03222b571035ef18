//! Addresses, endpoints and the attributes that travel with them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Key/value attributes attached to an address, an endpoint or a resolver update.
///
/// Cheap to clone (the map is shared) and compared by value, so policies can tell
/// whether an endpoint changed.
///
/// # Examples
///
/// ```
/// use lb_core::Attributes;
/// let attrs = Attributes::new().with("weight", "3");
/// assert_eq!(attrs.get("weight"), Some("3"));
/// assert_eq!(attrs.get("zone"), None);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attributes(Option<Arc<BTreeMap<String, String>>>);

impl Attributes {
    /// No attributes.
    pub const fn new() -> Self {
        Self(None)
    }

    /// These attributes with `key` set to `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        Arc::make_mut(self.0.get_or_insert_with(Default::default)).insert(key.into(), value.into());
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.as_ref()?.get(key).map(String::as_str)
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|m| m.is_empty())
    }

    /// The attributes in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// One address a transport can connect to.
///
/// The text is the transport's business: `127.0.0.1:50051`, `[::1]:443`,
/// `unix:/run/app.sock`, or any name an in-memory transport understands.
///
/// # Examples
///
/// ```
/// use lb_core::Address;
/// let addr = Address::new("10.0.0.1:443");
/// assert_eq!(addr.to_string(), "10.0.0.1:443");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    /// The address text.
    pub address: String,
    /// Attributes of this address.
    pub attributes: Attributes,
}

impl Address {
    /// An address with no attributes.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            attributes: Attributes::new(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attributes.is_empty() {
            write!(f, "{:?}", self.address)
        } else {
            write!(f, "{:?} {:?}", self.address, self.attributes)
        }
    }
}

impl From<&str> for Address {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

/// One logical backend: a list of addresses for the same server (for example its IPv4
/// and IPv6 addresses), in preference order, with attributes.
///
/// # Examples
///
/// ```
/// use lb_core::Endpoint;
/// let ep = Endpoint::new(["10.0.0.1:443", "[fd00::1]:443"]);
/// assert_eq!(ep.addresses.len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// The addresses, most preferred first.
    pub addresses: Vec<Address>,
    /// Attributes of the endpoint.
    pub attributes: Attributes,
}

impl Endpoint {
    /// An endpoint with the given addresses and no attributes.
    pub fn new<A: Into<Address>>(addresses: impl IntoIterator<Item = A>) -> Self {
        Self {
            addresses: addresses.into_iter().map(Into::into).collect(),
            attributes: Attributes::new(),
        }
    }

    /// This endpoint with `key` set to `value` in its attributes.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes = self.attributes.with(key, value);
        self
    }
}

/// One endpoint per address: the usual shape of a resolver's answer.
///
/// ```
/// let eps = lb_core::endpoints(["a:1", "b:2"]);
/// assert_eq!(eps[1].addresses[0].address, "b:2");
/// ```
pub fn endpoints<S: Into<Address>>(addresses: impl IntoIterator<Item = S>) -> Vec<Endpoint> {
    addresses
        .into_iter()
        .map(|a| Endpoint::new([a.into()]))
        .collect()
}

/// The addresses of `endpoints` in order, each once (the first occurrence wins).
pub fn flatten_addresses(endpoints: &[Endpoint]) -> Vec<Address> {
    let mut seen = std::collections::HashSet::new();
    endpoints
        .iter()
        .flat_map(|ep| ep.addresses.iter())
        .filter(|a| seen.insert(&a.address))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_compare_by_value_and_clone_cheaply() {
        let a = Attributes::new().with("k", "v");
        let b = Attributes::new().with("k", "v");
        assert_eq!(a, b);
        let c = a.clone().with("k", "w");
        assert_eq!(a.get("k"), Some("v"), "with() must not change the original");
        assert_eq!(c.get("k"), Some("w"));
        assert!(Attributes::new().is_empty());
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![("k", "w")]);
    }

    #[test]
    fn flatten_keeps_first_occurrence_order() {
        let eps = vec![
            Endpoint::new(["a", "b"]),
            Endpoint::new(["b", "c"]),
            Endpoint::new(["a"]),
        ];
        let flat: Vec<_> = flatten_addresses(&eps)
            .into_iter()
            .map(|a| a.address)
            .collect();
        assert_eq!(flat, ["a", "b", "c"]);
    }
}

//! Hierarchy paths: which child of a tree of policies an endpoint belongs to.
//!
//! A parent such as `weighted_target` or `priority` gets one endpoint list for all its
//! children. Each endpoint carries a *path*, a list of child names from the top of the
//! tree down, and each parent hands an endpoint to the child named by the first
//! element, with that element stripped, so the child sees the rest of the path.
//!
//! The path is stored in the endpoint's attributes under [`PATH_KEY`]. The value is
//! the path's elements joined with `/`, each element with `%` written as `%25` and `/`
//! as `%2F`, so any names round-trip. An endpoint without the attribute has the empty
//! path; the attribute with an empty value is the path `[""]`.
//!
//! # Examples
//!
//! ```
//! use lb_core::Endpoint;
//! use lb_group::hierarchy;
//!
//! let ep = hierarchy::with_path(Endpoint::new(["10.0.0.1:443"]), &["p0", "us/east"]);
//! assert_eq!(ep.attributes.get(hierarchy::PATH_KEY), Some("p0/us%2Feast"));
//! assert_eq!(hierarchy::path(&ep), ["p0", "us/east"]);
//!
//! let split = hierarchy::split(vec![ep, Endpoint::new(["no-path:1"])]);
//! assert_eq!(split.len(), 1, "endpoints without a path go nowhere");
//! assert_eq!(hierarchy::path(&split["p0"][0]), ["us/east"]);
//! ```

use std::collections::BTreeMap;

use lb_core::{Attributes, Endpoint};

/// The endpoint attribute that holds the hierarchy path.
pub const PATH_KEY: &str = "lb_group.hierarchy_path";

/// `endpoint` with its hierarchy path set to `path` (replacing any path it had).
pub fn with_path(mut endpoint: Endpoint, path: &[&str]) -> Endpoint {
    endpoint.attributes = set_path(&endpoint.attributes, path.iter().copied());
    endpoint
}

/// `endpoint` one level down: `parent` put in front of its path (the child
/// of a parent policy whose own child routes it by the rest).
///
/// ```
/// use lb_core::Endpoint;
/// use lb_group::hierarchy;
/// let e = hierarchy::with_path(Endpoint::new(["10.0.0.1:80"]), &["p0", "east"]);
/// assert_eq!(hierarchy::path(&hierarchy::under(e, "cluster-a")), ["cluster-a", "p0", "east"]);
/// ```
pub fn under(endpoint: Endpoint, parent: &str) -> Endpoint {
    let rest = path(&endpoint);
    let full: Vec<&str> = std::iter::once(parent)
        .chain(rest.iter().map(String::as_str))
        .collect();
    with_path(endpoint, &full)
}

/// The hierarchy path of `endpoint` (empty if it has none).
pub fn path(endpoint: &Endpoint) -> Vec<String> {
    match endpoint.attributes.get(PATH_KEY) {
        Some(value) => decode(value),
        None => Vec::new(),
    }
}

/// For a policy that routes by hierarchy path: the error to report when endpoints
/// came without any path (a plain `dns:` or `ipv4:` target gives none), so that the
/// user learns what is missing rather than that "the resolver produced zero
/// addresses" further down. `None` when some endpoint has a path, or there are none.
///
/// ```
/// use lb_core::Endpoint;
/// use lb_group::hierarchy;
/// let plain = [Endpoint::new(["10.0.0.1:443"])];
/// let why = hierarchy::missing_paths("weighted_target_experimental", &plain).unwrap();
/// assert!(why.contains("none of the 1 endpoints has one"), "{why}");
/// let routed = [hierarchy::with_path(Endpoint::new(["10.0.0.1:443"]), &["a"])];
/// assert_eq!(hierarchy::missing_paths("weighted_target_experimental", &routed), None);
/// ```
pub fn missing_paths(policy: &str, endpoints: &[Endpoint]) -> Option<String> {
    if endpoints.is_empty() || endpoints.iter().any(|e| !path(e).is_empty()) {
        return None;
    }
    Some(format!(
        "{policy} routes endpoints to its children by hierarchy path, and none of the {} \
         endpoints has one (a plain dns: or ipv4: target gives none): give each endpoint \
         a path whose first element names a child, with lb_group::hierarchy::with_path \
         in a resolver of your own",
        endpoints.len()
    ))
}

/// Splits `endpoints` by the first element of their paths. Each endpoint goes to the
/// list of its first element with that element removed from its path; endpoints with
/// no path are dropped. Endpoint order within each list is kept.
pub fn split(endpoints: Vec<Endpoint>) -> BTreeMap<String, Vec<Endpoint>> {
    let mut out: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
    for mut endpoint in endpoints {
        let mut elements = path(&endpoint).into_iter();
        let Some(first) = elements.next() else {
            continue;
        };
        let rest: Vec<String> = elements.collect();
        endpoint.attributes = set_path(&endpoint.attributes, rest.iter().map(String::as_str));
        out.entry(first).or_default().push(endpoint);
    }
    out
}

/// `attributes` with the path set; an empty path removes the attribute.
fn set_path<'a>(attributes: &Attributes, path: impl Iterator<Item = &'a str>) -> Attributes {
    let mut path = path.peekable();
    if path.peek().is_none() {
        if attributes.get(PATH_KEY).is_none() {
            return attributes.clone();
        }
        // `Attributes` has no removal, so rebuild it without the key.
        return attributes
            .iter()
            .filter(|(k, _)| *k != PATH_KEY)
            .fold(Attributes::new(), |acc, (k, v)| acc.with(k, v));
    }
    let encoded: Vec<String> = path.map(encode_element).collect();
    attributes.clone().with(PATH_KEY, encoded.join("/"))
}

fn encode_element(element: &str) -> String {
    element.replace('%', "%25").replace('/', "%2F")
}

fn decode(value: &str) -> Vec<String> {
    value.split('/').map(decode_element).collect()
}

fn decode_element(element: &str) -> String {
    // `%2F` first would turn a literal "%252F" into "%/"; decode left to right.
    let mut out = String::with_capacity(element.len());
    let mut rest = element;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("%25") {
            out.push('%');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("%2F") {
            out.push('/');
            rest = after;
        } else {
            // Not one of our escapes: keep it as written.
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_any_names() {
        let cases: &[&[&str]] = &[
            &["a"],
            &["a", "b", "c"],
            &[""],
            &["", ""],
            &["x/y", "50%", "%2F", "%252F", "%"],
        ];
        for &case in cases {
            let ep = with_path(Endpoint::new(["h:1"]), case);
            assert_eq!(path(&ep), case, "{case:?}");
        }
        assert!(path(&Endpoint::new(["h:1"])).is_empty());
    }

    #[test]
    fn split_strips_the_first_element_and_keeps_other_attributes() {
        let eps = vec![
            with_path(
                Endpoint::new(["a:1"]).with_attribute("zone", "z1"),
                &["t1", "x"],
            ),
            with_path(Endpoint::new(["b:1"]), &["t2"]),
            with_path(Endpoint::new(["c:1"]), &["t1"]),
            Endpoint::new(["d:1"]),
        ];
        let split = split(eps);
        assert_eq!(split.keys().collect::<Vec<_>>(), ["t1", "t2"]);
        let t1 = &split["t1"];
        assert_eq!(t1.len(), 2);
        assert_eq!(t1[0].addresses[0].address, "a:1");
        assert_eq!(path(&t1[0]), ["x"]);
        assert_eq!(t1[0].attributes.get("zone"), Some("z1"));
        assert_eq!(
            t1[1].attributes.get(PATH_KEY),
            None,
            "an emptied path is removed"
        );
        assert!(t1[1].attributes.is_empty());
        assert_eq!(split["t2"][0].addresses[0].address, "b:1");
    }

    #[test]
    fn with_path_replaces_and_clears() {
        let ep = with_path(Endpoint::new(["a:1"]), &["old"]);
        let ep = with_path(ep, &["new", "deeper"]);
        assert_eq!(path(&ep), ["new", "deeper"]);
        let ep = with_path(ep, &[]);
        assert!(ep.attributes.is_empty());
    }
}

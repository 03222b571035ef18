//! What a resolver tells the channel: endpoints, a service config, or an error.

use crate::address::{Attributes, Endpoint};
use crate::channel::SelectorRef;
use crate::config::ConfigError;
use crate::status::Status;

/// One resolver result, handed to the root policy by
/// [`LbPolicy::resolver_update`](crate::LbPolicy::resolver_update).
///
/// # Examples
///
/// ```
/// use lb_core::{endpoints, ResolverUpdate, Status};
/// let ok = ResolverUpdate::from_endpoints(endpoints(["10.0.0.1:443", "10.0.0.2:443"]));
/// assert_eq!(ok.endpoints.as_ref().map(Vec::len), Ok(2));
/// let err = ResolverUpdate::from_error(Status::unavailable("dns down"));
/// assert!(err.endpoints.is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ResolverUpdate {
    /// The endpoints, or why the resolver has none.
    pub endpoints: Result<Vec<Endpoint>, Status>,
    /// The service config the resolver found: `None` when it has none, an error when
    /// it found one it could not parse.
    pub service_config: Option<Result<serde_json::Value, ConfigError>>,
    /// Attributes of the whole update.
    pub attributes: Attributes,
    /// A note for error messages (for example which DNS name was looked up).
    pub resolution_note: Option<String>,
    /// The per-call config selector (gRFC A31), for the channel only: a policy
    /// never sees one (the channel takes it before the update goes down).
    pub config_selector: Option<SelectorRef>,
}

impl ResolverUpdate {
    /// An update with these endpoints and nothing else.
    pub fn from_endpoints(endpoints: Vec<Endpoint>) -> Self {
        Self {
            endpoints: Ok(endpoints),
            service_config: None,
            attributes: Attributes::new(),
            resolution_note: None,
            config_selector: None,
        }
    }

    /// A resolver error.
    pub fn from_error(status: Status) -> Self {
        Self {
            endpoints: Err(status),
            ..Self::from_endpoints(Vec::new())
        }
    }
}

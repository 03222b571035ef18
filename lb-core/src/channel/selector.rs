//! Per-call config selection (gRFC A31): a resolver may hand the channel a
//! [`ConfigSelector`] with its update, and every call then asks it once, before
//! its first pick, for its method config and the attributes its pick sees.
//!
//! This is how xDS routes calls: the selector matches the call against the
//! route configuration, names the route's cluster in the call's attributes,
//! and `xds_cluster_manager` picks the child of that cluster.
//!
//! - The selector is published together with the picker the policy made from
//!   the same update, after the policy has taken it, so a call never selects a
//!   cluster the picker it then uses does not know (gRFC A74's "no tears").
//! - A call keeps what it selected for its whole life, retries included, and
//!   holds [`CallConfig::hold`] until it ends: a resolver keeps a cluster in
//!   its config while anything holds a reference to it.
//! - Without a selector a call uses the service config's `methodConfig`, as
//!   before; with one, the selector's method config replaces it.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::address::Attributes;
use crate::metadata::Metadata;
use crate::status::Status;

use super::service_config::MethodConfig;

/// Chooses each call's config. Called on the calling thread, once per call; it
/// must not block.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lb_core::Metadata;
/// use lb_core::channel::{CallConfig, ConfigSelector, MethodConfig};
///
/// /// Sends `/admin.*` calls to the cluster "admin" with a 1 s timeout.
/// #[derive(Debug)]
/// struct ByService;
/// impl ConfigSelector for ByService {
///     fn select(&self, method: &str, _: &Metadata) -> Result<CallConfig, lb_core::Status> {
///         let cluster = if method.starts_with("/admin.") { "admin" } else { "main" };
///         let mut config = CallConfig::with_attribute("cluster", cluster);
///         if cluster == "admin" {
///             config.method_config = Some(Arc::new(MethodConfig {
///                 timeout: Some(std::time::Duration::from_secs(1)),
///                 ..MethodConfig::default()
///             }));
///         }
///         Ok(config)
///     }
/// }
/// let chosen = ByService.select("/admin.Ops/Drain", &Metadata::new())?;
/// assert_eq!(chosen.attributes.get("cluster"), Some("admin"));
/// # Ok::<(), lb_core::Status>(())
/// ```
pub trait ConfigSelector: Send + Sync + fmt::Debug + 'static {
    /// The config of a call to `method` with `metadata`.
    ///
    /// # Errors
    ///
    /// The call cannot be routed (no route matches, say); the call fails with
    /// this status without a pick.
    fn select(&self, method: &str, metadata: &Metadata) -> Result<CallConfig, Status>;
}

/// What a [`ConfigSelector`] chose for one call.
#[derive(Default)]
pub struct CallConfig {
    /// The call's method config (timeout, retry policy, message limits); `None`
    /// means none at all, not the service config's.
    pub method_config: Option<Arc<MethodConfig>>,
    /// What the call's picks see in [`PickInfo::attributes`](crate::PickInfo).
    pub attributes: Attributes,
    /// The call's request hash, for `ring_hash` ([`PickInfo::request_hash`](crate::PickInfo)).
    pub request_hash: Option<u64>,
    /// Kept until the call ends, then dropped: a reference that keeps what the
    /// call routes to alive in the resolver's config.
    pub hold: Option<Box<dyn Any + Send + Sync>>,
}

impl CallConfig {
    /// A config with one attribute and nothing else.
    pub fn with_attribute(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            attributes: Attributes::new().with(key, value),
            ..Self::default()
        }
    }
}

impl fmt::Debug for CallConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallConfig")
            .field("method_config", &self.method_config)
            .field("attributes", &self.attributes)
            .field("request_hash", &self.request_hash)
            .field("hold", &self.hold.is_some())
            .finish()
    }
}

/// A shared [`ConfigSelector`] in a [`ResolverUpdate`](crate::ResolverUpdate):
/// two are equal when they are the same selector.
#[derive(Clone, Debug)]
pub struct SelectorRef(pub Arc<dyn ConfigSelector>);

impl PartialEq for SelectorRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

//! A resolver the test drives: it pushes whatever the test says and counts what the
//! channel asked of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lb_core::channel::{Resolver, ResolverBuilder, ResolverHandle, ResolverRegistry, Target};
use lb_core::{ResolverUpdate, endpoints};
use parking_lot::{Condvar, Mutex};

/// A resolver for the scheme `test` whose updates come from the test.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lb_core::channel::Channel;
/// use lb_testkit::{InMemoryTransport, ManualResolver};
///
/// let transport = InMemoryTransport::new();
/// transport.serve_address("10.0.0.1:80");
/// let resolver = ManualResolver::default();
/// let channel = Channel::builder("test:///my-service")
///     .transport(Arc::new(transport))
///     .resolver_registry(resolver.registry())
///     .build()?;
/// resolver.push_addresses(&["10.0.0.1:80"]);
/// let reply = channel.unary("/s/m", Vec::new(), Default::default())?;
/// assert_eq!(reply.message, b"10.0.0.1:80");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct ManualResolver {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    handle: Mutex<Option<ResolverHandle>>,
    endpoints: Mutex<Vec<String>>,
    /// Signalled on every build.
    built: Condvar,
    resolve_now: AtomicUsize,
    shutdowns: AtomicUsize,
}

impl ManualResolver {
    /// The built-in resolvers plus this one.
    pub fn registry(&self) -> ResolverRegistry {
        let mut registry = ResolverRegistry::with_builtins();
        registry.register(self.clone());
        registry
    }

    /// Pushes `update` to the channel.
    ///
    /// # Panics
    ///
    /// If no channel built this resolver yet, or the channel is gone.
    pub fn push(&self, update: ResolverUpdate) {
        let handle = self.inner.handle.lock().clone().expect("resolver built");
        handle.update(update).expect("channel alive");
    }

    /// Pushes one endpoint per address.
    pub fn push_addresses(&self, addresses: &[&str]) {
        self.push(ResolverUpdate::from_endpoints(endpoints(
            addresses.iter().copied(),
        )));
    }

    /// Pushes addresses with a service config (JSON text).
    ///
    /// # Panics
    ///
    /// If `config` is not JSON.
    pub fn push_with_config(&self, addresses: &[&str], config: &str) {
        let mut update = ResolverUpdate::from_endpoints(endpoints(addresses.iter().copied()));
        update.service_config = Some(Ok(
            serde_json::from_str(config).expect("service config is JSON")
        ));
        self.push(update);
    }

    /// How many times the channel asked to resolve again.
    pub fn resolve_now_count(&self) -> usize {
        self.inner.resolve_now.load(Ordering::SeqCst)
    }

    /// How many times a channel shut the resolver down.
    pub fn shutdown_count(&self) -> usize {
        self.inner.shutdowns.load(Ordering::SeqCst)
    }

    /// The target endpoints channels built this resolver for.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.lock().clone()
    }

    /// Waits (at most `timeout`) until the resolver has been built `n` times in
    /// all, for a resolver that a policy builds on its own schedule; true if it
    /// has.
    pub fn wait_for_builds(&self, n: usize, timeout: Duration) -> bool {
        let give_up = Instant::now() + timeout;
        let mut endpoints = self.inner.endpoints.lock();
        while endpoints.len() < n {
            if self
                .inner
                .built
                .wait_until(&mut endpoints, give_up)
                .timed_out()
            {
                return endpoints.len() >= n;
            }
        }
        true
    }
}

impl ResolverBuilder for ManualResolver {
    fn scheme(&self) -> &'static str {
        "test"
    }

    fn build(&self, target: &Target, handle: ResolverHandle) -> Result<Box<dyn Resolver>, String> {
        *self.inner.handle.lock() = Some(handle);
        self.inner.endpoints.lock().push(target.endpoint().into());
        self.inner.built.notify_all();
        Ok(Box::new(Running(self.inner.clone())))
    }
}

struct Running(Arc<Inner>);

impl Resolver for Running {
    fn resolve_now(&mut self) {
        self.0.resolve_now.fetch_add(1, Ordering::SeqCst);
    }

    fn shutdown(&mut self) {
        self.0.shutdowns.fetch_add(1, Ordering::SeqCst);
    }
}

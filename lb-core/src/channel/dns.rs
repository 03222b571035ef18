//! The `dns` resolver: the system resolver (`getaddrinfo` through
//! [`ToSocketAddrs`]) on a thread of its own.
//!
//! ```text
//!   build ──> thread "lb-resolver-dns": resolve ──update──> channel
//!                  ^                      │
//!                  └── resolve_now ───────┘   shutdown: the thread ends, build joins it
//! ```
//!
//! A target whose host is an IP literal needs no lookup: it resolves once, with no
//! thread. The channel decides when to resolve again (see the `resolver` module);
//! the thread only waits for `resolve_now` and `shutdown`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use super::resolver::{DEFAULT_PORT, Resolver, ResolverBuilder, ResolverHandle, static_resolver};
use super::target::{Target, join_host_port, split_host_port};
use crate::address::endpoints;
use crate::resolver::ResolverUpdate;
use crate::status::Status;

/// `dns:///host:port` (and a bare `host:port`): resolved with the system resolver.
#[derive(Clone, Copy, Debug, Default)]
pub struct DnsResolverBuilder;

impl ResolverBuilder for DnsResolverBuilder {
    fn scheme(&self) -> &'static str {
        "dns"
    }

    fn build(&self, target: &Target, handle: ResolverHandle) -> Result<Box<dyn Resolver>, String> {
        if !target.authority().is_empty() {
            return Err(format!(
                "custom DNS servers ({:?}) are not supported: use dns:///host:port",
                target.authority()
            ));
        }
        let (host, port) = split_host_port(target.endpoint(), DEFAULT_PORT)?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return static_resolver(&handle, vec![SocketAddr::new(ip, port).to_string()]);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let name = join_host_port(&host, port);
        let thread = thread::Builder::new()
            .name("lb-resolver-dns".into())
            .spawn(move || run(&host, port, &name, &rx, &handle))
            .map_err(|e| format!("cannot start the DNS resolver thread: {e}"))?;
        Ok(Box::new(DnsResolver {
            commands: tx,
            thread: Some(thread),
        }))
    }
}

enum Command {
    ResolveNow,
    Shutdown,
}

struct DnsResolver {
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl Resolver for DnsResolver {
    fn resolve_now(&mut self) {
        let _ = self.commands.send(Command::ResolveNow);
    }

    fn shutdown(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            // The thread ends after its current lookup at the latest.
            if thread.join().is_err() {
                log::error!("the DNS resolver thread panicked");
            }
        }
    }
}

impl Drop for DnsResolver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(host: &str, port: u16, name: &str, commands: &Receiver<Command>, handle: &ResolverHandle) {
    loop {
        if handle.update(lookup(host, port, name)).is_err() {
            return;
        }
        // Wait for the next request; several queued requests make one lookup.
        match commands.recv() {
            Ok(Command::ResolveNow) => {
                while let Ok(cmd) = commands.try_recv() {
                    if matches!(cmd, Command::Shutdown) {
                        return;
                    }
                }
            }
            Ok(Command::Shutdown) | Err(_) => return,
        }
    }
}

fn lookup(host: &str, port: u16, name: &str) -> ResolverUpdate {
    let mut update = match (host, port).to_socket_addrs() {
        Ok(addrs) => {
            let mut seen = Vec::new();
            for a in addrs {
                if !seen.contains(&a) {
                    seen.push(a);
                }
            }
            if seen.is_empty() {
                ResolverUpdate::from_error(Status::unavailable(format!(
                    "dns: {name} has no addresses"
                )))
            } else {
                let texts: Vec<String> = seen.iter().map(ToString::to_string).collect();
                ResolverUpdate::from_endpoints(endpoints(texts.iter().map(String::as_str)))
            }
        }
        Err(e) => ResolverUpdate::from_error(Status::unavailable(format!(
            "dns: cannot resolve {name}: {e}"
        ))),
    };
    update.resolution_note = Some(format!("dns lookup of {name}"));
    update
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::core::Input;

    #[test]
    fn localhost_resolves_on_a_thread_that_shutdown_joins() {
        let target = crate::channel::ResolverRegistry::with_builtins()
            .parse_target("dns:///localhost:50051")
            .unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut r = DnsResolverBuilder
            .build(&target, ResolverHandle::new(tx))
            .unwrap();
        let Ok(Input::Resolver(u)) = rx.recv_timeout(std::time::Duration::from_secs(30)) else {
            panic!("no update");
        };
        let addrs: Vec<String> = u
            .endpoints
            .unwrap()
            .iter()
            .map(|e| e.addresses[0].address.clone())
            .collect();
        assert!(
            addrs
                .iter()
                .any(|a| a == "127.0.0.1:50051" || a == "[::1]:50051"),
            "{addrs:?}"
        );
        r.resolve_now();
        assert!(matches!(
            rx.recv_timeout(std::time::Duration::from_secs(30)),
            Ok(Input::Resolver(_))
        ));
        r.shutdown();
        r.shutdown();
    }

    #[test]
    fn ip_literals_need_no_thread_and_bad_ports_fail_the_build() {
        let reg = crate::channel::ResolverRegistry::with_builtins();
        let (tx, rx) = crossbeam_channel::unbounded();
        let t = reg.parse_target("dns:///[::1]:8080").unwrap();
        DnsResolverBuilder
            .build(&t, ResolverHandle::new(tx.clone()))
            .unwrap();
        let Ok(Input::Resolver(u)) = rx.try_recv() else {
            panic!("a literal resolves at once");
        };
        assert_eq!(u.endpoints.unwrap(), endpoints(["[::1]:8080"]));
        let t = reg.parse_target("dns:///host:http").unwrap();
        let err = DnsResolverBuilder
            .build(&t, ResolverHandle::new(tx.clone()))
            .err()
            .unwrap();
        assert!(err.contains("bad port"), "{err}");
        let t = reg.parse_target("dns://8.8.8.8/host:1").unwrap();
        let err = DnsResolverBuilder
            .build(&t, ResolverHandle::new(tx))
            .err()
            .unwrap();
        assert!(err.contains("custom DNS servers"), "{err}");
    }
}

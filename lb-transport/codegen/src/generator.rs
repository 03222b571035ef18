//! The [`prost_build::ServiceGenerator`] that writes the stubs: for each service, the
//! client ([`crate::client`]) and the server trait with its mounter
//! ([`crate::server`]), each when enabled. prost-build appends what it writes to the
//! service's package file, after the messages, so message types are named as
//! prost-build resolved them (relative to the package module).

use std::fmt::Write as _;

use prost_build::{Comments, Method, Service};

/// Writes synchronous client stubs and server traits for `lb-transport`.
///
/// [`Builder`](crate::Builder) installs it; use it directly with a
/// `prost_build::Config` of your own.
///
/// # Examples
///
/// ```no_run
/// // build.rs, with a descriptor set from elsewhere.
/// # fn load() -> prost_types::FileDescriptorSet { unimplemented!() }
/// let mut config = prost_build::Config::new();
/// config.service_generator(Box::new(lb_codegen::StubGenerator::new(
///     true,
///     false,
///     lb_codegen::DEFAULT_STUBS_PATH,
/// )));
/// config.compile_fds(load())?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct StubGenerator {
    client: bool,
    server: bool,
    stubs: String,
}

impl StubGenerator {
    /// A generator of clients and/or servers whose code names the runtime as
    /// `stubs_path` (normally [`DEFAULT_STUBS_PATH`](crate::DEFAULT_STUBS_PATH)).
    pub fn new(client: bool, server: bool, stubs_path: &str) -> Self {
        Self {
            client,
            server,
            stubs: stubs_path.trim_end_matches("::").to_owned(),
        }
    }

    /// The code for one service, as [`prost_build::ServiceGenerator::generate`]
    /// appends it.
    pub fn service_code(&self, service: &Service) -> String {
        let mut buf = String::new();
        if self.client {
            crate::client::generate(service, &self.stubs, &mut buf);
        }
        if self.server {
            crate::server::generate(service, &self.stubs, &mut buf);
        }
        buf
    }
}

impl prost_build::ServiceGenerator for StubGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        buf.push_str(&self.service_code(&service));
    }
}

/// The kind of an RPC, from its streaming flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    Bidi,
}

impl Kind {
    pub(crate) fn of(method: &Method) -> Self {
        match (method.client_streaming, method.server_streaming) {
            (false, false) => Self::Unary,
            (false, true) => Self::ServerStreaming,
            (true, false) => Self::ClientStreaming,
            (true, true) => Self::Bidi,
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Unary => "a unary call",
            Self::ServerStreaming => "a server-streaming call",
            Self::ClientStreaming => "a client-streaming call",
            Self::Bidi => "a bidirectional-streaming call",
        }
    }
}

/// The service's full name, `package.Service` (or `Service` without a package).
pub(crate) fn full_name(service: &Service) -> String {
    if service.package.is_empty() {
        service.proto_name.clone()
    } else {
        format!("{}.{}", service.package, service.proto_name)
    }
}

/// The method's path on the wire, `/package.Service/Method`.
pub(crate) fn method_path(service: &Service, method: &Method) -> String {
    format!("/{}/{}", full_name(service), method.proto_name)
}

/// Appends the item's proto comments as docs, then `summary` as a paragraph of its
/// own (so every generated item is documented), at `indent` levels of four spaces.
pub(crate) fn docs(comments: &Comments, summary: &str, indent: u8, buf: &mut String) {
    let has_comments = !comments.leading.is_empty() || !comments.trailing.is_empty();
    let leading = Comments {
        leading_detached: Vec::new(),
        leading: comments.leading.clone(),
        trailing: comments.trailing.clone(),
    };
    leading.append_with_indent(indent, buf);
    let pad = "    ".repeat(usize::from(indent));
    if has_comments {
        let _ = writeln!(buf, "{pad}///");
    }
    for line in summary.lines() {
        if line.is_empty() {
            let _ = writeln!(buf, "{pad}///");
        } else {
            let _ = writeln!(buf, "{pad}/// {line}");
        }
    }
}

/// `#[deprecated]` for a method marked `option deprecated = true;`.
pub(crate) fn deprecation(method: &Method, indent: u8, buf: &mut String) {
    if method.options.deprecated() {
        let _ = writeln!(buf, "{}#[deprecated]", "    ".repeat(usize::from(indent)));
    }
}

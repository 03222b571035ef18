//! The server half of the generated code: the service trait (one method per RPC,
//! typed) and `FooServer`, which registers an implementation's methods on the
//! server's `ServerBuilder` through the `stubs::server` adapters.
//!
//! It targets this `ServerBuilder` API (`F` the handler for the path):
//!
//! | RPC | registered with | handler |
//! | --- | --- | --- |
//! | unary | `unary(path, F)` | `Fn(Request) -> Result<Response, Status>` |
//! | server-streaming | `server_streaming(path, F)` | `Fn(Vec<u8>, &mut ServerCall) -> Result<(), Status>` |
//! | client-streaming | `client_streaming(path, F)` | `Fn(&mut ServerCall) -> Result<Vec<u8>, Status>` |
//! | bidi | `bidi_streaming(path, F)` | `Fn(&mut ServerCall) -> Result<(), Status>` |

use std::fmt::Write as _;

use prost_build::{Method, Service};

use crate::generator::{Kind, deprecation, docs, full_name, method_path};

/// Appends `service`'s trait and server to `buf`; `rt` is the path of the stubs
/// runtime.
pub(crate) fn generate(service: &Service, rt: &str, buf: &mut String) {
    let name = &service.name;
    let server = format!("{name}Server");
    let full = full_name(service);
    let status = format!("{rt}::codegen::Status");

    docs(
        &service.comments,
        &format!(
            "The `{full}` service, to implement on a server: one method per RPC, run on\n\
             the server's worker threads. Serve an implementation with [`{server}`]."
        ),
        0,
        buf,
    );
    let _ = writeln!(
        buf,
        "pub trait {name}: ::core::marker::Send + ::core::marker::Sync + 'static {{"
    );
    for (i, method) in service.methods.iter().enumerate() {
        if i > 0 {
            buf.push('\n');
        }
        trait_method(service, method, rt, &status, buf);
    }
    buf.push_str("}\n\n");

    // Registering a deprecated method names it: that is no use of it to warn about.
    let allow = if service.methods.iter().any(|m| m.options.deprecated()) {
        "    #[allow(deprecated)]\n"
    } else {
        ""
    };
    let _ = write!(
        buf,
        "\
/// Serves a [`{name}`] implementation: [`{server}::mount`] registers its methods on a
/// server builder.
///
/// ```ignore
/// let server = {server}::new(service).mount(Server::builder()).bind(\"127.0.0.1:50051\")?;
/// ```
pub struct {server}<S> {{
    service: {rt}::codegen::Arc<S>,
}}

impl<S: {name}> {server}<S> {{
    /// Serves `service`.
    pub fn new(service: S) -> Self {{
        Self::from_arc({rt}::codegen::Arc::new(service))
    }}

    /// Serves a shared `service`.
    pub fn from_arc(service: {rt}::codegen::Arc<S>) -> Self {{
        Self {{ service }}
    }}

    /// Registers a handler on `builder` for each method of the service (replacing
    /// any already registered for its path) and returns the builder.
{allow}    pub fn mount(self, builder: {rt}::codegen::ServerBuilder) -> {rt}::codegen::ServerBuilder {{
"
    );
    if service.methods.is_empty() {
        buf.push_str("        let _ = self.service;\n        builder\n");
    } else {
        buf.push_str("        let service = self.service;\n        builder\n");
        for method in &service.methods {
            registration(service, method, rt, buf);
        }
    }
    let _ = write!(
        buf,
        "    }}
}}

impl<S> ::core::clone::Clone for {server}<S> {{
    fn clone(&self) -> Self {{
        Self {{
            service: {rt}::codegen::Arc::clone(&self.service),
        }}
    }}
}}

impl<S> ::core::fmt::Debug for {server}<S> {{
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{
        f.write_str(\"{server}\")
    }}
}}

"
    );
}

/// One method of the service trait.
fn trait_method(service: &Service, method: &Method, rt: &str, status: &str, buf: &mut String) {
    let kind = Kind::of(method);
    let path = method_path(service, method);
    let (input, output) = (&method.input_type, &method.output_type);
    let (params, returns, how) = match kind {
        Kind::Unary => (
            format!("request: {rt}::server::Request<{input}>"),
            format!("{rt}::Response<{output}>"),
            "Return the response (with metadata to send, if any) or the status to fail with.",
        ),
        Kind::ServerStreaming => (
            format!("request: {input}, responses: &mut {rt}::server::ResponseSink<'_, {output}>"),
            "()".to_owned(),
            "Send the responses on `responses`, then return OK or the status to end with.",
        ),
        Kind::ClientStreaming => (
            format!("requests: &mut {rt}::server::RequestStream<'_, {input}>"),
            output.clone(),
            "Read the requests from `requests`, then return the response or a status.",
        ),
        Kind::Bidi => (
            format!("stream: &mut {rt}::server::BidiStream<'_, {input}, {output}>"),
            "()".to_owned(),
            "Receive and send on `stream`, then return OK or the status to end with.",
        ),
    };
    docs(
        &method.comments,
        &format!("`{path}`: {}. {how}", kind.describe()),
        1,
        buf,
    );
    deprecation(method, 1, buf);
    let _ = writeln!(
        buf,
        "    fn {}(&self, {params}) -> ::core::result::Result<{returns}, {status}>;",
        method.name
    );
}

/// The registration of one method in `mount`, a link of the chain on the
/// builder: the server builder's handler for the method's kind, adapting bytes to
/// the trait method's types, holding its own handle on the service.
fn registration(service: &Service, method: &Method, rt: &str, buf: &mut String) {
    let path = method_path(service, method);
    let name = &method.name;
    let (input, output) = (&method.input_type, &method.output_type);
    let adapter = |function: &str| format!("{rt}::server::{function}::<{input}, {output}, _>");
    let (register, handler) = match Kind::of(method) {
        Kind::Unary => (
            "unary",
            format!(
                "move |request| {}(request, |request| service.{name}(request))",
                adapter("unary")
            ),
        ),
        Kind::ServerStreaming => (
            "server_streaming",
            format!(
                "move |request, call| {}(request, call, |request, responses| service.{name}(request, responses))",
                adapter("server_streaming")
            ),
        ),
        Kind::ClientStreaming => (
            "client_streaming",
            format!(
                "move |call| {}(call, |requests| service.{name}(requests))",
                adapter("client_streaming")
            ),
        ),
        Kind::Bidi => (
            "bidi_streaming",
            format!(
                "move |call| {}(call, |stream| service.{name}(stream))",
                adapter("bidi_streaming")
            ),
        ),
    };
    let _ = writeln!(
        buf,
        "            .{register}(\"{path}\", {{\n                \
             let service = {rt}::codegen::Arc::clone(&service);\n                \
             {handler}\n            \
         }})"
    );
}

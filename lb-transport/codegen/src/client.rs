//! The client half of the generated code: a `FooClient` struct holding a channel and
//! default call options, with two methods per RPC (`m` and `m_with`), each a thin
//! call into the `stubs` runtime.

use std::fmt::Write as _;

use prost_build::{Method, Service};

use crate::generator::{Kind, deprecation, docs, full_name, method_path};

/// Appends `service`'s client to `buf`; `rt` is the path of the stubs runtime.
pub(crate) fn generate(service: &Service, rt: &str, buf: &mut String) {
    let client = format!("{}Client", service.name);
    let full = full_name(service);
    docs(
        &service.comments,
        &format!(
            "A client for the `{full}` service: typed, blocking calls on a channel.\n\
             \n\
             Each RPC has two methods: `rpc(…)` makes the call with the client's default\n\
             options ([`{client}::with_default_options`]); `rpc_with(…, options)` with its\n\
             own, and for a unary RPC also returns the response's metadata."
        ),
        0,
        buf,
    );
    let _ = write!(
        buf,
        "\
#[derive(Clone, Debug)]
pub struct {client} {{
    channel: {rt}::codegen::Channel,
    options: {rt}::codegen::CallOptions,
}}

impl {client} {{
    /// A client making its calls on `channel`, with default call options.
    pub fn new(channel: {rt}::codegen::Channel) -> Self {{
        Self {{
            channel,
            options: {rt}::codegen::CallOptions::default(),
        }}
    }}

    /// This client, with `options` for the calls made without options of their
    /// own. Give a `timeout` here rather than a `deadline`, which is a point in time.
    #[must_use]
    pub fn with_default_options(mut self, options: {rt}::codegen::CallOptions) -> Self {{
        self.options = options;
        self
    }}

    /// The channel the calls go on.
    pub fn channel(&self) -> &{rt}::codegen::Channel {{
        &self.channel
    }}
"
    );
    for method in &service.methods {
        buf.push('\n');
        method_code(service, method, rt, buf);
    }
    buf.push_str("}\n\n");
}

/// The two methods of one RPC.
fn method_code(service: &Service, method: &Method, rt: &str, buf: &mut String) {
    let kind = Kind::of(method);
    let path = method_path(service, method);
    let name = &method.name;
    let (input, output) = (&method.input_type, &method.output_type);
    let status = format!("{rt}::codegen::Status");
    let options = format!("{rt}::codegen::CallOptions");
    // What the call returns, its runtime function, and the request argument.
    let (returns, function, request_param, request_arg) = match kind {
        Kind::Unary => (
            format!("{rt}::Response<{output}>"),
            "unary",
            format!("request: &{input}, "),
            "request, ",
        ),
        Kind::ServerStreaming => (
            format!("{rt}::ServerStreaming<{output}>"),
            "server_streaming",
            format!("request: &{input}, "),
            "request, ",
        ),
        Kind::ClientStreaming => (
            format!("{rt}::ClientStreaming<{input}, {output}>"),
            "client_streaming",
            String::new(),
            "",
        ),
        Kind::Bidi => (
            format!("{rt}::Streaming<{input}, {output}>"),
            "bidi_streaming",
            String::new(),
            "",
        ),
    };
    let call =
        format!("{rt}::{function}::<{input}, {output}>(&self.channel, \"{path}\", {request_arg}");

    // `rpc(…)`: the default options; a unary call returns just the message.
    let (short_returns, unwrap) = if kind == Kind::Unary {
        (
            output.clone(),
            format!(".map({rt}::Response::into_message)"),
        )
    } else {
        (returns.clone(), String::new())
    };
    let usage = match kind {
        Kind::Unary => "",
        Kind::ServerStreaming => "\nThe responses come as an iterator.",
        Kind::ClientStreaming => {
            "\nSend the requests on the call it returns, then `finish` it for the response."
        }
        Kind::Bidi => "\nSend and receive on the call it returns, or `split` it for two threads.",
    };
    docs(
        &method.comments,
        &format!(
            "`{path}`: {}, with the client's default options.{usage}",
            kind.describe()
        ),
        1,
        buf,
    );
    deprecation(method, 1, buf);
    let _ = writeln!(
        buf,
        "    pub fn {name}(&self, {request_param}) -> ::core::result::Result<{short_returns}, {status}> {{\n        \
                 {call}self.options.clone()){unwrap}\n    \
             }}\n"
    );

    // `rpc_with(…, options)`.
    let extra = if kind == Kind::Unary {
        ", returning the response's headers and trailers too"
    } else {
        ""
    };
    let _ = writeln!(
        buf,
        "    /// As [`Self::{name}`], with `options` for this call{extra}."
    );
    deprecation(method, 1, buf);
    let _ = writeln!(
        buf,
        "    pub fn {name}_with(&self, {request_param}options: {options}) -> ::core::result::Result<{returns}, {status}> {{\n        \
                 {call}options)\n    \
             }}"
    );
}

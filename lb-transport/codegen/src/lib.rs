//! Typed, synchronous gRPC stubs from `.proto` files, for `lb-core` channels and the
//! `lb-transport` server, generated from a build script. No system `protoc` is
//! needed: [protox](https://docs.rs/protox) (a protobuf compiler in Rust) parses the
//! files, and [prost-build](https://docs.rs/prost-build) writes the messages, with
//! this crate's [`ServiceGenerator`](prost_build::ServiceGenerator) adding the
//! stubs. The generated code blocks; it uses no async runtime.
//!
//! ```text
//!  .proto files ──protox──> FileDescriptorSet ──prost-build──> OUT_DIR/<package>.rs
//!                                                  │  messages (prost)
//!                                                  └─ StubGenerator: per service
//!                                                       FooClient   (client, typed calls)
//!                                                       trait Foo   (server, one method per RPC)
//!                                                       FooServer   (server, mounts a Foo)
//! ```
//!
//! # Generating
//!
//! In `build.rs` (with `lb-codegen` under `[build-dependencies]`, and `prost` and
//! `lb-transport` with its `prost` feature under `[dependencies]`):
//!
//! ```no_run
//! fn main() -> std::io::Result<()> {
//!     lb_codegen::compile_protos(&["proto/helloworld.proto"], &["proto"])
//! }
//! ```
//!
//! Then include the package's file where the code should live:
//!
//! ```ignore
//! pub mod helloworld {
//!     lb_transport::include_proto!("helloworld");
//! }
//! ```
//!
//! [`Builder`] has the options: client or server code only, another output
//! directory, a `prost_build::Config` of your own.
//!
//! # The client
//!
//! For `service Greeter { rpc SayHello (HelloRequest) returns (HelloReply); }` in
//! `package helloworld`, `GreeterClient` wraps a channel and has two methods per
//! RPC: `say_hello(&request)` with the client's default call options, returning the
//! message; and `say_hello_with(&request, options)` returning the message with the
//! response's metadata. Streaming RPCs return the typed wrappers of
//! `lb_transport::stubs`:
//!
//! | RPC | `fn m(&self, …)` returns |
//! | --- | --- |
//! | unary | `Result<Reply, Status>` |
//! | server-streaming | `Result<ServerStreaming<Reply>, Status>`, an iterator |
//! | client-streaming (no request argument) | `Result<ClientStreaming<Request, Reply>, Status>`: `send`, then `finish` |
//! | bidi (no request argument) | `Result<Streaming<Request, Reply>, Status>`, which `split`s |
//!
//! ```ignore
//! let channel = lb_core::channel::Channel::builder("dns:///localhost:50051")
//!     .transport(transport)
//!     .build()?;
//! let client = GreeterClient::new(channel);
//! let reply = client.say_hello(&HelloRequest { name: "world".into() })?;
//! ```
//!
//! # The server
//!
//! The trait `Greeter: Send + Sync + 'static` has one method per RPC, taking the
//! typed request (or request stream) and the call's context; `GreeterServer`
//! registers an implementation's methods on a `ServerBuilder`:
//!
//! ```ignore
//! struct MyGreeter;
//! impl Greeter for MyGreeter {
//!     fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
//!         Ok(Response::new(HelloReply { message: format!("Hello {}", request.message.name) }))
//!     }
//! }
//! let server = GreeterServer::new(MyGreeter).mount(Server::builder()).bind("127.0.0.1:50051")?;
//! ```
//!
//! # Errors
//!
//! A `.proto` file that does not parse or check fails the build with an
//! [`io::Error`] naming the file, line and column (`proto/x.proto:3:14: …`).

mod client;
mod error;
mod generator;
mod server;

use std::io;
use std::path::{Path, PathBuf};

pub use generator::StubGenerator;

/// The runtime path generated code names by default.
pub const DEFAULT_STUBS_PATH: &str = "::lb_transport::stubs";

/// Compiles `protos` (found in `includes`) into `OUT_DIR`: prost messages, and for
/// each service a client and a server trait. A shortcut for
/// [`Builder::new().compile_protos(protos, includes)`](Builder::compile_protos).
///
/// # Errors
///
/// A file is missing, does not parse or does not check (the error names the file,
/// line and column), or the output cannot be written (`OUT_DIR` unset outside a
/// build script).
///
/// # Examples
///
/// ```no_run
/// // build.rs
/// fn main() -> std::io::Result<()> {
///     lb_codegen::compile_protos(&["proto/route_guide.proto"], &["proto"])
/// }
/// ```
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> io::Result<()> {
    Builder::new().compile_protos(protos, includes)
}

/// Options for generating stubs.
///
/// # Examples
///
/// ```no_run
/// // build.rs: client stubs only, into a directory of our choosing.
/// fn main() -> std::io::Result<()> {
///     lb_codegen::Builder::new()
///         .build_server(false)
///         .out_dir("src/generated")
///         .compile_protos(&["proto/helloworld.proto"], &["proto"])
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    build_client: bool,
    build_server: bool,
    out_dir: Option<PathBuf>,
    stubs_path: String,
    emit_rerun_if_changed: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// Clients and servers, into `OUT_DIR`, naming `::lb_transport::stubs`, with
    /// `cargo:rerun-if-changed` lines for every file read when run from a build
    /// script (when `OUT_DIR` is set).
    pub fn new() -> Self {
        Self {
            build_client: true,
            build_server: true,
            out_dir: None,
            stubs_path: DEFAULT_STUBS_PATH.to_owned(),
            emit_rerun_if_changed: std::env::var_os("OUT_DIR").is_some(),
        }
    }

    /// Whether to generate the `FooClient` structs (on by default).
    #[must_use]
    pub fn build_client(mut self, enable: bool) -> Self {
        self.build_client = enable;
        self
    }

    /// Whether to generate the `Foo` traits and `FooServer` structs (on by
    /// default).
    #[must_use]
    pub fn build_server(mut self, enable: bool) -> Self {
        self.build_server = enable;
        self
    }

    /// Where to write the `.rs` files, instead of `OUT_DIR`.
    #[must_use]
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// The path by which generated code names `lb_transport::stubs`, for a crate
    /// that re-exports lb-transport under another name (like prost-build's
    /// `prost_path`). [`DEFAULT_STUBS_PATH`] by default.
    #[must_use]
    pub fn stubs_path(mut self, path: impl Into<String>) -> Self {
        self.stubs_path = path.into();
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for every `.proto` file read, so
    /// that Cargo runs the build script again when one changes (on by default in a
    /// build script).
    #[must_use]
    pub fn emit_rerun_if_changed(mut self, enable: bool) -> Self {
        self.emit_rerun_if_changed = enable;
        self
    }

    /// The service generator with these options, for a `prost_build::Config` set up
    /// by hand (see also [`Builder::compile_with_config`]).
    pub fn service_generator(&self) -> Box<dyn prost_build::ServiceGenerator> {
        Box::new(StubGenerator::new(
            self.build_client,
            self.build_server,
            &self.stubs_path,
        ))
    }

    /// Compiles `protos`, found in `includes`, and writes one `.rs` file per
    /// protobuf package.
    ///
    /// # Errors
    ///
    /// As [`compile_protos`].
    pub fn compile_protos(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> io::Result<()> {
        self.compile_with_config(prost_build::Config::new(), protos, includes)
    }

    /// As [`Builder::compile_protos`], with a `prost_build::Config` of your own (for
    /// its message options: attributes, `bytes` fields, maps …). Its service
    /// generator and, when set here, its output directory are replaced.
    ///
    /// # Errors
    ///
    /// As [`compile_protos`].
    pub fn compile_with_config(
        self,
        config: prost_build::Config,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> io::Result<()> {
        let includes: Vec<PathBuf> = includes.iter().map(|p| p.as_ref().to_owned()).collect();
        let mut compiler =
            protox::Compiler::new(&includes).map_err(|e| error::to_io_error(&e, &includes))?;
        compiler.include_imports(true).include_source_info(true);
        for proto in protos {
            compiler
                .open_file(proto)
                .map_err(|e| error::to_io_error(&e, &includes))?;
        }
        if self.emit_rerun_if_changed {
            for file in compiler.files() {
                if let Some(path) = file.path() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
        self.compile_fds_with_config(config, compiler.file_descriptor_set())
    }

    /// Generates code from a descriptor set made elsewhere (with source info, for
    /// the comments to become docs).
    ///
    /// # Errors
    ///
    /// The output cannot be written.
    pub fn compile_fds(self, fds: prost_types::FileDescriptorSet) -> io::Result<()> {
        self.compile_fds_with_config(prost_build::Config::new(), fds)
    }

    fn compile_fds_with_config(
        self,
        mut config: prost_build::Config,
        fds: prost_types::FileDescriptorSet,
    ) -> io::Result<()> {
        if let Some(dir) = &self.out_dir {
            config.out_dir(dir);
        }
        config.service_generator(self.service_generator());
        config.compile_fds(fds)
    }
}

#[cfg(test)]
mod tests;

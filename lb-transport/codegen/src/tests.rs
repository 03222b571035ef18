//! The generator end to end on `.proto` text written to a temporary directory:
//! what the generated files contain (compared with whitespace removed, since
//! prost-build formats them), the options, and the errors for bad input.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use prost_build::{Comments, Method, Service};

use crate::{Builder, StubGenerator};

/// A directory removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lb-codegen-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("out")).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    fn out(&self) -> PathBuf {
        self.0.join("out")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const ROUTE_GUIDE: &str = r#"
syntax = "proto3";
package routeguide;

message Point { int32 latitude = 1; int32 longitude = 2; }
message Rectangle { Point lo = 1; Point hi = 2; }
message Feature { string name = 1; Point location = 2; }
message RouteNote { Point location = 1; string message = 2; }
message RouteSummary { int32 point_count = 1; }

// Interface exported by the server.
service RouteGuide {
  // Obtains the feature at a given position.
  rpc GetFeature(Point) returns (Feature) {}
  rpc ListFeatures(Rectangle) returns (stream Feature) {}
  rpc RecordRoute(stream Point) returns (RouteSummary) {}
  rpc RouteChat(stream RouteNote) returns (stream RouteNote) {}
  rpc OldWay(Point) returns (Feature) { option deprecated = true; }
}
"#;

/// `text` without whitespace and without the trailing commas prettyplease adds
/// when it breaks a list over lines.
fn squeeze(text: &str) -> String {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    text.replace(",)", ")")
        .replace(",>", ">")
        .replace(",}", "}")
}

/// Asserts that `code` contains every one of `items`, whitespace aside.
#[track_caller]
fn assert_has(code: &str, items: &[&str]) {
    let squeezed = squeeze(code);
    for item in items {
        assert!(
            squeezed.contains(&squeeze(item)),
            "missing `{item}` in:\n{code}"
        );
    }
}

#[track_caller]
fn assert_lacks(code: &str, items: &[&str]) {
    let squeezed = squeeze(code);
    for item in items {
        assert!(
            !squeezed.contains(&squeeze(item)),
            "unexpected `{item}` in:\n{code}"
        );
    }
}

fn generate(builder: Builder, name: &str, text: &str) -> io::Result<(TempDir, String)> {
    let dir = TempDir::new();
    let proto = dir.write(name, text);
    builder
        .out_dir(dir.out())
        .emit_rerun_if_changed(false)
        .compile_protos(&[&proto], &[&dir.0])?;
    let mut code = String::new();
    for entry in fs::read_dir(dir.out())? {
        code.push_str(&fs::read_to_string(entry?.path())?);
    }
    Ok((dir, code))
}

#[test]
fn the_client_has_two_methods_per_rpc_of_every_kind() {
    let (_dir, code) = generate(Builder::new(), "route_guide.proto", ROUTE_GUIDE).unwrap();
    assert_has(
        &code,
        &[
            "pub struct Point",
            "pub struct RouteGuideClient { channel: ::lb_transport::stubs::codegen::Channel, options: ::lb_transport::stubs::codegen::CallOptions, }",
            "pub fn new(channel: ::lb_transport::stubs::codegen::Channel) -> Self",
            "pub fn with_default_options(mut self, options: ::lb_transport::stubs::codegen::CallOptions) -> Self",
            "pub fn get_feature(&self, request: &Point) -> ::core::result::Result<Feature, ::lb_transport::stubs::codegen::Status>",
            "::lb_transport::stubs::unary::<Point, Feature>(&self.channel, \"/routeguide.RouteGuide/GetFeature\", request, self.options.clone()).map(::lb_transport::stubs::Response::into_message)",
            "pub fn get_feature_with(&self, request: &Point, options: ::lb_transport::stubs::codegen::CallOptions) -> ::core::result::Result<::lb_transport::stubs::Response<Feature>, ::lb_transport::stubs::codegen::Status>",
            "pub fn list_features(&self, request: &Rectangle) -> ::core::result::Result<::lb_transport::stubs::ServerStreaming<Feature>, ::lb_transport::stubs::codegen::Status>",
            "::lb_transport::stubs::server_streaming::<Rectangle, Feature>(&self.channel, \"/routeguide.RouteGuide/ListFeatures\", request, options)",
            "pub fn record_route(&self) -> ::core::result::Result<::lb_transport::stubs::ClientStreaming<Point, RouteSummary>, ::lb_transport::stubs::codegen::Status>",
            "::lb_transport::stubs::client_streaming::<Point, RouteSummary>(&self.channel, \"/routeguide.RouteGuide/RecordRoute\", self.options.clone())",
            "pub fn route_chat_with(&self, options: ::lb_transport::stubs::codegen::CallOptions) -> ::core::result::Result<::lb_transport::stubs::Streaming<RouteNote, RouteNote>, ::lb_transport::stubs::codegen::Status>",
            "::lb_transport::stubs::bidi_streaming::<RouteNote, RouteNote>(&self.channel, \"/routeguide.RouteGuide/RouteChat\", options)",
        ],
    );
    assert_lacks(&code, &["async", "tokio", "futures", "tonic"]);
}

#[test]
fn the_server_trait_has_one_typed_method_per_rpc_and_mount_registers_each() {
    let (_dir, code) = generate(Builder::new(), "route_guide.proto", ROUTE_GUIDE).unwrap();
    assert_has(
        &code,
        &[
            "pub trait RouteGuide: ::core::marker::Send + ::core::marker::Sync + 'static",
            "fn get_feature(&self, request: ::lb_transport::stubs::server::Request<Point>) -> ::core::result::Result<::lb_transport::stubs::Response<Feature>, ::lb_transport::stubs::codegen::Status>;",
            "fn list_features(&self, request: Rectangle, responses: &mut ::lb_transport::stubs::server::ResponseSink<'_, Feature>) -> ::core::result::Result<(), ::lb_transport::stubs::codegen::Status>;",
            "fn record_route(&self, requests: &mut ::lb_transport::stubs::server::RequestStream<'_, Point>) -> ::core::result::Result<RouteSummary, ::lb_transport::stubs::codegen::Status>;",
            "fn route_chat(&self, stream: &mut ::lb_transport::stubs::server::BidiStream<'_, RouteNote, RouteNote>) -> ::core::result::Result<(), ::lb_transport::stubs::codegen::Status>;",
            "pub struct RouteGuideServer<S>",
            "pub fn mount(self, builder: ::lb_transport::stubs::codegen::ServerBuilder) -> ::lb_transport::stubs::codegen::ServerBuilder",
            "let service = self.service; builder .unary(\"/routeguide.RouteGuide/GetFeature\", { let service = ::lb_transport::stubs::codegen::Arc::clone(&service); move |request| ::lb_transport::stubs::server::unary::<Point, Feature, _>(request, |request| service.get_feature(request)) })",
            ".server_streaming(\"/routeguide.RouteGuide/ListFeatures\", { let service = ::lb_transport::stubs::codegen::Arc::clone(&service); move |request, call| ::lb_transport::stubs::server::server_streaming::<Rectangle, Feature, _>(request, call, |request, responses| service.list_features(request, responses)) })",
            ".client_streaming(\"/routeguide.RouteGuide/RecordRoute\", { let service = ::lb_transport::stubs::codegen::Arc::clone(&service); move |call| ::lb_transport::stubs::server::client_streaming::<Point, RouteSummary, _>(call, |requests| service.record_route(requests)) })",
            ".bidi_streaming(\"/routeguide.RouteGuide/RouteChat\", { let service = ::lb_transport::stubs::codegen::Arc::clone(&service); move |call| ::lb_transport::stubs::server::bidi_streaming::<RouteNote, RouteNote, _>(call, |stream| service.route_chat(stream)) })",
        ],
    );
}

#[test]
fn proto_comments_become_docs_and_deprecated_rpcs_are_marked() {
    let (_dir, code) = generate(Builder::new(), "route_guide.proto", ROUTE_GUIDE).unwrap();
    assert!(
        code.contains("/// Interface exported by the server."),
        "{code}"
    );
    assert!(
        code.contains("/// Obtains the feature at a given position."),
        "{code}"
    );
    assert!(
        code.contains("`/routeguide.RouteGuide/RecordRoute`: a client-streaming call"),
        "{code}"
    );
    // The client's two methods and the trait's method.
    assert_eq!(code.matches("#[deprecated]").count(), 3, "{code}");
    assert_has(
        &code,
        &[
            "#[allow(deprecated)] pub fn mount(",
            ".unary(\"/routeguide.RouteGuide/OldWay\"",
        ],
    );
}

#[test]
fn client_and_server_can_be_turned_off() {
    let (_dir, client_only) = generate(
        Builder::new().build_server(false),
        "route_guide.proto",
        ROUTE_GUIDE,
    )
    .unwrap();
    assert_has(&client_only, &["pub struct RouteGuideClient"]);
    assert_lacks(&client_only, &["pub trait RouteGuide", "RouteGuideServer"]);

    let (_dir, server_only) = generate(
        Builder::new().build_client(false),
        "route_guide.proto",
        ROUTE_GUIDE,
    )
    .unwrap();
    assert_has(&server_only, &["pub trait RouteGuide", "RouteGuideServer"]);
    assert_lacks(&server_only, &["RouteGuideClient"]);
    assert_has(&server_only, &["pub struct Point"]);
}

#[test]
fn the_stubs_path_can_be_changed() {
    let (_dir, code) = generate(
        Builder::new().stubs_path("crate::rt::"),
        "route_guide.proto",
        ROUTE_GUIDE,
    )
    .unwrap();
    assert_has(&code, &["crate::rt::unary::<Point, Feature>"]);
    assert_lacks(&code, &["::lb_transport", "crate::rt::::"]);
}

#[test]
fn a_file_without_a_package_gets_paths_without_one() {
    let text = "syntax = \"proto3\";\nmessage Ping {}\nservice Pinger { rpc Ping(Ping) returns (Ping); }\n";
    let (dir, code) = generate(Builder::new(), "ping.proto", text).unwrap();
    assert_has(&code, &["\"/Pinger/Ping\"", "pub struct PingerClient"]);
    assert!(
        dir.out().join("_.rs").is_file(),
        "prost-build's default name"
    );
}

#[test]
fn imports_resolve_through_the_include_paths() {
    let dir = TempDir::new();
    dir.write(
        "common/geo.proto",
        "syntax = \"proto3\";\npackage common;\nmessage Point { int32 x = 1; }\n",
    );
    let proto = dir.write(
        "svc.proto",
        "syntax = \"proto3\";\npackage svc;\nimport \"common/geo.proto\";\n\
         import \"google/protobuf/empty.proto\";\n\
         service Map { rpc Locate(google.protobuf.Empty) returns (common.Point); }\n",
    );
    Builder::new()
        .out_dir(dir.out())
        .emit_rerun_if_changed(false)
        .compile_protos(&[proto], &[&dir.0])
        .unwrap();
    let code = fs::read_to_string(dir.out().join("svc.rs")).unwrap();
    assert_has(
        &code,
        &["::lb_transport::stubs::unary::<(), super::common::Point>"],
    );
    assert!(dir.out().join("common.rs").is_file());
}

#[test]
fn a_syntax_error_names_the_file_line_and_column() {
    let text = "syntax = \"proto3\";\npackage bad;\n\nmessage Broken {\n  int32 x = ;\n}\n";
    let err = generate(Builder::new(), "bad.proto", text).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let message = err.to_string();
    assert!(message.contains("bad.proto:5:13: "), "{message}");
    assert!(
        Path::new(message.split(':').next().unwrap()).is_absolute(),
        "the path on disk: {message}"
    );
}

#[test]
fn an_unknown_type_names_where_it_is_used() {
    let text =
        "syntax = \"proto3\";\npackage bad;\nservice S {\n  rpc M(Nope) returns (Nope);\n}\n";
    let err = generate(Builder::new(), "types.proto", text).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let message = err.to_string();
    assert!(message.contains("types.proto:4:9: "), "{message}");
    assert!(message.contains("Nope"), "{message}");
}

#[test]
fn a_missing_import_names_the_importing_line() {
    let text = "syntax = \"proto3\";\nimport \"missing/thing.proto\";\n";
    let err = generate(Builder::new(), "importer.proto", text).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    let message = err.to_string();
    assert!(message.contains("importer.proto:2:1: "), "{message}");
    assert!(message.contains("missing/thing.proto"), "{message}");
}

#[test]
fn a_missing_file_is_not_found() {
    let dir = TempDir::new();
    let err = Builder::new()
        .out_dir(dir.out())
        .emit_rerun_if_changed(false)
        .compile_protos(&[dir.0.join("nope.proto")], &[&dir.0])
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("nope.proto"), "{err}");
}

fn method(name: &str, proto_name: &str, client_streaming: bool, server_streaming: bool) -> Method {
    Method {
        name: name.into(),
        proto_name: proto_name.into(),
        comments: Comments::default(),
        input_type: "In".into(),
        output_type: "Out".into(),
        input_proto_type: ".p.In".into(),
        output_proto_type: ".p.Out".into(),
        options: prost_types::MethodOptions::default(),
        client_streaming,
        server_streaming,
    }
}

#[test]
fn the_generator_alone_writes_code_for_a_service_value() {
    let service = Service {
        name: "Echo".into(),
        proto_name: "Echo".into(),
        package: "p".into(),
        comments: Comments::default(),
        methods: vec![
            method("say", "Say", false, false),
            method("r#type", "Type", true, true),
        ],
        options: prost_types::ServiceOptions::default(),
    };
    let code = StubGenerator::new(true, true, "::rt").service_code(&service);
    assert_has(
        &code,
        &[
            "pub fn say(&self, request: &In,)",
            "\"/p.Echo/Say\"",
            "pub fn r#type(&self,)",
            "pub fn r#type_with(&self, options: ::rt::codegen::CallOptions)",
            "fn r#type(&self, stream: &mut ::rt::server::BidiStream<'_, In, Out>)",
            ".bidi_streaming(\"/p.Echo/Type\"",
        ],
    );
    let empty = Service {
        methods: Vec::new(),
        ..service
    };
    let code = StubGenerator::new(false, true, "::rt").service_code(&empty);
    assert_has(&code, &["let _ = self.service; builder"]);
}

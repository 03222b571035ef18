//! The generated clients against grpcio (gRPC C-core) servers of the same protos
//! (`peers/helloworld_server.py`, `peers/route_guide_server.py`), and grpcio's
//! client (`peers/route_guide_client.py`) against the generated server on ours,
//! with Python stubs generated at test time by `python -m grpc_tools.protoc` from
//! `proto/`.
//! Skipped without the peers (see `lb_testkit::peers::require_peers`). Every call
//! is bounded by `util::WAIT`.

use lb_core::{Code, Metadata};
use lb_examples::helloworld::{GreeterClient, HelloRequest};
use lb_examples::route_guide::{RouteGuideService, point};
use lb_examples::routeguide::{RouteGuideClient, RouteGuideServer};
use lb_testkit::peers;
use lb_transport::server::Server;

mod util;

#[test]
fn the_generated_greeter_client_calls_grpcio() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let Some(stubs) = util::python_stubs(&env) else {
        return;
    };
    let server = util::start_python_server(&env, "helloworld_server.py", &stubs);
    let channel = lb_examples::connect(&server.target()).unwrap();
    let client = GreeterClient::new(channel).with_default_options(util::options());

    let reply = client
        .say_hello(&HelloRequest {
            name: "grpcio".into(),
        })
        .unwrap();
    assert_eq!(reply.message, "Hello grpcio");

    let mut metadata = Metadata::new();
    metadata.insert("x-request-id", "7").unwrap();
    let response = client
        .say_hello_with(
            &HelloRequest { name: "md".into() },
            util::options().with_metadata(metadata),
        )
        .unwrap();
    assert_eq!(response.trailers.get("x-request-id"), Some("7"));

    let err = client.say_hello(&HelloRequest::default()).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
}

#[test]
fn the_generated_route_guide_client_gets_features_from_grpcio() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let Some(stubs) = util::python_stubs(&env) else {
        return;
    };
    let server = util::start_python_server(&env, "route_guide_server.py", &stubs);
    let channel = lb_examples::connect(&server.target()).unwrap();
    let client = RouteGuideClient::new(channel).with_default_options(util::options());
    let feature = client
        .get_feature(&point(400_250_000, -739_900_000))
        .unwrap();
    assert_eq!(feature.name, "Cedar Falls");
    let nothing = client.get_feature(&point(1, 1)).unwrap();
    assert_eq!(nothing.name, "");
    assert_eq!(nothing.location, Some(point(1, 1)));
}

/// All four kinds of call.
#[test]
fn the_route_guide_demo_makes_every_kind_of_call_on_grpcio() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let Some(stubs) = util::python_stubs(&env) else {
        return;
    };
    let server = util::start_python_server(&env, "route_guide_server.py", &stubs);
    let channel = lb_examples::connect(&server.target()).unwrap();
    let client = RouteGuideClient::new(channel).with_default_options(util::options());
    let report = lb_examples::route_guide::run_demo(&client, false).unwrap();
    util::check_demo(&report);
}

/// All four kinds of call again, the other way round: grpcio's client against the
/// generated `RouteGuideServer` on our server.
#[test]
fn grpcio_makes_every_kind_of_call_on_the_generated_route_guide_server() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let Some(stubs) = util::python_stubs(&env) else {
        return;
    };
    let server = RouteGuideServer::new(RouteGuideService::new())
        .mount(Server::builder())
        .bind("127.0.0.1:0")
        .unwrap();
    let report = util::run_python_demo(&env, &stubs, &server.local_addr().to_string());
    util::check_demo(&report);
    server.shutdown(std::time::Duration::from_secs(2));
}

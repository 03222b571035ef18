//! The generated helloworld stubs end to end over real sockets: the generated
//! `GreeterClient` on a channel over lb-transport's HTTP/2 transport, against our
//! server with `GreeterServer` mounting `MyGreeter`.

use std::time::Duration;

use lb_core::{Code, Metadata};
use lb_examples::greeter::MyGreeter;
use lb_examples::helloworld::{GreeterClient, GreeterServer, HelloRequest};
use lb_transport::server::{Response, Server};

mod util;

fn request(name: &str) -> HelloRequest {
    HelloRequest { name: name.into() }
}

#[test]
fn the_generated_client_calls_the_generated_server() {
    let server = GreeterServer::new(MyGreeter)
        .mount(Server::builder())
        .bind("127.0.0.1:0")
        .unwrap();
    let channel = lb_examples::connect(&server.local_addr().to_string()).unwrap();
    let client = GreeterClient::new(channel).with_default_options(util::options());

    let reply = client.say_hello(&request("world")).unwrap();
    assert_eq!(reply.message, "Hello world");

    let mut metadata = Metadata::new();
    metadata.insert("x-request-id", "42").unwrap();
    let response = client
        .say_hello_with(&request("again"), util::options().with_metadata(metadata))
        .unwrap();
    assert_eq!(response.message.message, "Hello again");
    assert_eq!(response.trailers.get("x-request-id"), Some("42"));

    let err = client.say_hello(&request("")).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert_eq!(err.message(), "a name is needed");

    client.channel().close();
    server.shutdown(Duration::from_secs(2));
}

#[test]
fn a_reply_that_is_not_a_hello_reply_fails_internal() {
    // A server answering the method with bytes that are no protobuf message.
    let server = Server::builder()
        .unary("/helloworld.Greeter/SayHello", |_| {
            Ok(Response::new(vec![0xff, 0xff, 0xff]))
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let channel = lb_examples::connect(&server.local_addr().to_string()).unwrap();
    let client = GreeterClient::new(channel).with_default_options(util::options());
    let err = client.say_hello(&request("x")).unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert!(err.message().contains("HelloReply"), "{err}");
    server.shutdown(Duration::from_secs(2));
}

#[test]
fn a_method_the_server_lacks_is_unimplemented() {
    let server = Server::builder().bind("127.0.0.1:0").unwrap();
    let channel = lb_examples::connect(&server.local_addr().to_string()).unwrap();
    let err = GreeterClient::new(channel)
        .with_default_options(util::options())
        .say_hello(&request("x"))
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    server.shutdown(Duration::from_secs(2));
}

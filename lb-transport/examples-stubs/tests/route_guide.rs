//! The generated route guide stubs end to end over real sockets, all four kinds of
//! call: the generated `RouteGuideClient` on a channel over lb-transport's HTTP/2
//! transport, against our server with `RouteGuideServer` mounting
//! `RouteGuideService`.

use std::time::Duration;

use lb_core::Code;
use lb_examples::route_guide::{self, RouteGuideService, point};
use lb_examples::routeguide::{Rectangle, RouteGuideClient, RouteGuideServer};
use lb_transport::server::Server;

mod util;

fn serve() -> (lb_transport::server::Server, RouteGuideClient) {
    let server = RouteGuideServer::new(RouteGuideService::new())
        .mount(Server::builder())
        .bind("127.0.0.1:0")
        .unwrap();
    let channel = lb_examples::connect(&server.local_addr().to_string()).unwrap();
    let client = RouteGuideClient::new(channel).with_default_options(util::options());
    (server, client)
}

#[test]
fn the_demo_makes_every_kind_of_call_on_our_server() {
    let (server, client) = serve();
    let report = route_guide::run_demo(&client, false).unwrap();
    util::check_demo(&report);
    server.shutdown(Duration::from_secs(2));
}

#[test]
fn an_empty_rectangle_lists_nothing_and_a_stream_can_be_cancelled() {
    let (server, client) = serve();
    let nowhere = Rectangle {
        lo: Some(point(0, 0)),
        hi: Some(point(1, 1)),
    };
    assert_eq!(client.list_features(&nowhere).unwrap().count(), 0);

    let everywhere = Rectangle {
        lo: Some(point(-900_000_000, -1_800_000_000)),
        hi: Some(point(900_000_000, 1_800_000_000)),
    };
    let mut stream = client.list_features(&everywhere).unwrap();
    assert!(stream.next().unwrap().is_ok());
    stream.cancel();
    let rest: Vec<_> = stream.collect();
    assert!(
        rest.iter()
            .any(|r| r.as_ref().is_err_and(|e| e.code() == Code::Cancelled))
            || rest.len() < route_guide::FEATURES.len(),
        "{rest:?}"
    );
    server.shutdown(Duration::from_secs(2));
}

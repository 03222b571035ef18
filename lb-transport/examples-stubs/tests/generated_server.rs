//! The generated route guide *server* code (the `RouteGuide` trait,
//! `RouteGuideServer::mount` and the `stubs::server` adapters) on our server, every
//! part of the typed server API: request metadata and path, response headers and
//! trailers from each kind of handler, and requests that do not decode. The
//! generated *client* (`lb_examples::routeguide`) calls it over real sockets.
//!
//! The server code here is the copy `build.rs` generates with
//! `Builder::stubs_path("crate::rt")`, so that a runtime path other than the
//! default is compiled and run too. Every wait is bounded.

use std::thread;
use std::time::Duration;

use lb_core::{Code, Metadata, Status};
use lb_examples::route_guide::point;
use lb_examples::routeguide::{Point, Rectangle, RouteGuideClient, RouteNote};
use lb_transport::server::Server;

mod util;

/// What the generated code names as its runtime: lb-transport's, re-exported.
mod rt {
    pub(crate) use lb_transport::stubs::*;
}

/// The generated server code, naming `crate::rt`.
#[allow(unreachable_pub, dead_code, missing_docs, clippy::all)]
mod other_path {
    include!(concat!(env!("OUT_DIR"), "/other_path/routeguide.rs"));
}

/// A small implementation of the generated trait, using every part of the typed
/// server API.
struct Guide;

mod guide {
    use lb_core::{Metadata, Status};
    use lb_transport::stubs::Response;
    use lb_transport::stubs::server::{BidiStream, Request, RequestStream, ResponseSink};

    use super::other_path::{Feature, Point, Rectangle, RouteGuide, RouteNote, RouteSummary};

    fn md(key: &str, value: &str) -> Metadata {
        let mut md = Metadata::new();
        md.insert(key, value).unwrap();
        md
    }

    impl RouteGuide for super::Guide {
        fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
            let p = request.message;
            if p.latitude < 0 {
                return Err(Status::invalid_argument("south of the equator"));
            }
            let mut response = Response::new(Feature {
                name: format!("feature at {},{}", p.latitude, p.longitude),
                location: Some(p),
            });
            response.headers = md("x-path", request.path());
            response.trailers = md(
                "x-caller",
                request.metadata().get("x-caller").unwrap_or("anonymous"),
            );
            Ok(response)
        }

        fn list_features(
            &self,
            request: Rectangle,
            responses: &mut ResponseSink<'_, Feature>,
        ) -> Result<(), Status> {
            responses.send_headers(md("x-listing", "corners"))?;
            for corner in [request.lo, request.hi] {
                responses.send(&Feature {
                    name: "corner".into(),
                    location: corner,
                })?;
            }
            responses.set_trailers(md("x-listed", "2"));
            Ok(())
        }

        fn record_route(
            &self,
            requests: &mut RequestStream<'_, Point>,
        ) -> Result<RouteSummary, Status> {
            let points = requests.collect::<Result<Vec<Point>, Status>>()?;
            Ok(RouteSummary {
                point_count: i32::try_from(points.len()).unwrap_or(i32::MAX),
                feature_count: 0,
                distance: points.iter().map(|p| p.latitude).sum(),
                elapsed_time: 0,
            })
        }

        fn route_chat(
            &self,
            stream: &mut BidiStream<'_, RouteNote, RouteNote>,
        ) -> Result<(), Status> {
            while let Some(note) = stream.recv()? {
                let loud = RouteNote {
                    message: note.message.to_uppercase(),
                    ..note
                };
                stream.send(&loud)?;
            }
            stream.set_trailers(md("x-chat", "over"));
            Ok(())
        }
    }
}

fn serve() -> (Server, RouteGuideClient) {
    let server = other_path::RouteGuideServer::new(Guide)
        .mount(Server::builder())
        .bind("127.0.0.1:0")
        .unwrap();
    let channel = lb_examples::connect(&server.local_addr().to_string()).unwrap();
    (
        server,
        RouteGuideClient::new(channel).with_default_options(util::options()),
    )
}

/// Shuts `server` down, bounded.
fn stop(server: Server) {
    server.shutdown(Duration::from_secs(2));
}

#[test]
fn unary_through_the_generated_server() {
    let (server, client) = serve();
    let mut metadata = Metadata::new();
    metadata.insert("x-caller", "test").unwrap();
    let response = client
        .get_feature_with(&point(3, 4), util::options().with_metadata(metadata))
        .unwrap();
    assert_eq!(response.message.name, "feature at 3,4");
    assert_eq!(response.message.location, Some(point(3, 4)));
    assert_eq!(
        response.headers.get("x-path"),
        Some("/routeguide.RouteGuide/GetFeature")
    );
    assert_eq!(response.trailers.get("x-caller"), Some("test"));

    let err = client.get_feature(&point(-1, 0)).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    stop(server);
}

#[test]
fn server_streaming_through_the_generated_server() {
    let (server, client) = serve();
    let rect = Rectangle {
        lo: Some(point(1, 2)),
        hi: Some(point(3, 4)),
    };
    let mut stream = client.list_features(&rect).unwrap();
    assert_eq!(stream.headers().unwrap().get("x-listing"), Some("corners"));
    let corners: Vec<Option<Point>> = stream.by_ref().map(|f| f.unwrap().location).collect();
    assert_eq!(corners, [rect.lo, rect.hi]);
    assert_eq!(stream.trailers().unwrap().get("x-listed"), Some("2"));
    stop(server);
}

#[test]
fn client_streaming_through_the_generated_server() {
    let (server, client) = serve();
    let call = client.record_route().unwrap();
    for latitude in [10, 20, 30] {
        call.send(&point(latitude, 0)).unwrap();
    }
    let summary = call.finish().unwrap();
    assert_eq!((summary.point_count, summary.distance), (3, 60));
    stop(server);
}

#[test]
fn bidi_through_the_generated_server() {
    let (server, client) = serve();
    let (tx, rx) = client.route_chat().unwrap().split();
    let writer = thread::spawn(move || -> Result<(), Status> {
        for message in ["hello", "bye"] {
            tx.send(&RouteNote {
                location: Some(point(1, 1)),
                message: message.into(),
            })?;
        }
        tx.close_send();
        Ok(())
    });
    let mut rx = rx;
    let replies: Vec<String> = rx.by_ref().map(|n| n.unwrap().message).collect();
    writer.join().unwrap().unwrap();
    assert_eq!(replies, ["HELLO", "BYE"]);
    assert_eq!(rx.trailers().unwrap().get("x-chat"), Some("over"));
    stop(server);
}

#[test]
fn a_request_that_does_not_decode_fails_internal_on_the_server() {
    let (server, client) = serve();
    let channel = client.channel();
    // Raw bytes that are no message, to a unary and a server-streaming method.
    for (method, message) in [("GetFeature", "Point"), ("ListFeatures", "Rectangle")] {
        let path = format!("/routeguide.RouteGuide/{method}");
        let err = channel
            .server_streaming(&path, vec![0xff, 0xff], util::options())
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{method}: {err}");
        assert!(err.message().contains(message), "{method}: {err}");
    }
    stop(server);
}

#[test]
fn a_streamed_request_that_does_not_decode_fails_internal_on_the_server() {
    let (server, client) = serve();
    let channel = client.channel();

    // Client-streaming: a valid point, then bytes that are no `Point`.
    let call = channel
        .client_streaming("/routeguide.RouteGuide/RecordRoute", util::options())
        .unwrap();
    call.send(lb_transport::stubs::encode(&point(1, 1)))
        .unwrap();
    // The server may have failed the call before this second send.
    let _ = call.send(vec![0xff, 0xff]);
    let err = call.finish().unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert!(err.message().contains("Point"), "{err}");

    // Bidi: the handler's `recv` fails, and so does the call.
    let call = channel
        .bidi_streaming("/routeguide.RouteGuide/RouteChat", util::options())
        .unwrap();
    let _ = call.send_last(vec![0xff, 0xff]);
    let err = call.recv().unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert!(err.message().contains("RouteNote"), "{err}");
    stop(server);
}

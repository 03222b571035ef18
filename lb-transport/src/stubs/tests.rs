//! The typed runtime end to end on lb-testkit's in-memory transport: typed client
//! calls of every kind against the typed server adapters (driven through a
//! [`RawServerCall`] over the in-memory server stream), metadata both ways, and
//! messages that do not decode in either direction. Every wait is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lb_core::channel::{CallOptions, Channel};
use lb_core::{Code, Metadata, Status};
use lb_testkit::{InMemoryTransport, ServerStream};

use super::server::{self as typed, RawServerCall};
use super::{Response, TrySendError, decode, encode};
use crate::server as raw;

const WAIT: Duration = Duration::from_secs(20);

/// A message of the test's own, to see its name in decode errors.
#[derive(Clone, PartialEq, prost::Message)]
struct Word {
    #[prost(string, tag = "1")]
    text: String,
}

fn word(text: &str) -> Word {
    Word { text: text.into() }
}

/// The in-memory server's stream as the adapters' raw call.
struct MemCall<'a> {
    stream: &'a mut ServerStream,
    trailers: Metadata,
}

impl RawServerCall for MemCall<'_> {
    fn path(&self) -> &str {
        &self.stream.head().method
    }

    fn metadata(&self) -> &Metadata {
        &self.stream.head().metadata
    }

    fn deadline(&self) -> Option<Instant> {
        self.stream.head().deadline
    }

    fn recv(&mut self) -> Result<Option<Vec<u8>>, Status> {
        Ok(self.stream.recv())
    }

    fn send(&mut self, message: &[u8]) -> Result<(), Status> {
        self.stream.send(message.to_vec())
    }

    fn send_headers(&mut self, metadata: Metadata) -> Result<(), Status> {
        self.stream.send_headers(metadata);
        Ok(())
    }

    fn set_trailers(&mut self, metadata: Metadata) {
        self.trailers = metadata;
    }

    fn is_cancelled(&self) -> bool {
        self.stream.is_cancelled()
    }

    fn wait_cancelled(&self, until: Instant) -> bool {
        while Instant::now() < until {
            if self.stream.is_cancelled() {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        self.stream.is_cancelled()
    }
}

fn md(key: &str, value: &str) -> Metadata {
    let mut md = Metadata::new();
    md.insert(key, value).unwrap();
    md
}

/// Typed handlers of every kind on `/t.S/*`; `garbage_cancelled` is set when the
/// client cancels `/t.S/Garbage`, which answers bytes that are no `Word`.
fn serve(transport: &InMemoryTransport, garbage_cancelled: Arc<AtomicBool>) {
    transport.add_stream_server("10.0.0.1:1", move |stream| {
        let method = stream.head().method.clone();
        if &*method == "/t.S/Unary" {
            // What the server does for a unary handler: one message in, one out.
            let mut request =
                raw::Request::new(method.to_string(), stream.recv().unwrap_or_default());
            request.metadata = stream.head().metadata.clone();
            let response = typed::unary(request, |request: typed::Request<Word>| {
                let mut response = Response::new(word(&request.message.text.to_uppercase()));
                response.headers = md("x-path", request.path());
                let seen = request.metadata().get("x-who").unwrap_or("nobody");
                response.trailers = md("x-seen", seen);
                Ok(response)
            })?;
            stream.send_headers(response.headers);
            stream.send(response.message)?;
            return Ok(response.trailers);
        }
        let mut call = MemCall {
            stream,
            trailers: Metadata::new(),
        };
        match &*method {
            "/t.S/Split" => {
                let request = call.recv()?.unwrap_or_default();
                typed::server_streaming(request, &mut call, |text: Word, sink| {
                    sink.send_headers(md("x-kind", "split"))?;
                    for w in text.text.split(' ') {
                        sink.send(&word(w))?;
                    }
                    sink.set_trailers(md("x-count", &text.text.split(' ').count().to_string()));
                    Ok(())
                })?;
            }
            "/t.S/Join" => {
                let joined = typed::client_streaming(&mut call, |words| {
                    let words = words.collect::<Result<Vec<Word>, Status>>()?;
                    let texts: Vec<String> = words.into_iter().map(|w| w.text).collect();
                    Ok(word(&texts.join("+")))
                })?;
                call.send(&joined)?;
            }
            "/t.S/Shout" => {
                typed::bidi_streaming(
                    &mut call,
                    |stream: &mut typed::BidiStream<'_, Word, Word>| {
                        while let Some(w) = stream.recv()? {
                            stream.send(&word(&w.text.to_uppercase()))?;
                        }
                        Ok(())
                    },
                )?;
            }
            "/t.S/Garbage" => {
                let _ = call.recv();
                let deadline = Instant::now() + WAIT;
                while Instant::now() < deadline {
                    if call.send(&[0xff, 0xff]).is_err() || call.is_cancelled() {
                        garbage_cancelled.store(true, Ordering::SeqCst);
                        break;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            }
            _ => return Err(Status::unimplemented(&*method)),
        }
        Ok(call.trailers)
    });
}

fn channel(transport: &InMemoryTransport) -> Channel {
    Channel::builder("ipv4:10.0.0.1:1")
        .transport(Arc::new(transport.clone()))
        .build()
        .unwrap()
}

fn options() -> CallOptions {
    CallOptions::default().with_timeout(WAIT)
}

fn setup() -> (InMemoryTransport, Channel, Arc<AtomicBool>) {
    let transport = InMemoryTransport::new();
    let cancelled = Arc::new(AtomicBool::new(false));
    serve(&transport, cancelled.clone());
    let channel = channel(&transport);
    (transport, channel, cancelled)
}

#[test]
fn unary_carries_messages_and_metadata_both_ways() {
    let (_t, channel, _) = setup();
    let options = options().with_metadata(md("x-who", "tester"));
    let response: Response<Word> =
        super::unary(&channel, "/t.S/Unary", &word("hi"), options).unwrap();
    assert_eq!(response.message, word("HI"));
    assert_eq!(response.headers.get("x-path"), Some("/t.S/Unary"));
    assert_eq!(response.trailers.get("x-seen"), Some("tester"));
}

#[test]
fn server_streaming_yields_every_message_then_the_trailers() {
    let (_t, channel, _) = setup();
    let mut stream =
        super::server_streaming::<Word, Word>(&channel, "/t.S/Split", &word("a b c"), options())
            .unwrap();
    assert_eq!(stream.headers().unwrap().get("x-kind"), Some("split"));
    assert_eq!(stream.recv().unwrap(), Some(word("a")));
    let rest: Vec<Word> = stream.by_ref().map(Result::unwrap).collect();
    assert_eq!(rest, [word("b"), word("c")]);
    assert_eq!(stream.trailers().unwrap().get("x-count"), Some("3"));
    assert!(stream.next().is_none(), "the iterator is fused");
}

#[test]
fn client_streaming_sends_then_finishes_with_the_response() {
    let (_t, channel, _) = setup();
    let call = super::client_streaming::<Word, Word>(&channel, "/t.S/Join", options()).unwrap();
    for w in ["x", "y"] {
        call.send(&word(w)).unwrap();
    }
    match call.try_send(&word("z")) {
        Ok(()) | Err(TrySendError::Full) => {}
        Err(e) => panic!("try_send failed: {e}"),
    }
    let joined = call.finish().unwrap();
    assert!(joined.text == "x+y+z" || joined.text == "x+y", "{joined:?}");
}

#[test]
fn bidi_streams_split_across_threads() {
    let (_t, channel, _) = setup();
    let call = super::bidi_streaming::<Word, Word>(&channel, "/t.S/Shout", options()).unwrap();
    call.send(&word("one")).unwrap();
    let (tx, mut rx) = call.split();
    assert_eq!(rx.recv().unwrap(), Some(word("ONE")));
    let writer = thread::spawn(move || {
        for w in ["two", "three"] {
            tx.send(&word(w))?;
        }
        tx.close_send();
        Ok::<(), Status>(())
    });
    let rest: Vec<Word> = rx.by_ref().map(Result::unwrap).collect();
    writer.join().unwrap().unwrap();
    assert_eq!(rest, [word("TWO"), word("THREE")]);
    assert!(rx.trailers().is_some());
}

#[test]
fn a_response_that_does_not_decode_fails_internal_and_cancels_the_call() {
    let (_t, channel, server_saw_cancel) = setup();
    let mut stream =
        super::server_streaming::<Word, Word>(&channel, "/t.S/Garbage", &word(""), options())
            .unwrap();
    let err = stream.next().unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("Word"), "{err}");
    assert!(stream.next().is_none(), "the iterator ends after the error");
    assert_eq!(stream.recv().unwrap_err(), err, "recv keeps reporting it");
    let deadline = Instant::now() + WAIT;
    while !server_saw_cancel.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the server never saw the cancel");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_request_that_does_not_decode_fails_internal_without_running_the_handler() {
    let ran = AtomicBool::new(false);
    let err = typed::unary(
        raw::Request::new("/t.S/Unary", vec![0xff]),
        |_: typed::Request<Word>| {
            ran.store(true, Ordering::SeqCst);
            Ok(Response::new(word("")))
        },
    )
    .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("Word"), "{err}");
    assert!(!ran.load(Ordering::SeqCst));
}

#[test]
fn status_conversions_keep_the_cause() {
    assert_eq!(
        Status::from(TrySendError::Full).code(),
        Code::ResourceExhausted
    );
    let failed = Status::unavailable("gone");
    assert_eq!(Status::from(TrySendError::Failed(failed.clone())), failed);
    assert_eq!(decode::<Word>(&encode(&word("w"))).unwrap(), word("w"));
    assert_eq!(Response::from(7u32).into_message(), 7);
}

#[test]
fn typed_handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<super::ServerStreaming<Word>>();
    assert_send_sync::<super::ClientStreaming<Word, Word>>();
    assert_send_sync::<super::Streaming<Word, Word>>();
    assert_send_sync::<super::StreamingSender<Word>>();
    assert_send_sync::<super::StreamingReceiver<Word>>();
    assert_send_sync::<typed::Request<Word>>();
}

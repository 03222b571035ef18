#!/usr/bin/env python3
"""grpc.testing.TestService on grpcio (gRPC C-core), the server side of the
standard gRPC interop cases, for lb-sync's interop suite.

Usage:
    server.py --port 0 [--stubs-dir DIR] [--watch-stdin]

Binds 127.0.0.1 only (port 0 picks a free port), prints exactly one line
`LISTENING <port>` to stdout once serving, then serves until SIGTERM or SIGINT
(or, with `--watch-stdin`, until its stdin reaches end of file) and exits 0.
The message classes are generated at start-up with grpcio-tools (see
`stubs.py`), into `--stubs-dir` or a temporary directory removed at exit.

What the methods do (the interop spec's server features):

- EmptyCall answers Empty.
- UnaryCall answers a payload of `response_size` zero bytes.
- StreamingOutputCall answers one message per `response_parameters` entry,
  each with `size` zero bytes, sleeping `interval_us` before each.
- StreamingInputCall answers, after the client half-closes, the sum of the
  request payload sizes.
- FullDuplexCall answers each request message as it arrives, as
  StreamingOutputCall does; HalfDuplexCall reads every request first.
- UnimplementedCall answers UNIMPLEMENTED; UnimplementedService is not
  registered, so grpcio answers its calls with UNIMPLEMENTED.
- A request carrying `response_status` with a nonzero code ends the call with
  that code and message (in a stream, when that request is read; responses
  asked for by earlier requests are sent first).
- Request metadata `x-grpc-test-echo-initial` comes back in the initial
  metadata, and `x-grpc-test-echo-trailing-bin` in the trailing metadata, on
  every method.
- `response_compressed` asks grpcio to compress the response with gzip;
  `expect_compressed` is not checked (grpcio does not tell a handler whether a
  request was compressed), so this server does not offer the interop spec's
  CompressedRequest feature.
"""

import argparse
import os
import shutil
import sys
import time
from concurrent import futures

import grpc

import stubs

# The serving helper shared by every peer server lives one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import peer_serve  # noqa: E402

MAX_MESSAGE = 16 * 1024 * 1024
ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
CODES = {code.value[0]: code for code in grpc.StatusCode}
# The longest wait one response parameter may ask for.
MAX_INTERVAL_S = 10.0


def say(line):
    """Prints one line to stdout and flushes it (the harness reads it)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def echo_metadata(context):
    """Sends back the echo metadata the request carries: the initial value
    now, the trailing one with the status."""
    initial, trailing = [], []
    for key, value in context.invocation_metadata():
        if key == ECHO_INITIAL:
            initial.append((key, value))
        elif key == ECHO_TRAILING:
            trailing.append((key, value))
    if initial:
        context.send_initial_metadata(tuple(initial))
    if trailing:
        context.set_trailing_metadata(tuple(trailing))


def end_with_requested_status(context, request):
    """Fails the call with the request's `response_status`, when it asks for
    a nonzero code."""
    if not request.HasField("response_status") or request.response_status.code == 0:
        return
    code = CODES.get(request.response_status.code)
    if code is None:
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "response_status.code %d is not a status code" % request.response_status.code,
        )
    context.abort(code, request.response_status.message)


def wait_interval(context, interval_us):
    """Sleeps `interval_us` microseconds, cut short when the call ends."""
    deadline = time.monotonic() + min(max(interval_us, 0) / 1e6, MAX_INTERVAL_S)
    while context.is_active():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


class TestService:
    """The handlers, given the generated message modules."""

    def __init__(self, empty_pb2, messages_pb2):
        self.empty = empty_pb2
        self.messages = messages_pb2

    def payload(self, size):
        return self.messages.Payload(body=bytes(size))

    def responses(self, context, request):
        """The response messages one streaming request asks for, in order."""
        end_with_requested_status(context, request)
        for parameters in request.response_parameters:
            if parameters.interval_us > 0:
                wait_interval(context, parameters.interval_us)
            yield self.messages.StreamingOutputCallResponse(payload=self.payload(parameters.size))

    def EmptyCall(self, request, context):
        echo_metadata(context)
        return self.empty.Empty()

    def UnaryCall(self, request, context):
        echo_metadata(context)
        end_with_requested_status(context, request)
        if request.HasField("response_compressed") and request.response_compressed.value:
            context.set_compression(grpc.Compression.Gzip)
        return self.messages.SimpleResponse(payload=self.payload(request.response_size))

    def StreamingOutputCall(self, request, context):
        echo_metadata(context)
        yield from self.responses(context, request)

    def StreamingInputCall(self, request_iterator, context):
        echo_metadata(context)
        total = sum(len(request.payload.body) for request in request_iterator)
        return self.messages.StreamingInputCallResponse(aggregated_payload_size=total)

    def FullDuplexCall(self, request_iterator, context):
        echo_metadata(context)
        for request in request_iterator:
            yield from self.responses(context, request)

    def HalfDuplexCall(self, request_iterator, context):
        echo_metadata(context)
        requests = list(request_iterator)
        for request in requests:
            yield from self.responses(context, request)

    def UnimplementedCall(self, request, context):
        # Declared by the service but deliberately not implemented: the
        # unimplemented_method case expects exactly this status.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "UnimplementedCall is not implemented")


def parse_args():
    parser = argparse.ArgumentParser(description="grpcio interop TestService server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stubs-dir")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--grace", type=float, default=2.0)
    parser.add_argument("--watch-stdin", action="store_true")
    return parser.parse_args()


def serve(args, stubs_dir):
    """Serves until told to stop; returns the exit status."""
    try:
        empty_pb2, messages_pb2, test_pb2_grpc = stubs.load(stubs_dir)
    except Exception as e:  # noqa: BLE001 - reported, then exit 2
        print("interop server: cannot generate the stubs: %r" % (e,), file=sys.stderr)
        return 2

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.workers),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            # Without this, a second server could silently share the port.
            ("grpc.so_reuseport", 0),
        ],
    )
    # UnimplementedService is never registered, so grpcio answers its calls
    # with UNIMPLEMENTED itself.
    test_pb2_grpc.add_TestServiceServicer_to_server(TestService(empty_pb2, messages_pb2), server)
    port = peer_serve.bind(server, args.port, "interop server")
    if port is None:
        return 2
    peer_serve.serve_until_stopped(server, port, say, args.watch_stdin, args.grace)
    return 0


if __name__ == "__main__":
    ARGS = parse_args()
    STUBS_DIR = ARGS.stubs_dir or stubs.temporary_dir()
    CODE = serve(ARGS, STUBS_DIR)
    if ARGS.stubs_dir is None:
        shutil.rmtree(STUBS_DIR, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skipping interpreter teardown avoids waiting on grpcio's daemon threads;
    # the server is stopped.
    os._exit(CODE)

#!/usr/bin/env python3
"""A gRPC server we did not write (grpcio, gRPC C-core), for interop tests.

Usage:
    grpc_server.py --port 0 [--id NAME] [--tls-cert F --tls-key F]
                   [--log-calls] [--watch-stdin] [--health] [--channelz]

Binds 127.0.0.1 only (port 0 picks a free port), prints exactly one line
`LISTENING <port>` to stdout once serving, then serves until SIGTERM or
SIGINT, on which it stops gracefully (in-flight calls get `--grace` seconds to
finish, clients see GOAWAY) and exits 0.

Messages are raw bytes (grpcio's generic handlers with no (de)serializers), so
no generated code is needed. Methods:

  /bench.Echo/Unary   returns the request bytes (wire-compatible with
                      `bench.Msg { bytes payload = 1; }`).
  /test.Echo/Echo     returns the request bytes; every request metadata key
                      starting with `x-` comes back as initial AND trailing
                      metadata (`-bin` values included), plus initial metadata
                      `x-server-id: <--id>`.
  /test.Echo/Status   fails with the status code in request metadata
                      `x-status-code` (an integer) and the message from
                      `x-status-message-bin` (UTF-8, so it may hold any
                      character), else `x-status-message` (ASCII), else the
                      request body (UTF-8).
  /test.Echo/Sleep    sleeps the milliseconds given as ASCII digits in the
                      request body (at most 30 s, cut short if the call is
                      cancelled), then returns the request bytes.
  /test.Echo/Who      returns the `--id` value as bytes.
  /test.Stream/Server answers the ASCII request `COUNT SIZE [INTERVAL_MS]` with
                      COUNT messages of SIZE bytes (at least 4): message i
                      starts with i as 4 big-endian bytes, then bytes i % 251.
                      Waits INTERVAL_MS before each message after the first; a
                      call that ends before its last message (cancelled, past
                      its deadline) prints `CANCELLED /test.Stream/Server`.
                      Request metadata keys starting with `x-` come back as
                      trailing metadata; with `x-status-code` the call then
                      ends with that code (message "after messages").
  /test.Stream/Client reads every request message and returns ASCII
                      `COUNT BYTES`; a first message `hold MS` makes it wait MS
                      milliseconds (at most 30 s) before reading on.
  /test.Stream/Bidi   echoes each request message as it arrives.
  The three /test.Stream methods send `x-server-id` in their response headers.

With `--log-calls`, each call prints `CALL <method>` on stdout when it starts
(tests use it to know a call has reached the server). With `--watch-stdin`, the
server also stops when its stdin reaches end of file, so it never outlives the
test process that started it with a pipe as stdin.

With `--health`, the server also serves grpc's own health service
(grpc_health.v1.HealthServicer: Check and Watch), where "" starts SERVING. With
`--watch-stdin` too, a line `HEALTH <STATUS> [SERVICE]` on stdin (STATUS one of
SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN; SERVICE "" when left out) sets
that status, and the server answers with the line `HEALTH <STATUS> <SERVICE>`
once it is set (watchers are told from then on).

With `--channelz`, the server also serves grpc's own channelz service
(grpc_channelz.v1, `add_channelz_servicer`): what this process's C-core
channels, servers and sockets did, for tests that read a real channelz answer.
"""

import argparse
import os
import sys
import threading
import time
from concurrent import futures

import grpc

import peer_serve

MAX_MESSAGE = 16 * 1024 * 1024
MAX_SLEEP_MS = 30_000
CODES = {code.value[0]: code for code in grpc.StatusCode}

_print_lock = threading.Lock()


def say(line):
    """Prints one line to stdout and flushes it (the harness reads it)."""
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def metadata_value(context, key):
    """The first request metadata value under `key`, or None."""
    for k, v in context.invocation_metadata():
        if k == key:
            return v
    return None


class Service:
    """The handlers; `log_calls` makes each call announce itself."""

    def __init__(self, server_id, log_calls):
        self.server_id = server_id
        self.log_calls = log_calls

    def _log(self, method):
        if self.log_calls:
            say("CALL " + method)

    def unary(self, request, context):
        self._log("/bench.Echo/Unary")
        return request

    def echo(self, request, context):
        self._log("/test.Echo/Echo")
        echoed = [(k, v) for k, v in context.invocation_metadata() if k.startswith("x-")]
        # grpcio hands `-bin` values over decoded (bytes) and encodes bytes
        # values again on the way out, so they pass through unchanged.
        context.send_initial_metadata(tuple(echoed) + (("x-server-id", self.server_id),))
        context.set_trailing_metadata(tuple(echoed))
        return request

    def status(self, request, context):
        self._log("/test.Echo/Status")
        raw_code = metadata_value(context, "x-status-code")
        try:
            code = CODES[int(raw_code)]
        except (TypeError, ValueError, KeyError):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad x-status-code: %r" % (raw_code,))
        message = metadata_value(context, "x-status-message-bin")
        if message is not None:
            message = message.decode("utf-8")
        else:
            message = metadata_value(context, "x-status-message")
        if message is None:
            message = request.decode("utf-8", errors="replace")
        if code == grpc.StatusCode.OK:
            return b""
        context.abort(code, message)

    def sleep(self, request, context):
        self._log("/test.Echo/Sleep")
        try:
            ms = min(int(request.decode("ascii").strip() or "0"), MAX_SLEEP_MS)
        except (UnicodeDecodeError, ValueError):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "body must be ASCII milliseconds")
        deadline = time.monotonic() + ms / 1000.0
        # Sleep in short slices so a cancelled call frees its worker soon.
        while context.is_active():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.05))
        return request

    def who(self, request, context):
        self._log("/test.Echo/Who")
        return self.server_id.encode("utf-8")

    def server_stream(self, request, context):
        self._log("/test.Stream/Server")
        context.send_initial_metadata((("x-server-id", self.server_id),))
        try:
            fields = [int(f) for f in request.decode("ascii").split()]
            count, size = fields[0], max(fields[1], 4)
            interval = fields[2] / 1000.0 if len(fields) > 2 else 0.0
        except (UnicodeDecodeError, ValueError, IndexError):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "body must be COUNT SIZE [INTERVAL_MS]"
            )
        context.set_trailing_metadata(
            tuple((k, v) for k, v in context.invocation_metadata() if k.startswith("x-"))
        )
        finished = threading.Event()
        # Runs when the call ends, also when grpcio stops pulling messages.
        context.add_callback(
            lambda: finished.is_set() or say("CANCELLED /test.Stream/Server")
        )
        for i in range(count):
            if i > 0 and interval > 0:
                deadline = time.monotonic() + interval
                while context.is_active() and time.monotonic() < deadline:
                    time.sleep(min(deadline - time.monotonic(), 0.01))
            if not context.is_active():
                return
            yield i.to_bytes(4, "big") + bytes([i % 251]) * (size - 4)
        finished.set()
        raw_code = metadata_value(context, "x-status-code")
        if raw_code is not None:
            context.abort(CODES[int(raw_code)], "after messages")

    def client_stream(self, requests, context):
        self._log("/test.Stream/Client")
        context.send_initial_metadata((("x-server-id", self.server_id),))
        count = total = 0
        for message in requests:
            if count == 0 and message.startswith(b"hold "):
                deadline = time.monotonic() + min(int(message[5:]), MAX_SLEEP_MS) / 1000.0
                while context.is_active() and time.monotonic() < deadline:
                    time.sleep(0.01)
            count += 1
            total += len(message)
        return b"%d %d" % (count, total)

    def bidi(self, requests, context):
        self._log("/test.Stream/Bidi")
        context.send_initial_metadata((("x-server-id", self.server_id),))
        for message in requests:
            yield message


def handlers(service):
    """The generic handlers for every service, bytes in and bytes out."""
    unary = grpc.unary_unary_rpc_method_handler
    return (
        grpc.method_handlers_generic_handler("bench.Echo", {"Unary": unary(service.unary)}),
        grpc.method_handlers_generic_handler(
            "test.Echo",
            {
                "Echo": unary(service.echo),
                "Status": unary(service.status),
                "Sleep": unary(service.sleep),
                "Who": unary(service.who),
            },
        ),
        grpc.method_handlers_generic_handler(
            "test.Stream",
            {
                "Server": grpc.unary_stream_rpc_method_handler(service.server_stream),
                "Client": grpc.stream_unary_rpc_method_handler(service.client_stream),
                "Bidi": grpc.stream_stream_rpc_method_handler(service.bidi),
            },
        ),
    )


def health_commands(servicer):
    """The stdin handler of --health: `HEALTH <STATUS> [SERVICE]` lines."""
    from grpc_health.v1 import health_pb2

    def on_line(line):
        parts = line.split()
        if len(parts) not in (2, 3) or parts[0] != "HEALTH":
            print("grpc_server: ignoring stdin line %r" % line, file=sys.stderr)
            return
        service = parts[2] if len(parts) == 3 else ""
        try:
            status = health_pb2.HealthCheckResponse.ServingStatus.Value(parts[1])
        except ValueError:
            print("grpc_server: unknown status %r" % parts[1], file=sys.stderr)
            return
        servicer.set(service, status)
        say("HEALTH %s %s" % (parts[1], service))

    return on_line


def main():
    parser = argparse.ArgumentParser(description="grpcio echo server for interop tests")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--id", default="grpcio")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--grace", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--log-calls", action="store_true")
    parser.add_argument("--watch-stdin", action="store_true")
    parser.add_argument("--health", action="store_true")
    parser.add_argument("--channelz", action="store_true")
    args = parser.parse_args()
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.workers),
        handlers=handlers(Service(args.id, args.log_calls)),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            # Without this, a second server could silently share the port.
            ("grpc.so_reuseport", 0),
        ],
    )
    credentials = None
    if args.tls_cert is not None:
        with open(args.tls_key, "rb") as f:
            key = f.read()
        with open(args.tls_cert, "rb") as f:
            cert = f.read()
        credentials = grpc.ssl_server_credentials([(key, cert)])
    on_line = None
    if args.health:
        from grpc_health.v1 import health, health_pb2_grpc

        servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        on_line = health_commands(servicer)
    if args.channelz:
        from grpc_channelz.v1 import channelz

        channelz.add_channelz_servicer(server)
    port = peer_serve.bind(server, args.port, "grpc_server", credentials)
    if port is None:
        return 2
    peer_serve.serve_until_stopped(
        server, port, say, args.watch_stdin, args.grace, on_line=on_line
    )
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skipping interpreter teardown avoids waiting on (or aborting over) the
    # daemon threads of grpcio and the stdin watcher; the server is stopped.
    os._exit(code)

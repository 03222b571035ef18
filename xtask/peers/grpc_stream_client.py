#!/usr/bin/env python3
"""A streaming gRPC client we did not write (grpcio, gRPC C-core), for interop
tests of a server's server-streaming, client-streaming and bidirectional calls.

Usage:
    grpc_stream_client.py --target HOST:PORT --kind KIND --method PATH
                          [--request TEXT] [--count N] [--size BYTES]
                          [--metadata KEY=VALUE]... [--cancel-after N]
                          [--timeout SECONDS] [--read-delay-ms MS]

Kinds:
  server  sends one request (--request, UTF-8) and reads every response.
  client  sends --count messages of --size bytes, then reads the one response.
  bidi    sends --count messages of --size bytes one at a time, reading one
          response after each (an echo server answers each message with
          itself), then ends its side and reads whatever else comes.

Message i of a stream is --size bytes, byte j being (i + j) % 251, so an echo
can be checked. Metadata keys ending in `-bin` take hex values.

--cancel-after N cancels the call once N responses were read (server, bidi), or
once N messages were sent (client; the messages then get 300 ms to reach the
server). --read-delay-ms sleeps before reading each response (a slow reader).
--timeout is the call's deadline (default 30 s).

Prints one JSON line: the kind and method, `sent`, `received` (responses) and
`received_bytes`, `echo_ok` (bidi: every response equals its request),
`response` (client: the one response as text), `first` (up to 3 responses as
text), `code` and `details` of the final status (OK when the call succeeded),
`initial` and `trailing` metadata (binary values as hex) and `elapsed_ms`.
Exits 0 once it has printed its report, whatever the status; 2 on bad usage.
"""

import argparse
import json
import queue
import sys
import threading
import time

import grpc

MAX_MESSAGE = 16 * 1024 * 1024


def message(i, size):
    """Message i of a stream: `size` bytes, byte j being (i + j) % 251."""
    return bytes((i + j) % 251 for j in range(size))


def show(md):
    """JSON-friendly metadata: binary values as hex."""
    if md is None:
        return []
    return [[k, v.hex() if isinstance(v, bytes) else v] for k, v in md]


def text(b):
    return b.decode("utf-8", errors="replace")


class Report:
    """What the call did, filled in as it goes."""

    def __init__(self, args):
        self.out = {"kind": args.kind, "method": args.method, "sent": 0, "received": 0,
                    "received_bytes": 0, "first": [], "code": "OK", "details": "",
                    "initial": [], "trailing": []}
        self.delay = args.read_delay_ms / 1000.0

    def before_read(self):
        if self.delay > 0:
            time.sleep(self.delay)

    def got(self, response):
        self.out["received"] += 1
        self.out["received_bytes"] += len(response)
        if len(self.out["first"]) < 3:
            self.out["first"].append(text(response))

    def ended(self, call):
        """Takes status and metadata from a finished call (or an RpcError)."""
        for key, read in (("code", lambda: call.code().name),
                          ("details", lambda: call.details() or ""),
                          ("initial", lambda: show(call.initial_metadata())),
                          ("trailing", lambda: show(call.trailing_metadata()))):
            try:
                self.out[key] = read()
            except Exception:  # Some calls do not have every part.
                pass


def server_kind(channel, args, report):
    stub = channel.unary_stream(args.method)
    call = stub(args.request.encode("utf-8"), timeout=args.timeout, metadata=args.md)
    report.out["sent"] = 1
    try:
        while True:
            report.before_read()
            try:
                response = next(call)
            except StopIteration:
                break
            report.got(response)
            if args.cancel_after is not None and report.out["received"] >= args.cancel_after:
                call.cancel()
                break
    except grpc.RpcError:
        pass
    report.ended(call)


def client_kind(channel, args, report):
    stub = channel.stream_unary(args.method)
    reached = threading.Event()
    stop = threading.Event()

    def requests():
        for i in range(args.count):
            yield message(i, args.size)
            report.out["sent"] = i + 1
            if args.cancel_after is not None and i + 1 >= args.cancel_after:
                reached.set()
                stop.wait(args.timeout)
                return

    future = stub.future(requests(), timeout=args.timeout, metadata=args.md)
    if args.cancel_after is not None:
        reached.wait(args.timeout)
        time.sleep(0.3)
        future.cancel()
        stop.set()
    try:
        response = future.result()
        report.got(response)
        report.out["response"] = text(response)
    except (grpc.RpcError, grpc.FutureCancelledError):
        pass
    if future.cancelled():
        report.out["code"] = "CANCELLED"
        return
    report.ended(future)


def bidi_kind(channel, args, report):
    stub = channel.stream_stream(args.method)
    requests = queue.Queue()

    def generate():
        while True:
            item = requests.get()
            if item is None:
                return
            yield item

    call = stub(generate(), timeout=args.timeout, metadata=args.md)
    echo_ok = True
    try:
        for i in range(args.count):
            sent = message(i, args.size)
            requests.put(sent)
            report.out["sent"] = i + 1
            report.before_read()
            response = next(call)
            report.got(response)
            echo_ok = echo_ok and response == sent
            if args.cancel_after is not None and report.out["received"] >= args.cancel_after:
                call.cancel()
                raise StopIteration
        requests.put(None)
        for response in call:
            report.got(response)
            echo_ok = False
    except (StopIteration, grpc.RpcError):
        pass
    finally:
        requests.put(None)
    report.out["echo_ok"] = echo_ok
    report.ended(call)


KINDS = {"server": server_kind, "client": client_kind, "bidi": bidi_kind}


def parse_metadata(items):
    md = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError("metadata %r is not KEY=VALUE" % item)
        md.append((key, bytes.fromhex(value) if key.endswith("-bin") else value))
    return tuple(md)


def main():
    parser = argparse.ArgumentParser(description="grpcio streaming client for interop tests")
    parser.add_argument("--target", required=True)
    parser.add_argument("--kind", required=True, choices=sorted(KINDS))
    parser.add_argument("--method", required=True)
    parser.add_argument("--request", default="")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--metadata", action="append", default=[])
    parser.add_argument("--cancel-after", type=int)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--read-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    try:
        args.md = parse_metadata(args.metadata)
    except ValueError as e:
        parser.error(str(e))

    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        # Tests talk to loopback; a proxy from the environment must not interfere.
        ("grpc.enable_http_proxy", 0),
    ]
    report = Report(args)
    started = time.monotonic()
    with grpc.insecure_channel(args.target, options=options) as channel:
        KINDS[args.kind](channel, args, report)
    report.out["elapsed_ms"] = int((time.monotonic() - started) * 1000)
    print(json.dumps(report.out, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

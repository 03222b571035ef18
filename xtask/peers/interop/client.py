#!/usr/bin/env python3
"""The client side of the standard gRPC interop cases on grpcio (gRPC C-core),
for lb-sync's interop suite.

Usage:
    client.py --target HOST:PORT [--cases a,b,...] [--stubs-dir DIR]
              [--call-timeout SECONDS]

Connects over plaintext HTTP/2 to a grpc.testing.TestService server, runs the
cases (all of them by default, in the order below) and prints one line per
case, in that order:

    case NAME: pass
    case NAME: fail: WHAT WENT WRONG
    case NAME: skipped: WHY

Exits 0 when no case failed and 1 otherwise (2 when it could not start). The
message classes are generated at start-up with grpcio-tools (see `stubs.py`),
into `--stubs-dir` or a temporary directory removed at exit.

Every call carries a deadline (`--call-timeout`, 10 s by default), so a case
that hangs fails instead. The compression cases compress with gzip, per call
(grpcio's `compression=` argument).
"""

import argparse
import collections
import os
import shutil
import sys
import threading

import grpc

import stubs

MAX_MESSAGE = 16 * 1024 * 1024
ECHO_INITIAL = ("x-grpc-test-echo-initial", "test_initial_metadata_value")
ECHO_TRAILING = ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab")
STATUS_MESSAGE = "test status message"
SPECIAL_STATUS_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
# The sizes the streaming cases send and ask for.
REQUEST_SIZES = (27182, 8, 1828, 45904)
RESPONSE_SIZES = (31415, 9, 2653, 58979)


class Failed(Exception):
    """A case's assertion did not hold."""


class Skipped(Exception):
    """A case that cannot run against this stack."""


def check(condition, what):
    if not condition:
        raise Failed(what)


def expect_status(error, code, message=None):
    """Checks that a call ended with `code` (and `message`, when given)."""
    check(
        error.code() == code,
        "status %s (%r), expected %s" % (error.code().name, error.details(), code.name),
    )
    if message is not None:
        check(
            error.details() == message,
            "status message %r, expected %r" % (error.details(), message),
        )


def zeros(body, size, what):
    check(len(body) == size, "%s: %d bytes, expected %d" % (what, len(body), size))
    check(body == bytes(size), "%s: payload is not all zeros" % what)


class RequestStream:
    """The request messages of a client or bidi streaming call, fed from the
    case's thread; `close` half-closes the call."""

    def __init__(self):
        self._cond = threading.Condition()
        self._items = collections.deque()
        self._closed = False

    def send(self, message):
        with self._cond:
            self._items.append(message)
            self._cond.notify()

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify()

    def __iter__(self):
        return self

    def __next__(self):
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if self._items:
                return self._items.popleft()
            raise StopIteration


class Cases:
    """The cases, each a method that returns on success and raises `Failed`
    or `Skipped` otherwise."""

    def __init__(self, channel, timeout, empty_pb2, messages_pb2, test_pb2_grpc):
        self.timeout = timeout
        self.empty = empty_pb2
        self.m = messages_pb2
        self.stub = test_pb2_grpc.TestServiceStub(channel)
        self.unimplemented = test_pb2_grpc.UnimplementedServiceStub(channel)
        # Whether client_compressed_unary's probe may succeed.
        self.lenient_probe = False

    def payload(self, size):
        return self.m.Payload(body=bytes(size))

    def streaming_request(self, response_size=None, request_size=None, status=None):
        request = self.m.StreamingOutputCallRequest()
        if response_size is not None:
            request.response_parameters.add(size=response_size)
        if request_size is not None:
            request.payload.CopyFrom(self.payload(request_size))
        if status is not None:
            request.response_status.code, request.response_status.message = status
        return request

    def large_request(self):
        return self.m.SimpleRequest(response_size=314159, payload=self.payload(271828))

    def empty_unary(self):
        response = self.stub.EmptyCall(self.empty.Empty(), timeout=self.timeout)
        check(isinstance(response, self.empty.Empty), "response is %r" % (response,))

    def large_unary(self):
        response = self.stub.UnaryCall(self.large_request(), timeout=self.timeout)
        zeros(response.payload.body, 314159, "response")

    def compressed_request(self, flag, field):
        request = self.large_request()
        getattr(request, field).value = flag
        return request

    def client_compressed_unary(self):
        # The probe: an uncompressed request that expects compression is refused.
        try:
            self.stub.UnaryCall(
                self.compressed_request(True, "expect_compressed"),
                timeout=self.timeout,
                compression=grpc.Compression.NoCompression,
            )
            if not self.lenient_probe:
                raise Failed("an uncompressed request with expect_compressed succeeded")
        except grpc.RpcError as e:
            check(
                e.code() == grpc.StatusCode.INVALID_ARGUMENT,
                "probe: %s %r, expected INVALID_ARGUMENT" % (e.code(), e.details()),
            )
        for flag, compression in ((True, grpc.Compression.Gzip), (False, grpc.Compression.NoCompression)):
            response = self.stub.UnaryCall(
                self.compressed_request(flag, "expect_compressed"),
                timeout=self.timeout,
                compression=compression,
            )
            zeros(response.payload.body, 314159, "response")

    def server_compressed_unary(self):
        # grpcio does not tell whether a response came compressed; decoding both
        # is what this side can check.
        for flag in (True, False):
            response = self.stub.UnaryCall(
                self.compressed_request(flag, "response_compressed"), timeout=self.timeout
            )
            zeros(response.payload.body, 314159, "response")

    def client_streaming(self):
        requests = [
            self.m.StreamingInputCallRequest(payload=self.payload(size)) for size in REQUEST_SIZES
        ]
        response = self.stub.StreamingInputCall(iter(requests), timeout=self.timeout)
        check(
            response.aggregated_payload_size == 74922,
            "aggregated_payload_size %d, expected 74922" % response.aggregated_payload_size,
        )

    def server_streaming(self):
        request = self.m.StreamingOutputCallRequest()
        for size in RESPONSE_SIZES:
            request.response_parameters.add(size=size)
        responses = list(self.stub.StreamingOutputCall(request, timeout=self.timeout))
        sizes = [len(r.payload.body) for r in responses]
        check(sizes == list(RESPONSE_SIZES), "response sizes %s" % sizes)
        for i, response in enumerate(responses):
            zeros(response.payload.body, RESPONSE_SIZES[i], "response %d" % i)

    def ping_pong(self):
        requests = RequestStream()
        call = self.stub.FullDuplexCall(requests, timeout=self.timeout)
        try:
            for i, (out, back) in enumerate(zip(REQUEST_SIZES, RESPONSE_SIZES)):
                requests.send(self.streaming_request(response_size=back, request_size=out))
                response = next(call, None)
                check(response is not None, "the stream ended before response %d" % i)
                zeros(response.payload.body, back, "response %d" % i)
            requests.close()
            extra = list(call)
            check(not extra, "%d responses after the last request" % len(extra))
            check(call.code() == grpc.StatusCode.OK, "status %s" % call.code())
        finally:
            requests.close()
            call.cancel()

    def empty_stream(self):
        responses = list(self.stub.FullDuplexCall(iter(()), timeout=self.timeout))
        check(not responses, "%d responses, expected none" % len(responses))

    def timeout_on_sleeping_server(self):
        requests = RequestStream()
        requests.send(self.streaming_request(request_size=27182))
        call = self.stub.FullDuplexCall(requests, timeout=0.001)
        try:
            responses = list(call)
        except grpc.RpcError as e:
            expect_status(e, grpc.StatusCode.DEADLINE_EXCEEDED)
        else:
            raise Failed("the call succeeded with %d responses" % len(responses))
        finally:
            requests.close()

    def cancel_after_begin(self):
        requests = RequestStream()
        future = self.stub.StreamingInputCall.future(requests, timeout=self.timeout)
        try:
            future.cancel()
            check(future.cancelled(), "the call was not cancelled")
            check(
                future.code() == grpc.StatusCode.CANCELLED,
                "status %s, expected CANCELLED" % future.code(),
            )
        finally:
            requests.close()

    def cancel_after_first_response(self):
        requests = RequestStream()
        call = self.stub.FullDuplexCall(requests, timeout=self.timeout)
        try:
            requests.send(self.streaming_request(response_size=31415, request_size=27182))
            response = next(call, None)
            check(response is not None, "the stream ended before the first response")
            zeros(response.payload.body, 31415, "response")
            call.cancel()
            check(
                call.code() == grpc.StatusCode.CANCELLED,
                "status %s, expected CANCELLED" % call.code(),
            )
        finally:
            requests.close()

    def custom_metadata(self):
        metadata = (ECHO_INITIAL, ECHO_TRAILING)
        _, call = self.stub.UnaryCall.with_call(
            self.large_request(), timeout=self.timeout, metadata=metadata
        )
        self.check_echoed("UnaryCall", call)

        requests = RequestStream()
        requests.send(self.streaming_request(response_size=314159, request_size=271828))
        requests.close()
        call = self.stub.FullDuplexCall(requests, timeout=self.timeout, metadata=metadata)
        responses = list(call)
        check(len(responses) == 1, "FullDuplexCall: %d responses, expected 1" % len(responses))
        self.check_echoed("FullDuplexCall", call)

    @staticmethod
    def check_echoed(method, call):
        initial = list(call.initial_metadata())
        trailing = list(call.trailing_metadata())
        check(ECHO_INITIAL in initial, "%s: initial metadata %r" % (method, initial))
        check(ECHO_TRAILING in trailing, "%s: trailing metadata %r" % (method, trailing))

    def expect_unary_status(self, message):
        request = self.m.SimpleRequest()
        request.response_status.code = 2
        request.response_status.message = message
        try:
            self.stub.UnaryCall(request, timeout=self.timeout)
        except grpc.RpcError as e:
            expect_status(e, grpc.StatusCode.UNKNOWN, message)
        else:
            raise Failed("UnaryCall succeeded")

    def status_code_and_message(self):
        self.expect_unary_status(STATUS_MESSAGE)
        requests = iter([self.streaming_request(status=(2, STATUS_MESSAGE))])
        try:
            list(self.stub.FullDuplexCall(requests, timeout=self.timeout))
        except grpc.RpcError as e:
            expect_status(e, grpc.StatusCode.UNKNOWN, STATUS_MESSAGE)
        else:
            raise Failed("FullDuplexCall succeeded")

    def special_status_message(self):
        self.expect_unary_status(SPECIAL_STATUS_MESSAGE)

    def unimplemented_method(self):
        try:
            self.stub.UnimplementedCall(self.empty.Empty(), timeout=self.timeout)
        except grpc.RpcError as e:
            expect_status(e, grpc.StatusCode.UNIMPLEMENTED)
        else:
            raise Failed("the call succeeded")

    def unimplemented_service(self):
        try:
            self.unimplemented.UnimplementedCall(self.empty.Empty(), timeout=self.timeout)
        except grpc.RpcError as e:
            expect_status(e, grpc.StatusCode.UNIMPLEMENTED)
        else:
            raise Failed("the call succeeded")


CASES = (
    "empty_unary",
    "large_unary",
    "client_compressed_unary",
    "server_compressed_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "timeout_on_sleeping_server",
    "cancel_after_begin",
    "cancel_after_first_response",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
)


def one_line(text):
    """`text` on one line, so each case's report stays one line."""
    return " ".join(str(text).split()) or "(no detail)"


def run_case(cases, name):
    """Runs one case and returns its report line."""
    try:
        getattr(cases, name)()
    except Skipped as e:
        return "case %s: skipped: %s" % (name, one_line(e))
    except Failed as e:
        return "case %s: fail: %s" % (name, one_line(e))
    except grpc.RpcError as e:
        return "case %s: fail: unexpected status %s: %s" % (
            name,
            e.code().name,
            one_line(repr(e.details())),
        )
    except Exception as e:  # noqa: BLE001 - any other error fails the case
        return "case %s: fail: %s" % (name, one_line(repr(e)))
    return "case %s: pass" % name


def run(args, stubs_dir):
    """Runs the cases; returns the exit status."""
    names = CASES if args.cases is None else tuple(c for c in args.cases.split(",") if c)
    unknown = [name for name in names if name not in CASES]
    if unknown:
        print("interop client: unknown cases %s" % ", ".join(unknown), file=sys.stderr)
        return 2
    try:
        modules = stubs.load(stubs_dir)
    except Exception as e:  # noqa: BLE001 - reported, then exit 2
        print("interop client: cannot generate the stubs: %r" % (e,), file=sys.stderr)
        return 2
    channel = grpc.insecure_channel(
        args.target,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ],
    )
    try:
        grpc.channel_ready_future(channel).result(timeout=args.call_timeout)
    except grpc.FutureTimeoutError:
        for name in names:
            print("case %s: fail: no connection to %s" % (name, args.target), flush=True)
        return 1
    cases = Cases(channel, args.call_timeout, *modules)
    cases.lenient_probe = args.lenient_compression_probe
    failed = False
    for name in names:
        line = run_case(cases, name)
        failed |= line.startswith("case %s: fail" % name)
        print(line, flush=True)
    channel.close()
    return 1 if failed else 0


def parse_args():
    parser = argparse.ArgumentParser(description="grpcio interop client")
    parser.add_argument("--target", required=True)
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--stubs-dir")
    parser.add_argument("--call-timeout", type=float, default=10.0)
    parser.add_argument(
        "--lenient-compression-probe",
        action="store_true",
        help="let client_compressed_unary's probe succeed (for a server without the "
        "CompressedRequest feature, such as grpcio's)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    STUBS_DIR = ARGS.stubs_dir or stubs.temporary_dir()
    CODE = run(ARGS, STUBS_DIR)
    if ARGS.stubs_dir is None:
        shutil.rmtree(STUBS_DIR, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skipping interpreter teardown avoids waiting on grpcio's threads.
    os._exit(CODE)

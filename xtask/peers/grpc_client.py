#!/usr/bin/env python3
"""A gRPC client we did not write (grpcio, gRPC C-core), for interop tests.

Usage:
    grpc_client.py --target HOST:PORT [--tls-ca F] [--authority NAME]
                   [--timeout SECONDS] --case NAME

Runs one named case against a server implementing the methods of
`grpc_server.py` and prints one JSON line with the outcome (`"ok": true` or
false, plus what was seen). Exits 0 when the case passed and 1 when it did not
(a mismatch, an unexpected status, or no connection).

Cases:
  unary_16b, unary_1mib, unary_4mib
          /bench.Echo/Unary with that many random bytes; the reply must match.
  metadata
          /test.Echo/Echo with `x-ascii: hello` and `x-trace-bin: 00 01 ff`;
          both must come back in the initial and in the trailing metadata.
  status  /test.Echo/Status asking for code 7 and the message
          "permission \u00e9 100%" (sent as UTF-8 in `x-status-message-bin`);
          exactly that code and message must come back (checks the
          percent-encoding of grpc-message).
  deadline
          /test.Echo/Sleep for 2000 ms with a 200 ms deadline; the call must
          fail with DEADLINE_EXCEEDED.
  sleep_<ms>
          /test.Echo/Sleep for <ms> milliseconds; the call must succeed.
  who     /test.Echo/Who; prints the server's id.
"""

import argparse
import json
import os
import sys
import time

import grpc

MAX_MESSAGE = 16 * 1024 * 1024
STATUS_MESSAGE = "permission \u00e9 100%"


def call(channel, method, request, timeout, metadata=None):
    """One unary call with raw bytes; returns (response, call) or raises RpcError."""
    stub = channel.unary_unary(method)
    return stub.with_call(request, timeout=timeout, metadata=metadata)


def rpc_error(e):
    """The JSON-friendly view of a failed call."""
    return {"code": e.code().name, "details": e.details()}


def echo_case(size):
    def run(channel, timeout):
        payload = os.urandom(size)
        response, _ = call(channel, "/bench.Echo/Unary", payload, timeout)
        return {"ok": response == payload, "sent": len(payload), "received": len(response)}

    return run


def metadata_case(channel, timeout):
    sent = (("x-ascii", "hello"), ("x-trace-bin", b"\x00\x01\xff"))
    _, c = call(channel, "/test.Echo/Echo", b"meta", timeout, metadata=sent)
    initial = list(c.initial_metadata())
    trailing = list(c.trailing_metadata())
    ok = all(kv in initial and kv in trailing for kv in sent)

    def show(md):
        return [[k, v.hex() if isinstance(v, bytes) else v] for k, v in md]

    server_id = dict(initial).get("x-server-id")
    return {"ok": ok, "initial": show(initial), "trailing": show(trailing), "server_id": server_id}


def status_case(channel, timeout):
    md = (("x-status-code", "7"), ("x-status-message-bin", STATUS_MESSAGE.encode("utf-8")))
    try:
        call(channel, "/test.Echo/Status", b"", timeout, metadata=md)
    except grpc.RpcError as e:
        seen = rpc_error(e)
        ok = e.code() == grpc.StatusCode.PERMISSION_DENIED and e.details() == STATUS_MESSAGE
        return dict(seen, ok=ok, expected_details=STATUS_MESSAGE)
    return {"ok": False, "code": "OK", "expected_code": "PERMISSION_DENIED"}


def deadline_case(channel, timeout):
    started = time.monotonic()
    try:
        call(channel, "/test.Echo/Sleep", b"2000", min(timeout, 0.2))
    except grpc.RpcError as e:
        elapsed = time.monotonic() - started
        return dict(rpc_error(e), ok=e.code() == grpc.StatusCode.DEADLINE_EXCEEDED,
                    elapsed_ms=int(elapsed * 1000))
    return {"ok": False, "code": "OK", "expected_code": "DEADLINE_EXCEEDED"}


def sleep_case(ms):
    def run(channel, timeout):
        body = str(ms).encode("ascii")
        started = time.monotonic()
        response, _ = call(channel, "/test.Echo/Sleep", body, timeout)
        elapsed = time.monotonic() - started
        return {"ok": response == body, "code": "OK", "elapsed_ms": int(elapsed * 1000)}

    return run


def who_case(channel, timeout):
    response, _ = call(channel, "/test.Echo/Who", b"", timeout)
    return {"ok": True, "id": response.decode("utf-8", errors="replace")}


CASES = {
    "unary_16b": echo_case(16),
    "unary_1mib": echo_case(1024 * 1024),
    "unary_4mib": echo_case(4 * 1024 * 1024),
    "metadata": metadata_case,
    "status": status_case,
    "deadline": deadline_case,
    "who": who_case,
}


def find_case(name):
    if name in CASES:
        return CASES[name]
    if name.startswith("sleep_") and name[len("sleep_"):].isdigit():
        return sleep_case(int(name[len("sleep_"):]))
    return None


def channel_for(args):
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        # Tests talk to loopback; a proxy from the environment must not interfere.
        ("grpc.enable_http_proxy", 0),
    ]
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    if args.tls_ca is None:
        return grpc.insecure_channel(args.target, options=options)
    with open(args.tls_ca, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    if args.authority:
        options.append(("grpc.ssl_target_name_override", args.authority))
    return grpc.secure_channel(args.target, credentials, options=options)


def main():
    parser = argparse.ArgumentParser(description="grpcio client for interop tests")
    parser.add_argument("--target", required=True)
    parser.add_argument("--tls-ca")
    parser.add_argument("--authority")
    parser.add_argument("--timeout", type=float, default=10.0, help="per call, seconds")
    parser.add_argument("--case", required=True)
    args = parser.parse_args()
    case = find_case(args.case)
    if case is None:
        parser.error("unknown case %r (known: %s, sleep_<ms>)" % (args.case, ", ".join(CASES)))

    outcome = {"case": args.case, "target": args.target, "tls": args.tls_ca is not None}
    with channel_for(args) as channel:
        try:
            outcome.update(case(channel, args.timeout))
        except grpc.RpcError as e:
            outcome.update(rpc_error(e), ok=False)
    print(json.dumps(outcome, sort_keys=True), flush=True)
    return 0 if outcome.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())

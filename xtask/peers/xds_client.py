#!/usr/bin/env python3
"""gRPC C-core's own xDS client (grpcio with an `xds:///` target), driven by
commands on stdin, for side-by-side tests with lb-group's xDS resolver.

Usage:
    xds_client.py --bootstrap FILE --target xds:///svc [--csds]

The bootstrap file is given to C-core through GRPC_XDS_BOOTSTRAP. The client
prints `READY` once its channel exists (`READY <port>` with --csds: grpcio's
own CSDS service, grpcio-csds, serves C-core's xDS state on 127.0.0.1:<port>),
then reads one command per line:

    CALL <n> [key=value ...]   n calls, one after another
    RUN <ms> [key=value ...]   calls one after another for ms milliseconds
    SLEEP <n> <ms>             n calls at once, each `/test.Echo/Sleep` for ms
    FAIL <n> <code>            n calls, one after another, to `/test.Echo/Status`
                               asking for status code <code>

Each CALL or RUN call is a unary `/test.Echo/Who` (the backend answers its
`--id`) with the key=value pairs as request metadata and a 5 s deadline; a
SLEEP call that succeeds counts as "slept". After each command
it prints one line `RESULT {...}` (JSON, keys sorted): "ok" counts the answers
by backend id, "failed" counts the failures by "CODE: details". End of stdin
ends the client.
"""

import argparse
import json
import os
import sys
import time


def main():
    parser = argparse.ArgumentParser(description="grpcio xDS client")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--csds", action="store_true")
    args = parser.parse_args()
    os.environ["GRPC_XDS_BOOTSTRAP"] = args.bootstrap
    import grpc  # after the environment is set: C-core reads it when it starts

    channel = grpc.insecure_channel(args.target)
    who = channel.unary_unary("/test.Echo/Who")
    sleep = channel.unary_unary("/test.Echo/Sleep")
    status = channel.unary_unary("/test.Echo/Status")
    ready = "READY"
    if args.csds:
        from concurrent import futures

        import grpc_csds

        csds = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        grpc_csds.add_csds_servicer(csds)
        ready += " %d" % csds.add_insecure_port("127.0.0.1:0")
        csds.start()
    print(ready, flush=True)
    def count(ok, failed, call):
        """Runs one call: its answer (a label) counts in `ok`, its failure in
        `failed` by code and details."""
        try:
            label = call()
            ok[label] = ok.get(label, 0) + 1
        except grpc.RpcError as e:
            key = "%s: %s" % (e.code().name, e.details())
            failed[key] = failed.get(key, 0) + 1

    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        command, amount, pairs = words[0], int(words[1]), words[2:]
        ok, failed = {}, {}
        if command == "SLEEP":
            calls = [sleep.future(pairs[0].encode(), timeout=10) for _ in range(amount)]
            for call in calls:
                count(ok, failed, lambda: (call.result(), "slept")[1])
        elif command == "FAIL":
            metadata = (("x-status-code", pairs[0]),)
            for _ in range(amount):
                count(
                    ok,
                    failed,
                    lambda: (status(b"asked to fail", metadata=metadata, timeout=5), "ok")[1],
                )
        else:
            metadata = tuple(tuple(p.split("=", 1)) for p in pairs)
            end = time.monotonic() + amount / 1000.0
            n = 0
            while (n < amount) if command == "CALL" else (time.monotonic() < end):
                n += 1
                count(ok, failed, lambda: who(b"", metadata=metadata, timeout=5).decode("utf-8"))
        print("RESULT " + json.dumps({"ok": ok, "failed": failed}, sort_keys=True), flush=True)
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

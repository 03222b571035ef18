#!/usr/bin/env python3
"""grpc's own health-checking client (grpcio with grpc_health.v1's stubs), for
interop tests against our server's health service.

Usage:
    health_client.py --target HOST:PORT --service NAME --check
    health_client.py --target HOST:PORT --service NAME --watch COUNT [--timeout S]

--check calls Check once and prints `CHECK <STATUS>`, or `ERROR <CODE> <message>`.
--watch calls Watch and prints `WATCH <STATUS>` for each of the first COUNT
responses (flushed one by one), then cancels the call and prints `DONE`; an error
prints `ERROR <CODE> <message>`. Every call has a deadline of --timeout seconds
(default 10). Exits 0 unless the arguments are bad.
"""

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def name(status):
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def main():
    parser = argparse.ArgumentParser(description="grpcio health-check client")
    parser.add_argument("--target", required=True)
    parser.add_argument("--service", default="")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--watch", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    if args.check == (args.watch > 0):
        parser.error("give exactly one of --check and --watch COUNT")
    request = health_pb2.HealthCheckRequest(service=args.service)
    with grpc.insecure_channel(args.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            if args.check:
                response = stub.Check(request, timeout=args.timeout)
                say("CHECK " + name(response.status))
            else:
                call = stub.Watch(request, timeout=args.timeout)
                for i, response in enumerate(call):
                    say("WATCH " + name(response.status))
                    if i + 1 >= args.watch:
                        call.cancel()
                        break
                say("DONE")
        except grpc.RpcError as e:
            say("ERROR %s %s" % (e.code().name, e.details()))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)

#!/usr/bin/env python3
"""The helloworld.Greeter service on grpcio (gRPC C-core), answering like
lb-examples' `MyGreeter`: `Hello <name>`, INVALID_ARGUMENT for an empty name, and
a request's `x-request-id` metadata back in the trailers.

Usage:
    helloworld_server.py [--port 50051] [--stubs DIR]

Prints `LISTENING <port>` once serving on 127.0.0.1; stops on SIGTERM, SIGINT or
the end of standard input.
"""

import os
import sys

import grpc

import stubs


def main():
    args = stubs.parse_args("grpcio helloworld server", 50051)
    pb2, pb2_grpc = stubs.load("helloworld", args.stubs)

    class Greeter(pb2_grpc.GreeterServicer):
        def SayHello(self, request, context):
            if not request.name:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a name is needed")
            for key, value in context.invocation_metadata():
                if key == "x-request-id":
                    context.set_trailing_metadata((("x-request-id", value),))
            return pb2.HelloReply(message="Hello " + request.name)

    return stubs.serve("helloworld_server", args.port,
                       lambda server: pb2_grpc.add_GreeterServicer_to_server(Greeter(), server))


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

"""Shared by the example peers: Python stubs for the examples' .proto files, and
the servers' life cycle (bind 127.0.0.1, print `LISTENING <port>`, serve until
SIGTERM, SIGINT or the end of standard input) through `xtask/peers/peer_serve.py`,
which every grpcio peer server of the workspace uses.

The stubs come from `--stubs DIR` (made beforehand with
`python -m grpc_tools.protoc -I proto --python_out=DIR --grpc_python_out=DIR ...`),
or, without it, are generated here into a temporary directory from `../proto`
with grpc_tools' bundled protoc.
"""

import argparse
import importlib
import os
import sys
import tempfile
from concurrent import futures

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, os.pardir, os.pardir, "xtask", "peers"))
import peer_serve  # noqa: E402

PROTO_DIR = os.path.join(HERE, os.pardir, "proto")


def parse_args(description, default_port):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=default_port,
                        help="the port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--stubs", help="a directory with the generated *_pb2 modules")
    return parser.parse_args()


def load(proto, stubs_dir):
    """Imports `<proto>_pb2` and `<proto>_pb2_grpc`, generating them first when
    `stubs_dir` is None."""
    if stubs_dir is None:
        from grpc_tools import protoc

        stubs_dir = tempfile.mkdtemp(prefix="lb-examples-stubs-")
        code = protoc.main([
            "grpc_tools.protoc",
            "-I" + PROTO_DIR,
            "--python_out=" + stubs_dir,
            "--grpc_python_out=" + stubs_dir,
            os.path.join(PROTO_DIR, proto + ".proto"),
        ])
        if code != 0:
            sys.exit("cannot generate stubs for %s.proto (protoc exit %d)" % (proto, code))
    sys.path.insert(0, stubs_dir)
    return importlib.import_module(proto + "_pb2"), importlib.import_module(proto + "_pb2_grpc")


def say(line):
    """Prints one line to stdout and flushes it (the harness reads it)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def serve(name, port, add_servicer):
    """Serves with `add_servicer(server)` until told to stop; returns the exit code."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.so_reuseport", 0)])
    add_servicer(server)
    bound = peer_serve.bind(server, port, name)
    if bound is None:
        return 2
    peer_serve.serve_until_stopped(server, bound, say, watch_stdin=True, grace=1.0)
    return 0

"""Python stubs for the interop protos, generated at run time.

`load(out_dir)` runs grpcio-tools' protoc (in this process) on
`proto/grpc/testing/*.proto` beside this file, writing `*_pb2.py` and
`*_pb2_grpc.py` under `out_dir`, and returns the three generated modules
`(empty_pb2, messages_pb2, test_pb2_grpc)`.

The protos live at `grpc/testing/` like every other implementation's, so the
generated code imports them as `grpc.testing.*`. `grpc` is grpcio's own
package, so the output directory's `grpc/` is appended to that package's
search path (`grpc.__path__`) rather than shadowing it; grpcio itself has no
`grpc.testing` module.

`temporary_dir()` makes a directory for the stubs that the caller removes with
`shutil.rmtree` when done (the scripts leave through `os._exit`, which skips
`atexit` and context managers).
"""

import importlib
import os
import tempfile

import grpc

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proto")
PROTOS = ("empty.proto", "messages.proto", "test.proto")


def temporary_dir():
    """A fresh directory for generated stubs."""
    return tempfile.mkdtemp(prefix="lb-interop-stubs-")


def load(out_dir):
    """Generates the stubs into `out_dir` and imports them."""
    # Imported here so a missing grpcio-tools is reported by the caller's
    # error handling with a clear message.
    from grpc_tools import protoc

    os.makedirs(out_dir, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        "--proto_path=" + PROTO_DIR,
        "--python_out=" + out_dir,
        "--grpc_python_out=" + out_dir,
    ] + [os.path.join(PROTO_DIR, "grpc", "testing", name) for name in PROTOS]
    status = protoc.main(args)
    if status != 0:
        raise RuntimeError("grpc_tools.protoc exited with %d" % status)

    package_dir = os.path.join(out_dir, "grpc")
    testing_dir = os.path.join(package_dir, "testing")
    open(os.path.join(testing_dir, "__init__.py"), "a").close()
    if package_dir not in grpc.__path__:
        grpc.__path__.append(package_dir)
    return tuple(
        importlib.import_module("grpc.testing." + name)
        for name in ("empty_pb2", "messages_pb2", "test_pb2_grpc")
    )

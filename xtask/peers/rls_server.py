#!/usr/bin/env python3
"""A Route Lookup Service (RLS) server we did not write (grpcio, gRPC C-core, with
Google's protobuf runtime for the messages), for interop tests.

Usage:
    rls_server.py --port 0 --table FILE.json [--watch-stdin]

Binds 127.0.0.1 only (port 0 picks a free port), prints exactly one line
`LISTENING <port>` to stdout once serving, then serves
`/grpc.lookup.v1.RouteLookupService/RouteLookup` until SIGTERM or SIGINT (or,
with `--watch-stdin`, until its stdin reaches end of file) and exits 0.

The routing table is the JSON format `lb_rls::server::RoutingTable` reads, so
one file drives either server:

    {"routes": [{"keys": {"user": "alice"},
                 "targets": ["127.0.0.1:5001"],
                 "headerData": "for-alice"}],
     "default": {"targets": ["127.0.0.1:5002"], "headerData": "fallback"}}

- `routes` (required, may be empty): each route has `keys` (required, an
  object of strings), `targets` (required, an array of strings, may be empty)
  and `headerData` (optional string, default "").
- A request matches a route when its key map equals the route's `keys`
  exactly: the same keys with the same values, no more, no fewer. So
  `"keys": {}` matches only a request with an empty key map. Two routes with
  equal `keys` are an error.
- `default` (optional): `targets` and `headerData`, answered when no route
  matches. Without it, an unmatched request fails with NOT_FOUND.
- Unknown fields are errors. An invalid table makes the server exit with
  status 2 and a message naming the field (`routes[1].keys.user: must be a
  string, not a number`).

Each request is printed on stdout, before it is answered, as one line
`REQUEST {"target_type": ..., "key_map": {...}, "reason": ..., "stale_header_data": ...}`
(JSON, keys sorted; `reason` is the enum value's name, such as
"REASON_MISS", or its number if unknown), so tests can assert what a client
sent. A request that is not a valid RouteLookupRequest fails with
INVALID_ARGUMENT and prints `BAD_REQUEST <error>`.

The two messages are built at start-up from a descriptor written here with
`google.protobuf.descriptor_pb2` (no protoc, no generated code); the fields
follow grpc/lookup/v1/rls.proto (the `extensions` fields are left out, so
protobuf keeps them as unknown fields).
"""

import argparse
import json
import os
import sys
import threading
from concurrent import futures

import grpc

import peer_serve
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

SERVICE = "grpc.lookup.v1.RouteLookupService"
METHOD = "RouteLookup"
# How much of a key map a NOT_FOUND message shows.
MESSAGE_KEYS_MAX = 512

_print_lock = threading.Lock()


def say(line):
    """Prints one line to stdout and flushes it (the harness reads it)."""
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def build_messages():
    """The RouteLookupRequest and RouteLookupResponse classes and the Reason
    enum descriptor, from a descriptor built field by field."""
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="lb_peers/grpc/lookup/v1/rls.proto",
        package="grpc.lookup.v1",
        syntax="proto3",
    )

    def field(msg, name, number, ftype, label=F.LABEL_OPTIONAL, type_name=None):
        f = msg.field.add(name=name, number=number, type=ftype, label=label)
        f.json_name = "".join(
            part if i == 0 else part.capitalize() for i, part in enumerate(name.split("_"))
        )
        if type_name is not None:
            f.type_name = type_name

    req = fdp.message_type.add(name="RouteLookupRequest")
    field(req, "target_type", 3, F.TYPE_STRING)
    reason = req.enum_type.add(name="Reason")
    for name, number in (("REASON_UNKNOWN", 0), ("REASON_MISS", 1), ("REASON_STALE", 2)):
        reason.value.add(name=name, number=number)
    field(req, "reason", 5, F.TYPE_ENUM, type_name=".grpc.lookup.v1.RouteLookupRequest.Reason")
    field(req, "stale_header_data", 6, F.TYPE_STRING)
    entry = req.nested_type.add(name="KeyMapEntry")
    entry.options.map_entry = True
    field(entry, "key", 1, F.TYPE_STRING)
    field(entry, "value", 2, F.TYPE_STRING)
    field(
        req,
        "key_map",
        4,
        F.TYPE_MESSAGE,
        label=F.LABEL_REPEATED,
        type_name=".grpc.lookup.v1.RouteLookupRequest.KeyMapEntry",
    )

    resp = fdp.message_type.add(name="RouteLookupResponse")
    field(resp, "targets", 3, F.TYPE_STRING, label=F.LABEL_REPEATED)
    field(resp, "header_data", 2, F.TYPE_STRING)

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    request_desc = pool.FindMessageTypeByName("grpc.lookup.v1.RouteLookupRequest")
    response_desc = pool.FindMessageTypeByName("grpc.lookup.v1.RouteLookupResponse")
    return (
        message_factory.GetMessageClass(request_desc),
        message_factory.GetMessageClass(response_desc),
        request_desc.enum_types_by_name["Reason"],
    )


RouteLookupRequest, RouteLookupResponse, REASON = build_messages()


class TableError(Exception):
    """An invalid routing table: `field` names where, `message` says what."""

    def __init__(self, field, message):
        super().__init__("%s: %s" % (field, message) if field else message)


def json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def check_fields(obj, field, allowed):
    for name in obj:
        if name not in allowed:
            where = "%s.%s" % (field, name) if field else name
            raise TableError(where, "unknown field")


def want(value, kind, field, what):
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise TableError(field, "must be %s, not %s" % (what, json_type(value)))
    return value


def parse_answer(obj, field):
    """`targets` (required) and `headerData` (optional) of a route or the default."""
    if "targets" not in obj or obj["targets"] is None:
        raise TableError(field + ".targets", "is required")
    targets = want(obj["targets"], list, field + ".targets", "an array")
    for i, t in enumerate(targets):
        want(t, str, "%s.targets[%d]" % (field, i), "a string")
    header_data = obj.get("headerData")
    if header_data is None:
        header_data = ""
    want(header_data, str, field + ".headerData", "a string")
    return list(targets), header_data


def parse_table(doc):
    """(routes, default): routes as a dict from sorted key tuples to answers."""
    want(doc, dict, "", "an object")
    check_fields(doc, "", ("routes", "default"))
    if "routes" not in doc or doc["routes"] is None:
        raise TableError("routes", "is required")
    routes = {}
    first_index = {}
    for i, route in enumerate(want(doc["routes"], list, "routes", "an array")):
        field = "routes[%d]" % i
        want(route, dict, field, "an object")
        check_fields(route, field, ("keys", "targets", "headerData"))
        if "keys" not in route or route["keys"] is None:
            raise TableError(field + ".keys", "is required")
        keys = want(route["keys"], dict, field + ".keys", "an object")
        for k, v in keys.items():
            want(v, str, "%s.keys.%s" % (field, k), "a string")
        key = tuple(sorted(keys.items()))
        if key in routes:
            raise TableError(
                field + ".keys", "same keys as routes[%d]" % first_index[key]
            )
        routes[key] = parse_answer(route, field)
        first_index[key] = i
    default = None
    if doc.get("default") is not None:
        d = want(doc["default"], dict, "default", "an object")
        check_fields(d, "default", ("targets", "headerData"))
        default = parse_answer(d, "default")
    return routes, default


def reason_name(number):
    value = REASON.values_by_number.get(number)
    return value.name if value is not None else number


class Service:
    def __init__(self, routes, default):
        self.routes = routes
        self.default = default

    def route_lookup(self, request_bytes, context):
        try:
            request = RouteLookupRequest.FromString(request_bytes)
        except DecodeError as e:
            say("BAD_REQUEST " + json.dumps(str(e)))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad RouteLookupRequest: %s" % e)
        key_map = dict(request.key_map)
        say(
            "REQUEST "
            + json.dumps(
                {
                    "target_type": request.target_type,
                    "key_map": key_map,
                    "reason": reason_name(request.reason),
                    "stale_header_data": request.stale_header_data,
                },
                sort_keys=True,
            )
        )
        answer = self.routes.get(tuple(sorted(key_map.items())), self.default)
        if answer is None:
            shown = json.dumps(key_map, sort_keys=True, ensure_ascii=False)
            if len(shown) > MESSAGE_KEYS_MAX:
                # The message travels in a header: keep it small.
                shown = shown[:MESSAGE_KEYS_MAX] + "..."
            context.abort(grpc.StatusCode.NOT_FOUND, "no route for keys " + shown)
        targets, header_data = answer
        response = RouteLookupResponse(targets=targets, header_data=header_data)
        return response.SerializeToString()


def main():
    parser = argparse.ArgumentParser(description="grpcio RLS server for interop tests")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--table", required=True)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--watch-stdin", action="store_true")
    args = parser.parse_args()

    try:
        with open(args.table, "r", encoding="utf-8") as f:
            doc = json.load(f)
        routes, default = parse_table(doc)
    except (OSError, ValueError) as e:
        print("rls_server: cannot read %s: %s" % (args.table, e), file=sys.stderr)
        return 2
    except TableError as e:
        print("rls_server: invalid table %s: %s" % (args.table, e), file=sys.stderr)
        return 2

    service = Service(routes, default)
    # Raw bytes in and out: the handler decodes and encodes with protobuf
    # itself, so a malformed request gets INVALID_ARGUMENT from here.
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(service.route_lookup)}
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.workers),
        handlers=(handler,),
        options=[("grpc.so_reuseport", 0)],
    )
    port = peer_serve.bind(server, args.port, "rls_server")
    if port is None:
        return 2
    peer_serve.serve_until_stopped(server, port, say, args.watch_stdin, 1.0)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

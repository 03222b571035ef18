#!/usr/bin/env python3
"""gRPC C-core's own RLS client policy (`rls_experimental`, through grpcio),
for interop tests against an RLS server.

Usage:
    rls_client.py --target HOST:PORT --rls HOST:PORT
                  [--key NAME=VALUE[&NAME=VALUE...]]... [--method /test.Echo/Echo]
                  [--repeat N] [--timeout SECONDS]
                  [--keybuilders JSON] [--child-policy JSON]
                  [--target-field NAME] [--default-target TARGET]
                  [--lookup-timeout SECONDS] [--show-config]

Opens one grpcio channel to `--target` whose service config selects the RLS
policy with `lookupService` = `--rls`. Unless overridden, the config is:

    {"loadBalancingConfig": [{"rls_experimental": {
        "routeLookupConfig": {
            "grpcKeybuilders": [{
                "names": [{"service": "test.Echo"}],
                "headers": [{"key": "user", "names": ["x-user"]}],
                "extraKeys": {"service": "service", "method": "method"}}],
            "lookupService": "<--rls>",
            "lookupServiceTimeout": "5s",       (--lookup-timeout)
            "maxAge": "300s",
            "cacheSizeBytes": 65536},          (+ "defaultTarget": --default-target)
        "childPolicy": [{"pick_first": {}}],
        "childPolicyConfigTargetFieldName": "target"}}]}

The child policy: C-core gives every RLS child the channel's own resolver
addresses and only adds the target name to the child's config, under
`childPolicyConfigTargetFieldName`. pick_first's config parser ignores fields
it does not know, so with pick_first every call goes to `--target` whatever
the RLS server answers; the RLS server's header data still travels with it (as
`x-google-rls-data`), and an RLS failure still fails the call.

What grpcio 1.85.1 did with other child policies (`--child-policy`, with
`--target-field target` or `serviceName`): `round_robin`,
`weighted_round_robin`, `grpclb` (no balancer addresses, so it falls back to
the channel's addresses at once) and `outlier_detection_experimental` around
pick_first work like pick_first. Rejected when the channel is created (every
call fails with INVALID_ARGUMENT "Failed to create channel ... errors
validating service config: ..."): an unknown name ("field:childPolicy
error:No known policies in list: no_such_policy"), `cds_experimental` with
any field name but `cluster` ("errors validating cds LB policy config:
[field:cluster error:field not present]"), an empty field name
("field:childPolicyConfigTargetFieldName error:must be non-empty"). Accepted
but failing every call: `cds_experimental` with `cluster` (INTERNAL "xDS
config not passed to CDS LB policy") and `ring_hash_experimental` (INTERNAL
"hash attribute not present").

Calls: for each `--key NAME=VALUE`, in order, `--repeat` times (default 1), one
unary call of `--method` with request metadata `NAME: VALUE`, the body
`call-<n>` and a deadline of `--timeout` seconds (default 10).
`--key 'x-user=a&x-user=b'` sends several entries on one call (here two values
of one header). With no `--key`, `--repeat` calls without metadata. Each call
prints one JSON line:

    {"call": 0, "method": "/test.Echo/Echo", "metadata": [["x-user", "alice"]],
     "code": "OK", "details": "", "initial": {"x-user": ["alice"], ...},
     "trailing": {...}}

`initial` and `trailing` map each response metadata key to its values; the
test backends echo `x-*` request metadata, so `x-google-rls-data`, which the
RLS policy adds to the call, comes back there. A failed call has its code
name and details, and empty metadata. Exits 0 once every call has been made
and printed (whatever their outcome), 2 on bad arguments.

With `--show-config`, the service config is printed first as
`CONFIG <json>`.
"""

import argparse
import json
import sys

import grpc


def default_keybuilders():
    return [
        {
            "names": [{"service": "test.Echo"}],
            "headers": [{"key": "user", "names": ["x-user"]}],
            "extraKeys": {"service": "service", "method": "method"},
        }
    ]


def service_config(args):
    route_lookup = {
        "grpcKeybuilders": args.keybuilders,
        "lookupService": args.rls,
        "lookupServiceTimeout": "%gs" % args.lookup_timeout,
        "maxAge": "300s",
        "cacheSizeBytes": 65536,
    }
    if args.default_target is not None:
        route_lookup["defaultTarget"] = args.default_target
    return {
        "loadBalancingConfig": [
            {
                "rls_experimental": {
                    "routeLookupConfig": route_lookup,
                    "childPolicy": args.child_policy,
                    "childPolicyConfigTargetFieldName": args.target_field,
                }
            }
        ]
    }


def metadata_dict(md):
    out = {}
    for k, v in md or ():
        out.setdefault(k, []).append(v.hex() if isinstance(v, bytes) else v)
    return out


def one_call(stub, method, index, metadata, timeout):
    line = {"call": index, "method": method, "metadata": [list(kv) for kv in metadata]}
    try:
        _, call = stub.with_call(
            ("call-%d" % index).encode("ascii"), timeout=timeout, metadata=tuple(metadata)
        )
        line.update(
            code="OK",
            details="",
            initial=metadata_dict(call.initial_metadata()),
            trailing=metadata_dict(call.trailing_metadata()),
        )
    except grpc.RpcError as e:
        line.update(code=e.code().name, details=e.details(), initial={}, trailing={})
    return line


def json_arg(text):
    try:
        return json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError("not JSON: %s" % e)


def key_arg(text):
    """`NAME=VALUE`, or several joined with `&` (sent on one call, in order)."""
    pairs = []
    for part in text.split("&"):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError("expected NAME=VALUE[&NAME=VALUE...], got %r" % text)
        pairs.append((name.lower(), value))
    return pairs


def main():
    parser = argparse.ArgumentParser(description="grpcio RLS client for interop tests")
    parser.add_argument("--target", required=True)
    parser.add_argument("--rls", required=True)
    parser.add_argument("--key", type=key_arg, action="append", default=[])
    parser.add_argument("--method", default="/test.Echo/Echo")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--lookup-timeout", type=float, default=5.0)
    parser.add_argument("--keybuilders", type=json_arg, default=None)
    parser.add_argument("--child-policy", type=json_arg, default=[{"pick_first": {}}])
    parser.add_argument("--target-field", default="target")
    parser.add_argument("--default-target")
    parser.add_argument("--show-config", action="store_true")
    args = parser.parse_args()
    if args.keybuilders is None:
        args.keybuilders = default_keybuilders()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    config = service_config(args)
    if args.show_config:
        print("CONFIG " + json.dumps(config, sort_keys=True), flush=True)
    options = [
        ("grpc.service_config", json.dumps(config)),
        # Tests talk to loopback; a proxy from the environment must not interfere.
        ("grpc.enable_http_proxy", 0),
    ]
    calls = args.key or [[]]
    with grpc.insecure_channel(args.target, options=options) as channel:
        stub = channel.unary_unary(args.method)
        index = 0
        for metadata in calls:
            for _ in range(args.repeat):
                line = one_call(stub, args.method, index, metadata, args.timeout)
                print(json.dumps(line, sort_keys=True), flush=True)
                index += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A CSDS client we did not write the messages of (grpcio, with Envoy's own
generated protos from xds-protos), for comparing the xDS state two clients
report (gRFC A40).

Usage:
    csds_client.py --target 127.0.0.1:PORT

Calls `FetchClientStatus` once and prints one line `CSDS {...}` (JSON, keys
sorted): "resources", a sorted list of [node, type, name, version, status,
error] (type is the type URL's last part, status the ClientResourceStatus
name, error the rejected version and details or null), and "decoded", the
number of resources whose `xds_config` Any unpacked into its Envoy message
with the name it is listed under. Exits 1 when the call fails.
"""

import argparse
import json
import sys

import grpc
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

MESSAGES = {
    "Listener": (listener_pb2.Listener, "name"),
    "RouteConfiguration": (route_pb2.RouteConfiguration, "name"),
    "Cluster": (cluster_pb2.Cluster, "name"),
    "ClusterLoadAssignment": (endpoint_pb2.ClusterLoadAssignment, "cluster_name"),
}


def main():
    parser = argparse.ArgumentParser(description="CSDS client (grpcio + xds-protos)")
    parser.add_argument("--target", required=True)
    args = parser.parse_args()
    with grpc.insecure_channel(args.target) as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        try:
            response = stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=10)
        except grpc.RpcError as e:
            print("FAILED %s: %s" % (e.code().name, e.details()), flush=True)
            return 1
    resources, decoded = [], 0
    for config in response.config:
        for g in config.generic_xds_configs:
            kind = g.type_url.rsplit(".", 1)[-1]
            error = None
            if g.HasField("error_state"):
                error = [g.error_state.version_info, g.error_state.details]
            status = config_dump_shared_pb2.ClientResourceStatus.Name(g.client_status)
            resources.append([config.node.id, kind, g.name, g.version_info, status, error])
            if g.HasField("xds_config") and kind in MESSAGES:
                message, name_field = MESSAGES[kind]
                m = message()
                if g.xds_config.Unpack(m) and getattr(m, name_field) == g.name:
                    decoded += 1
    resources.sort(key=json.dumps)
    print("CSDS " + json.dumps({"resources": resources, "decoded": decoded}, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

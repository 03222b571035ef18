#!/usr/bin/env python3
"""A scenario-driven xDS management server for side-by-side tests: grpcio
(gRPC C-core) serving the Aggregated Discovery Service with every message built
by the xds-protos package (Envoy's and gRPC's own generated protos), so that
gRPC C-core's xDS client and lb-group's can be given the same resources and
changes, and what each one sends back compared.

Usage:
    xds_control.py --port 0 [--scenario FILE] [--watch-stdin]

Binds 127.0.0.1 only (port 0 picks a free port), prints `LISTENING <port>`
once serving, and serves until SIGTERM or SIGINT (or, with `--watch-stdin`, the
end of its stdin).

The scenario is JSON (the starting one from --scenario, none otherwise):

    {"listeners": {"svc": {"rds": "r1"} or {"route_config": ROUTES},
                   ... optional "max_stream_duration_ms": N},
     "routes":    {"r1": ROUTES},
     "clusters":  {"c1": {"lb": "ROUND_ROBIN" | "RING_HASH" | "LEAST_REQUEST"
                           | "MAGLEV" (which gRPC refuses), "eds": "name"?,
                           "max_requests": N?,
                           "lb_policies": [POLICY, ...]? (load_balancing_policy,
                             gRFC A52; it wins over "lb")}
                     or {"aggregate": ["c1", "c2"]}
                     or {"dns": "host:port"} (a LOGICAL_DNS cluster)},
    POLICY = "round_robin" | "pick_first" | "least_request"
           | "wrr_locality:<POLICY>" | "typed_struct:<name>" (a TypedStruct
             naming a policy) | "unknown" (a type no gRPC client knows)
     "endpoints": {"c1": [{"zone": "a", "priority": 0, "weight": 1,
                           "addresses": ["127.0.0.1:port", ...],
                           "health": "HEALTHY"?}]},
     "drops":     {"c1": [["category", percent], ...]},
     "rls_plugins": {"rls1": {"lookup_service": "127.0.0.1:port",
                              "service": "test.Echo",
                              "headers": {"user": "x-user"}?,
                              "default_target": "c1"?}}}
    ROUTES = {"virtual_hosts": [{"domains": ["*"], "routes": [
                {"prefix": "/" | "path": "/s/m",
                 "headers": {"x-user": "alice"}?,
                 "cluster": "c1" | "weighted": [["c1", 70], ["c2", 30]]
                   | "rls": "rls1" (a route to that RLS cluster specifier plugin),
                 "max_stream_duration_ms": N?,
                 "retry": {"on": "unavailable", "num_retries": 2}?}]}]}

With --watch-stdin, a line `SCENARIO {json}` replaces the whole scenario: every
resource type whose resources changed gets a new version, sent at once to each
stream that subscribed to one of them; the server answers `APPLIED <n>` (n
counts the scenarios applied) once the responses are queued.

Each DiscoveryRequest is printed, before it is answered, as one line
`REQUEST {...}` (JSON, keys sorted): node (the node id from the stream's first
request), type (the type URL's last part), version, nonce, names, and error
(the NACK's error_detail message, or null).

The server answers state-of-the-world: a request that subscribes to names it
was not sent yet (or opens a stream) gets the current version with every
subscribed resource that exists; a request that only acknowledges or rejects
gets no answer.
"""

import argparse
import itertools
import json
import queue
import sys
import threading
from concurrent import futures

import grpc

import peer_serve
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.pick_first.v3 import pick_first_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2
from envoy.config.core.v3 import config_source_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.type.v3 import percent_pb2
from xds.type.v3 import typed_struct_pb2
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    wrappers_pb2,
)

# The type URLs and the output and Any helpers are xds_server.py's (the
# fixed-scenario server of the client interop test).
from xds_server import CLUSTER, ENDPOINT, LISTENER, PREFIX, ROUTE, packed, say

TYPES = (LISTENER, ROUTE, CLUSTER, ENDPOINT)


def millis(ms):
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def ads_source():
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())


def rls_messages():
    """RouteLookupClusterSpecifier, built from a descriptor written here (the
    xds-protos package has no grpc.lookup protos): only the fields the
    scenarios set."""
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="lb_peers/grpc/lookup/v1/rls_config.proto", package="grpc.lookup.v1", syntax="proto3"
    )

    def field(msg, name, number, ftype, label=F.LABEL_OPTIONAL, type_name=None):
        f = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name is not None:
            f.type_name = type_name

    matcher = fdp.message_type.add(name="NameMatcher")
    field(matcher, "key", 1, F.TYPE_STRING)
    field(matcher, "names", 2, F.TYPE_STRING, F.LABEL_REPEATED)
    builder = fdp.message_type.add(name="GrpcKeyBuilder")
    name = builder.nested_type.add(name="Name")
    field(name, "service", 1, F.TYPE_STRING)
    field(name, "method", 2, F.TYPE_STRING)
    field(builder, "names", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".grpc.lookup.v1.GrpcKeyBuilder.Name")
    field(builder, "headers", 2, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".grpc.lookup.v1.NameMatcher")
    config = fdp.message_type.add(name="RouteLookupConfig")
    field(config, "grpc_keybuilders", 2, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".grpc.lookup.v1.GrpcKeyBuilder")
    field(config, "lookup_service", 3, F.TYPE_STRING)
    field(config, "cache_size_bytes", 7, F.TYPE_INT64)
    field(config, "default_target", 9, F.TYPE_STRING)
    spec = fdp.message_type.add(name="RouteLookupClusterSpecifier")
    field(spec, "route_lookup_config", 1, F.TYPE_MESSAGE, type_name=".grpc.lookup.v1.RouteLookupConfig")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.lookup.v1.RouteLookupClusterSpecifier")
    )


RouteLookupClusterSpecifier = rls_messages()
RLS_SPECIFIER_TYPE = PREFIX + "grpc.lookup.v1.RouteLookupClusterSpecifier"


def rls_plugin(spec):
    specifier = RouteLookupClusterSpecifier()
    config = specifier.route_lookup_config
    config.lookup_service = spec["lookup_service"]
    config.cache_size_bytes = 1 << 20
    config.default_target = spec.get("default_target", "")
    builder = config.grpc_keybuilders.add()
    builder.names.add(service=spec["service"])
    for key, header in sorted(spec.get("headers", {}).items()):
        builder.headers.add(key=key, names=[header])
    return any_pb2.Any(type_url=RLS_SPECIFIER_TYPE, value=specifier.SerializeToString())


def route_config(name, spec, plugins=None):
    rc = route_pb2.RouteConfiguration(name=name)
    for plugin_name, plugin in sorted((plugins or {}).items()):
        p = rc.cluster_specifier_plugins.add()
        p.extension.name = plugin_name
        p.extension.typed_config.CopyFrom(rls_plugin(plugin))
    for i, host in enumerate(spec["virtual_hosts"]):
        vh = rc.virtual_hosts.add(name="vh%d" % i, domains=host["domains"])
        for r in host["routes"]:
            match = route_components_pb2.RouteMatch()
            if "path" in r:
                match.path = r["path"]
            else:
                match.prefix = r.get("prefix", "/")
            for header, value in sorted(r.get("headers", {}).items()):
                match.headers.add(name=header, exact_match=value)
            action = route_components_pb2.RouteAction()
            if "rls" in r:
                action.cluster_specifier_plugin = r["rls"]
            elif "weighted" in r:
                for cluster, weight in r["weighted"]:
                    action.weighted_clusters.clusters.add(
                        name=cluster, weight=wrappers_pb2.UInt32Value(value=weight)
                    )
            else:
                action.cluster = r["cluster"]
            if "max_stream_duration_ms" in r:
                action.max_stream_duration.max_stream_duration.CopyFrom(
                    millis(r["max_stream_duration_ms"])
                )
            if "retry" in r:
                action.retry_policy.retry_on = r["retry"]["on"]
                action.retry_policy.num_retries.value = r["retry"]["num_retries"]
            vh.routes.add(match=match, route=action)
    return rc


def listener(name, spec):
    hcm = hcm_pb2.HttpConnectionManager(
        http_filters=[hcm_pb2.HttpFilter(name="router", typed_config=packed(router_pb2.Router()))]
    )
    if "rds" in spec:
        hcm.rds.route_config_name = spec["rds"]
        hcm.rds.config_source.CopyFrom(ads_source())
    else:
        hcm.route_config.CopyFrom(route_config("inline", spec["route_config"]))
    if "max_stream_duration_ms" in spec:
        hcm.common_http_protocol_options.CopyFrom(
            protocol_pb2.HttpProtocolOptions(
                max_stream_duration=millis(spec["max_stream_duration_ms"])
            )
        )
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=packed(hcm))
    )


def cluster(name, spec):
    if "dns" in spec:
        c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.LOGICAL_DNS)
        host, port = spec["dns"].rsplit(":", 1)
        lb = c.load_assignment.endpoints.add().lb_endpoints.add()
        lb.endpoint.address.socket_address.address = host
        lb.endpoint.address.socket_address.port_value = int(port)
        return c
    if "aggregate" in spec:
        c = cluster_pb2.Cluster(name=name)
        c.cluster_type.name = "envoy.clusters.aggregate"
        c.cluster_type.typed_config.CopyFrom(
            packed(aggregate_pb2.ClusterConfig(clusters=spec["aggregate"]))
        )
        return c
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        lb_policy=getattr(cluster_pb2.Cluster, spec.get("lb", "ROUND_ROBIN")),
    )
    c.eds_cluster_config.eds_config.CopyFrom(ads_source())
    if "eds" in spec:
        c.eds_cluster_config.service_name = spec["eds"]
    if "max_requests" in spec:
        t = c.circuit_breakers.thresholds.add()
        t.max_requests.value = spec["max_requests"]
    if "lb_policies" in spec:
        c.load_balancing_policy.CopyFrom(lb_policy_list(spec["lb_policies"]))
    return c


def lb_policy_list(names):
    """A LoadBalancingPolicy listing the named policies, in order."""
    out = cluster_pb2.LoadBalancingPolicy()
    for name in names:
        p = out.policies.add()
        p.typed_extension_config.name = name
        p.typed_extension_config.typed_config.CopyFrom(lb_policy(name))
    return out


def lb_policy(name):
    if name == "round_robin":
        return packed(round_robin_pb2.RoundRobin())
    if name == "pick_first":
        return packed(pick_first_pb2.PickFirst())
    if name == "least_request":
        return packed(least_request_pb2.LeastRequest())
    if name.startswith("wrr_locality:"):
        inner = lb_policy_list([name[len("wrr_locality:") :]])
        return packed(wrr_locality_pb2.WrrLocality(endpoint_picking_policy=inner))
    if name.startswith("typed_struct:"):
        return packed(
            typed_struct_pb2.TypedStruct(type_url="type.googleapis.com/" + name.split(":", 1)[1])
        )
    return any_pb2.Any(type_url="type.googleapis.com/test.UnknownPolicy", value=b"")


def endpoints(name, localities, drops=()):
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for category, percent in drops:
        drop = cla.policy.drop_overloads.add(category=category)
        drop.drop_percentage.numerator = percent
        drop.drop_percentage.denominator = percent_pb2.FractionalPercent.HUNDRED
    for loc_spec in localities:
        loc = cla.endpoints.add(priority=loc_spec.get("priority", 0))
        loc.locality.region = "r"
        loc.locality.zone = loc_spec["zone"]
        loc.load_balancing_weight.value = loc_spec.get("weight", 1)
        health = getattr(health_check_pb2, loc_spec.get("health", "HEALTHY"))
        for address in loc_spec["addresses"]:
            host, port = address.rsplit(":", 1)
            lb = loc.lb_endpoints.add(health_status=health)
            lb.endpoint.address.socket_address.address = host
            lb.endpoint.address.socket_address.port_value = int(port)
    return cla


def resources(scenario):
    """The scenario's resources: type URL -> name -> serialized Any."""
    plugins = scenario.get("rls_plugins") or {}
    builders = {
        LISTENER: ("listeners", listener),
        ROUTE: ("routes", lambda name, spec: route_config(name, spec, plugins)),
        CLUSTER: ("clusters", cluster),
        ENDPOINT: ("endpoints", endpoints),
    }
    out = {}
    for type_url, (key, build) in builders.items():
        out[type_url] = {
            name: packed(build(name, spec)) for name, spec in scenario.get(key, {}).items()
        }
    for name, drops in (scenario.get("drops") or {}).items():
        localities = scenario.get("endpoints", {}).get(name, [])
        out[ENDPOINT][name] = packed(endpoints(name, localities, drops))
    return out


class Control:
    """The scenario, its versions per type, and the open streams."""

    def __init__(self, scenario):
        self.lock = threading.Lock()
        self.resources = resources(scenario)
        self.versions = {t: 1 for t in TYPES}
        self.streams = []
        self.applied = 0
        self.nonces = itertools.count(1)

    def response(self, stream, type_url):
        """The current response for `type_url` on `stream` (lock held)."""
        names = stream.subscribed[type_url]
        current = self.resources[type_url]
        nonce = "%d" % next(self.nonces)
        stream.sent[type_url] = nonce
        return discovery_pb2.DiscoveryResponse(
            version_info="%d" % self.versions[type_url],
            type_url=type_url,
            nonce=nonce,
            resources=[current[n] for n in sorted(names) if n in current],
        )

    def apply(self, scenario):
        fresh = resources(scenario)
        with self.lock:
            changed = [t for t in TYPES if fresh[t] != self.resources[t]]
            self.resources = fresh
            for t in changed:
                self.versions[t] += 1
                for stream in self.streams:
                    if stream.subscribed[t]:
                        stream.out.put(self.response(stream, t))
            self.applied += 1
            return self.applied


class Stream:
    def __init__(self):
        self.subscribed = {t: set() for t in TYPES}
        self.sent = {}
        self.out = queue.Queue()
        self.node = None


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, control):
        self.control = control

    def StreamAggregatedResources(self, request_iterator, context):
        control = self.control
        stream = Stream()
        with control.lock:
            control.streams.append(stream)

        def read():
            try:
                for req in request_iterator:
                    self.handle(stream, req)
            except grpc.RpcError:
                pass
            finally:
                stream.out.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            while True:
                item = stream.out.get()
                if item is None:
                    return
                yield item
        finally:
            with control.lock:
                control.streams.remove(stream)

    def handle(self, stream, req):
        if req.HasField("node"):
            stream.node = req.node.id
        say(
            "REQUEST "
            + json.dumps(
                {
                    "node": stream.node,
                    "type": req.type_url.rsplit(".", 1)[-1],
                    "version": req.version_info,
                    "nonce": req.response_nonce,
                    "names": sorted(req.resource_names),
                    "error": req.error_detail.message if req.HasField("error_detail") else None,
                },
                sort_keys=True,
            )
        )
        if req.type_url not in TYPES:
            return
        control = self.control
        with control.lock:
            names = set(req.resource_names)
            new_names = names - stream.subscribed[req.type_url]
            stream.subscribed[req.type_url] = names
            # A first request, or one naming more: send what it now wants.
            if names and (new_names or req.type_url not in stream.sent):
                stream.out.put(control.response(stream, req.type_url))


def main():
    parser = argparse.ArgumentParser(description="scenario-driven xDS management server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario")
    parser.add_argument("--watch-stdin", action="store_true")
    args = parser.parse_args()
    scenario = {}
    if args.scenario:
        with open(args.scenario) as f:
            scenario = json.load(f)
    control = Control(scenario)

    def on_line(line):
        if line.startswith("SCENARIO "):
            try:
                n = control.apply(json.loads(line[len("SCENARIO ") :]))
            except (ValueError, KeyError, AttributeError) as e:
                say("BAD %s" % e)
                return
            say("APPLIED %d" % n)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Ads(control), server)
    port = peer_serve.bind(server, args.port, "xds_control.py")
    if port is None:
        return 2
    peer_serve.serve_until_stopped(server, port, say, args.watch_stdin, grace=0.5, on_line=on_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

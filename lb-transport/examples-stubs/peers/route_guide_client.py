#!/usr/bin/env python3
"""The route guide demo on grpcio (gRPC C-core) as a client: the same calls as
lb-examples' `route_guide::run_demo`, one of each kind, printed as one JSON line
for the Rust test to check.

Usage:
    route_guide_client.py --target 127.0.0.1:10000 [--stubs DIR]

Prints `{"features_got": [...], "features_listed": [...], "summary": {...},
"notes": [...]}` and exits 0, or exits 1 with the failing call's status on
standard error.
"""

import argparse
import json
import sys

import grpc

import stubs


def point_json(p):
    return [p.latitude, p.longitude]


def main():
    parser = argparse.ArgumentParser(description="grpcio route guide client")
    parser.add_argument("--target", required=True, help="host:port of the server")
    parser.add_argument("--stubs", help="a directory with the generated *_pb2 modules")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per call")
    args = parser.parse_args()
    pb2, pb2_grpc = stubs.load("route_guide", args.stubs)
    point = lambda lat, lon: pb2.Point(latitude=lat, longitude=lon)

    # Keep these equal to lb-examples' demo_rectangle, demo_route and demo_notes.
    rectangle = pb2.Rectangle(lo=point(399900000, -740600000), hi=point(400600000, -739800000))
    route = [point(400000000, -740000000), point(400100000, -740200000),
             point(400250000, -739900000), point(400300000, -740100000)]
    notes = [pb2.RouteNote(location=point(0, lon), message="%s message" % m)
             for m, lon in zip(["First", "Second", "Third", "Fourth", "Fifth", "Sixth"],
                               [1, 2, 3, 1, 2, 3])]

    with grpc.insecure_channel(args.target) as channel:
        stub = pb2_grpc.RouteGuideStub(channel)
        t = args.timeout
        try:
            got = [stub.GetFeature(p, timeout=t)
                   for p in (point(400000000, -740000000), point(0, 0))]
            listed = list(stub.ListFeatures(rectangle, timeout=t))
            summary = stub.RecordRoute(iter(route), timeout=t)
            chatted = list(stub.RouteChat(iter(notes), timeout=t))
        except grpc.RpcError as e:
            print("%s: %s" % (e.code().name, e.details()), file=sys.stderr)
            return 1

    report = {
        "features_got": [[f.name, point_json(f.location)] for f in got],
        "features_listed": [[f.name, point_json(f.location)] for f in listed],
        "summary": {
            "point_count": summary.point_count,
            "feature_count": summary.feature_count,
            "distance": summary.distance,
            "elapsed_time": summary.elapsed_time,
        },
        "notes": [[n.message, point_json(n.location)] for n in chatted],
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

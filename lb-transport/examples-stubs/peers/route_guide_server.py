#!/usr/bin/env python3
"""The routeguide.RouteGuide service on grpcio (gRPC C-core), with the same
built-in map and rules as lb-examples' `route_guide` module (keep FEATURES equal
to its `FEATURES`).

Usage:
    route_guide_server.py [--port 10000] [--stubs DIR]

Prints `LISTENING <port>` once serving on 127.0.0.1; stops on SIGTERM, SIGINT or
the end of standard input.
"""

import math
import os
import sys
import threading
import time

import stubs

FEATURES = [
    ("Old Mill Bridge", 400000000, -740000000),
    ("Lookout Tower", 400100000, -740200000),
    ("Cedar Falls", 400250000, -739900000),
    ("Stone Chapel", 400500000, -740500000),
    ("Fox Hollow Trailhead", 401000000, -741000000),
    ("Riverside Market", 401200000, -739500000),
    ("North Pier", 402000000, -740000000),
    ("Quarry Lake", 399500000, -740300000),
]

EARTH_RADIUS_M = 6371000.0


def distance(a, b):
    """Great-circle meters between two points (haversine), as the Rust side."""
    lat1, lat2 = math.radians(a.latitude / 1e7), math.radians(b.latitude / 1e7)
    d_lat = lat2 - lat1
    d_lon = math.radians(b.longitude / 1e7) - math.radians(a.longitude / 1e7)
    h = math.sin(d_lat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(d_lon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.atan2(math.sqrt(h), math.sqrt(1 - h))


def in_range(point, rect):
    lo, hi = rect.lo, rect.hi
    return (min(lo.latitude, hi.latitude) <= point.latitude <= max(lo.latitude, hi.latitude)
            and min(lo.longitude, hi.longitude) <= point.longitude
            <= max(lo.longitude, hi.longitude))


def main():
    args = stubs.parse_args("grpcio route guide server", 10000)
    pb2, pb2_grpc = stubs.load("route_guide", args.stubs)
    features = [pb2.Feature(name=n, location=pb2.Point(latitude=lat, longitude=lon))
                for n, lat, lon in FEATURES]

    def feature_at(point):
        for f in features:
            if f.location == point:
                return f
        return pb2.Feature(name="", location=point)

    class RouteGuide(pb2_grpc.RouteGuideServicer):
        def __init__(self):
            self.lock = threading.Lock()
            self.notes = {}

        def GetFeature(self, request, context):
            return feature_at(request)

        def ListFeatures(self, request, context):
            for f in features:
                if in_range(f.location, request):
                    yield f

        def RecordRoute(self, request_iterator, context):
            start = time.monotonic()
            points = list(request_iterator)
            meters = sum(distance(a, b) for a, b in zip(points, points[1:]))
            return pb2.RouteSummary(
                point_count=len(points),
                feature_count=sum(1 for p in points if feature_at(p).name),
                distance=int(meters),
                elapsed_time=int(time.monotonic() - start),
            )

        def RouteChat(self, request_iterator, context):
            for note in request_iterator:
                key = (note.location.latitude, note.location.longitude)
                with self.lock:
                    earlier = list(self.notes.get(key, []))
                    self.notes.setdefault(key, []).append(note)
                for prev in earlier:
                    yield prev

    return stubs.serve("route_guide_server", args.port,
                       lambda server: pb2_grpc.add_RouteGuideServicer_to_server(RouteGuide(), server))


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

#!/usr/bin/env python3
"""grpc's own channelz client stubs (grpcio-channelz, grpc_channelz.v1), for
interop tests against a channelz service (ours, or grpcio's servicer).

Usage:
    channelz_client.py --target HOST:PORT COMMAND [COMMAND ...]

Commands, each answered with one JSON line on stdout:
    top-channels START MAX        GetTopChannels(start_channel_id, max_results)
    servers START MAX             GetServers(start_server_id, max_results)
    server ID                     GetServer(server_id)
    server-sockets ID START MAX   GetServerSockets(server_id, start_socket_id, max_results)
    channel ID                    GetChannel(channel_id)
    subchannel ID                 GetSubchannel(subchannel_id)
    socket ID                     GetSocket(socket_id)
    walk                          every method, following the references: top
                                  channels -> channels -> subchannels -> sockets,
                                  servers -> server sockets -> sockets (what
                                  closed since it was listed, NOT_FOUND, is left
                                  out)

A line is {"command": [...], "ok": RESPONSE} with the response as
google.protobuf.json_format prints it (proto field names; int64 values are
strings; fields at their default are left out), or {"command": [...], "error":
{"code": "NOT_FOUND", "details": "..."}}. `walk` prints {"command": ["walk"],
"ok": {"top_channels": ..., "channels": {id: ...}, "subchannels": {id: ...},
"servers": ..., "server_sockets": {id: ...}, "sockets": {id: ...}}}. Every call
has a deadline of --timeout seconds (default 10). Exits 0 unless the arguments
are bad.
"""

import argparse
import json
import os
import sys

import grpc
from google.protobuf import json_format
from grpc_channelz.v1 import channelz_pb2 as pb
from grpc_channelz.v1 import channelz_pb2_grpc

ARITY = {
    "top-channels": 2,
    "servers": 2,
    "server": 1,
    "server-sockets": 3,
    "channel": 1,
    "subchannel": 1,
    "socket": 1,
    "walk": 0,
}


def to_dict(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class Client:
    def __init__(self, channel, timeout):
        self.stub = channelz_pb2_grpc.ChannelzStub(channel)
        self.timeout = timeout

    def call(self, name, args):
        s = self.stub
        t = self.timeout
        if name == "top-channels":
            return s.GetTopChannels(
                pb.GetTopChannelsRequest(start_channel_id=args[0], max_results=args[1]),
                timeout=t,
            )
        if name == "servers":
            return s.GetServers(
                pb.GetServersRequest(start_server_id=args[0], max_results=args[1]),
                timeout=t,
            )
        if name == "server":
            return s.GetServer(pb.GetServerRequest(server_id=args[0]), timeout=t)
        if name == "server-sockets":
            return s.GetServerSockets(
                pb.GetServerSocketsRequest(
                    server_id=args[0], start_socket_id=args[1], max_results=args[2]
                ),
                timeout=t,
            )
        if name == "channel":
            return s.GetChannel(pb.GetChannelRequest(channel_id=args[0]), timeout=t)
        if name == "subchannel":
            return s.GetSubchannel(
                pb.GetSubchannelRequest(subchannel_id=args[0]), timeout=t
            )
        if name == "socket":
            return s.GetSocket(pb.GetSocketRequest(socket_id=args[0]), timeout=t)
        raise ValueError(name)

    def pages(self, name, first_args, items_of, id_of):
        """Every item of a paged method, asking one page after another."""
        items, start = [], 0
        for _ in range(1000):
            response = self.call(name, first_args(start))
            page = list(items_of(response))
            items.extend(page)
            if response.end or not page:
                return items
            start = id_of(page[-1]) + 1
        return items

    def get_or_none(self, name, args):
        """The answer, or None for an entity gone since it was listed."""
        try:
            return self.call(name, args)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None

    def walk(self):
        out = {
            "top_channels": [],
            "channels": {},
            "subchannels": {},
            "servers": [],
            "server_sockets": {},
            "sockets": {},
        }
        sockets = []
        channels = self.pages(
            "top-channels",
            lambda start: [start, 0],
            lambda r: r.channel,
            lambda c: c.ref.channel_id,
        )
        out["top_channels"] = [to_dict(c) for c in channels]
        pending = [c.ref.channel_id for c in channels]
        subchannels = []
        seen = set()
        while pending:
            cid = pending.pop()
            if cid in seen:
                continue
            seen.add(cid)
            answer = self.get_or_none("channel", [cid])
            if answer is None:
                continue
            channel = answer.channel
            out["channels"][str(cid)] = to_dict(channel)
            pending.extend(r.channel_id for r in channel.channel_ref)
            subchannels.extend(r.subchannel_id for r in channel.subchannel_ref)
            sockets.extend(r.socket_id for r in channel.socket_ref)
        for sid in subchannels:
            answer = self.get_or_none("subchannel", [sid])
            if answer is None:
                continue
            sub = answer.subchannel
            out["subchannels"][str(sid)] = to_dict(sub)
            sockets.extend(r.socket_id for r in sub.socket_ref)
        servers = self.pages(
            "servers",
            lambda start: [start, 0],
            lambda r: r.server,
            lambda s: s.ref.server_id,
        )
        out["servers"] = [to_dict(s) for s in servers]
        for server in servers:
            sid = server.ref.server_id
            sockets.extend(r.socket_id for r in server.listen_socket)
            try:
                refs = self.pages(
                    "server-sockets",
                    lambda start, sid=sid: [sid, start, 0],
                    lambda r: r.socket_ref,
                    lambda r: r.socket_id,
                )
            except grpc.RpcError as e:
                # A server that stopped since it was listed.
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                continue
            out["server_sockets"][str(sid)] = [to_dict(r) for r in refs]
            sockets.extend(r.socket_id for r in refs)
        for sock in sockets:
            answer = self.get_or_none("socket", [sock])
            if answer is not None:
                out["sockets"][str(sock)] = to_dict(answer.socket)
        return out


def say(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def parse_commands(parser, words):
    commands, i = [], 0
    while i < len(words):
        name = words[i]
        if name not in ARITY:
            parser.error("unknown command %r" % name)
        n = ARITY[name]
        args = words[i + 1 : i + 1 + n]
        if len(args) != n:
            parser.error("%s takes %d numbers" % (name, n))
        try:
            commands.append((name, [int(a) for a in args]))
        except ValueError:
            parser.error("%s takes numbers, not %r" % (name, args))
        i += 1 + n
    if not commands:
        parser.error("give at least one command")
    return commands


def main():
    parser = argparse.ArgumentParser(description="grpcio channelz client")
    parser.add_argument("--target", required=True)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("commands", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    commands = parse_commands(parser, args.commands)
    with grpc.insecure_channel(args.target) as channel:
        client = Client(channel, args.timeout)
        for name, numbers in commands:
            command = [name] + numbers
            try:
                if name == "walk":
                    say({"command": command, "ok": client.walk()})
                else:
                    say({"command": command, "ok": to_dict(client.call(name, numbers))})
            except grpc.RpcError as e:
                say(
                    {
                        "command": command,
                        "error": {"code": e.code().name, "details": e.details()},
                    }
                )
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)

"""Serving shared by the grpcio peer servers (grpc_server.py, rls_server.py,
interop/server.py): bind a loopback port, print `LISTENING <port>`, serve until
SIGTERM, SIGINT or (with watch_stdin) the end of standard input, then stop with a
grace period. One place, so every peer starts and stops alike; a peer may take
commands as lines on standard input (grpc_server.py --health does).
"""

import os
import signal
import sys
import threading


def bind(server, port, name, credentials=None):
    """Binds 127.0.0.1:port (0 picks one); returns the port, or None after saying
    why on stderr."""
    address = "127.0.0.1:%d" % port
    try:
        if credentials is not None:
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as e:
        print("%s: cannot bind %s: %s" % (name, address, e), file=sys.stderr)
        return None
    if bound == 0:
        print("%s: cannot bind %s" % (name, address), file=sys.stderr)
        return None
    return bound


def serve_until_stopped(server, port, say, watch_stdin, grace, on_line=None):
    """Starts `server`, announces `port` with `say`, and returns once it was asked
    to stop and has stopped (waiting at most grace + 5 s). With `watch_stdin`,
    each line read from standard input goes to `on_line` (when given), and its end
    stops the server."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if watch_stdin:

        def watch():
            # A raw read holds no lock that interpreter shutdown would wait for.
            pending = b""
            while True:
                chunk = os.read(0, 4096)
                if not chunk:
                    break
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if on_line is not None:
                        on_line(line.decode("utf-8", errors="replace").strip())
            stop.set()

        threading.Thread(target=watch, daemon=True).start()

    server.start()
    say("LISTENING %d" % port)
    # Waiting in slices keeps the main thread responsive to signals.
    while not stop.wait(0.5):
        pass
    server.stop(grace).wait(grace + 5.0)

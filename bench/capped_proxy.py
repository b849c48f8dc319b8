"""A loopback TCP proxy that caps every connection's rate, so a local server looks like S3.

On the internet one TCP stream rarely gets the whole link: S3 serves each connection at some
tens of MB/s, and only several connections at once fill a faster link.  SeaweedFS on loopback
has no such limit, so a client that uses one connection looks as fast there as one that uses
many.  Behind this proxy each connection, in each direction, is paced to ``--rate`` bytes per
second (btrsendd's own ``Throttle``, one per connection and direction), and only concurrency
beats the cap, as it does against S3.

Run as ``python -m bench.capped_proxy --upstream HOST:PORT --rate BYTES``: it listens on a free
loopback port, prints that port on a line of its own once it accepts connections, and serves
until terminated.  A separate process, so that its work is not mixed into the measured
commands' and its threads do not share the benchmark's interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
import threading

from bench.dataset import parse_size
from btrsendd.storage.throttle import Throttle

#: Bytes moved per read: small enough that pacing is smooth at a few MiB/s.
CHUNK = 64 * 1024


def _pump(source: socket.socket, sink: socket.socket, rate: int) -> None:
    """Copy ``source`` to ``sink`` at ``rate`` until ``source`` ends, then pass the end on."""
    throttle = Throttle(rate)
    buffer = memoryview(bytearray(CHUNK))
    with contextlib.suppress(OSError):
        while count := source.recv_into(buffer):
            throttle.take(count)
            sink.sendall(buffer[:count])
    # A half-close, so that the other direction (a response still coming) carries on.
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _serve_connection(client: socket.socket, upstream: tuple[str, int], rate: int) -> None:
    try:
        server = socket.create_connection(upstream)
    except OSError:
        client.close()
        return
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pump, args=(server, client, rate), daemon=True)
    back.start()
    _pump(client, server, rate)
    back.join()
    client.close()
    server.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capped_proxy")
    parser.add_argument("--upstream", type=_address, required=True, help="HOST:PORT to forward to")
    parser.add_argument("--rate", type=parse_size, required=True, help="bytes/s per connection")
    args = parser.parse_args(argv)
    # Terminated by the benchmark: exit at once (daemon threads die with the process).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        print(listener.getsockname()[1], flush=True)
        while True:
            client, _ = listener.accept()
            threading.Thread(
                target=_serve_connection, args=(client, args.upstream, args.rate), daemon=True
            ).start()


if __name__ == "__main__":
    raise SystemExit(main())

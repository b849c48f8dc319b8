"""The benchmark's capped proxy: each connection is held to the rate, connections are not
limited together, and bytes pass unchanged in both directions."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RATE = 4 * 1024 * 1024
SIZE = 2 * 1024 * 1024


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A loopback server that sends every byte back, one thread per connection."""
    listener = socket.create_server(("127.0.0.1", 0))

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()
    finally:
        listener.close()


@pytest.fixture
def proxy(echo_server: tuple[str, int]) -> Iterator[int]:
    host, port = echo_server
    argv = [sys.executable, "-m", "bench.capped_proxy", "--upstream", f"{host}:{port}"]
    proc = subprocess.Popen([*argv, "--rate", str(RATE)], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _round_trip(port: int, payload: bytes) -> tuple[bytes, float]:
    """Send ``payload`` through the proxy and read it all back; returns it and the seconds."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        sender = threading.Thread(target=conn.sendall, args=(payload,))
        sender.start()
        received = bytearray()
        while len(received) < len(payload):
            data = conn.recv(65536)
            assert data, "the proxy closed the connection early"
            received += data
        sender.join()
    return bytes(received), time.monotonic() - started


def test_each_connection_is_capped_and_bytes_pass_unchanged(proxy: int) -> None:
    payload = os.urandom(SIZE)
    results: list[tuple[bytes, float]] = []
    threads = [
        threading.Thread(target=lambda: results.append(_round_trip(proxy, payload)))
        for _ in range(3)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    expected = SIZE / RATE
    for received, seconds in results:
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        # Paced: no faster than the rate allows (less the pacing's small tolerance).
        assert seconds >= 0.8 * expected
    # Per connection, not shared: three at once take about as long as one.
    assert elapsed < 2.5 * expected

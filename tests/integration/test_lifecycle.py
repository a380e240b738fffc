"""Stopping the balancer: TERM lets what is in flight finish, then the master exits 0."""

from __future__ import annotations

import hashlib
import http.client
import signal
import threading
import time

from tests.integration.conftest import StartBalancer
from tests.support.backend import ScriptedBackend, slow_chunks

CHUNKS = [bytes([i]) * 16_384 for i in range(8)]
# The download takes about 8 * 0.25 s: well inside the test balancer's graceful timeout (5 s).
CHUNK_GAP = 0.25


def _download(port: int, target: str, started: threading.Event) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        first = response.read1(65_536)
        started.set()
        return response.status, first + response.read()
    finally:
        conn.close()


def test_term_lets_a_streaming_download_finish_then_exits_0(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A download under way when the master gets TERM completes whole; the master exits 0."""
    backend = three_backends[0]
    backend.route("/drip", slow_chunks(CHUNKS, lambda _: time.sleep(CHUNK_GAP)))
    lb = start_balancer([backend.url], workers=2)
    started = threading.Event()
    result: list[tuple[int, bytes]] = []
    client = threading.Thread(
        target=lambda: result.append(_download(lb.port, "/drip", started)), daemon=True
    )
    client.start()
    assert started.wait(10), "the download did not start"
    terminated_at = time.monotonic()
    lb.process.send_signal(signal.SIGTERM)
    client.join(20)
    assert not client.is_alive()
    status, body = result[0]
    assert status == 200
    assert hashlib.sha256(body).digest() == hashlib.sha256(b"".join(CHUNKS)).digest()
    assert lb.process.wait(timeout=15) == 0
    # It waited for the download (not cut at once), and not for the whole graceful timeout.
    assert time.monotonic() - terminated_at >= CHUNK_GAP * (len(CHUNKS) - 2)
    assert "Shutting down: Master" in lb.log()

"""Stopping and killing: TERM lets what is in flight finish; SIGKILL costs only what it held."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tests.integration.conftest import StartBalancer
from tests.support.backend import ScriptedBackend, hold_until, slow_chunks
from tests.support.chaos import client_ports_held
from tests.support.client import get_name
from tests.support.polling import wait_for

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


def _held_request(port: int, ready: threading.Event) -> tuple[int, str]:
    """GET /hold on a fresh connection; the client port, and the outcome: status or error."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.connect()
        assert conn.sock is not None
        client_port = conn.sock.getsockname()[1]
        conn.request("GET", "/hold")
        ready.set()
        try:
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as err:
            return client_port, type(err).__name__
        return client_port, f"{response.status} {body.decode().strip()}"
    finally:
        conn.close()


def test_a_killed_worker_costs_only_the_requests_it_was_serving(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """SIGKILL of a worker fails exactly the requests that worker held; the rest complete."""
    gate = threading.Event()
    for backend in three_backends:
        backend.route("/hold", hold_until(gate))
    lb = start_balancer([b.url for b in three_backends], workers=2)
    held = 8
    with ThreadPoolExecutor(max_workers=held) as pool:
        readies = [threading.Event() for _ in range(held)]
        futures = [pool.submit(_held_request, lb.port, ready) for ready in readies]
        for ready in readies:
            assert ready.wait(10)
        wait_for(
            lambda: sum(len(b.requests) for b in three_backends) == held,
            f"{held} requests held at the backends",
            timeout=10,
        )
        served = {pid: client_ports_held(pid, lb.port) for pid in lb.worker_pids()}
        victim = max(served, key=lambda pid: len(served[pid]))
        doomed = served[victim]
        assert doomed
        assert sum(len(ports) for ports in served.values()) == held
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.2)
        gate.set()
        outcomes = dict(future.result(timeout=20) for future in futures)
    failed = {port for port, outcome in outcomes.items() if not outcome.startswith("200 ")}
    assert failed == doomed
    assert len(outcomes) == held
    # The balancer keeps serving, with a worker respawned in place of the killed one.
    assert [get_name(lb.port) for _ in range(6)].count("backend-1") == 2

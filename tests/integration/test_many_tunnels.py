"""Two thousand idle WebSocket tunnels held by two workers, with ordinary requests still served.

The backend is a ``websockets`` asyncio server on a loop of its own (one
thread for all its connections); it answers ``/plain`` as plain HTTP. The
clients are ``websockets`` asyncio clients. Each tunnel holds two descriptors
in its worker and one on each side of the test: the test raises its own soft
descriptor limit if it must (the balancer inherits it).
"""

from __future__ import annotations

import asyncio
import json
import resource
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as async_connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from tests.support.balancer import BalancerProcess
from tests.support.client import fetch
from tests.support.polling import wait_for
from tests.support.procfs import open_fds, rss_kib

TUNNELS = 2000
# gunicorn's worker_connections bounds a worker's connections, tunnels included:
# 1,000 tunnels each and room for ordinary requests beside them.
WORKER_CONNECTIONS = 1100
OPENING_AT_ONCE = 100


class IdleBackend:
    """A websockets server holding every connection open until the client closes it."""

    def __init__(self) -> None:
        self.open = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: Server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(
            10
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _start(self) -> Server:
        return await serve(
            self._handle,
            "127.0.0.1",
            0,
            backlog=1024,
            compression=None,
            ping_interval=None,
            process_request=self._plain,
        )

    @staticmethod
    def _plain(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/plain":
            return connection.respond(HTTPStatus.OK, "plain\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.open += 1
        try:
            await ws.wait_closed()
        finally:
            self.open -= 1

    def close(self) -> None:
        """Stop the server and its loop."""

        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture(scope="module")
def descriptors() -> None:
    """Enough descriptors for this process (both ends of every tunnel) and the balancer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 3 * TUNNELS + 1000
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"descriptor limit {hard} is below the {needed} this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@pytest.fixture(scope="module")
def backend(descriptors: None) -> Iterator[IdleBackend]:
    """The idle websockets server."""
    server = IdleBackend()
    yield server
    server.close()


def _document(lb: BalancerProcess) -> dict[str, Any]:
    return dict(json.loads(fetch(lb.port, "/_prefork_lb/backends").body))


@dataclass
class Meanwhile:
    """What the test saw while every tunnel was open."""

    statuses: list[int] = field(default_factory=list)
    request_seconds: float = 0.0
    document: dict[str, Any] = field(default_factory=dict)
    rss_kib: int = 0
    tunnels: list[int] = field(default_factory=list)  # per worker


def test_two_thousand_idle_tunnels_and_requests_still_served(backend: IdleBackend) -> None:
    """2,000 idle tunnels stay open across both workers while plain requests are answered.

    Prints the workers' memory per open tunnel.
    """
    args = [f"--worker-connections={WORKER_CONNECTIONS}", "--access-logfile=/dev/null"]
    with BalancerProcess([backend.url], workers=2, args=args) as lb:
        workers = lb.worker_pids()
        url = f"ws://127.0.0.1:{lb.port}/idle"
        for _ in range(20):  # warm up both workers: requests and a few tunnels
            assert fetch(lb.port, "/plain").status == 200
        asyncio.run(_hold(url, 20, lambda: None))
        wait_for(lambda: backend.open == 0, "the warm-up tunnels closed")
        # Closed at the backend is not yet closed in the worker: the workers count a connection
        # until they have closed it (and a tunnel's backend side); only this request is left.
        wait_for(
            lambda: _document(lb)["client_connections"] == 1,
            "the warm-up connections closed in the workers",
        )
        rss_before = sum(rss_kib(pid) for pid in workers)
        fds_before = {pid: open_fds(pid) for pid in workers}
        seen = Meanwhile()

        def while_open() -> None:
            wait_for(lambda: backend.open == TUNNELS, "every tunnel at the backend", timeout=20)
            started = time.monotonic()
            seen.statuses = [fetch(lb.port, "/plain").status for _ in range(50)]
            seen.request_seconds = (time.monotonic() - started) / 50
            seen.document = _document(lb)
            seen.rss_kib = sum(rss_kib(pid) for pid in workers)
            # Two descriptors per tunnel: the client's and the backend's.
            seen.tunnels = [(open_fds(pid) - fds_before[pid]) // 2 for pid in workers]

        started = time.monotonic()
        asyncio.run(_hold(url, TUNNELS, while_open))
        took = time.monotonic() - started
        assert seen.statuses == [200] * 50
        (entry,) = seen.document["backends"]
        assert (entry["tunnels_open"], entry["in_flight"]) == (TUNNELS, TUNNELS)
        assert sum(seen.tunnels) >= TUNNELS - 2
        assert all(count <= WORKER_CONNECTIONS for count in seen.tunnels)
        per_tunnel = (seen.rss_kib - rss_before) / TUNNELS
        print(
            f"{TUNNELS} tunnels opened and held in {took:.1f} s; tunnels per worker "
            f"{sorted(seen.tunnels)}; workers' RSS {rss_before} KiB -> {seen.rss_kib} KiB "
            f"= {per_tunnel:.1f} KiB per open tunnel; a plain request meanwhile "
            f"{seen.request_seconds * 1000:.1f} ms"
        )
        wait_for(lambda: backend.open == 0, "every tunnel closed at the backend", timeout=20)
        wait_for(lambda: _document(lb)["client_connections"] == 1, "every tunnel ended")
        assert lb.worker_pids() == workers


async def _hold(url: str, count: int, meanwhile: Callable[[], None]) -> None:
    """Open ``count`` tunnels to ``url``, call ``meanwhile()`` in a thread, close them."""
    gate = asyncio.Semaphore(OPENING_AT_ONCE)

    async def one() -> ClientConnection:
        async with gate:
            return await async_connect(url, compression=None, ping_interval=None, open_timeout=20)

    clients = await asyncio.gather(*(one() for _ in range(count)))
    try:
        await asyncio.to_thread(meanwhile)
    finally:
        await asyncio.gather(*(client.close() for client in clients))

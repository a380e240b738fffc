"""Slow, silent, greedy and vanishing clients: each is bounded, and nobody else waits for it.

Every client here is a real socket speaking raw bytes to a real balancer. The
answers: 408 for a body that is too slow, 413 for one that is too large, a
closed connection for a head that never ends or a response left unread; and
whatever the clients do, no memory, descriptor or backend connection is left
behind.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import ScriptedBackend, big_body
from tests.support.balancer import BalancerProcess
from tests.support.client import fetch
from tests.support.polling import wait_for
from tests.support.procfs import open_fds, rss_kib
from tests.support.rawhttp import RawConnection

HEAD = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"


def _send_until_refused(conn: RawConnection, pieces: Iterator[bytes], pause: float = 0.0) -> bool:
    """Send each piece (pausing between them); False if the balancer closed the connection first."""
    try:
        for piece in pieces:
            conn.send(piece)
            time.sleep(pause)
    except OSError:
        return False
    return True


def _in_flight(lb: BalancerProcess) -> list[int]:
    reply = fetch(lb.port, "/_prefork_lb/backends")
    return [backend["in_flight"] for backend in json.loads(reply.body)["backends"]]


def _client_connections(lb: BalancerProcess) -> int:
    """Client connections open in the balancer (a greenlet each), not counting this query's."""
    reply = fetch(lb.port, "/_prefork_lb/backends")
    return int(json.loads(reply.body)["client_connections"]) - 1


@pytest.fixture(scope="module")
def small_body_backend() -> Iterator[ScriptedBackend]:
    """The backend behind the module's balancer that takes bodies of at most 1 KiB."""
    with ScriptedBackend("backend-1") as backend:
        yield backend


@pytest.fixture(scope="module")
def small_body_balancer(small_body_backend: ScriptedBackend) -> Iterator[BalancerProcess]:
    """One worker with max_body_size 1k, shared by the tests that only send it requests."""
    env = {"PREFORK_LB_MAX_BODY_SIZE": "1k"}
    with BalancerProcess([small_body_backend.url], workers=1, env=env) as lb:
        yield lb


@pytest.fixture
def small_body_lb(
    small_body_backend: ScriptedBackend, small_body_balancer: BalancerProcess
) -> tuple[ScriptedBackend, BalancerProcess]:
    """The 1 KiB balancer and its backend, with nothing recorded."""
    small_body_backend.clear(routes=True)
    return small_body_backend, small_body_balancer


@pytest.mark.parametrize(
    ("length", "reaches_backend"),
    [(100, False), (200_000, True)],
    ids=["held-body", "streamed-body"],
)
def test_body_trickled_below_min_rate_is_408(
    three_backends: list[ScriptedBackend],
    start_balancer: StartBalancer,
    length: int,
    reaches_backend: bool,
) -> None:
    """A byte every 0.1 s is never silent for client_timeout, but is far below client_min_rate."""
    backend = three_backends[0]
    # Deadline: 1 s of grace plus (bytes asked for) / rate: about 1.1 s and 1.7 s here.
    env = {"PREFORK_LB_CLIENT_TIMEOUT": "1", "PREFORK_LB_CLIENT_MIN_RATE": "100000"}
    lb = start_balancer([backend.url], workers=1, env=env)
    started = time.monotonic()
    with RawConnection(lb.port, timeout=10) as conn:
        conn.send(HEAD % length)
        # The balancer answers, then closes, mid-trickle.
        assert not _send_until_refused(conn, iter([b"x"] * length), pause=0.1)
        elapsed = time.monotonic() - started
        reply = conn.read_response()
    assert reply.status == 408
    assert elapsed < 8, f"a trickled body held its connection for {elapsed:.1f} s"
    lb.wait_for_log(r"slower than client_min_rate 100000 B/s")
    if reaches_backend:
        (seen,) = backend.wait_for_requests(1)
        assert not seen.complete
    else:
        assert backend.requests == []
    assert fetch(lb.port, "/after").status == 200


def test_content_length_over_max_body_size_is_413_before_anything_goes_upstream(
    small_body_lb: tuple[ScriptedBackend, BalancerProcess],
) -> None:
    """The head alone decides: 413 and Connection: close, with no body byte read or sent on."""
    backend, lb = small_body_lb
    with RawConnection(lb.port, timeout=10) as conn:
        conn.send(HEAD % (4 * 1024**3))  # announces 4 GiB, sends none of it
        reply = conn.read_response()
        assert reply.status == 413
        assert reply.header("Connection") == ["close"]
        assert conn.is_closed_by_peer()
    with RawConnection(lb.port, timeout=10) as conn:  # exactly the limit is fine
        conn.send(HEAD % 1024 + b"y" * 1024)
        assert conn.read_response().status == 200
    assert [len(r.body) for r in backend.requests] == [1024]


def test_chunked_body_growing_past_max_body_size_is_413_and_cut_upstream(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A chunked body has no length up front: past the limit, 413, and upstream never completes."""
    backend = three_backends[0]
    lb = start_balancer([backend.url], workers=1, env={"PREFORK_LB_MAX_BODY_SIZE": "100k"})
    piece = b"z" * 65536
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    with RawConnection(lb.port, timeout=10) as conn:
        conn.send(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        # The balancer may close before the last pieces go; the answer is there either way.
        _send_until_refused(conn, iter([chunk] * 4 + [b"0\r\n\r\n"]))
        reply = conn.read_response()
    assert reply.status == 413
    for seen in backend.requests:
        assert not seen.complete
    assert fetch(lb.port, "/after").status == 200


def test_client_that_stops_reading_is_disconnected_and_nothing_piles_up(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A client that never reads a 1 GiB body costs socket buffers only, for client_timeout."""
    backend = three_backends[0]
    backend.route("/big", big_body(1024**3))
    lb = start_balancer([backend.url], workers=1, env={"PREFORK_LB_CLIENT_TIMEOUT": "2"})
    (worker,) = lb.worker_pids()
    fetch(lb.port, "/")  # warm up
    before = rss_kib(worker)
    with socket.create_connection(("127.0.0.1", lb.port)) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        client.recv(4096)  # the head arrives, then the client reads nothing more
        peak = before
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            peak = max(peak, rss_kib(worker))
            time.sleep(0.1)
        lb.wait_for_log(r"client 127\.0\.0\.1 did not read the response to GET /big for 2 s")
    assert peak - before < 20 * 1024, f"worker RSS grew from {before} KiB to {peak} KiB"
    wait_for(lambda: backend.open_connections == 0, timeout=10, what="backend connection closed")
    assert _in_flight(lb) == [0]
    assert _client_connections(lb) == 0
    assert fetch(lb.port, "/after").status == 200


class _SlowClients:
    """Many connections, each sending its request a few bytes at a time, in one thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.socks: list[socket.socket] = []
        self.closed_by_peer = 0

    def open(self, count: int, first: bytes) -> None:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            sock.sendall(first)
            sock.setblocking(False)
            self.socks.append(sock)

    def dribble(self, seconds: float, data: bytes) -> None:
        """Every 0.25 s, send ``data`` on each connection still open; count those closed."""
        deadline = time.monotonic() + seconds
        with selectors.DefaultSelector() as selector:
            for sock in self.socks:
                selector.register(sock, selectors.EVENT_READ)
            while self.socks and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.25):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if self._peer_closed(sock):
                        selector.unregister(sock)
                        self.socks.remove(sock)
                        sock.close()
                        self.closed_by_peer += 1
                for sock in self.socks:
                    try:
                        sock.send(data)
                    except BlockingIOError:
                        pass
                    except OSError:
                        pass  # seen as closed by the selector next round

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        try:
            while sock.recv(65536):
                pass  # an answer (408); the close follows
            return True
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


@pytest.fixture
def slow_clients(start_balancer: StartBalancer) -> Iterator[list[_SlowClients]]:
    made: list[_SlowClients] = []
    yield made
    for clients in made:
        clients.close()


def test_a_thousand_slow_clients_are_cut_off_while_others_are_served(
    three_backends: list[ScriptedBackend],
    start_balancer: StartBalancer,
    slow_clients: list[_SlowClients],
) -> None:
    """500 slowloris heads and 500 trickled bodies: all closed at their deadline, others served."""
    env = {"PREFORK_LB_CLIENT_TIMEOUT": "2", "PREFORK_LB_CLIENT_MIN_RATE": "200"}
    lb = start_balancer(
        [b.url for b in three_backends], workers=2, env=env, args=["--keep-alive", "3"]
    )
    heads = _SlowClients(lb.port)
    bodies = _SlowClients(lb.port)
    slow_clients.extend([heads, bodies])
    heads.open(500, b"GET / HTTP/1.1\r\nHost: a\r\n")
    bodies.open(500, HEAD % 2000)
    with ThreadPoolExecutor(max_workers=3) as pool:
        dribbling = [
            pool.submit(heads.dribble, 20, b"X"),  # one more header byte at a time
            pool.submit(bodies.dribble, 20, b"b"),  # 4 B/s, far below 200 B/s
        ]
        served = [fetch(lb.port, f"/ordinary/{i}", timeout=10).status for i in range(30)]
        for future in dribbling:
            future.result()
    assert served == [200] * 30
    # Heads end at --keep-alive (3 s); bodies at 2 s + 2000 B / 200 B/s = 12 s.
    assert (heads.closed_by_peer, bodies.closed_by_peer) == (500, 500)
    assert all(
        b.requests == [] or all(r.target.startswith("/ordinary/") for r in b.requests)
        for b in three_backends
    )


def test_clients_vanishing_mid_transfer_leak_no_descriptor_or_connection(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """300 uploads and 300 downloads abandoned half-way: afterwards the worker is as it was.

    Each client connection is served by one greenlet, counted while it runs
    (``client_connections``); the descriptors are the worker's own count.
    """
    backend = three_backends[0]
    backend.route("/down", big_body(64 * 1024**2))
    lb = start_balancer([backend.url], workers=1)
    (worker,) = lb.worker_pids()
    fetch(lb.port, "/")  # warm up: one pooled backend connection
    fds_before = open_fds(worker)
    for _ in range(300):
        with socket.create_connection(("127.0.0.1", lb.port), timeout=10) as client:
            client.sendall(HEAD % (1024**2) + b"u" * 100_000)
        with socket.create_connection(("127.0.0.1", lb.port), timeout=10) as client:
            client.sendall(b"GET /down HTTP/1.1\r\nHost: a\r\n\r\n")
            client.recv(65536)
    # Every abandoned exchange ends: no backend connection stays open for it ...
    wait_for(lambda: backend.open_connections <= 1, timeout=20, what="backend connections closed")
    wait_for(lambda: _in_flight(lb) == [0], timeout=10, what="nothing in flight")
    wait_for(lambda: _client_connections(lb) == 0, timeout=10, what="no greenlet left serving")
    # ... and the worker holds what it held before (its listener, pipes, one pooled connection).
    wait_for(lambda: open_fds(worker) <= fds_before + 1, timeout=10, what="worker fds back")
    print(f"worker fds before {fds_before}, after {open_fds(worker)}")
    assert fetch(lb.port, "/after").status == 200


@pytest.mark.parametrize(
    ("head", "status"),
    [
        pytest.param(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, id="line"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Many: 1\r\n" * 100 + b"\r\n", 431, id="count"
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431, id="size"
        ),
    ],
)
def test_heads_over_gunicorn_limits_are_refused(
    backend: ScriptedBackend, echo_balancer: BalancerProcess, head: bytes, status: int
) -> None:
    """gunicorn's limits (request line 4094, 100 fields, 8190 bytes a field) give 414 or 431."""
    with RawConnection(echo_balancer.port, timeout=10) as conn:
        conn.send(head)
        assert conn.read_response().status == status
    assert backend.requests == []


def test_gunicorn_limits_are_settings(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """--limit-request-line and --limit-request-fields change where 414 and 431 begin."""
    backend = three_backends[0]
    args = ["--limit-request-line", "8190", "--limit-request-fields", "10"]
    lb = start_balancer([backend.url], workers=1, args=args)
    long_target = "/" + "a" * 5000
    assert fetch(lb.port, long_target).status == 200
    with RawConnection(lb.port, timeout=10) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Many: 1\r\n" * 10 + b"\r\n")
        assert conn.read_response().status == 431
    assert [r.target for r in backend.requests] == [long_target]


def test_client_still_sending_a_refused_body_reads_its_413(
    small_body_lb: tuple[ScriptedBackend, BalancerProcess],
) -> None:
    """A client that sends its whole 8 MiB body before reading gets the 413, not a reset."""
    backend, lb = small_body_lb
    size = 8 * 1024**2
    with socket.create_connection(("127.0.0.1", lb.port), timeout=10) as client:
        client.sendall(HEAD % size + b"v" * size)  # as http.client does: all, then read
        reply = client.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:100]
    assert b"Connection: close" in reply
    assert backend.requests == []


def test_http10_client_cut_off_for_not_reading_sees_a_reset(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """An HTTP/1.0 body ends at the close: cut off, the client must see a reset, not an end."""
    backend = three_backends[0]
    backend.route("/big", big_body(256 * 1024**2))
    lb = start_balancer([backend.url], workers=1, env={"PREFORK_LB_CLIENT_TIMEOUT": "1"})
    with socket.create_connection(("127.0.0.1", lb.port), timeout=10) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.sendall(b"GET /big HTTP/1.0\r\nHost: a\r\n\r\n")
        lb.wait_for_log(r"did not read the response to GET /big for 1 s")
        ending, received = _read_to_the_end(client)
    assert ending == "reset"
    assert received < 256 * 1024**2


def _read_to_the_end(client: socket.socket) -> tuple[str, int]:
    """Read until the connection ends; how it ended ("reset" or "closed") and the bytes read."""
    received = 0
    try:
        while chunk := client.recv(1024**2):
            received += len(chunk)
    except ConnectionResetError:
        return "reset", received
    return "closed", received

"""WebSocket (and any allowed Upgrade) through the balancer: real clients, real servers.

The ``websockets`` library is the client and, behind one shared balancer, the
server. The raw-byte cases use a ScriptedBackend behind a second shared
balancer whose ``tunnel_timeout`` is short, so that they see exactly what
goes over the wire. wss goes through a third balancer with a TLS front and an
``https://`` backend.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.backend import RecordedRequest, Responder, ScriptedBackend, fixed, raw
from tests.support.balancer import BalancerProcess
from tests.support.client import fetch
from tests.support.polling import wait_for
from tests.support.procfs import open_fds
from tests.support.rawhttp import RawConnection, ResponseStream
from tests.support.wsbackend import BACKEND_CLOSE, WebSocketBackend

TUNNEL_TIMEOUT = 1.0  # seconds, for the raw balancer
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def upgrade_request(target: str = "/ws", protocol: str = "websocket", extra: str = "") -> bytes:
    """A WebSocket opening handshake as a client sends it."""
    return (
        f"GET {target} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ws_backend() -> Iterator[WebSocketBackend]:
    """A websockets server shared by the module."""
    with WebSocketBackend() as server:
        yield server


@pytest.fixture(scope="module")
def ws_balancer(ws_backend: WebSocketBackend) -> Iterator[BalancerProcess]:
    """Two workers in front of the websockets server."""
    with BalancerProcess([ws_backend.url], workers=2) as lb:
        lb.wait_ready()
        yield lb


@pytest.fixture
def ws(ws_backend: WebSocketBackend, ws_balancer: BalancerProcess) -> WebSocketBackend:
    """The websockets server with nothing left over from earlier tests, behind its balancer."""
    for records in (ws_backend.ended, ws_backend.opened):
        while not records.empty():
            records.get_nowait()
    return ws_backend


@pytest.fixture(scope="module")
def scripted_backend() -> Iterator[ScriptedBackend]:
    """A scripted backend shared by the module's raw-byte cases."""
    with ScriptedBackend("raw") as backend:
        yield backend


@pytest.fixture(scope="module")
def raw_balancer(scripted_backend: ScriptedBackend) -> Iterator[BalancerProcess]:
    """Two workers in front of the scripted backend, closing tunnels idle for a second."""
    env = {"PREFORK_LB_TUNNEL_TIMEOUT": str(TUNNEL_TIMEOUT)}
    with BalancerProcess([scripted_backend.url], workers=2, env=env) as lb:
        lb.wait_ready()
        yield lb


@pytest.fixture
def scripted(scripted_backend: ScriptedBackend, raw_balancer: BalancerProcess) -> ScriptedBackend:
    """The scripted backend, routes and records cleared, behind its balancer."""
    scripted_backend.clear(routes=True)
    return scripted_backend


def ws_url(lb: BalancerProcess, path: str = "/echo") -> str:
    return f"ws://127.0.0.1:{lb.port}{path}"


def drain(records: queue.Queue[str]) -> list[str]:
    """Everything in ``records`` now."""
    found = []
    while not records.empty():
        found.append(records.get_nowait())
    return found


def values(head: ResponseStream, name: str) -> list[str]:
    """Every value of header ``name`` in a response head, lower-cased."""
    return [value.lower() for key, value in head.headers if key.lower() == name.lower()]


def in_flight(lb: BalancerProcess) -> int:
    """Requests (and tunnels) in flight on every backend, over all workers."""
    reply = fetch(lb.port, "/_prefork_lb/backends")
    return sum(entry["in_flight"] for entry in json.loads(reply.body)["backends"])


def client_connections(lb: BalancerProcess) -> int:
    """Client connections open in the balancer (a greenlet each), not counting this query's."""
    reply = fetch(lb.port, "/_prefork_lb/backends")
    return int(json.loads(reply.body)["client_connections"]) - 1


def metric(lb: BalancerProcess, name: str, **labels: str) -> float:
    """One sample of ``/_prefork_lb/metrics`` (0 if it is not there)."""
    reply = fetch(lb.port, "/_prefork_lb/metrics")
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def tunnel_lines(lb: BalancerProcess) -> list[str]:
    return [line for line in lb.log().splitlines() if '" 101 ' in line]


# --- through a real WebSocket client and server ---------------------------------------------------


def test_text_and_binary_messages(ws: WebSocketBackend, ws_balancer: BalancerProcess) -> None:
    """Text and binary messages go through the tunnel and come back unchanged."""
    with connect(ws_url(ws_balancer)) as client:
        client.send("héllo")
        assert client.recv(timeout=5) == "héllo"
        client.send(bytes(range(256)))
        assert client.recv(timeout=5) == bytes(range(256))


def test_sixteen_mebibyte_message(ws: WebSocketBackend, ws_balancer: BalancerProcess) -> None:
    """A 16 MiB binary message crosses the tunnel both ways intact."""
    message = os.urandom(16 * 1024 * 1024)
    with connect(ws_url(ws_balancer), max_size=None, compression=None) as client:
        client.send(message)
        assert client.recv(timeout=30) == message


def test_ping_pong(ws: WebSocketBackend, ws_balancer: BalancerProcess) -> None:
    """A client's ping is answered with a pong through the tunnel."""
    with connect(ws_url(ws_balancer)) as client:
        pong = client.ping(b"are you there")
        assert pong.wait(5)


def test_ten_thousand_echoes_in_order(ws: WebSocketBackend, ws_balancer: BalancerProcess) -> None:
    """Ten thousand messages come back in the order they were sent."""
    with connect(ws_url(ws_balancer)) as client:
        for start in range(0, 10_000, 100):
            for i in range(start, start + 100):
                client.send(str(i))
            assert [client.recv(timeout=5) for _ in range(100)] == [
                str(i) for i in range(start, start + 100)
            ]


def test_client_close_code_and_reason_reach_the_backend(
    ws: WebSocketBackend, ws_balancer: BalancerProcess
) -> None:
    """The client closing first with a code and reason: the backend gets both."""
    with connect(ws_url(ws_balancer, "/wait-client")) as client:
        client.close(4000, "client says bye")
    ended = ws.end_of("/wait-client")
    assert (ended.code, ended.reason) == (4000, "client says bye")


def test_backend_close_code_and_reason_reach_the_client(
    ws: WebSocketBackend, ws_balancer: BalancerProcess
) -> None:
    """The backend closing first with a code and reason: the client gets both."""
    with connect(ws_url(ws_balancer, "/close-first")) as client:
        with pytest.raises(ConnectionClosed) as closed:
            client.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == BACKEND_CLOSE


def test_client_vanishing_is_seen_by_the_backend(
    ws: WebSocketBackend, ws_balancer: BalancerProcess
) -> None:
    """Clients that go without a close frame: the backend sees each end (1006), nothing leaks.

    Afterwards no tunnel is in flight, no greenlet serves a connection, and the
    workers hold as many descriptors as before.
    """
    workers = ws_balancer.worker_pids()
    fetch(ws_balancer.port, "/_prefork_lb/backends")  # warm up: the admin path, once
    fds_before = sum(open_fds(pid) for pid in workers)
    for _ in range(20):
        with RawConnection(ws_balancer.port, timeout=5) as conn:
            conn.send(upgrade_request("/vanish"))
            assert conn.read_head().status == 101
            wait_for(lambda: "/vanish" in drain(ws.opened), "the backend has the tunnel")
            assert in_flight(ws_balancer) == 1
            conn.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        assert ws.end_of("/vanish").code == 1006
    wait_for(lambda: in_flight(ws_balancer) == 0, "the tunnels are no longer in flight")
    wait_for(lambda: client_connections(ws_balancer) == 0, "no greenlet left serving")
    wait_for(
        lambda: sum(open_fds(pid) for pid in workers) <= fds_before,
        "the workers' descriptors back",
    )
    assert ws_balancer.worker_pids() == workers


def test_tunnels_in_metrics_and_the_backends_document(
    ws: WebSocketBackend, ws_balancer: BalancerProcess
) -> None:
    """Open tunnels show per backend (metrics, JSON) while open; opened and bytes are counted."""
    url = ws.url
    opened_before = metric(ws_balancer, "prefork_lb_tunnels_opened_total", backend=url)
    up_before = metric(
        ws_balancer, "prefork_lb_tunnel_bytes_total", backend=url, direction="to_backend"
    )
    down_before = metric(
        ws_balancer, "prefork_lb_tunnel_bytes_total", backend=url, direction="to_client"
    )
    with connect(ws_url(ws_balancer), compression=None) as one, connect(ws_url(ws_balancer)) as two:
        one.send(b"u" * 5000)
        assert len(one.recv(timeout=5)) == 5000
        two.send("hi")
        assert two.recv(timeout=5) == "hi"
        assert metric(ws_balancer, "prefork_lb_tunnels_open", backend=url) == 2
        (entry,) = json.loads(fetch(ws_balancer.port, "/_prefork_lb/backends").body)["backends"]
        assert (entry["tunnels_open"], entry["in_flight"]) == (2, 2)
        page = fetch(ws_balancer.port, "/_prefork_lb/").body.decode()
        assert '<td class="num tunnels">2</td>' in page
    wait_for(lambda: in_flight(ws_balancer) == 0, "the tunnels ended")
    assert metric(ws_balancer, "prefork_lb_tunnels_open", backend=url) == 0
    opened = metric(ws_balancer, "prefork_lb_tunnels_opened_total", backend=url)
    up = metric(ws_balancer, "prefork_lb_tunnel_bytes_total", backend=url, direction="to_backend")
    down = metric(ws_balancer, "prefork_lb_tunnel_bytes_total", backend=url, direction="to_client")
    assert opened - opened_before == 2
    assert up - up_before > 5000
    assert down - down_before > 5000


def test_many_tunnels_at_once_across_both_workers(
    ws: WebSocketBackend, ws_balancer: BalancerProcess
) -> None:
    """A hundred tunnels open at once each echo their own messages; all are in flight meanwhile."""
    count = 100
    before = len(tunnel_lines(ws_balancer))
    opened = asyncio.Event()

    async def one(i: int, ready: list[int]) -> str:
        async with async_connect(ws_url(ws_balancer)) as client:
            ready.append(i)
            if len(ready) == count:
                opened.set()
            await asyncio.wait_for(opened.wait(), 20)
            await client.send(f"tunnel {i}")
            return str(await asyncio.wait_for(client.recv(), 10))

    async def all_of_them() -> tuple[list[str], int]:
        ready: list[int] = []
        tasks = [asyncio.create_task(one(i, ready)) for i in range(count)]
        await asyncio.wait_for(opened.wait(), 20)
        open_now = await asyncio.to_thread(in_flight, ws_balancer)
        return list(await asyncio.gather(*tasks)), open_now

    answers, open_meanwhile = asyncio.run(all_of_them())
    assert answers == [f"tunnel {i}" for i in range(count)]
    assert open_meanwhile == count
    wait_for(lambda: len(tunnel_lines(ws_balancer)) == before + count, "a line per tunnel")
    pids = {re.search(r"pid=<(\d+)>", line)[1] for line in tunnel_lines(ws_balancer)[before:]}  # type: ignore[index]
    assert len(pids) == 2, pids
    wait_for(lambda: in_flight(ws_balancer) == 0, "no tunnel left in flight")


def test_one_access_line_per_tunnel_when_it_ends(
    ws: WebSocketBackend, ws_balancer: BalancerProcess
) -> None:
    """A tunnel is logged once, when it ends: status 101 and its bytes each way."""
    before = len(tunnel_lines(ws_balancer))
    with connect(ws_url(ws_balancer, "/echo?logged"), compression=None) as client:
        client.send(b"x" * 1000)
        client.recv(timeout=5)
        time.sleep(0.2)
        assert len(tunnel_lines(ws_balancer)) == before
    wait_for(lambda: len(tunnel_lines(ws_balancer)) == before + 1, "the tunnel's line")
    line = tunnel_lines(ws_balancer)[-1]
    assert '"GET /echo?logged HTTP/1.1" 101 ' in line
    up, down = (int(n) for n in re.search(r"tunnel=(\d+)/(\d+)", line).groups())  # type: ignore[union-attr]
    assert up > 1000
    assert down > 1000


# --- graceful stops: HUP and TERM ----------------------------------------------------------------

GRACEFUL = 3.0  # seconds of gunicorn's graceful_timeout for these balancers


def echoes(client: object, text: str) -> bool:
    """Whether ``text`` sent on the (sync websockets) client comes back."""
    client.send(text)  # type: ignore[attr-defined]
    return bool(client.recv(timeout=5) == text)  # type: ignore[attr-defined]


def closed_after(client: object, limit: float) -> float:
    """Seconds until the tunnel under ``client`` is dropped (no close frame), within ``limit``."""
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        client.recv(timeout=limit)  # type: ignore[attr-defined]
    assert closed.value.rcvd is None  # dropped, as a worker's exit drops it
    return time.monotonic() - started


def test_hup_keeps_old_tunnels_until_graceful_timeout(ws: WebSocketBackend) -> None:
    """On HUP the old worker's tunnel works on until graceful_timeout, then is dropped and logged.

    New tunnels reach the new worker meanwhile, and the tunnel counts survive the reload.
    """
    with BalancerProcess([ws.url], workers=1, args=[f"--graceful-timeout={GRACEFUL:g}"]) as lb:
        (old,) = lb.worker_pids()
        with connect(ws_url(lb, "/echo?old")) as client:
            assert echoes(client, "before")
            hup = time.monotonic()
            os.kill(lb.pid, signal.SIGHUP)
            wait_for(lambda: any(p != old for p in lb.worker_pids()), "a new worker")
            # gunicorn's worker sees the stop (and closes its listener) within a second.
            time.sleep(1.2)
            assert echoes(client, "during the reload")  # still the old worker's tunnel
            with connect(ws_url(lb, "/echo?new")) as fresh:
                assert echoes(fresh, "to the new worker")
                closed_after(client, GRACEFUL + 3)
                assert GRACEFUL * 0.5 < time.monotonic() - hup < GRACEFUL + 2
                assert echoes(fresh, "still open")
        line = lb.wait_for_log(r'"GET /echo\?old HTTP/1\.1" 101 .*').group(0)
        assert "error=tunnel:shutdown" in line
        assert re.search(r"tunnel=\d+/\d+", line)
        wait_for(lambda: old not in lb.worker_pids(), "the old worker gone")
        wait_for(
            lambda: metric(lb, "prefork_lb_tunnels_opened_total", backend=ws.url) == 2,
            "both tunnels counted after the reload",
        )
        assert metric(lb, "prefork_lb_tunnels_open", backend=ws.url) == 0


def test_term_keeps_tunnels_until_graceful_timeout(ws: WebSocketBackend) -> None:
    """On TERM the tunnel works on until graceful_timeout, then is dropped and logged; exit 0."""
    lb = BalancerProcess([ws.url], workers=1, args=[f"--graceful-timeout={GRACEFUL:g}"])
    with lb:
        with connect(ws_url(lb, "/echo?term")) as client:
            assert echoes(client, "before")
            term = time.monotonic()
            lb.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert echoes(client, "while stopping")
            closed_after(client, GRACEFUL + 3)
            assert GRACEFUL * 0.5 < time.monotonic() - term < GRACEFUL + 1
        assert lb.process.wait(timeout=10) == 0
    line = lb.wait_for_log(r'"GET /echo\?term HTTP/1\.1" 101 .*').group(0)
    assert "error=tunnel:shutdown" in line


# --- raw bytes against a scripted backend -----------------------------------------------------


def tunnel_echo(before_switch: list[bytes]) -> object:
    """A handler that switches, then echoes every byte; it notes what came before its 101."""

    def handle(request: RecordedRequest, responder: Responder) -> None:
        time.sleep(0.3)  # time for anything sent early to arrive
        try:
            before_switch.append(responder.sock.recv(65536, socket.MSG_DONTWAIT))
        except BlockingIOError:
            before_switch.append(b"")
        responder.send(SWITCH)
        while data := responder.sock.recv(65536):
            responder.send(data)
        responder.send(b"[backend saw the end]")
        responder.close()

    return handle


def switch(scripted: ScriptedBackend) -> list[bytes]:
    before: list[bytes] = []
    scripted.route("/", tunnel_echo(before), read_body=False)  # type: ignore[arg-type]
    return before


def read_until(conn: RawConnection, expected: bytes, timeout: float = 5.0) -> bytes:
    """Tunnel bytes from the connection (what its reader holds first) until ``expected`` or EOF."""
    conn.sock.settimeout(timeout)
    got = b""
    while expected not in got:
        data = conn.read1()
        if not data:
            break
        got += data
    return got


def test_upgrade_headers_reach_the_backend(
    scripted: ScriptedBackend, raw_balancer: BalancerProcess
) -> None:
    """The backend gets Upgrade and Connection: upgrade, the WebSocket fields and X-Forwarded-*."""
    switch(scripted)
    with RawConnection(raw_balancer.port) as conn:
        conn.send(upgrade_request())
        head = conn.read_head()
        assert head.status == 101
        assert values(head, "Upgrade") == ["websocket"]
        assert values(head, "Connection") == ["upgrade"]
        assert values(head, "Sec-WebSocket-Accept") == ["s3pplmbitxaq9kygzzhzrbk+xoo="]
    (seen,) = scripted.wait_for_requests(1)
    assert seen.header("Upgrade") == ["websocket"]
    assert seen.header("Connection") == ["upgrade"]
    assert seen.header("Sec-WebSocket-Key") == [KEY]
    assert seen.header("X-Forwarded-For") == ["127.0.0.1"]


def test_bytes_sent_before_the_switch_arrive_after_it(
    scripted: ScriptedBackend, raw_balancer: BalancerProcess
) -> None:
    """Bytes the client sends right behind the upgrade request reach the backend after its 101."""
    before = switch(scripted)
    with RawConnection(raw_balancer.port) as conn:
        conn.send(upgrade_request() + b"early bytes")
        assert conn.read_head().status == 101
        assert b"early bytes" in read_until(conn, b"early bytes")
    assert before == [b""]


def test_half_close_is_passed_on(scripted: ScriptedBackend, raw_balancer: BalancerProcess) -> None:
    """The client's half-close reaches the backend, whose last bytes still reach the client."""
    switch(scripted)
    with RawConnection(raw_balancer.port) as conn:
        conn.send(upgrade_request())
        assert conn.read_head().status == 101
        conn.send(b"ping")
        assert read_until(conn, b"ping").endswith(b"ping")
        conn.sock.shutdown(socket.SHUT_WR)
        rest = read_until(conn, b"[backend saw the end]")
        assert rest.endswith(b"[backend saw the end]")
        assert conn.read1(1) == b""


@pytest.mark.parametrize("status", [200, 400, 426])
def test_refused_upgrade_keeps_the_connection_http(
    scripted: ScriptedBackend, raw_balancer: BalancerProcess, status: int
) -> None:
    """A refused upgrade is an ordinary answer; the client's next bytes are a new request."""
    scripted.route("/ws", fixed(status, "Nope", [("Upgrade", "websocket")], b"refused"))
    with RawConnection(raw_balancer.port) as conn:
        conn.send(upgrade_request())
        answer = conn.read_response()
        assert (answer.status, answer.body) == (status, b"refused")
        assert answer.header("Upgrade") == []
        conn.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        assert conn.read_response().status == 200
    seen = scripted.wait_for_requests(2)
    assert [r.target for r in seen] == ["/ws", "/after"]


@pytest.mark.parametrize(
    ("version", "body"),
    [pytest.param("1.1", b"hello", id="with-a-body"), pytest.param("1.0", b"", id="http-1.0")],
)
def test_an_upgrade_with_a_body_or_over_http10_is_a_plain_request(
    scripted: ScriptedBackend, raw_balancer: BalancerProcess, version: str, body: bytes
) -> None:
    """Such an upgrade request is forwarded as a plain one, Upgrade stripped, body intact."""
    switch_anyway = switch(scripted)
    scripted.route("/ws", fixed(200, "OK", [], b"plain"))
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    request = upgrade_request(extra=length).replace(b"HTTP/1.1", f"HTTP/{version}".encode(), 1)
    with RawConnection(raw_balancer.port) as conn:
        conn.send(request + body)
        answer = conn.read_response()
        assert (answer.status, answer.body) == (200, b"plain")
    (seen,) = scripted.wait_for_requests(1)
    assert seen.header("Upgrade") == seen.header("Connection") == []
    assert seen.body == body
    assert switch_anyway == []


def test_a_switch_to_another_protocol_is_a_bad_gateway(
    scripted: ScriptedBackend, raw_balancer: BalancerProcess
) -> None:
    """A 101 naming another protocol than asked is answered 502, and its connection dropped."""
    dropped = threading.Event()

    def wrong_switch(request: RecordedRequest, responder: Responder) -> None:
        responder.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
        )
        responder.wait_until_stopped_or_peer_closed()
        dropped.set()
        responder.close()

    scripted.route("/ws", wrong_switch)
    with RawConnection(raw_balancer.port) as conn:
        conn.send(upgrade_request())
        assert conn.read_response().status == 502
    assert dropped.wait(5)


def test_a_switch_nobody_asked_for_is_a_bad_gateway(
    scripted: ScriptedBackend, raw_balancer: BalancerProcess
) -> None:
    """A 101 to a request that did not ask to upgrade is answered 502."""
    scripted.route("/plain", raw(SWITCH))
    with RawConnection(raw_balancer.port) as conn:
        assert conn.request("GET", "/plain").status == 502


def test_h2c_is_stripped_and_never_tunnelled(
    scripted: ScriptedBackend, raw_balancer: BalancerProcess
) -> None:
    """Upgrade: h2c is not in upgrade_protocols: the backend gets a plain request without it."""
    with RawConnection(raw_balancer.port) as conn:
        conn.send(
            b"GET /h2 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
        )
        assert conn.read_response().status == 200
    (seen,) = scripted.wait_for_requests(1)
    assert seen.header("Upgrade") == seen.header("Connection") == []
    assert seen.header("HTTP2-Settings") == []


def test_idle_tunnel_is_closed_after_tunnel_timeout(
    scripted: ScriptedBackend, raw_balancer: BalancerProcess
) -> None:
    """A tunnel busy within tunnel_timeout stays open; idle for longer, it is closed and logged."""
    switch(scripted)
    with RawConnection(raw_balancer.port, timeout=10) as conn:
        conn.send(upgrade_request("/idle"))
        assert conn.read_head().status == 101
        for i in range(4):
            time.sleep(TUNNEL_TIMEOUT / 2)
            # The tunnel's last byte is this one's echo, so not before this instant: the close
            # cannot come sooner than TUNNEL_TIMEOUT after it, however late this thread runs.
            last_sent = time.monotonic()
            conn.send(str(i).encode())
            assert read_until(conn, str(i).encode()) == str(i).encode()
        conn.sock.settimeout(10)
        assert conn.read1(100) == b""
        assert TUNNEL_TIMEOUT <= time.monotonic() - last_sent < TUNNEL_TIMEOUT + 2
    raw_balancer.wait_for_log(r'"GET /idle HTTP/1\.1" 101 .* error=tunnel:idle .*tunnel=4/4')


# --- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path, Path, Path]:
    """A CA, its PEM, and a certificate and key for 127.0.0.1 it issued."""
    directory = tmp_path_factory.mktemp("wss")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
    )
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return ca, ca_file, cert_file, key_file


def test_wss_through_the_tls_front_to_an_https_backend(
    authority: tuple[trustme.CA, Path, Path, Path],
) -> None:
    """wss:// to the balancer's TLS front reaches a TLS backend, verified, and echoes both ways."""
    ca, ca_file, cert_file, key_file = authority
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with (
        WebSocketBackend(tls=server_context) as backend,
        BalancerProcess(
            [backend.url],
            workers=1,
            env={"PREFORK_LB_BACKEND_CA_BUNDLE": str(ca_file)},
            args=["--certfile", str(cert_file), "--keyfile", str(key_file)],
        ) as lb,
    ):
        lb.wait_ready()
        url = f"wss://127.0.0.1:{lb.port}/echo"
        with connect(url, ssl=client_context, max_size=None) as client:
            client.send("over TLS twice")
            assert client.recv(timeout=5) == "over TLS twice"
            client.send(os.urandom(1024 * 1024))
            assert len(client.recv(timeout=10)) == 1024 * 1024
        with connect(f"wss://127.0.0.1:{lb.port}/wait", ssl=client_context) as client:
            client.close(4002, "done")
        ended = backend.end_of("/wait")
        assert (ended.code, ended.reason) == (4002, "done")

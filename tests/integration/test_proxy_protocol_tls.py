"""TLS passthrough: the PROXY header comes before the TLS hello, and the balancer's own TLS follows.

One balancer with ``--certfile``/``--keyfile`` and ``--proxy-protocol auto``
(PROXY headers accepted from 127.0.0.1 only, ``client_timeout`` 2 s); HAProxy
fronts in TCP mode pass TLS through with ``send-proxy`` (v1) or
``send-proxy-v2``, and check the instance over TLS (``check-ssl``). Clients
bind loopback aliases (127.0.0.2, 127.0.0.3) so that the client's address
and HAProxy's (127.0.0.1) differ.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import ssl
import struct
import time
from collections.abc import Iterator

import pytest

from tests.support.authority import Authority, make_authority
from tests.support.backend import ScriptedBackend
from tests.support.balancer import BalancerProcess
from tests.support.haproxy import HAProxy
from tests.support.polling import wait_for

CLIENT = "127.0.0.2"
OTHER_CLIENT = "127.0.0.3"
CLIENT_TIMEOUT = 2.0
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"  # version 2, LOCAL, AF_UNSPEC, no addresses


def v1_proxy(client: str) -> bytes:
    """A PROXY v1 line for a TCP4 connection from ``client`` to 127.0.0.1:443."""
    return f"PROXY TCP4 {client} 127.0.0.1 40000 443\r\n".encode()


def v2_proxy(client: str, tlvs: bytes = b"") -> bytes:
    """A PROXY v2 header for a TCP connection from ``client`` (IPv4 or IPv6), TLVs after it."""
    family, proxy = (socket.AF_INET6, "::1") if ":" in client else (socket.AF_INET, "127.0.0.1")
    block = socket.inet_pton(family, client) + socket.inet_pton(family, proxy)
    block += struct.pack(">HH", 40000, 443) + tlvs
    family_byte = b"\x21" if family == socket.AF_INET6 else b"\x11"
    return V2_SIGNATURE + b"\x21" + family_byte + struct.pack(">H", len(block)) + block


class ProxiedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection that writes ``header`` in clear before its TLS hello, as a front does.

    A list of headers is the one header in pieces, each sent on its own a little apart.
    """

    def __init__(
        self,
        port: int,
        context: ssl.SSLContext,
        header: bytes | list[bytes] = b"",
        source: str | None = None,
    ) -> None:
        super().__init__(
            "127.0.0.1",
            port,
            context=context,
            timeout=10,
            source_address=(source, 0) if source else None,
        )
        self._header = header
        self._tls = context

    def connect(self) -> None:
        """Connect, send the header, then shake hands."""
        http.client.HTTPConnection.connect(self)  # sets TCP_NODELAY: each piece a segment
        pieces = self._header if isinstance(self._header, list) else [self._header]
        for number, piece in enumerate(pieces):
            if number:
                time.sleep(0.05)
            self.sock.sendall(piece)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self.host)

    def get(self, target: str) -> tuple[int, bytes]:
        """One GET on this (kept-alive) connection: status and body."""
        self.request("GET", target)
        response = self.getresponse()
        return response.status, response.read()


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """The balancer's certificate and the CA the clients trust."""
    return make_authority(tmp_path_factory.mktemp("proxy-tls") / "ca")


@pytest.fixture(scope="module")
def backend() -> Iterator[ScriptedBackend]:
    """One backend answering with its name."""
    with ScriptedBackend("backend") as started:
        yield started


@pytest.fixture(scope="module")
def balancer(backend: ScriptedBackend, authority: Authority) -> Iterator[BalancerProcess]:
    """TLS on the instance, PROXY v1 or v2 before it from 127.0.0.1; admin for 127.0.0.2 only."""
    args = [
        f"--certfile={authority.cert_file}",
        f"--keyfile={authority.key_file}",
        "--proxy-protocol=auto",
        "--proxy-allow-from=127.0.0.1",
    ]
    env = {"PREFORK_LB_CLIENT_TIMEOUT": str(CLIENT_TIMEOUT), "PREFORK_LB_ADMIN_ALLOW": CLIENT}
    with BalancerProcess([backend.url], workers=2, env=env, args=args) as lb:
        yield lb


@pytest.fixture(scope="module", params=["v1", "v2"])
def front(request: pytest.FixtureRequest, balancer: BalancerProcess) -> Iterator[HAProxy]:
    """HAProxy passing TLS through with a PROXY header, checking the instance over TLS."""
    with HAProxy(
        [balancer.port], proxy=request.param, server_options="check-ssl verify none"
    ) as haproxy:
        haproxy.wait_for_states("UP")
        yield haproxy


@pytest.fixture
def received(backend: ScriptedBackend) -> ScriptedBackend:
    """The backend with its records cleared."""
    backend.clear(routes=True)
    return backend


def forwarded_for(backend: ScriptedBackend, target: str) -> list[list[str]]:
    """X-Forwarded-For of each request for ``target`` the backend received."""
    return [r.header("X-Forwarded-For") for r in backend.requests if r.target == target]


def test_https_through_the_front_reaches_the_backend_as_the_real_client(
    front: HAProxy, authority: Authority, received: ScriptedBackend
) -> None:
    """Through HAProxy (TLS passed through, PROXY before it), X-Forwarded-For names the client."""
    conn = ProxiedHTTPS(front.port, authority.client_context(), source=CLIENT)
    assert conn.get("/through") == (200, b"backend\n")
    conn.close()
    assert forwarded_for(received, "/through") == [[CLIENT]]
    assert received.requests[0].header("X-Forwarded-Proto") == ["https"]


def test_every_request_of_a_kept_alive_connection_sees_the_real_client(
    front: HAProxy, authority: Authority, received: ScriptedBackend, balancer: BalancerProcess
) -> None:
    """Three requests on one TLS connection through HAProxy: each one comes from the client."""
    conn = ProxiedHTTPS(front.port, authority.client_context(), source=OTHER_CLIENT)
    statuses, sockets = [], []
    for _ in range(3):
        statuses.append(conn.get(f"/kept-{front.port}")[0])
        sockets.append(conn.sock)
    conn.close()
    assert statuses == [200, 200, 200]
    assert all(sock is sockets[0] for sock in sockets)  # one connection, kept alive
    assert forwarded_for(received, f"/kept-{front.port}") == [[OTHER_CLIENT]] * 3
    balancer.wait_for_log(rf'(?m)^{OTHER_CLIENT} "GET /kept-{front.port} HTTP/1.1" 200 ')


def test_admin_allow_checks_the_client_the_header_names(
    front: HAProxy, authority: Authority, received: ScriptedBackend
) -> None:
    """Over TLS through HAProxy, 127.0.0.2 (in admin_allow) gets the admin endpoint; .3 does not."""
    admin = ProxiedHTTPS(front.port, authority.client_context(), source=CLIENT)
    status, body = admin.get("/_prefork_lb/backends")
    admin.close()
    assert status == 200
    assert b'"backends"' in body
    other = ProxiedHTTPS(front.port, authority.client_context(), source=OTHER_CLIENT)
    assert other.get("/_prefork_lb/backends") == (200, b"backend\n")  # forwarded instead
    other.close()
    assert forwarded_for(received, "/_prefork_lb/backends") == [[OTHER_CLIENT]]


def test_haproxy_tls_checks_mark_the_instance_up_as_from_haproxy(
    front: HAProxy, balancer: BalancerProcess
) -> None:
    """HAProxy's checks (check-ssl) pass; their access lines name HAProxy, never "None"."""
    assert front.server_states() == {"instance-0": "UP"}
    balancer.wait_for_log(r'(?m)^127\.0\.0\.1 "GET /_prefork_lb/ready HTTP/1.0" 200 ')
    assert "\nNone " not in balancer.log()


@pytest.mark.parametrize(
    ("header", "peer"),
    [
        pytest.param(V2_LOCAL, "127.0.0.1", id="v2-local"),
        pytest.param(b"PROXY UNKNOWN\r\n", "127.0.0.1", id="v1-unknown"),
        pytest.param(b"", OTHER_CLIENT, id="no-header"),
    ],
)
def test_a_connection_without_a_client_in_its_header_is_served_as_from_its_peer(
    balancer: BalancerProcess,
    authority: Authority,
    received: ScriptedBackend,
    header: bytes,
    peer: str,
) -> None:
    """PROXY LOCAL, PROXY UNKNOWN or no header at all before TLS: the TCP peer is the client."""
    conn = ProxiedHTTPS(balancer.port, authority.client_context(), header, source=peer)
    assert conn.get("/peer") == (200, b"backend\n")
    assert conn.get("/peer") == (200, b"backend\n")
    conn.close()
    assert forwarded_for(received, "/peer") == [[peer]] * 2


@pytest.mark.parametrize(
    ("header", "client"),
    [
        pytest.param(v1_proxy("10.9.8.7"), "10.9.8.7", id="v1"),
        pytest.param(v2_proxy("10.9.8.7"), "10.9.8.7", id="v2"),
        pytest.param(v2_proxy("2001:db8::7"), "2001:db8::7", id="v2-tcp6"),
        # AWS's VPC endpoint TLV (0xEA), as an NLB sends it.
        pytest.param(v2_proxy("10.9.8.7", b"\xea\x00\x06\x01vpce"), "10.9.8.7", id="v2-tlv"),
        pytest.param(
            [b"PROXY TCP4 10.9.", b"8.7 127.0.0.1 4", b"0000 443\r\n"], "10.9.8.7", id="v1-pieces"
        ),
        pytest.param(
            [v2_proxy("10.9.8.7")[:10], v2_proxy("10.9.8.7")[10:20], v2_proxy("10.9.8.7")[20:]],
            "10.9.8.7",
            id="v2-pieces",
        ),
    ],
)
def test_a_header_from_an_allowed_peer_names_the_client(
    balancer: BalancerProcess,
    authority: Authority,
    received: ScriptedBackend,
    header: bytes | list[bytes],
    client: str,
) -> None:
    """A header straight from 127.0.0.1 (in proxy_allow_ips), whole or in pieces: its client."""
    conn = ProxiedHTTPS(balancer.port, authority.client_context(), header)
    assert conn.get("/named") == (200, b"backend\n")
    conn.close()
    assert forwarded_for(received, "/named") == [[client]]


def _refused(port: int, data: bytes, source: str = "127.0.0.1") -> bytes:
    """Send ``data`` from ``source``; what the balancer sends back before it closes (or resets)."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        s.sendall(data)
        with contextlib.suppress(ConnectionResetError):  # closed with the request unread
            while chunk := s.recv(4096):
                chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "header",
    [pytest.param(v1_proxy("10.9.8.7"), id="v1"), pytest.param(v2_proxy("10.9.8.7"), id="v2")],
)
def test_a_header_from_outside_proxy_allow_ips_closes_the_connection(
    balancer: BalancerProcess, authority: Authority, received: ScriptedBackend, header: bytes
) -> None:
    """A PROXY header from 127.0.0.3 (not in proxy_allow_ips): closed before TLS, one log line."""
    conn = ProxiedHTTPS(balancer.port, authority.client_context(), header, source=OTHER_CLIENT)
    with pytest.raises((ssl.SSLError, OSError)):
        conn.get("/spoofed")
    conn.close()
    assert forwarded_for(received, "/spoofed") == []
    refusal = "a PROXY header from a peer not in proxy_allow_ips"
    balancer.wait_for_log(rf"Invalid request from ip={OTHER_CLIENT}: {refusal}")
    assert "Traceback" not in balancer.log()


@pytest.mark.parametrize(
    ("garbage", "logged"),
    [
        pytest.param(
            b"PROXY TCP4 10.9.8.7 nowhere 1 2\r\n", "'nowhere' is not a TCP4", id="bad-v1"
        ),
        pytest.param(V2_SIGNATURE + b"\x21\x11\x00\x04abcd", "4 address bytes", id="bad-v2"),
        pytest.param(b"PROXY\x16\x03\x01", r"not the start of a PROXY line", id="cut-v1"),
        # Not a header: left on the socket for TLS, whose handshake refuses it.
        pytest.param(b"\x00\x01garbage\r\n\r\n", r"\[SSL: ", id="no-header-no-tls"),
    ],
)
def test_garbage_instead_of_a_header_closes_the_connection(
    balancer: BalancerProcess, received: ScriptedBackend, garbage: bytes, logged: str
) -> None:
    """An invalid header, or bytes that are neither a header nor TLS: closed, nothing forwarded."""
    # Counted: the balancer is shared, and the other cases log lines of the same shape.
    line = re.compile(r"Invalid request from ip=127\.0\.0\.1: .*" + logged)
    before = len(line.findall(balancer.log()))
    answer = _refused(balancer.port, garbage + b"GET /garbage HTTP/1.1\r\n\r\n")
    assert b"HTTP/" not in answer
    assert forwarded_for(received, "/garbage") == []
    wait_for(
        lambda: len(line.findall(balancer.log())) > before,
        f"a new log line matching {line.pattern!r}",
        context=balancer.log,
    )
    assert "Traceback" not in balancer.log()


def test_half_a_header_is_cut_off_at_the_client_deadline(balancer: BalancerProcess) -> None:
    """Half a PROXY line and then silence: the connection is closed after client_timeout."""
    # Before the connect: the worker's deadline starts after it, however late this thread runs.
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", balancer.port), timeout=10) as sock:
        sock.sendall(b"PROXY TCP4 10.9.8.7 ")
        assert sock.recv(4096) == b""
        waited = time.monotonic() - started
    assert waited >= CLIENT_TIMEOUT  # closed by the deadline, not at once
    balancer.wait_for_log(r"no complete PROXY header within 2 s \(got 20 bytes of it\)")


def test_a_proxy_header_inside_tls_is_refused(
    balancer: BalancerProcess, authority: Authority, received: ScriptedBackend
) -> None:
    """A header sent inside TLS comes from the client itself, never from the front: 400."""
    conn = ProxiedHTTPS(balancer.port, authority.client_context(), v2_proxy(CLIENT))
    conn.connect()
    conn.sock.sendall(v1_proxy("10.9.8.7") + b"GET /inside HTTP/1.1\r\nHost: a\r\n\r\n")
    response = http.client.HTTPResponse(conn.sock)
    response.begin()
    assert response.status == 400
    conn.close()
    assert forwarded_for(received, "/inside") == []

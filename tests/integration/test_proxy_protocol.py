"""Behind HAProxy in TCP mode: the PROXY protocol (v1 and v2) gives the balancer the real client.

One balancer (``--proxy-protocol auto``, PROXY headers accepted from
127.0.0.1 only) hashes on the client's address and opens its admin endpoint
to 127.0.0.2 only; two HAProxy fronts, one sending PROXY v1 and one v2,
check it on the ready path. Clients bind loopback aliases (127.0.0.2,
127.0.0.3, ...) as their source, so HAProxy's own address (127.0.0.1) and
the client's differ: each test shows the balancer uses the client's.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Iterator

import pytest

from tests.support.backend import ScriptedBackend
from tests.support.balancer import BalancerProcess
from tests.support.client import fetch
from tests.support.haproxy import HAProxy
from tests.support.rawhttp import RawConnection

ADMIN_CLIENT = "127.0.0.2"
OTHER_CLIENT = "127.0.0.3"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"  # version 2, LOCAL, AF_UNSPEC, no addresses
# Version 2, PROXY, AF_UNSPEC over STREAM, no addresses (gunicorn 27 answers 500 to
# UNSPEC over UNSPEC, the form the spec gives: it insists on STREAM first).
V2_UNSPEC = V2_SIGNATURE + b"\x21\x01\x00\x00"


def v2_proxy(client: str, client_port: int = 40000) -> bytes:
    """A PROXY v2 header for a TCP4 connection from ``client`` to 127.0.0.1:80."""
    addresses = socket.inet_aton(client) + socket.inet_aton("127.0.0.1")
    return V2_SIGNATURE + b"\x21\x11\x00\x0c" + addresses + struct.pack(">HH", client_port, 80)


@pytest.fixture(scope="module")
def backends() -> Iterator[list[ScriptedBackend]]:
    """Two backends, each answering with its own name."""
    started = [ScriptedBackend(f"backend-{i}").start() for i in (1, 2)]
    yield started
    for backend in started:
        backend.stop()


@pytest.fixture(scope="module")
def balancer(backends: list[ScriptedBackend]) -> Iterator[BalancerProcess]:
    """PROXY v1 or v2 from 127.0.0.1; hash on the client's address; admin for 127.0.0.2 only."""
    env = {
        "PREFORK_LB_POLICY": "hash",
        "PREFORK_LB_HASH_KEY": "ip",
        "PREFORK_LB_HASH_BALANCE_FACTOR": "0",
        "PREFORK_LB_ADMIN_ALLOW": ADMIN_CLIENT,
    }
    args = ["--proxy-protocol=auto", "--proxy-allow-from=127.0.0.1"]
    with BalancerProcess([b.url for b in backends], workers=2, env=env, args=args) as lb:
        yield lb


@pytest.fixture(scope="module", params=["v1", "v2"])
def front(request: pytest.FixtureRequest, balancer: BalancerProcess) -> Iterator[HAProxy]:
    """HAProxy in TCP mode sending PROXY v1 or v2, its checks on the ready path seeing UP."""
    with HAProxy([balancer.port], proxy=request.param) as haproxy:
        haproxy.wait_for_states("UP")
        yield haproxy


@pytest.fixture
def backend_records(backends: list[ScriptedBackend]) -> list[ScriptedBackend]:
    """The backends with their records cleared."""
    for backend in backends:
        backend.clear(routes=True)
    return backends


def _received(backends: list[ScriptedBackend], target: str) -> list[list[str]]:
    """X-Forwarded-For of each request for ``target`` the backends received."""
    return [r.header("X-Forwarded-For") for b in backends for r in b.requests if r.target == target]


def test_the_backend_sees_the_real_client_in_x_forwarded_for(
    front: HAProxy, backend_records: list[ScriptedBackend]
) -> None:
    """Through HAProxy, X-Forwarded-For names the client (127.0.0.3), not HAProxy (127.0.0.1)."""
    assert fetch(front.port, "/xff", source=OTHER_CLIENT).status == 200
    assert _received(backend_records, "/xff") == [[OTHER_CLIENT]]


def test_the_access_log_shows_the_real_client(front: HAProxy, balancer: BalancerProcess) -> None:
    """Through HAProxy, the access line starts with the client's address."""
    target = f"/logged-{front.port}"
    assert fetch(front.port, target, source=OTHER_CLIENT).status == 200
    balancer.wait_for_log(rf'(?m)^{OTHER_CLIENT} "GET {target} HTTP/1.1" 200 ')


def test_hash_key_ip_hashes_the_real_client(front: HAProxy, balancer: BalancerProcess) -> None:
    """Through HAProxy, each client goes to the backend its own address hashes to when direct."""
    direct = {
        source: fetch(balancer.port, "/hash", source=source).body
        for source in (f"127.0.0.{i}" for i in range(2, 12))
    }
    # Two clients the hash sends to different backends: one of them is not where
    # HAProxy's own address (127.0.0.1) would go.
    first = next(iter(direct))
    second = next(s for s, name in direct.items() if name != direct[first])
    for source in (first, second) * 3:
        assert fetch(front.port, "/hash", source=source).body == direct[source], source


def test_admin_allow_checks_the_real_client(
    front: HAProxy, backend_records: list[ScriptedBackend]
) -> None:
    """Through HAProxy, 127.0.0.2 (in admin_allow) gets the admin endpoint; 127.0.0.3 does not."""
    admin = fetch(front.port, "/_prefork_lb/backends", source=ADMIN_CLIENT)
    assert (admin.status, admin.header("Content-Type")) == (200, ["application/json"])
    assert b'"backends"' in admin.body
    refused = fetch(front.port, "/_prefork_lb/backends", source=OTHER_CLIENT)
    assert refused.body in (b"backend-1\n", b"backend-2\n")
    assert _received(backend_records, "/_prefork_lb/backends") == [[OTHER_CLIENT]]


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"PROXY TCP4 10.9.8.7 127.0.0.1 40000 80\r\n", id="v1"),
        pytest.param(v2_proxy("10.9.8.7"), id="v2"),
    ],
)
def test_a_proxy_header_from_outside_proxy_allow_ips_is_refused(
    balancer: BalancerProcess, backend_records: list[ScriptedBackend], header: bytes
) -> None:
    """A PROXY header from a peer not in proxy_allow_ips gets gunicorn's 403; nothing goes on."""
    with socket.create_connection(
        ("127.0.0.1", balancer.port), timeout=5, source_address=(OTHER_CLIENT, 0)
    ) as sock:
        sock.sendall(header + b"GET /spoofed HTTP/1.1\r\nHost: a\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer
    assert _received(backend_records, "/spoofed") == []


@pytest.mark.parametrize(
    "header", [pytest.param(V2_LOCAL, id="v2-local"), pytest.param(V2_UNSPEC, id="v2-unspec")]
)
def test_a_proxy_header_without_a_client_uses_the_tcp_peer(
    balancer: BalancerProcess, backend_records: list[ScriptedBackend], header: bytes
) -> None:
    """PROXY v2 LOCAL (or UNSPEC) names no client: the TCP peer is used, not a 500."""
    conn = RawConnection(balancer.port)
    conn.send(header + b"GET /local HTTP/1.1\r\nHost: a\r\n\r\n")
    assert conn.read_response().status == 200
    conn.send(b"GET /local HTTP/1.1\r\nHost: a\r\n\r\n")  # the connection's next request
    assert conn.read_response().status == 200
    conn.close()
    assert _received(backend_records, "/local") == [["127.0.0.1"], ["127.0.0.1"]]
    balancer.wait_for_log(r'(?m)^127\.0\.0\.1 "GET /local HTTP/1.1" 200 ')


def test_a_v1_proxy_unknown_line_is_refused_by_gunicorn(
    balancer: BalancerProcess, backend_records: list[ScriptedBackend]
) -> None:
    """Gunicorn 27 answers 400 to ``PROXY UNKNOWN`` (v1's no-address form): nothing goes on."""
    conn = RawConnection(balancer.port)
    conn.send(b"PROXY UNKNOWN\r\nGET /unknown HTTP/1.1\r\nHost: a\r\n\r\n")
    assert conn.read_response().status == 400
    conn.close()
    assert _received(backend_records, "/unknown") == []


@pytest.mark.parametrize("check_path", ["/", "/_prefork_lb/ready"])
def test_haproxy_checks_over_send_proxy_v2_mark_the_instance_up(
    balancer: BalancerProcess, check_path: str
) -> None:
    """HAProxy's checks on a send-proxy-v2 line (PROXY LOCAL) pass, forwarded or answered here."""
    with HAProxy([balancer.port], proxy="v2", check_path=check_path) as haproxy:
        assert haproxy.wait_for_states("UP") == {"instance-0": "UP"}
        assert fetch(haproxy.port, "/through", source=OTHER_CLIENT).status == 200
    balancer.wait_for_log(rf'(?m)^127\.0\.0\.1 "GET {check_path} HTTP/1.0" 200 ')
    assert re.search(r"(?m)^None ", balancer.log()) is None  # the check's client was lost

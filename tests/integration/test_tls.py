"""TLS: terminated on the front by gunicorn, and verified towards ``https://`` backends."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.authority import Authority, make_authority
from tests.support.backend import ScriptedBackend, big_body, echo
from tests.support.balancer import ROOT, BalancerProcess, clean_environ, gunicorn_command
from tests.support.client import fetch
from tests.support.polling import wait_for

PROBE_AGENT = "prefork_lb-health-check"


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """The CA the balancer is told to trust, and a certificate it issued."""
    return make_authority(tmp_path_factory.mktemp("tls") / "trusted")


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """A CA nobody configured, and a certificate it issued."""
    return make_authority(tmp_path_factory.mktemp("tls") / "stranger")


def _https_backend(name: str, authority: Authority) -> Iterator[ScriptedBackend]:
    backend = ScriptedBackend(name, tls=authority.server_context())
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture
def good_backend(trusted: Authority) -> Iterator[ScriptedBackend]:
    """An https backend whose certificate the trusted CA issued."""
    yield from _https_backend("good", trusted)


@pytest.fixture
def bad_backend(stranger: Authority) -> Iterator[ScriptedBackend]:
    """An https backend whose certificate an unknown CA issued."""
    yield from _https_backend("bad", stranger)


@pytest.fixture(scope="module")
def plain_backend() -> Iterator[ScriptedBackend]:
    """A plain-HTTP backend behind the module's TLS-fronted balancer."""
    with ScriptedBackend("plain") as backend:
        yield backend


@pytest.fixture(scope="module")
def tls_front(plain_backend: ScriptedBackend, trusted: Authority) -> Iterator[BalancerProcess]:
    """A balancer speaking TLS to clients (--certfile, --keyfile), shared by the module."""
    args = ["--certfile", str(trusted.cert_file), "--keyfile", str(trusted.key_file)]
    with BalancerProcess([plain_backend.url], workers=2, args=args) as lb:
        yield lb


@pytest.fixture
def front(
    plain_backend: ScriptedBackend, tls_front: BalancerProcess
) -> tuple[ScriptedBackend, BalancerProcess]:
    """The TLS-fronted balancer and its backend, with no routes or recorded requests."""
    plain_backend.clear(routes=True)
    return plain_backend, tls_front


def _https_fetch(port: int, context: ssl.SSLContext, target: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=20, context=context)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _state(lb: BalancerProcess, backend: ScriptedBackend) -> dict[str, Any]:
    reply = fetch(lb.port, "/_prefork_lb/backends")
    assert reply.status == 200, reply
    entries: list[dict[str, Any]] = json.loads(reply.body)["backends"]
    return next(entry for entry in entries if entry["url"] == backend.url)


def test_front_tls_terminates_and_forwards_https_scheme(
    front: tuple[ScriptedBackend, BalancerProcess], trusted: Authority
) -> None:
    """With --certfile and --keyfile the balancer speaks TLS and forwards the https scheme."""
    backend, lb = front
    backend.route("/", echo())
    status, body = _https_fetch(lb.port, trusted.client_context(), "/path?q=1")
    assert status == 200, body
    document = json.loads(body)
    headers = {name.lower(): value for name, value in document["headers"]}
    assert document["target"] == "/path?q=1"
    assert headers["x-forwarded-proto"] == "https"


def test_plain_http_on_the_tls_port_is_closed(
    front: tuple[ScriptedBackend, BalancerProcess],
) -> None:
    """Plain HTTP on the TLS port gets no HTTP answer, the connection ends, one line is logged."""
    backend, lb = front
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        # A hang would raise TimeoutError here; gunicorn closes or resets the connection.
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    assert not received.startswith(b"HTTP/"), received
    assert backend.requests == []
    # One warning line from gunicorn, not a traceback from the gevent hub.
    lb.wait_for_log(r"WARNING\] Invalid request from ip=127\.0\.0\.1: .*HTTP_REQUEST")
    assert "Traceback" not in lb.log()


def test_https_backend_verified_with_ca_bundle(
    start_balancer: StartBalancer, trusted: Authority, good_backend: ScriptedBackend
) -> None:
    """An https backend whose certificate chains to PREFORK_LB_BACKEND_CA_BUNDLE answers."""
    lb = start_balancer(
        [good_backend.url], env={"PREFORK_LB_BACKEND_CA_BUNDLE": str(trusted.ca_file)}
    )
    reply = fetch(lb.port, "/x")
    assert reply.status == 200, reply
    assert reply.body == b"good\n"
    assert good_backend.requests[0].target == "/x"
    assert good_backend.tls_failures == []


def test_unknown_ca_is_refused_with_502(
    start_balancer: StartBalancer, trusted: Authority, bad_backend: ScriptedBackend
) -> None:
    """Verification is on by default: a backend certificate from an unknown CA gets 502."""
    lb = start_balancer(
        [bad_backend.url], env={"PREFORK_LB_BACKEND_CA_BUNDLE": str(trusted.ca_file)}
    )
    reply = fetch(lb.port)
    assert reply.status == 502
    assert reply.header("Content-Type") == ["text/plain; charset=utf-8"]
    assert reply.body.startswith(b"502 Bad Gateway: ")
    assert bad_backend.requests == []
    lb.wait_for_log(
        rf"backend {re.escape(bad_backend.url)} TLS failed: .*CERTIFICATE_VERIFY_FAILED"
    )


def test_system_trust_store_does_not_know_a_private_ca(
    start_balancer: StartBalancer, good_backend: ScriptedBackend
) -> None:
    """Without a CA bundle the system's trust store is used, which a private CA is not in."""
    lb = start_balancer([good_backend.url])
    assert fetch(lb.port).status == 502
    assert good_backend.requests == []
    lb.wait_for_log(r"TLS failed")


def test_certificate_for_another_name_is_refused(
    start_balancer: StartBalancer, trusted: Authority, tmp_path: Path
) -> None:
    """A certificate from the trusted CA that does not name the backend's host gets 502."""
    other = trusted.ca.issue_cert("other.example")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other.configure_cert(context)
    with ScriptedBackend("misnamed", tls=context) as backend:
        lb = start_balancer(
            [backend.url], env={"PREFORK_LB_BACKEND_CA_BUNDLE": str(trusted.ca_file)}
        )
        assert fetch(lb.port).status == 502
        assert backend.requests == []
        lb.wait_for_log(r"TLS failed: .*(IP address mismatch|doesn't match)")


def test_failed_handshake_fails_over_even_for_post(
    start_balancer: StartBalancer,
    trusted: Authority,
    good_backend: ScriptedBackend,
    bad_backend: ScriptedBackend,
) -> None:
    """A refused certificate means nothing was sent: even a POST goes on to a verified backend."""
    lb = start_balancer(
        [bad_backend.url, good_backend.url],
        workers=1,
        env={"PREFORK_LB_BACKEND_CA_BUNDLE": str(trusted.ca_file), "PREFORK_LB_MAX_FAILS": "0"},
    )
    for _ in range(4):
        reply = fetch(lb.port, method="POST", body=b"payload")
        assert reply.status == 200, reply
        assert reply.body == b"good\n"
    assert bad_backend.requests == []
    assert len(good_backend.requests) == 4
    assert bad_backend.tls_failures


def test_verification_can_be_turned_off(
    start_balancer: StartBalancer, bad_backend: ScriptedBackend
) -> None:
    """PREFORK_LB_BACKEND_TLS_VERIFY=0 accepts any certificate, and the master warns at start."""
    lb = start_balancer([bad_backend.url], env={"PREFORK_LB_BACKEND_TLS_VERIFY": "0"})
    reply = fetch(lb.port)
    assert reply.status == 200, reply
    assert reply.body == b"bad\n"
    assert re.search(r"WARNING.*backend_tls_verify is off", lb.log())
    assert "InsecureRequestWarning" not in lb.log()


def test_missing_ca_bundle_stops_the_master(tmp_path: Path) -> None:
    """A CA bundle that does not exist stops the master with one line naming it, exit 1."""
    missing = tmp_path / "no-such-ca.pem"
    result = subprocess.run(
        gunicorn_command("--bind=127.0.0.1:0", "--workers=1"),
        cwd=ROOT,
        env=clean_environ(
            {
                "PREFORK_LB_BACKENDS": "https://127.0.0.1:1",
                "PREFORK_LB_BACKEND_CA_BUNDLE": str(missing),
            }
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    error_lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, output
    assert "PREFORK_LB_BACKEND_CA_BUNDLE" in error_lines[0]
    assert str(missing) in error_lines[0]
    assert "Traceback" not in output


def test_health_checks_verify_like_requests(
    start_balancer: StartBalancer, trusted: Authority, good_backend: ScriptedBackend
) -> None:
    """Active checks of an https backend pass with the CA bundle and fail without it."""
    # A generous timeout: on a loaded machine a slow handshake must not pass for the failure.
    checks = {
        "PREFORK_LB_HEALTH_CHECK": "1",
        "PREFORK_LB_HEALTH_INTERVAL": "0.2",
        "PREFORK_LB_HEALTH_TIMEOUT": "10",
    }
    verified = start_balancer(
        [good_backend.url],
        workers=1,
        env={**checks, "PREFORK_LB_BACKEND_CA_BUNDLE": str(trusted.ca_file)},
    )
    wait_for(
        lambda: any(r.header("User-Agent") == [PROBE_AGENT] for r in good_backend.requests),
        "a probe reaching the backend",
    )
    assert _state(verified, good_backend)["state"] == "up"
    verified.stop(quick=True)

    unverified = start_balancer([good_backend.url], workers=1, env=checks)
    wait_for(lambda: _state(unverified, good_backend)["state"] == "down", "backend down")
    assert "certificate verify failed" in _state(unverified, good_backend)["reason"]


def test_tls_client_that_stops_reading_is_disconnected(
    start_balancer: StartBalancer, trusted: Authority
) -> None:
    """Over TLS too, a client that leaves a big response unread is cut off at client_timeout."""
    with ScriptedBackend("plain") as backend:
        backend.route("/big", big_body(1024**3))
        tls = ["--certfile", str(trusted.cert_file), "--keyfile", str(trusted.key_file)]
        env = {"PREFORK_LB_CLIENT_TIMEOUT": "1"}
        lb = start_balancer([backend.url], workers=1, env=env, args=tls)
        raw = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
        with trusted.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as client:
            client.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
            lb.wait_for_log(r"client 127\.0\.0\.1 did not read the response to GET /big for 1 s")
        wait_for(lambda: backend.open_connections == 0, "backend connection dropped", timeout=10)
        assert "Traceback" not in lb.log()
        assert _https_fetch(lb.port, trusted.client_context())[0] == 200


def test_tls_handshake_is_bounded_by_client_timeout(
    start_balancer: StartBalancer, trusted: Authority
) -> None:
    """A client that connects to the TLS port and never says hello is closed at client_timeout."""
    with ScriptedBackend("plain") as backend:
        tls = ["--certfile", str(trusted.cert_file), "--keyfile", str(trusted.key_file)]
        lb = start_balancer(
            [backend.url], workers=1, env={"PREFORK_LB_CLIENT_TIMEOUT": "1"}, args=tls
        )
        with socket.create_connection(("127.0.0.1", lb.port), timeout=10) as silent:
            silent.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, and no more
            started = time.monotonic()
            with contextlib.suppress(ConnectionResetError):
                assert silent.recv(4096) == b""
            assert time.monotonic() - started < 5
        lb.wait_for_log(r"WARNING\] Invalid request from ip=127\.0\.0\.1: .*timed out")
        assert "Traceback" not in lb.log()
        assert _https_fetch(lb.port, trusted.client_context())[0] == 200

"""Failures get the right answer: 502, 504 or an aborted connection, never a 500 or a hang."""

from __future__ import annotations

import re
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import (
    RecordedRequest,
    Responder,
    ScriptedBackend,
    hang_after_headers,
    raw,
    sleep_then_respond,
    truncated,
)
from tests.support.balancer import BalancerProcess
from tests.support.client import Reply, fetch
from tests.support.rawhttp import RawConnection


def _assert_plain_error(
    reply: Reply, status: int, lb: BalancerProcess, backend_url: str, target: str = "/"
) -> None:
    """A short plain-text error naming what happened, and a log line naming the backend."""
    assert reply.status == status
    assert reply.header("Content-Type") == ["text/plain; charset=utf-8"]
    text = reply.body.decode()
    assert text.startswith(f"{status} ")
    assert len(text) < 200
    for leak in ("Traceback", 'File "', "/prefork_lb/", "127.0.0.1"):
        assert leak not in text
    assert backend_url in lb.log()
    lb.wait_for_log(rf'"GET {re.escape(target)} HTTP/1.1" {status} .* error=\w+')


@pytest.fixture(scope="module")
def shared_backend() -> Iterator[ScriptedBackend]:
    """One backend for the module's tests that share a balancer; it answers "backend-1"."""
    with ScriptedBackend("backend-1") as backend:
        yield backend


@pytest.fixture(scope="module")
def shared_balancer(shared_backend: ScriptedBackend) -> Iterator[BalancerProcess]:
    """One worker with default settings in front of the shared backend, for the whole module."""
    with BalancerProcess([shared_backend.url], workers=1) as lb:
        yield lb


@pytest.fixture
def backend(shared_backend: ScriptedBackend, shared_balancer: BalancerProcess) -> ScriptedBackend:
    """The shared backend with no routes or recorded requests, behind the shared balancer."""
    shared_backend.clear(routes=True)
    return shared_backend


@pytest.fixture
def unused_port() -> Iterator[int]:
    """A loopback port nothing listens on: held bound, never listening, for the whole test,
    so that no other test's listener takes it and no connection to it is given it as its
    own source port (a TCP self-connect, which would not be refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


def test_refused_connection_is_502(unused_port: int, start_balancer: StartBalancer) -> None:
    """A backend that refuses the connection gets the client a 502."""
    url = f"http://127.0.0.1:{unused_port}"
    lb = start_balancer([url], workers=1)
    _assert_plain_error(fetch(lb.port), 502, lb, url)


def test_connect_timeout_is_504(unanswered_listener: int, start_balancer: StartBalancer) -> None:
    """A backend that does not accept the connection within connect_timeout gets a 504."""
    url = f"http://127.0.0.1:{unanswered_listener}"
    lb = start_balancer([url], workers=1, env={"PREFORK_LB_CONNECT_TIMEOUT": "0.5"})
    _assert_plain_error(fetch(lb.port), 504, lb, url)


def test_read_timeout_is_504(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A backend that does not answer within read_timeout gets a 504."""
    backend = three_backends[0]
    backend.route("/slow", sleep_then_respond(3))
    lb = start_balancer([backend.url], workers=1, env={"PREFORK_LB_READ_TIMEOUT": "0.5"})
    _assert_plain_error(fetch(lb.port, "/slow"), 504, lb, backend.url, "/slow")
    assert fetch(lb.port, "/").status == 200


def _reset(request: RecordedRequest, responder: Responder) -> None:
    responder.reset()


def _close(request: RecordedRequest, responder: Responder) -> None:
    responder.close()


@pytest.mark.parametrize(
    "handler",
    [pytest.param(_reset, id="reset"), pytest.param(_close, id="closed-without-answer")],
)
def test_connection_dropped_before_answer_is_502(
    handler: object,
    request: pytest.FixtureRequest,
    backend: ScriptedBackend,
    shared_balancer: BalancerProcess,
) -> None:
    """A backend that resets or closes the connection before answering gets a 502."""
    target = f"/drop/{request.node.callspec.id}"  # the shared log names this test's request
    backend.route(target, handler)  # type: ignore[arg-type]
    lb = shared_balancer
    _assert_plain_error(fetch(lb.port, target), 502, lb, backend.url, target)
    assert fetch(lb.port, "/").status == 200


INVALID_RESPONSES = [
    pytest.param(b"HELLO THERE\r\n\r\n", id="garbage-status-line"),
    pytest.param(b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n", id="non-numeric-status"),
    pytest.param(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n", id="103-as-final"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", id="unasked-101"),
    pytest.param(b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n", id="bad-name"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n", id="ctl-value"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nthis is no header\r\nContent-Length: 2\r\n\r\nok", id="no-colon"
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", id="two-lengths"
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        id="length-and-chunked",
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
    pytest.param(b"HTTP/1.1 700 Seven\r\nContent-Length: 0\r\n\r\n", id="status-700"),
    pytest.param(
        b"HTTP/1.1 103 Early Hints\r\n\r\n" * 20 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        id="endless-interim-responses",
    ),
    pytest.param(
        b"HTTP/1.1 100 Continue\r\n\r\n" * 20 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        id="endless-100-continue",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        id="gzip-chunked-coding",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\nContent-Length: 2\r\n\r\nok",
        id="unknown-coding-with-length",
    ),
]


@pytest.mark.parametrize("response", INVALID_RESPONSES)
def test_invalid_response_is_502_and_worker_carries_on(
    response: bytes,
    request: pytest.FixtureRequest,
    backend: ScriptedBackend,
    shared_balancer: BalancerProcess,
) -> None:
    """An invalid backend response becomes a 502, and the next request is served normally."""
    target = f"/broken/{request.node.callspec.id}"  # the shared log names this test's request
    backend.route(target, raw(response))
    lb = shared_balancer
    _assert_plain_error(fetch(lb.port, target), 502, lb, backend.url, target)
    assert fetch(lb.port, "/").body == b"backend-1\n"
    assert "Traceback" not in lb.log()


@pytest.mark.parametrize(
    ("handler", "env"),
    [
        pytest.param(truncated(100_000, 5_000), {}, id="length-body-cut"),
        pytest.param(truncated(100_000, 5_000, chunked=True), {}, id="chunked-body-cut"),
        pytest.param(
            hang_after_headers(), {"PREFORK_LB_READ_TIMEOUT": "0.5"}, id="silent-after-head"
        ),
    ],
)
def test_failure_after_headers_aborts_the_client_connection(
    handler: object,
    env: dict[str, str],
    three_backends: list[ScriptedBackend],
    start_balancer: StartBalancer,
) -> None:
    """A backend failing after the status line leaves the client an incomplete, closed response."""
    backend = three_backends[0]
    backend.route("/cut", handler)  # type: ignore[arg-type]
    lb = start_balancer([backend.url], workers=1, env=env)
    with RawConnection(lb.port, timeout=10) as conn:
        reply = conn.request("GET", "/cut")
        assert reply.status == 200
        assert not reply.complete
        assert conn.is_closed_by_peer()
    assert re.search(r"response aborted after the status line: backend http://127", lb.log())
    lb.wait_for_log(r'"GET /cut HTTP/1.1" 200 .* error=aborted:Backend\w+')
    assert "Traceback" not in lb.log()
    assert fetch(lb.port, "/").status == 200


def _close_reused_connections() -> Callable[[RecordedRequest, Responder], None]:
    """A handler that answers the first request on a connection and drops any later one."""
    seen: Counter[int] = Counter()

    def handle(request: RecordedRequest, responder: Responder) -> None:
        seen[request.connection_id] += 1
        if seen[request.connection_id] > 1:
            responder.close()
        else:
            responder.respond(200, "OK", [], b"fresh")

    return handle


def test_stale_keepalive_connection_is_retried_for_idempotent_requests(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A GET that meets a keep-alive connection the backend closed is sent again on a fresh one."""
    backend = three_backends[0]
    backend.route("/", _close_reused_connections())
    lb = start_balancer([backend.url], workers=1)
    for _ in range(5):
        assert fetch(lb.port).body == b"fresh"
    # Requests 2-5 each met a dropped reused connection and were answered on a fresh one.
    assert len(backend.requests) == 9
    assert backend.connections_accepted == 5
    assert "Traceback" not in lb.log()


@pytest.mark.parametrize(("method", "body"), [("POST", None), ("PATCH", None), ("GET", b"payload")])
def test_stale_connection_never_repeats_what_could_act_twice(
    method: str,
    body: bytes | None,
    three_backends: list[ScriptedBackend],
    start_balancer: StartBalancer,
) -> None:
    """A non-idempotent request, or one with a body, is not sent twice: the client gets 502."""
    backend = three_backends[0]
    backend.route("/", _close_reused_connections())
    lb = start_balancer([backend.url], workers=1)
    assert fetch(lb.port).body == b"fresh"  # leaves one pooled connection to reuse
    backend.clear()
    assert fetch(lb.port, method=method, body=body).status == 502
    assert len(backend.requests) == 1


def test_backend_slow_to_take_an_upload_is_bounded_by_read_timeout(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """Sending a body to a backend that pauses is bounded by read_timeout, not connect_timeout."""
    backend = three_backends[0]

    def pause_then_read(request: RecordedRequest, responder: Responder) -> None:
        time.sleep(2)
        for _ in responder.body_reader():
            pass
        responder.respond(200, "OK", [], str(len(request.body)).encode())

    backend.route("/upload", pause_then_read, read_body=False)
    env = {"PREFORK_LB_CONNECT_TIMEOUT": "0.5", "PREFORK_LB_READ_TIMEOUT": "10"}
    lb = start_balancer([backend.url], workers=1, env=env)
    body = b"u" * (16 * 1024 * 1024)
    reply = fetch(lb.port, "/upload", method="POST", body=body, timeout=30)
    assert (reply.status, reply.body) == (200, str(len(body)).encode())


def test_silent_client_small_body_is_408_and_never_reaches_a_backend(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A small body is read whole first: a client silent in it never touches a backend."""
    backend = three_backends[0]
    lb = start_balancer([backend.url], workers=1, env={"PREFORK_LB_CLIENT_TIMEOUT": "0.5"})
    with RawConnection(lb.port, timeout=10) as conn:
        conn.send(b"POST /slow-up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        reply = conn.read_response()
        assert reply.status == 408
        assert conn.is_closed_by_peer()
    assert fetch(lb.port, "/after").status == 200
    assert [r.target for r in backend.requests] == ["/after"]


def test_silent_client_large_body_is_408_and_never_complete_upstream(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A client silent mid-way through a streamed body: 408, and the backend never sees it whole."""
    backend = three_backends[0]
    lb = start_balancer([backend.url], workers=1, env={"PREFORK_LB_CLIENT_TIMEOUT": "0.5"})
    with RawConnection(lb.port, timeout=10) as conn:
        conn.send(b"POST /slow-up HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n")
        conn.send(b"x" * 100_000)
        reply = conn.read_response()
    assert reply.status == 408
    seen = backend.wait_for_requests(1)
    assert not seen[0].complete
    assert len(seen[0].body) < 200_000


def test_pool_overflow_is_logged(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """When more connections are open than pool_size keeps, the operator sees it in the log."""
    backend = three_backends[0]
    backend.route("/slow", sleep_then_respond(0.5))
    lb = start_balancer([backend.url], workers=1, env={"PREFORK_LB_POOL_SIZE": "1"})
    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = list(pool.map(lambda _: fetch(lb.port, "/slow"), range(4)))
    assert [r.status for r in replies] == [200] * 4
    assert "Connection pool is full" in lb.log()


def test_slow_but_steady_upload_is_not_timed_out(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A steady trickle three times longer than client_timeout, above client_min_rate, completes."""
    backend = three_backends[0]
    env = {"PREFORK_LB_CLIENT_TIMEOUT": "1", "PREFORK_LB_CLIENT_MIN_RATE": "100"}
    lb = start_balancer([backend.url], workers=1, env=env)
    pieces = 10
    with RawConnection(lb.port, timeout=20) as conn:
        conn.send(
            b"POST /trickle HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (pieces * 100)
        )
        for _ in range(pieces):  # 10 x 0.3 s: three times the timeout, never silent for it
            conn.send(b"t" * 100)
            time.sleep(0.3)
        reply = conn.read_response()
    assert reply.status == 200
    seen = backend.wait_for_requests(1)[0]
    assert (seen.complete, len(seen.body)) == (True, pieces * 100)

"""Broken backends get a defined answer, and the worker serves its next request normally.

Each case puts one worker (so "the next request" is on the same worker) in front of a
backend that misbehaves on purpose, byte for byte, and a healthy one. The answer is a 502
or 504, or, once the head is out, an aborted client connection; the next request is served.
Cases that test_failures.py and test_forwarding.py already cover are not repeated here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import (
    Handler,
    RecordedRequest,
    Responder,
    ScriptedBackend,
    hold_until,
    raw,
)
from tests.support.balancer import BalancerProcess
from tests.support.client import fetch
from tests.support.polling import wait_for
from tests.support.rawhttp import RawConnection

# A retry to the healthy backend would hide the broken one's answer.
NO_RETRIES = {"PREFORK_LB_RETRIES": "0"}

# Stray bytes that look like a whole response: read as the answer to the next request on
# the same backend connection, they would hand that request this body.
POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npoison"


@pytest.fixture
def healthy() -> Iterator[ScriptedBackend]:
    """A backend that answers every request with 200 and the body ``healthy``."""
    with ScriptedBackend("healthy") as backend:
        yield backend


@pytest.fixture
def broken() -> Iterator[ScriptedBackend]:
    """The backend each test makes misbehave (its default answer is 200 ``broken``)."""
    with ScriptedBackend("broken") as backend:
        yield backend


def _assert_next_request_served(lb: BalancerProcess) -> None:
    """The worker's next request goes to the healthy backend and gets its normal answer."""
    reply = fetch(lb.port, "/next")
    assert (reply.status, reply.body) == (200, b"healthy\n")
    assert "Traceback" not in lb.log()


# --- no connection at all ------------------------------------------------------------------


def test_refused_connection_is_502_then_next_request_served(
    broken: ScriptedBackend, healthy: ScriptedBackend, start_balancer: StartBalancer
) -> None:
    """A backend whose port is closed gets a 502; the worker's next request is served."""
    url = broken.url
    broken.stop()  # the port stays known, and nothing listens on it now
    lb = start_balancer([url, healthy.url], workers=1, env=NO_RETRIES)
    reply = fetch(lb.port, "/refused")
    assert reply.status == 502
    assert reply.body.startswith(b"502 ")
    lb.wait_for_log(r'"GET /refused HTTP/1.1" 502 .* error=BackendUnreachable')
    _assert_next_request_served(lb)


def test_connect_timeout_is_504_then_next_request_served(
    unanswered_listener: int, healthy: ScriptedBackend, start_balancer: StartBalancer
) -> None:
    """A backend that never accepts the connection gets a 504; the next request is served."""
    env = {**NO_RETRIES, "PREFORK_LB_CONNECT_TIMEOUT": "0.5"}
    backends = [f"http://127.0.0.1:{unanswered_listener}", healthy.url]
    lb = start_balancer(backends, workers=1, env=env)
    reply = fetch(lb.port, "/unaccepted")
    assert reply.status == 504
    assert reply.body.startswith(b"504 ")
    lb.wait_for_log(r'"GET /unaccepted HTTP/1.1" 504 .* error=BackendTimeout')
    _assert_next_request_served(lb)


# --- a broken head: 502 before anything reached the client -------------------------------

BAD = "BadBackendResponse"  # an invalid answer: the backend is not marked down for it
CUT = "BackendUnreachable"  # the backend went away mid-head: a failed request

BROKEN_HEADS = [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok", BAD, id="length-abc"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", BAD, id="length-plus"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nok", BAD, id="length-empty"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!", BAD, id="length-5-comma-6"
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        BAD,
        id="length-5-and-6",
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n", CUT, id="closed-mid-head"),
    pytest.param(b"HTTP/1.1 200 OK\r\n", CUT, id="closed-after-status-line"),
    pytest.param(b"HTTP/1.1 200 OK", CUT, id="closed-mid-status-line"),
]


@pytest.mark.parametrize(("response", "error"), BROKEN_HEADS)
def test_broken_head_is_502_then_next_request_served(
    response: bytes,
    error: str,
    broken: ScriptedBackend,
    healthy: ScriptedBackend,
    start_balancer: StartBalancer,
) -> None:
    """A head with an unusable Content-Length, or cut short, gets a 502; the next is served."""
    broken.route("/", raw(response))
    lb = start_balancer([broken.url, healthy.url], workers=1, env=NO_RETRIES)
    reply = fetch(lb.port, "/broken")
    assert reply.status == 502, reply
    assert reply.body.startswith(b"502 ")
    assert len(broken.requests) == 1
    lb.wait_for_log(rf'"GET /broken HTTP/1.1" 502 .* error={error}\b')
    _assert_next_request_served(lb)


# --- stray bytes on a kept-alive backend connection ---------------------------------------


@dataclass(frozen=True)
class Stray:
    """A backend's answer in one write, what the client must get, and the connection's fate."""

    method: str
    sent: bytes
    status: int
    body: bytes
    dropped: bool  # whether the backend connection must be closed rather than pooled


def _bodiless_with(head: bytes) -> bytes:
    """``head`` announcing ``POISON`` as its body, and that body."""
    return head + b"Content-Length: %d\r\n\r\n%s" % (len(POISON), POISON)


FINAL = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
STRAY_BYTES = [
    pytest.param(
        Stray("HEAD", _bodiless_with(b"HTTP/1.1 200 OK\r\n"), 200, b"", True),
        id="body-on-head",
    ),
    pytest.param(
        Stray("GET", b"HTTP/1.1 204 No Content\r\n\r\n" + POISON, 204, b"", True),
        id="body-on-204",
    ),
    pytest.param(
        Stray("GET", _bodiless_with(b"HTTP/1.1 204 No Content\r\n"), 204, b"", True),
        id="length-and-body-on-204",
    ),
    pytest.param(
        Stray("GET", _bodiless_with(b"HTTP/1.1 304 Not Modified\r\n"), 304, b"", True),
        id="body-on-304",
    ),
    pytest.param(
        Stray("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + POISON, 200, b"ok", True),
        id="extra-after-length-body",
    ),
    pytest.param(
        Stray(
            "GET",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + POISON,
            200,
            b"ok",
            True,
        ),
        id="extra-after-last-chunk",
    ),
    pytest.param(
        Stray("GET", b"HTTP/1.1 100 Continue\r\n\r\n" + FINAL, 200, b"final", False),
        id="interim-100",
    ),
    pytest.param(
        Stray("GET", b"HTTP/1.1 102 Processing\r\n\r\n" + FINAL, 200, b"final", False),
        id="interim-102",
    ),
    pytest.param(
        Stray(
            "GET",
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + FINAL,
            200,
            b"final",
            False,
        ),
        id="interim-103",
    ),
    pytest.param(
        Stray(
            "GET",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + FINAL,
            200,
            b"final",
            False,
        ),
        id="interim-100-102-103",
    ),
]


@pytest.mark.parametrize("case", STRAY_BYTES)
def test_stray_bytes_never_answer_the_next_request(
    case: Stray,
    broken: ScriptedBackend,
    healthy: ScriptedBackend,
    start_balancer: StartBalancer,
) -> None:
    """Bytes beyond a response's end reach no client, and its backend connection is dropped.

    Interim 1xx responses are not stray: the client gets the final answer only, and the
    connection is kept.
    """
    broken.route("/stray", raw(case.sent, then_close=False))
    lb = start_balancer([broken.url, healthy.url], workers=1)
    with RawConnection(lb.port, timeout=10) as conn:
        reply = conn.request(case.method, "/stray")
        assert (reply.status, reply.body, reply.complete) == (case.status, case.body, True)
        assert reply.interim == []
        # The same client connection carries on: nothing stray reached it.
        follow = conn.request("GET", "/next")
        assert (follow.status, follow.body) == (200, b"healthy\n")
    # The rotation comes back to the broken backend: its answer, not the stray bytes.
    again = fetch(lb.port, "/again")
    assert (again.status, again.body) == (200, b"broken\n")
    assert [r.target for r in broken.requests] == ["/stray", "/again"]
    assert broken.connections_accepted == (2 if case.dropped else 1)
    assert "Traceback" not in lb.log()


def _answer_then_stray(response: bytes, gate: threading.Event, sent: threading.Event) -> Handler:
    """Send ``response``; once ``gate`` opens send ``POISON`` on the same connection."""

    def send_stray(request: RecordedRequest, responder: Responder) -> None:
        responder.send(POISON)
        sent.set()

    stray = hold_until(gate, send_stray)

    def handle(request: RecordedRequest, responder: Responder) -> None:
        responder.send(response)
        stray(request, responder)

    return handle


LATE_STRAY = [
    pytest.param(
        Stray("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", True), id="200"
    ),
    pytest.param(
        Stray("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n", 200, b"", True), id="head"
    ),
    pytest.param(Stray("GET", b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", True), id="204"),
    pytest.param(
        Stray("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 6\r\n\r\n", 304, b"", True),
        id="304",
    ),
]


@pytest.mark.parametrize("case", LATE_STRAY)
def test_stray_bytes_after_the_response_drop_the_idle_connection(
    case: Stray,
    broken: ScriptedBackend,
    healthy: ScriptedBackend,
    start_balancer: StartBalancer,
) -> None:
    """Bytes a backend sends on a pooled connection after its response are never an answer."""
    gate, sent = threading.Event(), threading.Event()
    broken.route("/stray", _answer_then_stray(case.sent, gate, sent))
    lb = start_balancer([broken.url, healthy.url], workers=1)
    reply = fetch(lb.port, "/stray", method=case.method)
    assert (reply.status, reply.body) == (case.status, case.body)
    gate.set()  # the response is complete and its connection idle in the pool
    wait_for(sent.is_set, "the backend sent its stray bytes")
    _assert_next_request_served(lb)
    again = fetch(lb.port, "/again")
    assert (again.status, again.body) == (200, b"broken\n")
    assert broken.connections_accepted == (2 if case.dropped else 1)

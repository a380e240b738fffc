"""The balancer's errors: the response each one gives, and how library exceptions map to them."""

from __future__ import annotations

import errno
import http.client
import socket
from typing import Any

import pytest
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from prefork_lb.config import Backend
from prefork_lb.errors import (
    AbortResponse,
    BackendTimeout,
    BackendUnreachable,
    BadBackendResponse,
    BadRequest,
    IncompleteRequestBody,
    LBError,
    MethodNotAllowed,
    NoBackendAvailable,
)
from prefork_lb.upstream import map_upstream_error

DETAIL = "backend http://10.9.8.7:9001 refused: [Errno 111] Connection refused"


@pytest.mark.parametrize(
    ("error_class", "status_line", "body"),
    [
        pytest.param(
            BadRequest,
            "400 Bad Request",
            b"400 Bad Request: the request cannot be forwarded\n",
            id="bad-request",
        ),
        pytest.param(
            IncompleteRequestBody,
            "400 Bad Request",
            b"400 Bad Request: the request body ended before it was complete\n",
            id="incomplete-body",
        ),
        pytest.param(
            MethodNotAllowed,
            "405 Method Not Allowed",
            b"405 Method Not Allowed: this balancer does not open tunnels (CONNECT)\n",
            id="method-not-allowed",
        ),
        pytest.param(
            BackendUnreachable,
            "502 Bad Gateway",
            b"502 Bad Gateway: the backend could not be reached or closed the connection\n",
            id="unreachable",
        ),
        pytest.param(
            BadBackendResponse,
            "502 Bad Gateway",
            b"502 Bad Gateway: the backend sent an invalid response\n",
            id="bad-response",
        ),
        pytest.param(
            NoBackendAvailable,
            "503 Service Unavailable",
            b"503 Service Unavailable: no backend is available\n",
            id="no-backend",
        ),
        pytest.param(
            BackendTimeout,
            "504 Gateway Timeout",
            b"504 Gateway Timeout: the backend did not answer in time\n",
            id="timeout",
        ),
        pytest.param(
            LBError,
            "502 Bad Gateway",
            b"502 Bad Gateway: the balancer could not complete the request\n",
            id="base",
        ),
    ],
)
def test_error_response(error_class: type[LBError], status_line: str, body: bytes) -> None:
    """Each error answers with its status, a short text/plain body, and an exact Content-Length."""
    error = error_class(DETAIL)
    line, headers, sent = error.response()
    assert line == status_line
    assert sent == body
    assert sent.startswith(status_line.encode() + b": ")
    assert headers == [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]


@pytest.mark.parametrize(
    "error_class",
    [
        pytest.param(cls, id=cls.__name__)
        for cls in (
            BadRequest,
            IncompleteRequestBody,
            MethodNotAllowed,
            NoBackendAvailable,
            BackendUnreachable,
            BackendTimeout,
            BadBackendResponse,
        )
    ],
)
def test_detail_never_reaches_client(error_class: type[LBError]) -> None:
    """The detail, which may name internal addresses, is kept for the log, out of the response."""
    error = error_class(DETAIL)
    line, headers, body = error.response()
    assert error.detail == DETAIL
    assert str(error) == DETAIL
    assert DETAIL.encode() not in body
    assert b"10.9.8.7" not in body
    assert "10.9.8.7" not in line
    assert all("10.9.8.7" not in value for _, value in headers)


def test_abort_response_is_a_connection_reset() -> None:
    """AbortResponse is a ConnectionResetError with errno ECONNRESET, so gunicorn closes quietly."""
    error = AbortResponse("backend went away mid-body")
    assert isinstance(error, ConnectionResetError)
    assert error.errno == errno.ECONNRESET
    assert error.strerror == "backend went away mid-body"


# urllib3 only formats its pool or connection argument into the message; None stands in.
NO_POOL: Any = None
BACKEND = Backend(url="http://10.9.8.7:9001", scheme="http", host="10.9.8.7", port=9001)


def test_new_connection_error_subclasses_connect_timeout() -> None:
    """urllib3's NewConnectionError is a ConnectTimeoutError: why the table's order matters."""
    assert issubclass(NewConnectionError, ConnectTimeoutError)


@pytest.mark.parametrize(
    ("raised", "mapped", "status"),
    [
        pytest.param(
            NewConnectionError(NO_POOL, "refused"), BackendUnreachable, 502, id="refused-not-504"
        ),
        pytest.param(ConnectTimeoutError(), BackendTimeout, 504, id="connect-timeout"),
        pytest.param(ReadTimeoutError(NO_POOL, "/", "x"), BackendTimeout, 504, id="read-timeout"),
        pytest.param(
            ProtocolError("Connection broken", http.client.IncompleteRead(b"", 5)),
            BackendUnreachable,
            502,
            id="incomplete-read",
        ),
        pytest.param(
            ProtocolError("Connection aborted.", ConnectionResetError()),
            BackendUnreachable,
            502,
            id="connection-reset",
        ),
        pytest.param(
            ProtocolError("Connection aborted.", http.client.RemoteDisconnected("closed")),
            BackendUnreachable,
            502,
            id="wrapped-remote-disconnected",
        ),
        pytest.param(ProtocolError("no cause"), BadBackendResponse, 502, id="protocol-error-alone"),
        pytest.param(http.client.BadStatusLine("x"), BadBackendResponse, 502, id="bad-status-line"),
        pytest.param(
            http.client.RemoteDisconnected("Remote end closed connection without response"),
            BackendUnreachable,
            502,
            id="remote-disconnected",
        ),
        pytest.param(socket.timeout(), BackendTimeout, 504, id="socket-timeout"),  # noqa: UP041
        pytest.param(ConnectionRefusedError(), BackendUnreachable, 502, id="os-refused"),
        pytest.param(ValueError("odd"), BadBackendResponse, 502, id="anything-else"),
    ],
)
def test_map_upstream_error(raised: BaseException, mapped: type[LBError], status: int) -> None:
    """Each library exception maps to one balancer error with its status, naming the backend."""
    error = map_upstream_error(raised, BACKEND)
    assert type(error) is mapped
    assert error.status.value == status
    assert error.detail.startswith("backend http://10.9.8.7:9001 ")


@pytest.mark.parametrize(
    ("raised", "detail"),
    [
        pytest.param(
            NewConnectionError(NO_POOL, "refused"),
            "backend http://10.9.8.7:9001 connection failed: None: refused",
            id="refused",
        ),
        pytest.param(
            ReadTimeoutError(NO_POOL, "/", "read timed out"),
            "backend http://10.9.8.7:9001 read timed out: None: read timed out",
            id="read-timeout",
        ),
        pytest.param(
            ProtocolError("Connection broken", http.client.IncompleteRead(b"", 5)),
            "backend http://10.9.8.7:9001 closed the connection mid-body: "
            "IncompleteRead(0 bytes read, 5 more expected)",
            id="incomplete-read-unwrapped",
        ),
        pytest.param(
            ValueError("odd"),
            "backend http://10.9.8.7:9001 failed: ValueError('odd')",
            id="unknown",
        ),
    ],
)
def test_map_upstream_error_detail(raised: BaseException, detail: str) -> None:
    """The mapped error's detail names the backend URL, what went wrong and the underlying error."""
    assert map_upstream_error(raised, BACKEND).detail == detail

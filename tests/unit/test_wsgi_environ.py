"""Reading a request out of a WSGI environ: header lines, framing, version and target."""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any

import pytest

from prefork_lb import request_context
from prefork_lb.errors import BadRequest, MethodNotAllowed, UnsupportedTransferCoding
from prefork_lb.request import ProxyRequest, Target
from prefork_lb.wsgi import headers_from_environ, read_request


def _environ(**overrides: Any) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/",
        "PATH_INFO": "/",
        "wsgi.url_scheme": "http",
        "REMOTE_ADDR": "203.0.113.7",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "example.com",
    }
    environ.update(overrides)
    return environ


@pytest.fixture
def no_received_lines() -> Iterator[None]:
    token = request_context.current_request.set(None)
    yield
    request_context.current_request.reset(token)


def test_headers_from_environ() -> None:
    """HTTP_* keys become canonical header names; CONTENT_TYPE and CONTENT_LENGTH are included."""
    environ = {
        "REQUEST_METHOD": "POST",
        "HTTP_X_FOO": "bar",
        "HTTP_HOST": "example.com",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "5",
        "HTTP_X_REQUEST_ID": "abc",
        "SERVER_NAME": "ignored",
        "wsgi.url_scheme": "http",
    }
    assert headers_from_environ(environ) == [
        ("X-Foo", "bar"),
        ("Host", "example.com"),
        ("Content-Type", "text/plain"),
        ("Content-Length", "5"),
        ("X-Request-Id", "abc"),
    ]


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"CONTENT_TYPE": "", "CONTENT_LENGTH": ""}, id="empty"),
        pytest.param({}, id="absent"),
    ],
)
def test_empty_content_fields_left_out(environ: dict[str, str]) -> None:
    """An empty CONTENT_TYPE or CONTENT_LENGTH is not a header line."""
    assert headers_from_environ({"HTTP_X_A": "1", **environ}) == [("X-A", "1")]


@pytest.mark.parametrize(
    ("overrides", "content_length", "chunked"),
    [
        pytest.param({}, None, False, id="no-body"),
        pytest.param({"CONTENT_LENGTH": "42"}, 42, False, id="content-length"),
        pytest.param({"CONTENT_LENGTH": "0"}, 0, False, id="zero-length"),
        pytest.param({"CONTENT_LENGTH": ""}, None, False, id="empty-length"),
        pytest.param({"HTTP_TRANSFER_ENCODING": "chunked"}, None, True, id="chunked"),
        pytest.param({"HTTP_TRANSFER_ENCODING": " Chunked "}, None, True, id="chunked-any-case"),
        pytest.param(
            {"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": "42"},
            None,
            True,
            id="chunked-wins-over-length",
        ),
    ],
)
def test_read_request_framing(
    no_received_lines: None, overrides: dict[str, str], content_length: int | None, chunked: bool
) -> None:
    """Content-Length is parsed; a chunked body has no length."""
    request = read_request(_environ(REQUEST_METHOD="POST", **overrides))
    assert request.content_length == content_length
    assert request.chunked is chunked


@pytest.mark.parametrize(
    "coding", ["gzip, chunked", "chunked, chunked", "identity", "deflate,chunked"]
)
def test_read_request_refuses_other_transfer_codings(no_received_lines: None, coding: str) -> None:
    """A transfer coding other than plain chunked is refused with 501, not re-framed."""
    with pytest.raises(UnsupportedTransferCoding) as caught:
        read_request(_environ(REQUEST_METHOD="POST", HTTP_TRANSFER_ENCODING=coding))
    assert caught.value.status == 501


@pytest.mark.parametrize(
    ("protocol", "version"),
    [
        pytest.param("HTTP/1.1", "1.1", id="1.1"),
        pytest.param("HTTP/1.0", "1.0", id="1.0"),
    ],
)
def test_read_request_version(no_received_lines: None, protocol: str, version: str) -> None:
    """The request's version is SERVER_PROTOCOL without its HTTP/ prefix."""
    assert read_request(_environ(SERVER_PROTOCOL=protocol)).version == version


def test_read_request_whole(no_received_lines: None) -> None:
    """A plain environ becomes a ProxyRequest with the raw target, headers and client address."""
    environ = _environ(
        REQUEST_METHOD="PUT",
        RAW_URI="/a%2fb?x=1",
        PATH_INFO="/a/b",
        HTTP_X_FOO="bar",
        CONTENT_TYPE="application/json",
        CONTENT_LENGTH="2",
        **{"wsgi.url_scheme": "https"},
    )
    assert read_request(environ) == ProxyRequest(
        method="PUT",
        target=Target("/a%2fb?x=1", None),
        headers=[
            ("Host", "example.com"),
            ("X-Foo", "bar"),
            ("Content-Type", "application/json"),
            ("Content-Length", "2"),
        ],
        client_addr="203.0.113.7",
        scheme="https",
        version="1.1",
        content_length=2,
        chunked=False,
    )


def test_read_request_absolute_form(no_received_lines: None) -> None:
    """An absolute-form RAW_URI is split into path and authority."""
    request = read_request(_environ(RAW_URI="http://elsewhere:8080/x?y"))
    assert request.target == Target("/x?y", "elsewhere:8080")


def test_read_request_prefers_received_lines() -> None:
    """Header lines saved by the pre_request hook are used as they are, repeats in order."""
    lines = [("HOST", "h"), ("COOKIE", "a=1"), ("COOKIE", "b=2")]
    token = request_context.current_request.set(SimpleNamespace(headers=lines))
    try:
        request = read_request(_environ(HTTP_COOKIE="a=1, b=2"))
    finally:
        request_context.current_request.reset(token)
    assert request.headers == [("Host", "h"), ("Cookie", "a=1"), ("Cookie", "b=2")]


def test_read_request_refuses_connect(no_received_lines: None) -> None:
    """A CONNECT request is refused with 405."""
    with pytest.raises(MethodNotAllowed) as caught:
        read_request(_environ(REQUEST_METHOD="CONNECT", RAW_URI="example.com:443"))
    assert caught.value.status == HTTPStatus.METHOD_NOT_ALLOWED


def test_read_request_refuses_bad_target(no_received_lines: None) -> None:
    """A RAW_URI with a fragment is refused with 400."""
    with pytest.raises(BadRequest):
        read_request(_environ(RAW_URI="/a#b"))

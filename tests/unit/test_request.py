"""The request-target rules: what goes upstream byte for byte, what is refused."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from prefork_lb.errors import BadRequest, MethodNotAllowed, UnsupportedTransferCoding
from prefork_lb.request import ProxyRequest, Target, body_framing, check_host, upstream_target


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("/", id="root"),
        pytest.param("/a%2fb%20c+d?x=1&x=2&y=%C3%A9", id="encoded-and-repeated-query"),
        pytest.param("/..%2f", id="encoded-dot-dot-slash"),
        pytest.param("//double", id="double-slash"),
        pytest.param("/a/../b", id="dot-segments"),
        pytest.param("/a%2Fb", id="upper-case-escape"),
        pytest.param('/q?a="b"&c=[d]', id="quotes-and-brackets"),
        pytest.param("/?", id="empty-query"),
    ],
)
def test_origin_form_passes_byte_for_byte(raw: str) -> None:
    """An origin-form target goes upstream exactly as the client sent it, with no authority."""
    assert upstream_target("GET", raw) == Target(raw, None)


def test_asterisk_for_options() -> None:
    """OPTIONS * is forwarded as *."""
    assert upstream_target("OPTIONS", "*") == Target("*", None)


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("GET", id="get"),
        pytest.param("POST", id="post"),
        pytest.param("HEAD", id="head"),
    ],
)
def test_asterisk_only_for_options(method: str) -> None:
    """A * target with any method but OPTIONS is a bad request."""
    with pytest.raises(BadRequest) as caught:
        upstream_target(method, "*")
    assert caught.value.status == HTTPStatus.BAD_REQUEST


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("http://elsewhere/x?y", Target("/x?y", "elsewhere"), id="path-and-query"),
        pytest.param("http://elsewhere", Target("/", "elsewhere"), id="no-path"),
        pytest.param("http://host?q", Target("/?q", "host"), id="query-without-path"),
        pytest.param("https://secure.example/a", Target("/a", "secure.example"), id="https"),
        pytest.param("http://elsewhere:8080/x", Target("/x", "elsewhere:8080"), id="with-port"),
        pytest.param("HTTP://Elsewhere/x", Target("/x", "Elsewhere"), id="upper-case-scheme"),
        pytest.param("http://[::1]:9000/x", Target("/x", "[::1]:9000"), id="ipv6-authority"),
        pytest.param("http://e/a%2fb", Target("/a%2fb", "e"), id="escapes-kept"),
    ],
)
def test_absolute_form(raw: str, expected: Target) -> None:
    """An absolute-form target loses its authority, which is returned separately."""
    assert upstream_target("GET", raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("ftp://elsewhere/x", id="ftp"),
        pytest.param("ws://elsewhere/x", id="websocket"),
        pytest.param("http://u@h/", id="userinfo"),
        pytest.param("http://u:p@h/", id="user-and-password"),
        pytest.param("http:///x", id="empty-authority"),
        pytest.param("http://", id="nothing-after-scheme"),
        pytest.param("elsewhere/x", id="no-scheme"),
        pytest.param("?q", id="query-only"),
        pytest.param("", id="empty"),
        pytest.param("/a b", id="space"),
        pytest.param("/a\tb", id="tab"),
        pytest.param("/a\r\nX-Injected: 1", id="crlf"),
        pytest.param("/a\x00", id="nul"),
        pytest.param("/a\x7f", id="del"),
        pytest.param("/a#frag", id="fragment"),
        pytest.param("http://e/x#frag", id="absolute-fragment"),
        pytest.param("http://e:abc/x", id="non-numeric-port"),
        pytest.param("http://e:/x", id="empty-port"),
        pytest.param("http://e:99999/x", id="port-above-65535"),
        pytest.param("http://a<b/x", id="bad-host-character"),
        pytest.param("http://[::1/x", id="unclosed-ipv6"),
        pytest.param("/caf\u00e9", id="latin-1"),
        pytest.param("/\u2603", id="non-latin"),
    ],
)
def test_rejected_targets(raw: str) -> None:
    """A target that is not plain origin-, absolute- or asterisk-form is a 400."""
    with pytest.raises(BadRequest) as caught:
        upstream_target("GET", raw)
    assert caught.value.status == HTTPStatus.BAD_REQUEST
    assert type(caught.value) is BadRequest


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("example.com:443", id="authority-form"),
        pytest.param("/", id="origin-form"),
    ],
)
def test_connect_is_refused(raw: str) -> None:
    """CONNECT is refused with 405 whatever its target: the balancer opens no tunnels."""
    with pytest.raises(MethodNotAllowed) as caught:
        upstream_target("CONNECT", raw)
    assert caught.value.status == HTTPStatus.METHOD_NOT_ALLOWED
    assert caught.value.status.value == 405


def _request(content_length: int | None, *, chunked: bool) -> ProxyRequest:
    return ProxyRequest(
        method="POST",
        target=Target("/"),
        headers=[],
        client_addr="127.0.0.1",
        scheme="http",
        version="1.1",
        content_length=content_length,
        chunked=chunked,
    )


@pytest.mark.parametrize(
    ("content_length", "chunked", "expected"),
    [
        pytest.param(0, False, False, id="zero-length"),
        pytest.param(None, False, False, id="no-length"),
        pytest.param(5, False, True, id="five-bytes"),
        pytest.param(None, True, True, id="chunked"),
    ],
)
def test_has_body(content_length: int | None, chunked: bool, expected: bool) -> None:
    """A request has a body when it is chunked or has a non-zero Content-Length."""
    assert _request(content_length, chunked=chunked).has_body is expected


def test_options_on_a_pathless_absolute_uri_asks_about_the_server() -> None:
    """OPTIONS http://host (no path) is forwarded as OPTIONS * (RFC 9112 section 3.2.4)."""
    assert upstream_target("OPTIONS", "http://abs.example") == Target("*", "abs.example")
    assert upstream_target("GET", "http://abs.example") == Target("/", "abs.example")


@pytest.mark.parametrize(
    ("transfer_encoding", "content_length", "expected"),
    [
        pytest.param(None, None, (None, False), id="no-body"),
        pytest.param(None, "0", (0, False), id="zero-length"),
        pytest.param(None, "42", (42, False), id="length"),
        pytest.param("chunked", None, (None, True), id="chunked"),
        pytest.param("Chunked ", None, (None, True), id="chunked-any-case"),
        pytest.param(None, "9223372036854775807", (2**63 - 1, False), id="largest-length"),
        pytest.param(None, "0" * 5000 + "5", (5, False), id="5000-leading-zeros"),
    ],
)
def test_body_framing(
    transfer_encoding: str | None, content_length: str | None, expected: tuple[int | None, bool]
) -> None:
    """The body is framed by its length, by plain chunked coding, or not at all."""
    assert body_framing(transfer_encoding, content_length) == expected


@pytest.mark.parametrize("coding", ["gzip, chunked", "gzip", "chunked, chunked", "identity"])
def test_body_framing_refuses_other_codings(coding: str) -> None:
    """A transfer coding other than plain chunked is a 501, never re-framed as chunked."""
    with pytest.raises(UnsupportedTransferCoding) as caught:
        body_framing(coding, None)
    assert caught.value.status == HTTPStatus.NOT_IMPLEMENTED


@pytest.mark.parametrize(
    "content_length",
    [
        pytest.param("9223372036854775808", id="2-to-the-63"),
        pytest.param("99999999999999999999999", id="23-digits"),
        pytest.param("9" * 5000, id="5000-digits"),
    ],
)
def test_body_framing_refuses_lengths_beyond_64_bits(content_length: str) -> None:
    """A Content-Length a signed 64-bit parser would overflow on is a 400, never forwarded."""
    with pytest.raises(BadRequest) as caught:
        body_framing(None, content_length)
    assert caught.value.status == HTTPStatus.BAD_REQUEST


@pytest.mark.parametrize(
    ("headers", "target", "version"),
    [
        pytest.param([("Host", "app.example")], Target("/"), "1.1", id="name"),
        pytest.param([("Host", "app.example:8080")], Target("/"), "1.1", id="name-and-port"),
        pytest.param([("Host", "[::1]:8080")], Target("/"), "1.1", id="ipv6"),
        pytest.param([("Host", "10.0.0.5")], Target("/"), "1.1", id="ipv4"),
        pytest.param([], Target("/"), "1.0", id="http10-without-host"),
        pytest.param([], Target("/", "abs.example"), "1.1", id="absolute-form-without-host"),
        pytest.param([("Host", "a b")], Target("/", "abs.example"), "1.1", id="absolute-form-wins"),
        pytest.param([("Host", "")], Target("/"), "1.1", id="empty-host"),
        pytest.param([("Host", "localhost:65535")], Target("/"), "1.1", id="highest-port"),
        pytest.param([("Host", "[fe80::1%25eth0]:80")], Target("/"), "1.1", id="ipv6-zone"),
        pytest.param([("Host", "app.example.")], Target("/"), "1.1", id="trailing-dot"),
    ],
)
def test_check_host_accepts(headers: list[tuple[str, str]], target: Target, version: str) -> None:
    """A well-formed Host, or none on HTTP/1.0 or with an absolute-form target, is accepted."""
    check_host(target, headers, version)


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("a b", id="space"),
        pytest.param("evil.example/../x", id="slash"),
        pytest.param("user@evil.example", id="userinfo"),
        pytest.param("app.example:80a", id="bad-port"),
        pytest.param("app.example:", id="empty-port"),
        pytest.param("app.example:65536", id="port-above-65535"),
        pytest.param("app.example:99999", id="port-99999"),
        pytest.param("app.example:000080", id="port-six-digits"),
        pytest.param("app.example:" + "9" * 5000, id="port-5000-digits"),
        pytest.param("[::1", id="unclosed-ipv6"),
    ],
)
def test_check_host_refuses_malformed_host(host: str) -> None:
    """A Host that is not host[:port] is a 400."""
    with pytest.raises(BadRequest):
        check_host(Target("/"), [("Host", host)], "1.1")


def test_check_host_requires_host_on_http11() -> None:
    """An HTTP/1.1 request without Host is a 400 (RFC 9112 section 3.2)."""
    with pytest.raises(BadRequest, match="without a Host"):
        check_host(Target("/"), [("Accept", "*/*")], "1.1")

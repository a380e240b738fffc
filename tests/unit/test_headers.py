"""Header rewriting: hop-by-hop removal, forwarding fields by trust, and checking response heads."""

from __future__ import annotations

import ipaddress
from http import HTTPStatus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.errors import BadBackendResponse
from prefork_lb.headers import (
    AddressSet,
    address_in,
    canonical_name,
    client_request_id,
    response_head,
    strip_hop_by_hop,
    switching_head,
    upgrade_offer,
    upstream_request_headers,
)
from prefork_lb.request import ProxyRequest, Target

RID = "0af7651916cd43dd8448eb211c80319c"

# Spelled out here rather than imported, so that a change to the package's list fails a test.
HOP_BY_HOP = (
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
)

# --- canonical_name ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("X-REQUEST-ID", "X-Request-Id", id="x-request-id"),
        pytest.param("HOST", "Host", id="host"),
        pytest.param("WWW-AUTHENTICATE", "Www-Authenticate", id="www-authenticate"),
        pytest.param("content-type", "Content-Type", id="lower-case"),
        pytest.param("X-Forwarded-For", "X-Forwarded-For", id="already-canonical"),
    ],
)
def test_canonical_name(name: str, expected: str) -> None:
    """Each dash-separated part of a field name is capitalised."""
    assert canonical_name(name) == expected


# --- strip_hop_by_hop --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        *[pytest.param(name, id=name) for name in HOP_BY_HOP],
        *[pytest.param(name.upper(), id=f"{name}-upper") for name in HOP_BY_HOP],
        pytest.param("Transfer-Encoding", id="transfer-encoding-mixed"),
        pytest.param("Proxy-Authorization", id="proxy-authorization-mixed"),
    ],
)
def test_strip_drops_each_hop_by_hop_field(name: str) -> None:
    """Every hop-by-hop field is dropped whatever its case; the others stay in order."""
    headers = [("Accept", "*/*"), (name, "x"), ("X-Keep", "1")]
    assert strip_hop_by_hop(headers) == [("Accept", "*/*"), ("X-Keep", "1")]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            [("Connection", "X-Secret"), ("X-Secret", "s"), ("X-Public", "p")],
            [("X-Public", "p")],
            id="one-named",
        ),
        pytest.param(
            [
                ("X-A", "a"),
                ("Connection", " x-a ,X-B,,  x-c  "),
                ("x-b", "b"),
                ("X-C", "c"),
                ("X-D", "d"),
            ],
            [("X-D", "d")],
            id="comma-list-odd-spacing",
        ),
        pytest.param(
            [
                ("connection", "X-A"),
                ("X-A", "a"),
                ("CONNECTION", "x-b, keep-alive"),
                ("X-B", "b"),
                ("Keep-Alive", "timeout=5"),
                ("X-C", "c"),
            ],
            [("X-C", "c")],
            id="several-connection-lines",
        ),
        pytest.param(
            [("X-A", "named later"), ("Connection", "x-a")],
            [],
            id="named-field-before-connection",
        ),
        pytest.param(
            [
                ("Connection", "close"),
                ("Cookie", "a=1"),
                ("Cookie", "b=2"),
                ("X-Dup", "1"),
                ("X-Dup", "2"),
            ],
            [("Cookie", "a=1"), ("Cookie", "b=2"), ("X-Dup", "1"), ("X-Dup", "2")],
            id="duplicates-kept-in-order",
        ),
        pytest.param(
            [("Connection", ""), ("Connection", " , "), ("X-A", "a")],
            [("X-A", "a")],
            id="empty-connection-names-nothing",
        ),
        pytest.param([], [], id="empty"),
    ],
)
def test_strip_drops_fields_named_in_connection(
    headers: list[tuple[str, str]], expected: list[tuple[str, str]]
) -> None:
    """Every field a Connection line names is dropped, in any case; the rest keep their order."""
    assert strip_hop_by_hop(headers) == expected


def test_strip_accepts_an_iterator() -> None:
    """strip_hop_by_hop reads its input once, so a generator works as well as a list."""
    headers = iter([("X-A", "a"), ("Connection", "x-a"), ("X-B", "b")])
    assert strip_hop_by_hop(headers) == [("X-B", "b")]


_NAME_POOL = [*HOP_BY_HOP, "x-a", "x-b", "cookie", "host", "set-cookie", "via"]


def _random_case(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda flips: "".join(c.upper() if up else c for c, up in zip(name, flips, strict=True))
    )


_names = st.one_of(
    st.sampled_from(_NAME_POOL).flatmap(_random_case),
    st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}", fullmatch=True),
)
_safe_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
_connection_values = st.lists(_names, max_size=4).flatmap(
    lambda names: st.lists(
        st.sampled_from([",", ", ", " ,", " , ", ",,"]), min_size=len(names), max_size=len(names)
    ).map(lambda seps: "".join(f"{name}{sep}" for name, sep in zip(names, seps, strict=True)))
)
_lines = st.one_of(
    st.tuples(_names, _safe_values),
    st.tuples(st.sampled_from(["Connection", "connection", "CONNECTION"]), _connection_values),
)


@given(st.lists(_lines, max_size=15))
def test_strip_property(headers: list[tuple[str, str]]) -> None:
    """The output is the input minus exactly the hop-by-hop and Connection-named lines, in order."""
    named = {
        option.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for option in value.split(",")
    }
    dropped = set(HOP_BY_HOP) | named
    expected = [line for line in headers if line[0].lower() not in dropped]
    assert strip_hop_by_hop(headers) == expected


# --- upstream_request_headers ------------------------------------------------------------------


def _request(
    headers: list[tuple[str, str]],
    *,
    client_addr: str = "203.0.113.7",
    target: Target | None = None,
    version: str = "1.1",
    scheme: str = "http",
    content_length: int | None = None,
    chunked: bool = False,
) -> ProxyRequest:
    return ProxyRequest(
        method="GET",
        target=target or Target("/"),
        headers=headers,
        client_addr=client_addr,
        scheme=scheme,
        version=version,
        content_length=content_length,
        chunked=chunked,
    )


_FORGED = [
    ("Host", "example.com"),
    ("User-Agent", "t"),
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Port", "1"),
    ("X-Forwarded-Prefix", "/evil"),
    ("Forwarded", "for=6.6.6.6;proto=https"),
    ("X-Real-IP", "6.6.6.6"),
    ("Accept", "*/*"),
]


def test_untrusted_client_forwarding_fields_are_replaced() -> None:
    """From an untrusted client every forwarding field is dropped and rebuilt from the peer."""
    out = upstream_request_headers(
        _request(_FORGED),
        trusted=False,
        preserve_host=True,
        backend_authority="10.0.0.5:8080",
        request_id=RID,
    )
    assert out == [
        ("Host", "example.com"),
        ("User-Agent", "t"),
        ("Accept", "*/*"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "example.com"),
        ("Via", "1.1 prefork_lb"),
        ("X-Request-ID", RID),
    ]


def test_trusted_proxy_forwarding_fields_are_extended() -> None:
    """From a trusted proxy X-Forwarded-For is extended and the other forwarding fields kept."""
    headers = [
        ("Host", "example.com"),
        ("X-Forwarded-For", "1.2.3.4"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "public.example"),
        ("Forwarded", "for=1.2.3.4;proto=https"),
        ("X-Real-IP", "1.2.3.4"),
    ]
    out = upstream_request_headers(
        _request(headers, client_addr="10.0.0.1"),
        trusted=True,
        preserve_host=True,
        backend_authority="10.0.0.5:8080",
        request_id=RID,
    )
    assert out == [
        ("Host", "example.com"),
        ("Forwarded", "for=1.2.3.4;proto=https"),
        ("X-Real-IP", "1.2.3.4"),
        ("X-Forwarded-For", "1.2.3.4, 10.0.0.1"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "public.example"),
        ("Via", "1.1 prefork_lb"),
        ("X-Request-ID", RID),
    ]


def test_trusted_proxy_several_forwarded_for_lines() -> None:
    """A trusted proxy's X-Forwarded-For lines are joined in order before the peer address."""
    headers = [
        ("Host", "h"),
        ("X-Forwarded-For", "1.1.1.1, 2.2.2.2"),
        ("X-Forwarded-For", "3.3.3.3"),
    ]
    out = upstream_request_headers(
        _request(headers, client_addr="10.0.0.1"),
        trusted=True,
        preserve_host=True,
        backend_authority="b:1",
        request_id=RID,
    )
    assert ("X-Forwarded-For", "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1") in out


def test_trusted_proxy_without_forwarding_fields() -> None:
    """A trusted proxy that sent no forwarding fields gets them built from the connection."""
    out = upstream_request_headers(
        _request([("Host", "h")], client_addr="10.0.0.1", scheme="https"),
        trusted=True,
        preserve_host=True,
        backend_authority="b:1",
        request_id=RID,
    )
    assert out == [
        ("Host", "h"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "h"),
        ("Via", "1.1 prefork_lb"),
        ("X-Request-ID", RID),
    ]


def test_backend_authority_when_host_not_preserved() -> None:
    """Without preserve_host, Host is the backend's authority; the client's is X-Forwarded-Host."""
    out = upstream_request_headers(
        _request([("Host", "example.com")]),
        trusted=False,
        preserve_host=False,
        backend_authority="10.0.0.5:8080",
        request_id=RID,
    )
    assert out == [
        ("Host", "10.0.0.5:8080"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "example.com"),
        ("Via", "1.1 prefork_lb"),
        ("X-Request-ID", RID),
    ]


def test_connection_naming_host_keeps_host() -> None:
    """A Connection header that names Host does not make the client's Host disappear."""
    lines = [("Host", "app.example"), ("Connection", "Host, X-Drop"), ("X-Drop", "1")]
    out = upstream_request_headers(
        _request(lines),
        trusted=False,
        preserve_host=True,
        backend_authority="10.0.0.1:80",
        request_id=RID,
    )
    assert [v for n, v in out if n == "Host"] == ["app.example"]
    assert not [n for n, _ in out if n == "X-Drop"]


def test_absolute_form_authority_becomes_host() -> None:
    """The authority of an absolute-form target replaces the client's Host header."""
    out = upstream_request_headers(
        _request([("Host", "ignored.example")], target=Target("/x", "elsewhere:8080")),
        trusted=False,
        preserve_host=True,
        backend_authority="10.0.0.5:8080",
        request_id=RID,
    )
    assert out == [
        ("Host", "elsewhere:8080"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "elsewhere:8080"),
        ("Via", "1.1 prefork_lb"),
        ("X-Request-ID", RID),
    ]


def test_no_client_host_falls_back_to_backend() -> None:
    """A request without Host (HTTP/1.0) gets the backend's authority and no X-Forwarded-Host."""
    out = upstream_request_headers(
        _request([], version="1.0"),
        trusted=False,
        preserve_host=True,
        backend_authority="b:1",
        request_id=RID,
    )
    assert out == [
        ("Host", "b:1"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "http"),
        ("Via", "1.0 prefork_lb"),
        ("X-Request-ID", RID),
    ]


@pytest.mark.parametrize(
    ("received", "version", "expected"),
    [
        pytest.param([], "1.1", "1.1 prefork_lb", id="no-via"),
        pytest.param([], "1.0", "1.0 prefork_lb", id="http-1.0"),
        pytest.param([("Via", "1.1 edge")], "1.1", "1.1 edge, 1.1 prefork_lb", id="appended"),
        pytest.param(
            [("Via", "1.0 a"), ("via", "1.1 b, 1.1 c")],
            "1.0",
            "1.0 a, 1.1 b, 1.1 c, 1.0 prefork_lb",
            id="several-lines",
        ),
    ],
)
def test_via_appended(received: list[tuple[str, str]], version: str, expected: str) -> None:
    """The balancer appends itself to Via with the request's version, as one final line."""
    out = upstream_request_headers(
        _request([("Host", "h"), *received], version=version),
        trusted=False,
        preserve_host=True,
        backend_authority="b:1",
        request_id=RID,
    )
    assert [line for line in out if line[0].lower() == "via"] == [("Via", expected)]
    assert out[-2] == ("Via", expected)


@pytest.mark.parametrize(
    ("content_length", "chunked", "expected_length"),
    [
        pytest.param(5, False, [("Content-Length", "5")], id="length-from-request"),
        pytest.param(0, False, [("Content-Length", "0")], id="zero-length"),
        pytest.param(None, False, [], id="no-body"),
        pytest.param(None, True, [], id="chunked"),
    ],
)
def test_framing_fields_decided_by_balancer(
    content_length: int | None, chunked: bool, expected_length: list[tuple[str, str]]
) -> None:
    """Expect, Content-Length and Transfer-Encoding are not forwarded; the length is recomputed."""
    headers = [
        ("Host", "h"),
        ("Expect", "100-continue"),
        ("Content-Length", "999"),
        ("Transfer-Encoding", "chunked"),
        ("TE", "trailers"),
        ("X-Keep", "1"),
    ]
    out = upstream_request_headers(
        _request(headers, content_length=content_length, chunked=chunked),
        trusted=True,
        preserve_host=True,
        backend_authority="b:1",
        request_id=RID,
    )
    assert out == [
        ("Host", "h"),
        ("X-Keep", "1"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "h"),
        ("Via", "1.1 prefork_lb"),
        ("X-Request-ID", RID),
        *expected_length,
    ]


def test_repeated_fields_stay_separate() -> None:
    """Repeated fields stay separate lines in their original order."""
    headers = [
        ("Host", "h"),
        ("Cookie", "a=1"),
        ("X-Custom", "one"),
        ("Cookie", "b=2"),
        ("X-Custom", "two"),
    ]
    out = upstream_request_headers(
        _request(headers),
        trusted=False,
        preserve_host=True,
        backend_authority="b:1",
        request_id=RID,
    )
    assert out[:5] == [
        ("Host", "h"),
        ("Cookie", "a=1"),
        ("X-Custom", "one"),
        ("Cookie", "b=2"),
        ("X-Custom", "two"),
    ]


@pytest.mark.parametrize(
    ("preserve_host", "expected"),
    [pytest.param(True, "first.example", id="preserved"), pytest.param(False, "b:1", id="backend")],
)
def test_host_exactly_once(preserve_host: bool, expected: str) -> None:
    """However many Host lines arrive, exactly one goes upstream, and it comes first."""
    headers = [
        ("Host", "first.example"),
        ("X-A", "a"),
        ("host", "second.example"),
        ("HOST", "third"),
    ]
    out = upstream_request_headers(
        _request(headers),
        trusted=False,
        preserve_host=preserve_host,
        backend_authority="b:1",
        request_id=RID,
    )
    assert [line for line in out if line[0].lower() == "host"] == [("Host", expected)]
    assert out[0] == ("Host", expected)


def test_hop_by_hop_request_fields_dropped() -> None:
    """Hop-by-hop fields and the fields Connection names never reach the backend."""
    headers = [
        ("Host", "h"),
        ("Connection", "keep-alive, X-Hop"),
        ("Keep-Alive", "timeout=5"),
        ("X-Hop", "secret"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Upgrade", "websocket"),
        ("X-Keep", "1"),
    ]
    out = upstream_request_headers(
        _request(headers),
        trusted=False,
        preserve_host=True,
        backend_authority="b:1",
        request_id=RID,
    )
    assert [name for name, _ in out] == [
        "Host",
        "X-Keep",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "Via",
        "X-Request-ID",
    ]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([("X-Request-ID", "abc-123")], "abc-123", id="passed-on"),
        pytest.param([("x-request-id", "A" * 200)], "A" * 200, id="longest"),
        pytest.param([], None, id="absent"),
        pytest.param([("X-Request-ID", "")], None, id="empty"),
        pytest.param([("X-Request-ID", "A" * 201)], None, id="too-long"),
        pytest.param([("X-Request-ID", "a b")], None, id="space"),
        pytest.param([("X-Request-ID", "caf\xe9")], None, id="not-ascii"),
        pytest.param([("X-Request-ID", "a"), ("X-Request-ID", "b")], None, id="two-lines"),
    ],
)
def test_client_request_id(headers: list[tuple[str, str]], expected: str | None) -> None:
    """A client's X-Request-ID is passed on only if it is one short line of visible ASCII."""
    assert client_request_id(headers) == expected


def test_backend_gets_exactly_one_request_id() -> None:
    """Whatever X-Request-ID lines the client sent, the backend gets the one decided on."""
    headers = [("Host", "h"), ("X-Request-ID", "a"), ("X-Request-Id", "b")]
    out = upstream_request_headers(
        _request(headers), trusted=True, preserve_host=True, backend_authority="b:1", request_id=RID
    )
    assert [line for line in out if line[0].lower() == "x-request-id"] == [("X-Request-ID", RID)]


# --- response_head -----------------------------------------------------------------------------


def _head(
    headers: list[tuple[str, str]] | None = None,
    *,
    status: int = 200,
    reason: str = "OK",
    version: str = "1.1",
    chunked: bool = False,
) -> tuple[str, list[tuple[str, str]]]:
    return response_head(status, reason, headers or [], version=version, chunked=chunked)


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        pytest.param(200, "OK", "200 OK", id="200"),
        pytest.param(404, "Not Found", "404 Not Found", id="404"),
        pytest.param(299, "Quite Fine, Thanks", "299 Quite Fine, Thanks", id="custom-reason"),
        pytest.param(599, "Odd", "599 Odd", id="599"),
        pytest.param(200, "caf\xe9", "200 caf\xe9", id="obs-text-reason"),
    ],
)
def test_status_line(status: int, reason: str, expected: str) -> None:
    """The status line is the backend's status and reason, reason kept as sent."""
    line, _ = _head(status=status, reason=reason)
    assert line == expected


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(100, id="100"),
        pytest.param(101, id="101"),
        pytest.param(103, id="103"),
        pytest.param(199, id="199"),
        pytest.param(600, id="600"),
        pytest.param(99, id="99"),
        pytest.param(0, id="0"),
    ],
)
def test_non_final_status_rejected(status: int) -> None:
    """An interim or out-of-range status is not a response a client can be handed."""
    with pytest.raises(BadBackendResponse) as caught:
        _head(status=status)
    assert caught.value.status == HTTPStatus.BAD_GATEWAY


@pytest.mark.parametrize(
    "reason",
    [
        pytest.param("OK\r", id="cr"),
        pytest.param("OK\nX-Injected: 1", id="lf"),
        pytest.param("O\x00K", id="nul"),
        pytest.param("O\x1bK", id="escape"),
    ],
)
def test_reason_with_controls_rejected(reason: str) -> None:
    """A reason phrase with control characters is a bad backend response."""
    with pytest.raises(BadBackendResponse):
        _head(reason=reason)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("X Foo", id="space"),
        pytest.param("X:Foo", id="colon"),
        pytest.param("", id="empty"),
        pytest.param("X-Foo\r", id="cr"),
        pytest.param("X(Foo)", id="parens"),
        pytest.param("X-F\xf6o", id="non-ascii"),
    ],
)
def test_invalid_header_name_rejected(name: str) -> None:
    """A header name that is not a token is a bad backend response."""
    with pytest.raises(BadBackendResponse):
        _head([(name, "v")])


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("a\rb", id="cr"),
        pytest.param("a\nb", id="lf"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\x01b", id="soh"),
        pytest.param("a\x7fb", id="del"),
    ],
)
def test_header_value_with_controls_rejected(value: str) -> None:
    """A header value with CR, LF, NUL or another control character is a bad backend response."""
    with pytest.raises(BadBackendResponse):
        _head([("X-Foo", value)])


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("a\tb", id="tab"),
        pytest.param("caf\xe9", id="latin-1"),
        pytest.param("\x80\xff", id="obs-text-bounds"),
        pytest.param("", id="empty"),
        pytest.param(" spaced ", id="spaces"),
    ],
)
def test_header_value_allowed(value: str) -> None:
    """Tabs, spaces and obs-text are allowed in a header value and passed through unchanged."""
    _, out = _head([("X-Foo", value)])
    assert out == [("X-Foo", value), ("Via", "1.1 prefork_lb")]


@pytest.mark.parametrize(
    ("headers", "chunked"),
    [
        pytest.param(
            [("Content-Length", "5"), ("Content-Length", "6")], False, id="two-lines-differ"
        ),
        pytest.param([("Content-Length", "5, 6")], False, id="list-differs"),
        pytest.param([("Content-Length", "abc")], False, id="word"),
        pytest.param([("Content-Length", "-1")], False, id="negative"),
        pytest.param([("Content-Length", "5x")], False, id="trailing-junk"),
        pytest.param([("Content-Length", "")], False, id="empty"),
        pytest.param([("Content-Length", "5,")], False, id="trailing-comma"),
        pytest.param([("Content-Length", "+5")], False, id="plus-sign"),
        pytest.param([("Content-Length", "5")], True, id="with-chunked"),
        pytest.param(
            [("Content-Length", "5"), ("Transfer-Encoding", "chunked")], True, id="with-chunked-te"
        ),
    ],
)
def test_bad_content_length_rejected(headers: list[tuple[str, str]], chunked: bool) -> None:
    """A conflicting, non-numeric or chunked-framed Content-Length is a bad backend response."""
    with pytest.raises(BadBackendResponse):
        _head(headers, chunked=chunked)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("\xb2", id="superscript-two"),
        pytest.param("1\xb3", id="one-superscript-three"),
        pytest.param("\xb9", id="superscript-one"),
    ],
)
def test_superscript_content_length_rejected(value: str) -> None:
    """A Content-Length of superscript digits (obs-text, not DIGIT) is a bad backend response."""
    with pytest.raises(BadBackendResponse):
        _head([("Content-Length", value)])


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("Content-Length", "5"), ("Content-Length", "5")], id="two-lines"),
        pytest.param([("Content-Length", "5, 5")], id="list"),
        pytest.param([("content-length", " 5 "), ("CONTENT-LENGTH", "5,5")], id="mixed"),
    ],
)
def test_identical_content_lengths_collapse(headers: list[tuple[str, str]]) -> None:
    """Identical Content-Length values collapse into one line."""
    _, out = _head([("X-A", "a"), *headers])
    assert out == [("X-A", "a"), ("Content-Length", "5"), ("Via", "1.1 prefork_lb")]


def test_hop_by_hop_response_fields_stripped() -> None:
    """Hop-by-hop response fields and those Connection names are dropped; the rest keep order."""
    headers = [
        ("Content-Type", "text/plain"),
        ("Connection", "keep-alive, X-Internal"),
        ("Keep-Alive", "timeout=5"),
        ("X-Internal", "10.0.0.5"),
        ("Transfer-Encoding", "chunked"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("Proxy-Authenticate", "Basic"),
        ("X-Public", "1"),
    ]
    _, out = _head(headers, chunked=True)
    assert out == [("Content-Type", "text/plain"), ("X-Public", "1"), ("Via", "1.1 prefork_lb")]


def test_set_cookie_lines_kept_separately() -> None:
    """Several Set-Cookie lines are kept as separate lines in their order."""
    headers = [
        ("Set-Cookie", "a=1; Path=/"),
        ("Content-Type", "text/html"),
        ("Set-Cookie", "b=2, c=3; Expires=Wed, 21 Oct 2015 07:28:00 GMT"),
        ("set-cookie", "d=4"),
    ]
    _, out = _head(headers)
    assert out == [*headers, ("Via", "1.1 prefork_lb")]


@pytest.mark.parametrize(
    ("headers", "version", "expected"),
    [
        pytest.param([], "1.1", "1.1 prefork_lb", id="no-via"),
        pytest.param([("Via", "1.1 cache")], "1.1", "1.1 cache, 1.1 prefork_lb", id="appended"),
        pytest.param(
            [("Via", "1.1 a"), ("Via", "1.0 b")],
            "1.0",
            "1.1 a, 1.0 b, 1.0 prefork_lb",
            id="two-lines",
        ),
    ],
)
def test_response_via(headers: list[tuple[str, str]], version: str, expected: str) -> None:
    """The balancer appends itself to the response's Via, as one final line."""
    _, out = _head([("X-A", "a"), *headers], version=version)
    assert out == [("X-A", "a"), ("Via", expected)]


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([("Transfer-Encoding", "gzip, chunked")], id="gzip-chunked"),
        pytest.param([("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")], id="two"),
        pytest.param([("Transfer-Encoding", "xchunked"), ("Content-Length", "5")], id="unknown"),
        pytest.param([("Transfer-Encoding", "chunked, chunked")], id="chunked-twice"),
    ],
)
def test_response_transfer_codings_other_than_chunked_are_refused(
    lines: list[tuple[str, str]],
) -> None:
    """A response framed by anything but plain chunked is a bad response, not relayed."""
    with pytest.raises(BadBackendResponse, match="Transfer-Encoding"):
        _head(lines)


def test_response_plain_chunked_is_relayed_without_framing_headers() -> None:
    """A plain chunked response is fine; its Transfer-Encoding is not handed on."""
    status, out = _head([("Transfer-Encoding", "Chunked"), ("X-A", "1")], chunked=True)
    assert status == "200 OK"
    assert out == [("X-A", "1"), ("Via", "1.1 prefork_lb")]


@pytest.mark.parametrize(
    ("client", "networks", "trusted"),
    [
        pytest.param("10.1.2.3", ["10.0.0.0/8"], True, id="in-network"),
        pytest.param("192.0.2.1", ["10.0.0.0/8"], False, id="outside"),
        pytest.param("127.0.0.1", ["127.0.0.1/32", "::1/128"], True, id="exact"),
        pytest.param("::1", ["127.0.0.1/32", "::1/128"], True, id="ipv6"),
        pytest.param("10.1.2.3", [], False, id="nobody-trusted"),
        pytest.param("", ["0.0.0.0/0"], False, id="unix-socket-peer"),
        pytest.param("not-an-address", ["0.0.0.0/0"], False, id="garbage"),
    ],
)
def test_address_in(client: str, networks: list[str], trusted: bool) -> None:
    """Only a client address inside a configured network is a trusted proxy."""
    parsed = [ipaddress.ip_network(n) for n in networks]
    assert address_in(client, parsed) is trusted


def test_ipv4_mapped_peers_match_ipv4_networks() -> None:
    """A server bound to [::] sees ::ffff:10.0.0.1; it matches 10.0.0.0/8 like 10.0.0.1 does."""
    networks = [ipaddress.ip_network("10.0.0.0/8")]
    assert address_in("::ffff:10.0.0.1", networks)
    assert not address_in("::ffff:192.0.2.1", networks)
    cached = AddressSet(networks)
    assert "::ffff:10.0.0.1" in cached
    assert "::ffff:10.0.0.1" in cached
    assert "unix:/run/x.sock" not in cached


# --- protocol upgrades (tunnels) -----------------------------------------------------------------

WS = ("websocket",)


@pytest.mark.parametrize(
    ("headers", "version", "content_length", "expected"),
    [
        pytest.param(
            [("Connection", "Upgrade"), ("Upgrade", "websocket")],
            "1.1",
            None,
            "websocket",
            id="websocket",
        ),
        pytest.param(
            [("Connection", "keep-alive, upgrade"), ("Upgrade", "WebSocket")],
            "1.1",
            None,
            "WebSocket",
            id="spelling-kept",
        ),
        pytest.param(
            [("Connection", "upgrade"), ("Upgrade", "h2c, websocket/13")],
            "1.1",
            None,
            "websocket/13",
            id="only-allowed-tokens",
        ),
        pytest.param([("Connection", "upgrade"), ("Upgrade", "h2c")], "1.1", None, None, id="h2c"),
        pytest.param([("Upgrade", "websocket")], "1.1", None, None, id="no-connection-upgrade"),
        pytest.param(
            [("Connection", "upgrade"), ("Upgrade", "websocket")], "1.0", None, None, id="http-1.0"
        ),
        pytest.param(
            [("Connection", "upgrade"), ("Upgrade", "websocket")], "1.1", 5, None, id="with-body"
        ),
        pytest.param(
            [("Connection", "upgrade"), ("Upgrade", "websocket")],
            "1.1",
            0,
            "websocket",
            id="empty-body",
        ),
    ],
)
def test_upgrade_offer(
    headers: list[tuple[str, str]], version: str, content_length: int | None, expected: str | None
) -> None:
    """Only a bodiless HTTP/1.1 request with Connection: upgrade offers an allowed protocol."""
    request = _request(headers, version=version, content_length=content_length)
    assert upgrade_offer(request, WS) == expected


def test_upgrade_offer_with_no_protocols_allowed() -> None:
    """With upgrade_protocols empty no request is an upgrade."""
    request = _request([("Connection", "upgrade"), ("Upgrade", "websocket")])
    assert upgrade_offer(request, ()) is None


def test_upgrade_request_keeps_upgrade_and_connection() -> None:
    """An upgrade goes upstream with Connection: upgrade and the offer; other hop fields go."""
    headers = [
        ("Host", "h"),
        ("Connection", "Upgrade, X-Hop"),
        ("Upgrade", "h2c, websocket"),
        ("X-Hop", "secret"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
    out = upstream_request_headers(
        _request(headers),
        trusted=False,
        preserve_host=True,
        backend_authority="b:1",
        request_id=RID,
        upgrade="websocket",
    )
    assert [(name, value) for name, value in out if not name.startswith("X-")] == [
        ("Host", "h"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Via", "1.1 prefork_lb"),
        ("Connection", "upgrade"),
        ("Upgrade", "websocket"),
    ]
    assert "X-Hop" not in [name for name, _ in out]


SWITCHED = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ("Keep-Alive", "timeout=5"),
]


def test_switching_head_keeps_upgrade() -> None:
    """A 101 for the offered protocol keeps Upgrade and Connection: upgrade; other hop fields go."""
    status, out = switching_head(
        "Switching Protocols", SWITCHED, version="1.1", offered="websocket"
    )
    assert status == "101 Switching Protocols"
    assert out == [
        ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ("Connection", "upgrade"),
        ("Upgrade", "websocket"),
        ("Via", "1.1 prefork_lb"),
    ]


@pytest.mark.parametrize(
    ("headers", "offered"),
    [
        pytest.param([("Upgrade", "h2c"), ("Connection", "upgrade")], "websocket", id="other"),
        pytest.param([("Connection", "upgrade")], "websocket", id="no-upgrade"),
        pytest.param(
            [("Upgrade", "websocket"), ("Upgrade", "websocket"), ("Connection", "upgrade")],
            "websocket",
            id="two-upgrades",
        ),
        pytest.param([("Upgrade", "websocket")], "websocket", id="no-connection-upgrade"),
        pytest.param(
            [("Upgrade", "websocket"), ("Connection", "upgrade"), ("X-Bad", "a\x00b")],
            "websocket",
            id="control-character",
        ),
    ],
)
def test_switching_head_refused(headers: list[tuple[str, str]], offered: str) -> None:
    """A 101 to another protocol than offered, or with a bad field, is a bad response (502)."""
    with pytest.raises(BadBackendResponse):
        switching_head("Switching Protocols", headers, version="1.1", offered=offered)

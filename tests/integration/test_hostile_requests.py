"""Hostile requests: refused, or re-framed by the balancer; never forwarded as framed.

Each case is raw bytes from a real client to a real balancer in front of a
ScriptedBackend that records what arrives. Every case checks the answer, what
the backend got (nothing, a request framed by the balancer itself, or a
request cut off mid-body on a connection that is then dropped), and that the
next request, on a new connection, is served 200.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import RecordedRequest, ScriptedBackend
from tests.support.balancer import BalancerProcess
from tests.support.polling import wait_for
from tests.support.rawhttp import ConnectionClosed, RawConnection

CLIENT_TIMEOUT = 2  # seconds; the balancer's bound on a silent client mid-body
CHUNKED = b"5\r\nhello\r\n0\r\n\r\n"


def post(fields: bytes, body: bytes = b"", *, version: bytes = b"1.1") -> bytes:
    """A POST /x with ``fields`` (CRLF-terminated lines) after its Host line."""
    return b"POST /x HTTP/" + version + b"\r\nHost: a\r\n" + fields + b"\r\n" + body


def get(target: bytes, fields: bytes = b"Host: a\r\n", method: bytes = b"GET") -> bytes:
    """A bodiless request with exactly this target and these header lines."""
    return method + b" " + target + b" HTTP/1.1\r\n" + fields + b"\r\n"


def chunked(body: bytes) -> bytes:
    """A chunked POST /x whose body is ``body``, sent as is."""
    return post(b"Transfer-Encoding: chunked\r\n", body)


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[ScriptedBackend]:
    """A server the balancer is not configured for: it must never hear from it."""
    with ScriptedBackend("elsewhere") as server:
        yield server


@pytest.fixture(scope="module")
def balancer(echo_backend: ScriptedBackend) -> Iterator[BalancerProcess]:
    """Two workers in front of the shared backend, quick to give up on a silent client."""
    env = {"PREFORK_LB_CLIENT_TIMEOUT": str(CLIENT_TIMEOUT)}
    with BalancerProcess([echo_backend.url], workers=2, env=env) as lb:
        yield lb


@pytest.fixture
def backend(
    echo_backend: ScriptedBackend, balancer: BalancerProcess, elsewhere: ScriptedBackend
) -> ScriptedBackend:
    """The configured backend, its records cleared, behind a running balancer."""
    echo_backend.clear(routes=True)
    elsewhere.clear(routes=True)
    return echo_backend


def exchange(
    port: int, data: bytes, *, half_close: bool = False, method: str = "GET"
) -> tuple[int | None, RawConnection]:
    """Send ``data`` on a new connection; the status (None if closed without one) and the socket.

    With ``half_close`` the client shuts its sending side after ``data``: the
    balancer reads end-of-stream where it waits for more of the body.
    """
    conn = RawConnection(port, timeout=CLIENT_TIMEOUT + 8)
    conn.send(data)
    if half_close:
        conn.sock.shutdown(socket.SHUT_WR)
    try:
        return conn.read_response(method).status, conn
    except ConnectionClosed:
        return None, conn


def still_serving(port: int, backend: ScriptedBackend, count: int = 1) -> list[RecordedRequest]:
    """A normal request on a new connection is served 200; every request the backend got."""
    with RawConnection(port, timeout=10) as conn:
        assert conn.request("GET", "/after").status == 200
    seen = backend.wait_for_requests(count)
    assert "/after" in [r.target for r in seen]
    return seen


def assert_balancer_framed(seen: RecordedRequest, framing: str) -> None:
    """The body framing headers are the balancer's own, never the client's spelling of them."""
    expected = (["chunked"], []) if framing == "chunked" else ([], ["5"])
    assert (seen.header("Transfer-Encoding"), seen.header("Content-Length")) == expected


def te(value: bytes, body: bytes = CHUNKED, *, version: bytes = b"1.1") -> bytes:
    """A chunked POST whose line is ``Transfer-Encoding`` + ``value`` (colon included)."""
    return post(b"Transfer-Encoding" + value + b"\r\n", body, version=version)


def cl(value: bytes) -> bytes:
    """A POST with a five-byte body and this Content-Length line value."""
    return post(b"Content-Length: " + value + b"\r\n", b"hello")


def row(case: str, data: bytes, status: int, upstream: str = "none") -> object:
    """One case: the answer, and what the backend gets.

    ``upstream``: "none" = nothing; "cut" = a chunked head framed by the
    balancer, then the connection dropped before the body ends; "chunked" or
    "length" = the whole request, body b"hello", framed that way.
    """
    return pytest.param(data, status, upstream, id=case)


FRAMING = [
    # Conflicting or obfuscated Transfer-Encoding: gunicorn refuses the head.
    row("cl-then-te", post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", CHUNKED), 400),
    row("te-then-cl", te(b": chunked\r\nContent-Length: 5"), 400),
    row("te-chunked-twice", te(b": chunked, chunked"), 400),
    row("te-two-lines", te(b": chunked\r\nTransfer-Encoding: chunked"), 400),
    row("te-chunked-identity", te(b": chunked, identity"), 400),
    row("te-identity", te(b": identity\r\nContent-Length: 5", b"hello"), 400),
    row("te-identity-chunked", te(b": identity, chunked"), 501),
    row("te-xchunked", te(b": xchunked"), 501),
    row("te-space-before-colon", te(b" : chunked"), 400),
    row("te-vertical-tab", te(b":\x0bchunked"), 400),
    row("te-obs-fold-value", te(b":\r\n chunked"), 400),
    row("te-obs-fold-line", post(b"X-A: b\r\n Transfer-Encoding: chunked\r\n", CHUNKED), 400),
    row("te-http10", te(b": chunked", version=b"1.0"), 400),
    # Legal spellings of chunked: the backend gets the balancer's own "chunked".
    row("te-Chunked", te(b": Chunked"), 200, "chunked"),
    row("te-tabs-around", te(b":\t chunked\t"), 200, "chunked"),
    # Content-Length: anything but one plain decimal number is refused.
    row("cl-list-same", cl(b"5, 5"), 400),
    row("cl-list-differ", cl(b"5,6"), 400),
    row("cl-duplicate", cl(b"5\r\nContent-Length: 5"), 400),
    row("cl-plus", cl(b"+5"), 400),
    row("cl-minus", cl(b"-5"), 400),
    row("cl-hex", cl(b"0x5"), 400),
    row("cl-trailing-junk", cl(b"5x"), 400),
    row("cl-leading-junk", cl(b"x5"), 400),
    row("cl-inner-space", cl(b"5 5"), 400),
    row("cl-empty", cl(b""), 400),
    row("cl-superscript-two", cl(b"\xb2"), 400),
    row("cl-huge", cl(b"99999999999999999999999"), 400),
    row("cl-5000-digits", cl(b"9" * 5000), 400),
    row("cl-leading-zeros", cl(b"0005"), 200, "length"),
    row("cl-whitespace", cl(b" 5 \t"), 200, "length"),
    # A broken chunked body: the head already went upstream, the body never completes.
    row("chunk-size-overflow", chunked(b"ffffffffffffffffffff\r\nhello"), 400, "cut"),
    row("chunk-size-junk", chunked(b"5x\r\nhello\r\n0\r\n\r\n"), 400, "cut"),
    row("chunk-size-negative", chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400, "cut"),
    row("chunk-size-hex-prefix", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, "cut"),
    row("chunk-size-empty", chunked(b"\r\nhello\r\n0\r\n\r\n"), 400, "cut"),
    row("chunk-data-without-crlf", chunked(b"5\r\nhelloXX0\r\n\r\n"), 400, "cut"),
    row("last-chunk-without-final-crlf", chunked(b"5\r\nhello\r\n0\r\n"), 400, "cut"),
    row("chunk-ext-control", chunked(b"5;a\x01b\r\nhello\r\n0\r\n\r\n"), 400, "cut"),
    row("chunk-ext-open-quote", chunked(b'5;a="b\r\nhello\r\n0\r\n\r\n'), 400, "cut"),
    row("chunk-bare-lf", chunked(b"5\nhello\n0\n\n"), 400, "cut"),
    row("trailer-content-length", chunked(CHUNKED[:-2] + b"Content-Length: 5\r\n\r\n"), 400, "cut"),
    row("chunk-ext-valid", chunked(b"5;name=value\r\nhello\r\n0\r\n\r\n"), 200, "chunked"),
]


@pytest.mark.parametrize(("data", "status", "upstream"), FRAMING)
def test_framing_is_refused_or_reframed(
    data: bytes, status: int, upstream: str, backend: ScriptedBackend, balancer: BalancerProcess
) -> None:
    """Odd framing is refused, or the backend gets a request framed by the balancer itself."""
    # The client then stops sending: end-of-stream is where a parser waiting for more stops.
    status_seen, conn = exchange(balancer.port, data, half_close=upstream == "cut")
    with conn:
        assert status_seen == status
        if upstream == "cut":
            assert conn.is_closed_by_peer(5)
    seen = still_serving(balancer.port, backend, 1 if upstream == "none" else 2)
    sent = [r for r in seen if r.target == "/x"]
    if upstream == "none":
        assert sent == []
        return
    assert len(sent) == 1
    if upstream == "cut":
        # Recorded incomplete and without a framing error: the backend read end-of-stream.
        assert (sent[0].complete, backend.errors) == (False, [])
        assert_balancer_framed(sent[0], "chunked")
    else:
        assert (sent[0].body, sent[0].complete) == (b"hello", True)
        assert_balancer_framed(sent[0], upstream)


def test_bare_lf_in_chunk_size_line_times_out(
    backend: ScriptedBackend, balancer: BalancerProcess
) -> None:
    """A chunk-size line ended by a bare LF is never taken as ended: 408 after client_timeout."""
    status_seen, conn = exchange(balancer.port, chunked(b"5\r\nhello\r\n3\nabc\n0\n\n"))
    with conn:
        assert status_seen == 408
    seen = still_serving(balancer.port, backend, 2)
    sent = [r for r in seen if r.target == "/x"]
    assert [r.complete for r in sent] == [False]
    assert_balancer_framed(sent[0], "chunked")


def test_pipelined_request_after_a_broken_chunk_is_never_served(
    backend: ScriptedBackend, balancer: BalancerProcess
) -> None:
    """After a malformed chunk the client connection closes: the bytes behind it are no request."""
    smuggled = get(b"/smuggled")
    status_seen, conn = exchange(balancer.port, chunked(b"5\r\nhello\r\nzz\r\n\r\n") + smuggled)
    with conn:
        assert status_seen == 400
        assert conn.is_closed_by_peer(5)
    seen = still_serving(balancer.port, backend, 2)
    assert sorted(r.target for r in seen) == ["/after", "/x"]


BIG = 200_000  # above the 64 KiB a balancer holds whole before choosing a backend
ANOMALIES = {
    # name: (framing line, body sent, status or None if the client just hangs up, reached backend)
    "client-aborts-chunked-body": (
        b"Transfer-Encoding: chunked",
        b"400\r\n" + b"c" * 99,
        None,
        True,
    ),
    "client-aborts-big-length-body": (b"Content-Length: %d" % BIG, b"c" * 100_000, None, True),
    "malformed-chunk-size": (b"Transfer-Encoding: chunked", b"5\r\nhello\r\nzz\r\n", 400, True),
    "client-goes-silent": (b"Content-Length: %d" % BIG, b"c" * 100_000, 408, True),
    "client-aborts-small-length-body": (b"Content-Length: 1000", b"c" * 100, None, False),
}


@pytest.mark.parametrize("anomaly", list(ANOMALIES))
def test_backend_connection_is_reused_only_after_a_clean_exchange(
    anomaly: str, three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """Clean exchanges share one backend connection; one cut mid-request is never reused."""
    target = three_backends[0]
    lb = start_balancer([target.url], workers=1, env={"PREFORK_LB_CLIENT_TIMEOUT": "1"})
    with RawConnection(lb.port) as conn:
        assert conn.request("POST", "/clean", body=b"hello").status == 200
        assert conn.request("POST", "/clean", body=[b"hel", b"lo"], chunked=True).status == 200
    assert still_serving(lb.port, target, 3)[-1].connection_id == 1
    framing, body, status, reaches_backend = ANOMALIES[anomaly]
    with RawConnection(lb.port, timeout=10) as conn:
        conn.send(b"POST /anomaly HTTP/1.1\r\nHost: a\r\n" + framing + b"\r\n\r\n" + body)
        if status is not None:
            assert conn.read_response().status == status
    if reaches_backend:
        cut = target.wait_for_requests(4)[3]
        assert (cut.target, cut.connection_id, cut.complete) == ("/anomaly", 1, False)
        wait_for(lambda: target.open_connections == 0, "the cut connection is dropped")
    before = len(target.requests)
    still_serving(lb.port, target, before + 1)
    after = still_serving(lb.port, target, before + 2)[before:]
    assert [r.target for r in after] == ["/after", "/after"]
    # A connection nothing was sent on is still clean, and is reused.
    assert [r.connection_id for r in after] == ([2, 2] if reaches_backend else [1, 1])
    assert target.connections_accepted == (2 if reaches_backend else 1)
    assert [r.target for r in target.requests].count("/anomaly") == int(reaches_backend)


HEADERS = [
    pytest.param(b"GET / HTTP/1.1\nHost: a\n\n", id="bare-lf-line-endings"),
    pytest.param(get(b"/", b"Host: a\nX-A: b\r\n"), id="bare-lf-after-host"),
    pytest.param(get(b"/", b"Host: a\r\nX-A: a\rb\r\n"), id="cr-in-value"),
    pytest.param(get(b"/", b"Host: a\r\nX-A: a\nX-Injected: 1\r\n"), id="lf-in-value"),
    pytest.param(get(b"/", b"Host: a\r\nX-A: a\x00b\r\n"), id="nul-in-value"),
    pytest.param(get(b"/", b"Host: a\r\nX-A: a\x7fb\r\n"), id="del-in-value"),
    pytest.param(get(b"/", b"Host: a\r\nX Forwarded For: 1.2.3.4\r\n"), id="spaces-in-name"),
    pytest.param(get(b"/", b"Host: a\r\nX-A : b\r\n"), id="space-before-colon"),
    pytest.param(get(b"/", b"Host: a\r\nX(A): b\r\n"), id="non-token-name"),
    pytest.param(get(b"/", b"Host: a\r\n: b\r\n"), id="empty-name"),
    pytest.param(get(b"/", b"Host: a\r\nHost: b\r\n"), id="duplicate-host"),
    pytest.param(get(b"/", b"Host: host:abc\r\n"), id="host-port-letters"),
    pytest.param(get(b"/", b"Host: host:99999\r\n"), id="host-port-99999"),
    pytest.param(get(b"/", b"Host: host:65536\r\n"), id="host-port-65536"),
    pytest.param(get(b"/", b"Host: host:\r\n"), id="host-empty-port"),
    pytest.param(get(b"http://host:99999/"), id="absolute-form-port-99999"),
    pytest.param(get(b"http://u@127.0.0.1/"), id="absolute-form-userinfo"),
    pytest.param(get(b"ftp://127.0.0.1/"), id="absolute-form-ftp"),
    pytest.param(get(b"*"), id="asterisk-get"),
    pytest.param(get(b"*", method=b"POST"), id="asterisk-post"),
    pytest.param(get(b"127.0.0.1:80"), id="authority-form-get"),
    pytest.param(get(b"/a\x00b"), id="raw-nul-in-target"),
    pytest.param(get(b"/a\tb"), id="raw-tab-in-target"),
    pytest.param(get(b"/a b"), id="raw-space-in-target"),
    pytest.param(get(b"/caf\xe9"), id="raw-latin-1-in-target"),
]


@pytest.mark.parametrize("data", HEADERS)
def test_malformed_head_is_400_and_never_forwarded(
    data: bytes, backend: ScriptedBackend, balancer: BalancerProcess, elsewhere: ScriptedBackend
) -> None:
    """Control characters, bad names, a bad or doubled Host, or a bad target: 400, nothing sent."""
    status_seen, conn = exchange(balancer.port, data)
    with conn:
        assert status_seen == 400
    assert [r.target for r in still_serving(balancer.port, backend)] == ["/after"]
    assert elsewhere.connections_accepted == 0


def test_underscored_names_are_dropped_not_merged(
    backend: ScriptedBackend, balancer: BalancerProcess
) -> None:
    """X_Forwarded_For and the like are dropped: never forwarded, never read as dashed names."""
    underscored = b"X_Forwarded_For: 1.2.3.4\r\nX-Forwarded_Host: evil\r\n"
    framing = b"Transfer_Encoding: chunked\r\nContent_Length: 5\r\n"
    status_seen, conn = exchange(balancer.port, get(b"/u", b"Host: a\r\n" + underscored + framing))
    with conn:
        assert status_seen == 200
    sent = next(r for r in still_serving(balancer.port, backend, 2) if r.target == "/u")
    assert [name for name, _ in sent.headers if "_" in name] == []
    assert sent.header("X-Forwarded-For") == ["127.0.0.1"]
    assert sent.header("X-Forwarded-Host") == ["a"]
    assert (sent.framing, sent.header("Transfer-Encoding"), sent.header("Content-Length")) == (
        "none",
        [],
        [],
    )


@pytest.mark.parametrize(
    ("request_line", "target"),
    [
        pytest.param("GET http://{authority}/steal?x=1", "/steal?x=1", id="absolute-form"),
        pytest.param("GET https://{authority}/steal", "/steal", id="absolute-form-https"),
        pytest.param("GET //{authority}/steal", "//{authority}/steal", id="double-slash-authority"),
        pytest.param("OPTIONS *", "*", id="options-asterisk"),
    ],
)
def test_targets_naming_another_host_go_only_to_the_backend(
    request_line: str,
    target: str,
    backend: ScriptedBackend,
    balancer: BalancerProcess,
    elsewhere: ScriptedBackend,
) -> None:
    """A target naming another server is served by the backend; that server hears nothing."""
    authority = f"127.0.0.1:{elsewhere.port}"
    line = request_line.format(authority=authority)
    method = line.split()[0]
    status_seen, conn = exchange(
        balancer.port, f"{line} HTTP/1.1\r\nHost: a\r\n\r\n".encode(), method=method
    )
    with conn:
        assert status_seen == 200
    sent = next(r for r in still_serving(balancer.port, backend, 2) if r.target != "/after")
    assert (sent.method, sent.target) == (method, target.format(authority=authority))
    expected_host = authority if "://" in line else "a"
    assert sent.header("Host") == [expected_host]
    assert elsewhere.connections_accepted == 0


def test_connect_is_405_and_opens_no_tunnel(
    backend: ScriptedBackend, balancer: BalancerProcess, elsewhere: ScriptedBackend
) -> None:
    """CONNECT to another server is 405; neither it nor the backend hears anything."""
    authority = f"127.0.0.1:{elsewhere.port}".encode()
    status_seen, conn = exchange(
        balancer.port, get(authority, b"Host: " + authority + b"\r\n", b"CONNECT")
    )
    with conn:
        assert status_seen == 405
        # Whatever follows a CONNECT is tunnel data, never a next request.
        assert conn.is_closed_by_peer(5)
    assert [r.target for r in still_serving(balancer.port, backend)] == ["/after"]
    assert elsewhere.connections_accepted == 0


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/../../etc/passwd", id="dot-dot-above-root"),
        pytest.param("/%2e%2e/%2e%2e/etc/passwd", id="encoded-dot-dot"),
        pytest.param("/%2E%2E%2F%2E%2E%2Fetc", id="encoded-dot-dot-slash-upper"),
        pytest.param("/.%2e/x", id="half-encoded-dot-dot"),
        pytest.param("/a%00b", id="encoded-nul"),
        pytest.param("/a%2F..%2Fb", id="encoded-slash-with-dots"),
        pytest.param("///x", id="triple-slash"),
    ],
)
def test_odd_paths_are_forwarded_byte_for_byte(
    target: str, backend: ScriptedBackend, balancer: BalancerProcess
) -> None:
    """Dot segments and escapes, %00 included, reach the backend exactly as sent."""
    status_seen, conn = exchange(balancer.port, get(target.encode()))
    with conn:
        assert status_seen == 200
    seen = still_serving(balancer.port, backend, 2)
    assert [r.target for r in seen if r.target != "/after"] == [target]

"""Faithful forwarding: everything the seven-line snippet drops arrives as it was sent."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import socket
import threading
import time

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import (
    RecordedRequest,
    Responder,
    ScriptedBackend,
    big_body,
    fixed,
    pattern_bytes,
    raw,
    slow_chunks,
    truncated,
)
from tests.support.balancer import BalancerProcess
from tests.support.client import fetch, send
from tests.support.procfs import rss_kib
from tests.support.rawhttp import RawConnection, send_raw

HOST = [("Host", "app.example")]


# -- request line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [
        *["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"],
        *["get", "M", "MKCALENDAR", "X-CUSTOM_METHOD.v2", "A" * 22, "X#Y"],
    ],
)
def test_method_reaches_backend(
    method: str, backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """Any method token, including PATCH, OPTIONS and custom ones, reaches the backend as sent."""
    reply = send(echo_balancer.port, method, "/m", HOST, body=b"x" if method != "GET" else None)
    assert reply.status == 200
    assert backend.wait_for_requests(1)[0].method == method


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/a%2Fb", id="encoded-slash-upper"),
        pytest.param("/a%2fb", id="encoded-slash-lower"),
        pytest.param("/sp%20ace+plus", id="space-and-plus"),
        pytest.param("/q?x=1&x=2&y=&z", id="repeated-keys"),
        pytest.param("/caf%C3%A9?q=%E2%9C%93", id="non-ascii-escapes"),
        pytest.param("/..%2f..%2fetc/passwd", id="encoded-dot-dot"),
        pytest.param("//double//slash/", id="double-slash"),
        pytest.param("/a/./b/../c", id="dot-segments"),
        pytest.param("/pct%zz?bad=%", id="invalid-escapes"),
        pytest.param("/?", id="empty-query"),
        pytest.param("/semi;param=1,comma", id="semicolon"),
    ],
)
def test_raw_target_forwarded_byte_for_byte(
    target: str, backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """The request-target, query string included, reaches the backend byte for byte."""
    assert send(echo_balancer.port, "GET", target, HOST).status == 200
    assert backend.wait_for_requests(1)[0].target == target


def test_absolute_form_target_goes_to_configured_backend(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """An absolute-form target is sent to the configured backend, its authority as Host."""
    with RawConnection(echo_balancer.port) as conn:
        conn.send(b"GET http://elsewhere.invalid/x?y=1 HTTP/1.1\r\nHost: other.invalid\r\n\r\n")
        assert conn.read_response().status == 200
    seen = backend.wait_for_requests(1)[0]
    assert seen.target == "/x?y=1"
    assert seen.header("Host") == ["elsewhere.invalid"]


def test_options_on_pathless_absolute_uri_becomes_asterisk(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """OPTIONS http://host with no path reaches the backend as OPTIONS *."""
    with RawConnection(echo_balancer.port) as conn:
        conn.send(b"OPTIONS http://abs.example HTTP/1.1\r\nHost: abs.example\r\n\r\n")
        assert conn.read_response("OPTIONS").status == 200
    assert backend.wait_for_requests(1)[0].target == "*"


@pytest.mark.parametrize(
    "request_head",
    [
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="http11-without-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", id="host-with-space"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: evil/../x\r\n\r\n", id="host-with-slash"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: u@evil\r\n\r\n", id="host-with-userinfo"),
    ],
)
def test_missing_or_malformed_host_is_400(
    request_head: bytes, backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """An HTTP/1.1 request without Host, or with a Host that is not host[:port], gets 400."""
    with RawConnection(echo_balancer.port) as conn:
        conn.send(request_head)
        assert conn.read_response().status == 400
    time.sleep(0.2)
    assert backend.requests == []


def test_transfer_coding_other_than_chunked_is_501(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """A request body coded gzip, chunked is refused with 501, never re-framed as plain chunked."""
    with RawConnection(echo_balancer.port) as conn:
        conn.send(
            b"POST /gz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        assert conn.read_response().status == 501
    time.sleep(0.2)
    assert backend.requests == []


def test_connect_is_refused(backend: ScriptedBackend, echo_balancer: BalancerProcess) -> None:
    """CONNECT is answered 405 and nothing reaches any backend."""
    with RawConnection(echo_balancer.port) as conn:
        conn.send(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
        assert conn.read_response().status == 405
    time.sleep(0.2)
    assert backend.requests == []


# -- request headers ----------------------------------------------------------------------


def test_repeated_request_headers_stay_separate_and_ordered(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """Repeated request fields arrive as separate lines, in the order the client sent them."""
    lines = [*HOST, ("X-Dup", "one"), ("Cookie", "a=1"), ("X-Dup", "two, three"), ("Cookie", "b=2")]
    assert send(echo_balancer.port, "GET", "/h", lines).status == 200
    seen = backend.wait_for_requests(1)[0]
    assert seen.header("X-Dup") == ["one", "two, three"]
    assert seen.header("Cookie") == ["a=1", "b=2"]


def test_client_host_is_forwarded_once(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """The client's Host header reaches the backend unchanged, exactly once."""
    send(echo_balancer.port, "GET", "/", [("Host", "shop.example:8443")])
    assert backend.wait_for_requests(1)[0].header("Host") == ["shop.example:8443"]


def test_backend_host_when_preserve_host_is_off(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """With preserve_host off, the backend gets its own host:port as Host."""
    target = three_backends[0]
    lb = start_balancer([target.url], env={"PREFORK_LB_PRESERVE_HOST": "false"})
    send(lb.port, "GET", "/", [("Host", "shop.example")])
    seen = target.wait_for_requests(1)[0]
    assert seen.header("Host") == [f"127.0.0.1:{target.port}"]
    assert seen.header("X-Forwarded-Host") == ["shop.example"]


def test_nothing_is_invented(backend: ScriptedBackend, echo_balancer: BalancerProcess) -> None:
    """No User-Agent or Accept-Encoding is added to a request that carried none."""
    send(echo_balancer.port, "GET", "/", HOST)
    seen = backend.wait_for_requests(1)[0]
    assert seen.header("User-Agent") == []
    assert seen.header("Accept-Encoding") == []


def test_hop_by_hop_request_fields_are_stripped(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """Hop-by-hop request fields, and every field Connection names, never reach the backend."""
    lines = [
        *HOST,
        ("Connection", "keep-alive, X-Hop-Secret"),
        ("X-Hop-Secret", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Proxy-Authorization", "Basic c2VjcmV0"),
        ("X-Kept", "yes"),
    ]
    assert send(echo_balancer.port, "GET", "/hop", lines).status == 200
    seen = backend.wait_for_requests(1)[0]
    names = {name.lower() for name, _ in seen.headers}
    for dropped in (
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "proxy-authorization",
    ):
        assert dropped not in names
    assert seen.header("Connection") in ([], ["keep-alive"])
    assert seen.header("X-Kept") == ["yes"]


def test_forwarded_headers_from_a_client_are_replaced(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """X-Forwarded-* from an untrusted client are replaced; Via is added both ways."""
    lines = [
        *HOST,
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("Forwarded", "for=6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
    ]
    reply = send(echo_balancer.port, "GET", "/fwd", lines)
    seen = backend.wait_for_requests(1)[0]
    assert seen.header("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.header("X-Forwarded-Proto") == ["http"]
    assert seen.header("X-Forwarded-Host") == ["app.example"]
    assert seen.header("Forwarded") == []
    assert seen.header("X-Real-IP") == []
    assert seen.header("Via") == ["1.1 prefork_lb"]
    assert reply.header("Via") == ["1.1 prefork_lb"]


def test_forwarded_headers_from_a_trusted_proxy_are_extended(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """From a trusted proxy, X-Forwarded-For is extended and its proto and host are kept."""
    target = three_backends[0]
    lb = start_balancer([target.url], env={"PREFORK_LB_TRUSTED_PROXIES": "127.0.0.0/8"})
    lines = [
        *HOST,
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "public.example"),
    ]
    send(lb.port, "GET", "/", lines)
    seen = target.wait_for_requests(1)[0]
    assert seen.header("X-Forwarded-For") == ["6.6.6.6, 127.0.0.1"]
    assert seen.header("X-Forwarded-Proto") == ["https"]
    assert seen.header("X-Forwarded-Host") == ["public.example"]


# -- request bodies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        pytest.param([("X-Request-ID", "req-42")], True, id="passed-on"),
        pytest.param([], False, id="generated"),
        pytest.param([("X-Request-ID", "bad id")], False, id="invalid-replaced"),
        pytest.param([("X-Request-ID", "a"), ("X-Request-ID", "b")], False, id="two-replaced"),
    ],
)
def test_backend_gets_one_request_id_that_the_log_shows(
    sent: list[tuple[str, str]],
    kept: bool,
    backend: ScriptedBackend,
    echo_balancer: BalancerProcess,
) -> None:
    """The backend gets one X-Request-ID, the client's if fit, else a new one; the log has it."""
    target = f"/rid-{len(sent)}-{kept}"
    reply = send(echo_balancer.port, "GET", target, HOST + sent)
    assert reply.status == 200
    ids = backend.wait_for_requests(1)[0].header("X-Request-ID")
    assert len(ids) == 1
    if kept:
        assert ids == [sent[0][1]]
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", ids[0])
    echo_balancer.wait_for_log(rf'"GET {target} HTTP/1.1" 200 .* id={re.escape(ids[0])}')


def test_balancer_errors_carry_the_request_id(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """A 502 the balancer writes itself names the request id, to quote to whoever runs it."""
    backend.route("/rid-broken", raw(b"garbage\r\n\r\n"))
    reply = send(echo_balancer.port, "GET", "/rid-broken", [*HOST, ("X-Request-ID", "rid-502")])
    assert reply.status == 502
    assert reply.header("X-Request-ID") == ["rid-502"]


def test_content_length_body_arrives_exactly(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """A Content-Length body arrives whole, with the same length, framed by length."""
    body = os.urandom(300_000)
    assert send(echo_balancer.port, "POST", "/up", HOST, body=body).status == 200
    seen = backend.wait_for_requests(1)[0]
    assert (seen.framing, seen.body, seen.complete) == ("length", body, True)
    assert seen.header("Content-Length") == [str(len(body))]


def test_chunked_body_arrives_exactly(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """A chunked body arrives whole and chunked, without a Content-Length."""
    pieces = [os.urandom(n) for n in (1, 1000, 70_000, 5)]
    assert send(echo_balancer.port, "POST", "/up", HOST, body=pieces).status == 200
    seen = backend.wait_for_requests(1)[0]
    assert (seen.framing, seen.body, seen.complete) == ("chunked", b"".join(pieces), True)
    assert seen.header("Content-Length") == []


def test_request_body_is_streamed_not_buffered(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """The backend starts receiving a body before the client has finished sending it."""
    first_part_seen = threading.Event()
    part = 256 * 1024

    def handler(request: RecordedRequest, responder: Responder) -> None:
        while len(request.body) < 64 * 1024:
            if not responder.read_body(64 * 1024):
                return
        first_part_seen.set()
        for _ in responder.body_reader():
            pass
        responder.respond(200, "OK", [], str(len(request.body)).encode())

    backend.route("/stream-up", handler, read_body=False)
    with RawConnection(echo_balancer.port, timeout=20) as conn:
        conn.send(b"POST /stream-up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (2 * part))
        conn.send(b"a" * part)
        # If the balancer buffered the whole body, this would never happen.
        assert first_part_seen.wait(10)
        conn.send(b"b" * part)
        reply = conn.read_response()
    assert (reply.status, reply.body) == (200, str(2 * part).encode())


def test_expect_continue_is_answered_and_not_forwarded(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """Expect: 100-continue gets its 100 from the balancer and never reaches the backend."""
    with RawConnection(echo_balancer.port) as conn:
        conn.send(
            b"PUT /exp HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
        )
        interim = conn.read_head(skip_interim=False)
        assert interim.status == 100
        conn.send(b"data")
        assert conn.read_response().status == 200
    seen = backend.wait_for_requests(1)[0]
    assert seen.header("Expect") == []
    assert seen.body == b"data"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_client_hanging_up_mid_upload_never_completes_upstream(
    chunked: bool, backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """A client that hangs up mid-upload never produces a complete-looking request upstream."""
    upload_started = threading.Event()
    upload_ended = threading.Event()  # the balancer closed the backend's connection

    def handler(request: RecordedRequest, responder: Responder) -> None:
        while responder.read_body(64 * 1024):
            upload_started.set()
        upload_ended.set()
        if responder.body_done():
            responder.respond(200, "OK", [], b"complete")

    path = f"/cut-{int(chunked)}"
    backend.route(path, handler, read_body=False)
    with socket.create_connection(("127.0.0.1", echo_balancer.port), timeout=10) as sock:
        if chunked:
            head = f"POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            sock.sendall(head.encode() + b"%x\r\n%s\r\n" % (200_000, b"c" * 200_000))
            sock.sendall(b"186a0\r\n" + b"d" * 500)
        else:
            head = f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n"
            sock.sendall(head.encode() + b"c" * 300_000)
        assert upload_started.wait(10)
    assert upload_ended.wait(10)
    seen = backend.wait_for_requests(1)
    assert len(seen) == 1
    assert not seen[0].complete
    assert len(seen[0].body) < (200_500 if chunked else 1_000_000)


# -- responses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [(200, "OK"), (201, "Created"), (299, "Custom Reason Here"), (404, "Not Found"), (503, "Busy")],
)
def test_status_and_reason_pass_through(
    status: int, reason: str, backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """The backend's status code and reason phrase reach the client unchanged."""
    backend.route(f"/status-{status}", fixed(status, reason, [], b"body"))
    reply = fetch(echo_balancer.port, f"/status-{status}")
    assert (reply.status, reply.reason, reply.body) == (status, reason, b"body")


def test_empty_reason_phrase_keeps_its_space(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """A status line with an empty reason reaches the client as 'HTTP/1.1 200 ' (RFC 9112 4)."""
    backend.route("/no-reason", raw(b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok", False))
    data = send_raw(
        echo_balancer.port, b"GET /no-reason HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 200 \r\n")
    assert data.endswith(b"\r\n\r\nok")


def test_non_ascii_header_bytes_pass_unchanged(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """Header values with bytes above 0x7f go through byte for byte, in both directions."""
    backend.route(
        "/obs", raw(b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\nContent-Length: 0\r\n\r\n", False)
    )
    with RawConnection(echo_balancer.port) as conn:
        conn.send(b"GET /obs HTTP/1.1\r\nHost: a\r\nX-In: caf\xc3\xa9\r\n\r\n")
        reply = conn.read_response()
    assert reply.header("X-Name") == ["caf\xe9"]
    assert backend.wait_for_requests(1)[0].header("X-In") == ["caf\xc3\xa9"]


@pytest.mark.parametrize("interim", [b"103 Early Hints\r\nLink: </s.css>", b"102 Processing"])
def test_interim_responses_are_skipped(
    interim: bytes, backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """Interim 1xx responses before the final one are skipped; the final answer is relayed."""
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
    backend.route("/hints", raw(b"HTTP/1.1 " + interim + b"\r\n\r\n" + final, then_close=False))
    reply = fetch(echo_balancer.port, "/hints")
    assert (reply.status, reply.body) == (200, b"final")


def test_set_cookie_lines_stay_separate(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """Several Set-Cookie lines reach the client as separate lines, in order."""
    cookies = ["a=1; Path=/", "b=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT", "c=3"]
    backend.route("/cookies", fixed(200, "OK", [("Set-Cookie", c) for c in cookies], b""))
    assert fetch(echo_balancer.port, "/cookies").header("Set-Cookie") == cookies


def test_binary_and_gzip_bodies_pass_untouched(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """A gzip body with Content-Encoding arrives byte for byte, neither decoded nor re-encoded."""
    compressed = gzip.compress(os.urandom(50_000) + b"\x00\xff" * 1000)
    headers = [("Content-Encoding", "gzip"), ("Content-Type", "application/octet-stream")]
    backend.route("/gz", fixed(200, "OK", headers, compressed))
    reply = send(echo_balancer.port, "GET", "/gz", [*HOST, ("Accept-Encoding", "gzip")])
    assert reply.body == compressed
    assert reply.header("Content-Encoding") == ["gzip"]
    assert backend.wait_for_requests(1)[0].header("Accept-Encoding") == ["gzip"]


@pytest.mark.parametrize(
    ("method", "status", "reason"),
    [("HEAD", 200, "OK"), ("GET", 204, "No Content"), ("GET", 304, "Not Modified")],
)
def test_bodiless_responses_have_no_body(
    method: str, status: int, reason: str, backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """HEAD, 204 and 304 answers carry no body, and the connection stays usable."""
    length = [("Content-Length", "1234")] if status != 204 else []
    head = f'HTTP/1.1 {status} {reason}\r\nETag: "v1"\r\n'.encode()
    head += b"".join(f"{k}: {v}\r\n".encode() for k, v in length) + b"\r\n"
    backend.route(f"/bodiless-{status}", raw(head, then_close=False))
    with RawConnection(echo_balancer.port) as conn:
        reply = conn.request(method, f"/bodiless-{status}", headers=HOST)
        assert (reply.status, reply.body) == (status, b"")
        assert reply.header("ETag") == ['"v1"']
        if status != 204:
            assert reply.header("Content-Length") == ["1234"]
        assert conn.request("GET", "/after", headers=HOST).status == 200


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_status_announcing_chunked_does_not_hang(
    status: int, backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """A 204 or 304 that announces chunked framing ends with its head; the connection carries on."""
    head = b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n" % status
    backend.route(f"/chunked-{status}", raw(head, then_close=False))
    with RawConnection(echo_balancer.port, timeout=5) as conn:
        reply = conn.request("GET", f"/chunked-{status}", headers=HOST)
        assert (reply.status, reply.body, reply.complete) == (status, b"", True)
        assert conn.request("GET", "/after", headers=HOST).status == 200


def test_upstream_connections_are_kept_alive(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """Sequential requests through one worker reuse one backend connection."""
    target = three_backends[0]
    lb = start_balancer([target.url], workers=1)
    for _ in range(10):
        assert fetch(lb.port).status == 200
    for method in ("HEAD", "GET"):
        assert fetch(lb.port, method=method).status == 200
    assert target.connections_accepted == 1


def test_hop_by_hop_response_fields_are_stripped(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """Hop-by-hop response fields, and every field Connection names, never reach the client."""
    headers = [
        ("Connection", "X-Hop-Resp"),
        ("X-Hop-Resp", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-Checksum"),
        ("Proxy-Authenticate", "Basic realm=x"),
        ("Upgrade", "h2c"),
        ("X-Kept", "yes"),
    ]
    backend.route("/hop-resp", fixed(200, "OK", headers, b"ok"))
    reply = fetch(echo_balancer.port, "/hop-resp")
    names = {name.lower() for name, _ in reply.headers}
    for dropped in (
        "x-hop-resp",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "proxy-authenticate",
        "upgrade",
    ):
        assert dropped not in names
    assert reply.header("X-Kept") == ["yes"]


def test_response_streams_chunk_by_chunk(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """Each chunk reaches the client before the backend sends the next one."""
    received = [threading.Event() for _ in range(4)]
    chunks = [b"first", b"second", b"third", b"fourth"]

    def gate(index: int) -> None:
        # The backend sends chunk i only once the client has seen chunk i-1.
        if index and not received[index - 1].wait(10):
            raise TimeoutError(f"client never saw chunk {index - 1}")

    backend.route("/drip", slow_chunks(chunks, gate))
    conn = http.client.HTTPConnection("127.0.0.1", echo_balancer.port, timeout=15)
    try:
        conn.request("GET", "/drip")
        response = conn.getresponse()
        for index, chunk in enumerate(chunks):
            assert response.read1() == chunk
            received[index].set()
        assert response.read() == b""
    finally:
        conn.close()


def test_large_download_keeps_worker_memory_flat(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A 1 GiB download streams through with worker memory flat (under 20 MiB growth)."""
    size = 1024**3
    target = three_backends[0]
    target.route("/big", big_body(size))
    lb = start_balancer([target.url], workers=1)
    (worker,) = lb.worker_pids()
    fetch(lb.port, "/")  # warm up: pools, imports, first-request allocations
    before = rss_kib(worker)
    peak = before
    digest = hashlib.sha256()
    expected = hashlib.sha256()
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=30)
    try:
        conn.request("GET", "/big")
        response = conn.getresponse()
        assert response.getheader("Content-Length") == str(size)
        received = 0
        while chunk := response.read(1024 * 1024):
            digest.update(chunk)
            expected.update(pattern_bytes(len(chunk), received))
            received += len(chunk)
            if received % (64 * 1024 * 1024) < len(chunk):
                peak = max(peak, rss_kib(worker))
    finally:
        conn.close()
    assert received == size
    assert digest.hexdigest() == expected.hexdigest()
    assert peak - before < 20 * 1024, f"worker RSS grew from {before} KiB to {peak} KiB"


def test_http10_client_sees_a_cut_body_as_a_reset(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """An HTTP/1.0 client sees a reset, not a clean end, when the backend fails mid-body."""
    target = three_backends[0]
    target.route("/cut", truncated(1000, 300, chunked=True))
    lb = start_balancer([target.url], workers=1)
    with RawConnection(lb.port, timeout=10) as conn:
        conn.send(b"GET /cut HTTP/1.0\r\nHost: a\r\n\r\n")
        reply = conn.read_response()
    assert reply.status == 200
    assert reply.end_reason == "reset"
    assert not reply.complete


def test_http10_client_is_served(backend: ScriptedBackend, echo_balancer: BalancerProcess) -> None:
    """An HTTP/1.0 client is served, and the backend's Via names the 1.0 hop."""
    with RawConnection(echo_balancer.port) as conn:
        conn.send(b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n")
        reply = conn.read_response()
    assert reply.status == 200
    assert backend.wait_for_requests(1)[0].header("Via") == ["1.0 prefork_lb"]

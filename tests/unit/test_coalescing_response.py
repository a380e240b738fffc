"""The worker's response sends its head with the first body bytes, and alone when it must."""

from __future__ import annotations

import pytest
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser

from prefork_lb.worker import CoalescingResponse


class _Sent:
    """A socket that keeps each sendall as one piece."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.pieces.append(bytes(data))


def _response(method: str = "GET") -> tuple[CoalescingResponse, _Sent]:
    cfg = Config()
    request = next(
        iter(
            RequestParser(
                cfg, iter([f"{method} / HTTP/1.1\r\nHost: a\r\n\r\n".encode()]), ("127.0.0.1", 1)
            )
        )
    )
    sock = _Sent()
    return CoalescingResponse(request, sock, cfg), sock


@pytest.mark.parametrize(
    ("headers", "framing"),
    [
        pytest.param([("Content-Length", "2")], b"ok", id="length"),
        pytest.param([], b"2\r\nok\r\n", id="chunked"),
    ],
)
def test_head_and_first_bytes_go_in_one_send(
    headers: list[tuple[str, str]], framing: bytes
) -> None:
    """A response whose first write has bytes: one send, the head then the framed bytes."""
    response, sock = _response()
    response.start_response("200 OK", headers)
    response.write(b"ok")
    assert len(sock.pieces) == 1
    assert sock.pieces[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert sock.pieces[0].endswith(b"\r\n\r\n" + framing)


def test_an_empty_write_sends_the_head_at_once() -> None:
    """An empty first write sends the head alone, before any body byte."""
    response, sock = _response()
    response.start_response("200 OK", [("Content-Length", "2")])
    response.write(b"")
    assert len(sock.pieces) == 1
    assert sock.pieces[0].endswith(b"\r\n\r\n")
    response.write(b"ok")
    assert sock.pieces[1:] == [b"ok"]


def test_a_head_request_gets_the_head_and_no_body() -> None:
    """Bytes written for a HEAD request are dropped, and the head still goes out."""
    response, sock = _response("HEAD")
    response.start_response("200 OK", [("Content-Length", "2")])
    response.write(b"ok")
    assert len(sock.pieces) == 1
    assert sock.pieces[0].endswith(b"Content-Length: 2\r\n\r\n")

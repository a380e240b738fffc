"""The PROXY header read off a real socket before TLS: all of it, and not one byte after it.

``test_proxy_header.py`` checks the parser, and a model of the reading loop;
these run ``read_proxy_header`` itself on a socket pair, the header written
in pieces a moment apart, the start of a TLS hello right behind it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from prefork_lb.proxy_header import ProxyHeader, ProxyHeaderError
from prefork_lb.proxy_reader import read_proxy_header
from tests.unit.test_proxy_header import CLIENT_HELLO, VALID

# Where a header is cut into pieces: before and after the v2 signature's
# end, inside the fixed part, mid-address, one byte before the end.
CUTS = [pytest.param((), id="whole"), pytest.param((1, 5, 12, 14, 20, -1), id="pieces")]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair: the balancer's end, the front's end."""
    server, client = socket.socketpair()
    with server, client:
        yield server, client


def _send_in_pieces(sock: socket.socket, data: bytes, cuts: Sequence[int]) -> threading.Thread:
    """Write ``data`` cut at ``cuts`` (a negative one counts from the end), a moment apart."""
    ends = sorted({cut % len(data) for cut in cuts if cut % len(data) > 0} | {len(data)})

    def send() -> None:
        start = 0
        for end in ends:
            sock.sendall(data[start:end])
            start = end
            time.sleep(0.005)  # likely its own read: how the pieces arrive changes no outcome

    sender = threading.Thread(target=send)
    sender.start()
    return sender


@pytest.mark.parametrize("cuts", CUTS)
@pytest.mark.parametrize(("header", "expected"), VALID)
def test_the_header_is_taken_and_the_tls_hello_left(
    pair: tuple[socket.socket, socket.socket],
    header: bytes,
    expected: ProxyHeader,
    cuts: Sequence[int],
) -> None:
    """Whole or in pieces, the header is read to its last byte and the hello stays unread."""
    server, client = pair
    sender = _send_in_pieces(client, header + CLIENT_HELLO, cuts)
    found = read_proxy_header(server, "auto", timeout=5)
    sender.join()
    assert found is not None
    assert (found.length, found.protocol, found.client) == (
        len(header),
        expected.protocol,
        expected.client,
    )
    server.settimeout(5)
    assert server.recv(len(CLIENT_HELLO), socket.MSG_WAITALL) == CLIENT_HELLO


def test_a_stream_without_a_header_is_left_whole(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A TLS hello straight away: no header, and not a byte of the hello taken."""
    server, client = pair
    client.sendall(CLIENT_HELLO)
    assert read_proxy_header(server, "auto", timeout=5) is None
    assert server.recv(64) == CLIENT_HELLO


def test_a_connection_closed_inside_the_header_is_an_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Part of a v1 line, then the end of the stream: an error naming how much came."""
    server, client = pair
    client.sendall(b"PROXY TCP4 10.1.2.3 ")
    client.shutdown(socket.SHUT_WR)
    with pytest.raises(ProxyHeaderError, match="connection closed after 20 bytes"):
        read_proxy_header(server, "auto", timeout=5)


def test_a_header_that_stops_coming_ends_at_the_deadline(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Part of a v1 line, then silence: an error once the timeout is over, not a hang."""
    server, client = pair
    client.sendall(b"PROXY TCP4 ")
    with pytest.raises(ProxyHeaderError, match=r"no complete PROXY header within 0\.2 s"):
        read_proxy_header(server, "auto", timeout=0.2)

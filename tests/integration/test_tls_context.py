"""The ``ssl_context`` hook: TLS left to the handler, and started after a PROXY header if on."""

from __future__ import annotations

import socket
import ssl

import pytest
from gunicorn.config import Config

from prefork_lb.tls import PendingTLS, ssl_context

HELLO = b"\x16\x03\x01\x00\x05hello"


def _config(proxy_protocol: str) -> Config:
    """Gunicorn's settings with ``proxy_protocol`` set."""
    config = Config()
    config.set("proxy_protocol", proxy_protocol)
    return config


def _server_context() -> ssl.SSLContext:
    """Gunicorn's default context stands in: no certificate is needed before the handshake."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)


def test_without_proxy_protocol_the_socket_is_wrapped_at_once() -> None:
    """proxy_protocol off: an SSLSocket as before, nothing in between, no handshake made yet."""
    server, client = socket.socketpair()
    with client:
        client.sendall(HELLO)
        wrapped = ssl_context(_config("off"), _server_context).wrap_socket(server, server_side=True)
        with wrapped:
            assert isinstance(wrapped, ssl.SSLSocket)
            assert wrapped.version() is None  # no handshake yet


@pytest.mark.parametrize("mode", ["v1", "v2", "auto"])
def test_with_proxy_protocol_tls_waits_for_the_worker(mode: str) -> None:
    """proxy_protocol on: the plain socket, unread, until the worker starts TLS on it."""
    server, client = socket.socketpair()
    with client:
        client.sendall(HELLO)
        pending = ssl_context(_config(mode), _server_context).wrap_socket(server, server_side=True)
        assert isinstance(pending, PendingTLS)
        with pending:
            assert pending.sock is server
            assert server.recv(64, socket.MSG_PEEK) == HELLO  # not a byte taken
            wrapped = pending.start_tls()
            with wrapped:
                assert isinstance(wrapped, ssl.SSLSocket)
                assert wrapped.server_side
                assert wrapped.version() is None  # no handshake yet

"""Reading a PROXY header off a client socket before TLS starts on it: not one byte more.

The bytes after the header are the client's TLS hello, and they must reach
the TLS layer untouched, so nothing past the header may be read. As the
spec's own sample receiver does, the socket is peeked (``MSG_PEEK``) and
only what ``proxy_header.parse_proxy_header`` says is header is taken off
it. Each peek waits on gevent's hub like any socket read; the whole header
must arrive within one deadline, so a front (or anyone) trickling it byte by
byte cannot hold the connection longer.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from gunicorn.http.message import _ip_in_allow_list

from prefork_lb.proxy_header import ProxyHeader, ProxyHeaderError, parse_proxy_header


def read_proxy_header(sock: Any, mode: str, timeout: float) -> ProxyHeader | None:
    """The PROXY header ``sock`` starts with (``mode``: v1, v2 or auto), or None if it has none.

    Raises ``ProxyHeaderError`` for an invalid or unfinished header (the
    connection must be dropped), and lets the socket's ``OSError`` through.
    """
    deadline = time.monotonic() + timeout
    seen = b""
    wanted = parse_proxy_header(seen, mode)
    while isinstance(wanted, int):
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            peeked = sock.recv(wanted, socket.MSG_PEEK)
        except TimeoutError:
            raise ProxyHeaderError(
                f"no complete PROXY header within {timeout:g} s (got {len(seen)} bytes of it)"
            ) from None
        if not peeked:
            if seen:
                raise ProxyHeaderError(
                    f"connection closed after {len(seen)} bytes of a PROXY header"
                )
            return None  # closed before a byte: the TLS handshake will say so
        result = parse_proxy_header(seen + peeked, mode)
        if result is None:
            if seen:  # already taken off the socket: it cannot go to TLS any more
                raise ProxyHeaderError(f"{(seen + peeked)[:16]!r} is not a PROXY header")
            return None
        # Take what is header: all of it while the parser wants more.
        taken = result.length - len(seen) if isinstance(result, ProxyHeader) else len(peeked)
        _take(sock, taken)
        seen += peeked[:taken]
        wanted = result
    return wanted


def proxy_allowed(addr: Any, cfg: Any) -> bool:
    """Whether gunicorn's ``proxy_allow_ips`` lets the peer ``addr`` send a PROXY header.

    gunicorn's own check (``proxy_protocol_access_check``), on its own
    helper: a Unix socket's peer is always allowed, as there.
    """
    if not isinstance(addr, tuple):
        return True
    allowed: bool = _ip_in_allow_list(addr[0], cfg.proxy_allow_ips, cfg.proxy_allow_networks())
    return allowed


def _take(sock: Any, count: int) -> None:
    """Read and drop ``count`` bytes the peek showed are waiting."""
    while count > 0:
        chunk = sock.recv(count)
        if not chunk:
            raise ProxyHeaderError("connection closed inside the PROXY header")
        count -= len(chunk)

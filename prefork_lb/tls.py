"""TLS on the front: gunicorn's ``ssl_context`` hook, so a failed handshake is one log line.

Gunicorn terminates TLS itself (``--certfile``/``--keyfile``). Its gevent
worker hands the context to gevent's ``StreamServer``, which shakes hands
inside ``wrap_socket``, before gunicorn's connection handler runs: every
failed handshake (plain HTTP on the TLS port, a port scanner, a client that
rejects the certificate) then ends as a traceback from the gevent hub on
stderr. Deferring the handshake makes gunicorn do it in its handler, which
logs one "Invalid request from ip=..." warning instead.

With the PROXY protocol on as well (``proxy_protocol``: an L4 front passing
TLS through), the front's header comes first, in clear, before the
ClientHello: the socket is not even wrapped then. The worker gets a
``PendingTLS``, reads the header off the plain socket, and only then starts
TLS on the rest of the stream (``worker.py``).

Imported by the master (through gunicorn.conf.py): standard library only.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any


class PendingTLS:
    """A client connection whose TLS starts after a PROXY header, which the worker reads first."""

    def __init__(self, sock: Any, context: ssl.SSLContext, wrap_args: dict[str, Any]) -> None:
        self.sock = sock  # the plain socket: nothing read from it yet
        self._context = context
        self._wrap_args = wrap_args

    def start_tls(self) -> ssl.SSLSocket:
        """The connection wrapped server-side, its handshake not made yet."""
        return self._context.wrap_socket(self.sock, **self._wrap_args)

    def close(self) -> None:
        """Close the plain socket (nothing, once ``start_tls`` has taken it over)."""
        self.sock.close()

    # gevent's server closes what wrap_socket returned when the handler is done.
    def __enter__(self) -> PendingTLS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _DeferredHandshake:
    """An SSLContext whose sockets shake hands on first use, not while being wrapped."""

    def __init__(self, context: ssl.SSLContext, *, proxy_header_first: bool) -> None:
        self._context = context
        self._proxy_header_first = proxy_header_first

    def wrap_socket(self, sock: Any, **kwargs: Any) -> ssl.SSLSocket | PendingTLS:
        """Wrap ``sock`` server-side (later, after its PROXY header); the handler shakes hands."""
        kwargs["do_handshake_on_connect"] = False
        if self._proxy_header_first:
            return PendingTLS(sock, self._context, kwargs)
        return self._context.wrap_socket(sock, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def ssl_context(config: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> Any:
    """Gunicorn's ``ssl_context`` hook: its own context, handshake deferred, PROXY header first."""
    return _DeferredHandshake(
        default_ssl_context_factory(), proxy_header_first=config.proxy_protocol != "off"
    )

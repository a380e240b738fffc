"""TLS on the front: gunicorn's ``ssl_context`` hook, so a failed handshake is one log line.

Gunicorn terminates TLS itself (``--certfile``/``--keyfile``). Its gevent
worker hands the context to gevent's ``StreamServer``, which shakes hands
inside ``wrap_socket``, before gunicorn's connection handler runs: every
failed handshake (plain HTTP on the TLS port, a port scanner, a client that
rejects the certificate) then ends as a traceback from the gevent hub on
stderr. Deferring the handshake makes gunicorn do it in its handler, which
logs one "Invalid request from ip=..." warning instead.

Imported by the master (through gunicorn.conf.py): standard library only.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any


class _DeferredHandshake:
    """An SSLContext whose sockets shake hands on first use, not while being wrapped."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context

    def wrap_socket(self, sock: Any, **kwargs: Any) -> ssl.SSLSocket:
        """Wrap ``sock`` server-side; gunicorn's handler does the handshake."""
        kwargs["do_handshake_on_connect"] = False
        return self._context.wrap_socket(sock, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def ssl_context(config: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> Any:
    """Gunicorn's ``ssl_context`` hook: its own context, with the handshake deferred."""
    return _DeferredHandshake(default_ssl_context_factory())

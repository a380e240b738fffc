"""Gunicorn's gevent worker, with deadlines on the client connection while a request is served.

Gunicorn bounds the wait for a request head (``keepalive``) but not the
request body or the response: a client that stops reading would hold its
greenlet and a backend connection for ever. Here the client socket has a
timeout of ``client_timeout`` while a request is served, so a client silent
that long gets 408 (while it sends the body, see ``downstream.py``) or is
disconnected (while it leaves the response unread: the worker never buffers
more than the socket does). Between requests the timeout is off again, and
gunicorn's keepalive bound applies.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

from gunicorn.workers.ggevent import GeventWorker

from prefork_lb import shared


class Worker(GeventWorker):  # type: ignore[misc]  # gunicorn has no type hints
    """The gevent worker prefork_lb runs (``worker_class`` in gunicorn.conf.py)."""

    client_timeout: float = 60.0

    def init_process(self) -> None:
        """Read the client deadline from the settings the master installed, then serve."""
        self.client_timeout = shared.installed().settings.client_timeout
        super().init_process()

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        """Serve one request with the client socket's deadline on; end the connection if it hit."""
        sock.settimeout(self.client_timeout)
        try:
            return super().handle_request(listener_name, req, sock, addr)
        except OSError as err:
            if not _write_timed_out(err):
                raise
            # The response body was closed (and its backend connection dropped)
            # by gunicorn on the way out; only the connection is left to end.
            self.log.warning(
                "client %s did not read the response to %s %s for %g s: connection closed",
                addr[0] if addr else "-",
                req.method,
                req.uri,
                self.client_timeout,
            )
            raise StopIteration from None
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(None)


def _write_timed_out(err: OSError) -> bool:
    # gevent raises TimeoutError from a plain socket, and an SSLError saying
    # "The write operation timed out" from a TLS one.
    return isinstance(err, TimeoutError) or (
        isinstance(err, ssl.SSLError) and "timed out" in str(err)
    )

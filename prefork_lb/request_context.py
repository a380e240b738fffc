"""Gunicorn's request object, for the app running in the same greenlet.

The WSGI environ joins repeated header fields into one value; gunicorn's
request keeps its header lines as parsed (order and repeats), and can be
told to close the connection after the response. The worker
(``worker.Worker.handle_request``) sets it around each request, so no
server hook of the operator's (``pre_request`` is a common one to set) can
undo it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

current_request: ContextVar[Any] = ContextVar("prefork_lb_current_request", default=None)

# The worker's access log (gunicorn's Logger.access), set once by the worker.
access_log: Callable[[Any, Any, dict[str, Any], timedelta], None] | None = None


def close_connection_after_response() -> None:
    """Close the client connection after this response, leaving the request body unread.

    Without this, gunicorn would read and discard the rest of the body to
    find the next request: for an oversized body that is the very thing
    being refused. The response then says ``Connection: close``.
    """
    req = current_request.get()
    if req is not None:
        req.force_close()


def take_read_ahead() -> bytes:
    """The client's bytes gunicorn has read past the request head, taken out of its buffer.

    Gunicorn reads the socket in blocks: bytes the client sent right after
    the head (a tunnel's first bytes) are in the request's reader, not the
    socket. Taken, gunicorn will not parse them as a next request.
    """
    req = current_request.get()
    if req is None:
        return b""
    data: bytes = req.unreader.take_buffered()
    return data


def log_access(response: Any, environ: dict[str, Any], request_time: timedelta) -> None:
    """Write the access line for a response gunicorn did not send itself (a tunnel)."""
    req = current_request.get()
    if access_log is not None and req is not None:
        access_log(response, req, environ, request_time)

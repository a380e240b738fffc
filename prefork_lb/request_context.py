"""Gunicorn's request object, for the app running in the same greenlet.

The WSGI environ joins repeated header fields into one value; gunicorn's
request keeps its header lines as parsed (order and repeats), and can be
told to close the connection after the response. The worker
(``worker.Worker.handle_request``) sets it around each request, so no
server hook of the operator's (``pre_request`` is a common one to set) can
undo it.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

current_request: ContextVar[Any] = ContextVar("prefork_lb_current_request", default=None)


def close_connection_after_response() -> None:
    """Close the client connection after this response, leaving the request body unread.

    Without this, gunicorn would read and discard the rest of the body to
    find the next request: for an oversized body that is the very thing
    being refused. The response then says ``Connection: close``.
    """
    req = current_request.get()
    if req is not None:
        req.force_close()

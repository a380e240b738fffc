"""The client's side of a request: its body, read under deadlines and a size limit.

A body is read in pieces of up to 64 KiB as the upstream send asks for them,
so it is never whole in memory, except a small one (64 KiB or less, by its
Content-Length), which is read whole before any backend is chosen: a slow
client then holds no backend connection, and a failed try can be repeated.

Three bounds, each with its own answer:

- silence: the worker (``worker.py``) gives the client socket a timeout of
  ``client_timeout``; a receive that times out is a 408;
- slowness: the body must average ``client_min_rate`` bytes a second after a
  grace of ``client_timeout`` seconds (Apache's ``mod_reqtimeout``), or 408;
- size: more than ``max_body_size`` bytes is a 413, before anything is sent
  upstream when the Content-Length says so.

Every failure is an ``LBError`` raised from inside the upstream send, so the
backend's connection is closed mid-request: it never sees a request that
looks complete.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import gevent
from gunicorn.http.errors import ParseException

from prefork_lb import request_context
from prefork_lb.errors import ClientTimeout, IncompleteRequestBody, RequestTooLarge
from prefork_lb.request import ProxyRequest

REQUEST_CHUNK = 64 * 1024
# Bodies with a Content-Length up to this are read whole before a backend is chosen.
HOLD_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """How long, how slow and how large a request body may be (from the settings)."""

    timeout: float  # client_timeout: the grace before the rate counts
    min_rate: int  # bytes per second; 0: no rate check
    max_size: int  # bytes; 0: no limit


class RequestBody:
    """The request body as urllib3 iterates it, noting whether a try has begun reading it."""

    def __init__(self, pieces: Iterable[bytes], *, held: bool) -> None:
        self._pieces = pieces
        # Held whole in memory: the same bytes can be sent again to another backend.
        self.replayable = held
        self.started = False

    def __iter__(self) -> Iterator[bytes]:
        # urllib3 connects before it reads the body: a try that failed to
        # connect has not consumed any of it.
        self.started = True
        return iter(self._pieces)


def request_body(stream: Any, request: ProxyRequest, limits: BodyLimits) -> RequestBody | None:
    """The body to send upstream, or None; raises at once if its Content-Length is too large."""
    if not request.has_body:
        return None
    length = request.content_length
    if limits.max_size and length is not None and length > limits.max_size:
        too_large(f"Content-Length {length} is over max_body_size {limits.max_size}")
    pieces = _read_body(stream, request, limits)
    if length is not None and length <= HOLD_LIMIT:
        return RequestBody([b"".join(pieces)], held=True)
    return RequestBody(pieces, held=False)


def too_large(detail: str) -> None:
    """Answer 413 and close the connection: the rest of the body is never read."""
    request_context.close_connection_after_response()
    raise RequestTooLarge(detail)


class _TooSlow(Exception):
    # An Exception, not gevent's BaseException Timeout: gunicorn then marks the
    # body failed and never parses what follows it as a next request.
    pass


def _read_body(stream: Any, request: ProxyRequest, limits: BodyLimits) -> Iterator[bytes]:
    started = time.monotonic()
    received = 0
    remaining = request.content_length
    while remaining is None or remaining > 0:
        size = REQUEST_CHUNK if remaining is None else min(REQUEST_CHUNK, remaining)
        try:
            with _rate_deadline(started, received + size, limits):
                chunk = stream.read(size)
        except _TooSlow:
            elapsed = time.monotonic() - started
            raise ClientTimeout(
                f"client sent {received} body bytes in {elapsed:.1f} s, slower than "
                f"client_min_rate {limits.min_rate} B/s"
            ) from None
        except TimeoutError as err:
            raise ClientTimeout(f"client sent no body bytes for {limits.timeout:g} s") from err
        except (OSError, ParseException) as err:
            raise IncompleteRequestBody(f"client body broke off: {err!r}") from err
        if not chunk:
            if remaining is None:
                return
            raise IncompleteRequestBody(
                f"client sent {received} of {request.content_length} body bytes"
            )
        received += len(chunk)
        if limits.max_size and received > limits.max_size:
            too_large(f"chunked body grew past max_body_size {limits.max_size}")
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def _rate_deadline(
    started: float, wanted: int, limits: BodyLimits
) -> contextlib.AbstractContextManager[Any]:
    """A timer that fires if ``wanted`` bytes take longer than the minimum rate allows."""
    if not limits.min_rate:
        return contextlib.nullcontext()
    deadline = started + limits.timeout + wanted / limits.min_rate
    timer: contextlib.AbstractContextManager[Any] = gevent.Timeout(
        max(deadline - time.monotonic(), 0.001), _TooSlow
    )
    return timer


def reset_on_close(client: Any) -> None:
    """Make the client connection close with RST, not FIN.

    To an HTTP/1.0 client, or one reading a close-delimited body, a FIN would
    look like the end of a complete body.
    """
    with contextlib.suppress(AttributeError, OSError):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

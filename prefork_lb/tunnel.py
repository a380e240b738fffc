"""Tunnels: after a backend switched protocols (101), bytes relayed both ways until the end.

``wsgi.ProxyApp`` hands over an answer that ``forward.py`` checked as a 101
for a protocol the client asked for (``Answer.switched``), on a connection
of its own. From there:

1. the 101 head goes to the client, on gunicorn's socket (gunicorn would drop
   ``Upgrade`` and add a ``Connection`` of its own);
2. two greenlets copy bytes, one each way, through a bounded buffer, each
   starting with what was read ahead on its side: the client's bytes that
   gunicorn's reader already holds behind the request head, and the
   backend's that http.client holds behind the 101;
3. an end of stream from one side is passed on as a half-close
   (``shutdown(SHUT_WR)``), and the other way goes on; the tunnel ends when
   both ways have ended, when either fails (a reset), or when no byte has
   moved either way for ``tunnel_timeout`` seconds. A TLS socket cannot be
   half-closed and still read (Python drops its TLS state): an end of stream
   toward one ends the tunnel;
4. both connections are shut down, the backend's in-flight place given
   back, one access line written (status 101, the record's tunnel bytes),
   and gunicorn is told the connection is handled (``ALREADY_HANDLED``): the
   worker then ends it rather than read another request from it.

While open, a tunnel is counted in the shared tables (``Stats``: open now,
opened, bytes each way as they go). At a graceful stop the worker ends every
open tunnel (``end_open_tunnels``) just before gunicorn's deadline; a tunnel
killed anyway still gets its access line.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import gevent
import gevent.event
from gunicorn.workers.base_async import ALREADY_HANDLED

from prefork_lb import request_context
from prefork_lb.forward import Answer
from prefork_lb.record import NO_STATS, RequestRecord, Stats

log = logging.getLogger("gunicorn.error").getChild("prefork_lb")

# Bytes read at once per direction. Allocated only as bytes arrive (an idle
# tunnel holds none); 256 KiB rather than 64 KiB: fewer reads and greenlet
# switches per MB, ~10% more bulk relay in the load test's WebSocket phase.
RELAY_CHUNK = 256 * 1024
# How one direction of a tunnel ended: its end of stream passed on as a
# half-close; its end of stream ending the whole tunnel (toward TLS); a failure.
_HALF_CLOSED, _ENDED, _RESET = "half-closed", "ended", "reset"
# This worker's open tunnels, for ending them at shutdown; and whether it has begun.
_open_tunnels: set[_Tunnel] = set()
_shutting_down = False


@dataclass(slots=True)
class SwitchedResponse:
    """What gunicorn's access log reads of a response, for a tunnel gunicorn never saw."""

    status: str
    headers: list[tuple[str, str]]
    sent: int = 0  # bytes to the client after the head


def run_tunnel(
    answer: Answer,
    client: Any,
    environ: dict[str, Any],
    record: RequestRecord,
    *,
    idle_timeout: float,
    stats: Stats = NO_STATS,
) -> object:
    """Relay the 101 and then bytes both ways until the tunnel ends; ``ALREADY_HANDLED``.

    ``client`` is gunicorn's socket for the client. The answer is done (its
    connection closed, its backend's in-flight place given back) and the
    access line written when this returns or is killed, however the tunnel
    ended.
    """
    started = time.monotonic()
    response = SwitchedResponse(answer.status, answer.headers)
    tunnel: _Tunnel | None = None
    stats.tunnel_opened(answer.index)
    try:
        head = _head(answer.status, answer.headers)
        from_client = request_context.take_read_ahead()
        from_backend = answer.read_ahead()
        connection = answer.connection
        backend = connection.sock if connection is not None else None
        if backend is None:
            return ALREADY_HANDLED  # cannot happen: a switched answer has its own connection
        client.sendall(head)  # still under client_timeout, as any response head
        tunnel = _Tunnel(client, backend, idle_timeout, stats, answer.index)
        tunnel.relay(from_client, from_backend)
    except OSError as err:
        record.error = f"tunnel:{type(err).__name__}"
    except BaseException:
        # Killed (the worker's own end came before the tunnel's): still logged.
        record.error = "tunnel:killed"
        raise
    finally:
        _shut(client)
        answer.done()
        stats.tunnel_ended(answer.index)
        if tunnel is not None:
            record.tunnel_up, record.tunnel_down = tunnel.up, tunnel.down
            response.sent = tunnel.down
            if tunnel.ended_by:
                record.error = tunnel.ended_by
        elapsed = (record.upstream_time or 0.0) + time.monotonic() - started
        request_context.log_access(response, environ, timedelta(seconds=elapsed))
    return ALREADY_HANDLED


def end_open_tunnels() -> int:
    """End every tunnel of this worker now (it is shutting down); how many there were.

    Each ends as if by both sides (``error=tunnel:shutdown`` in its access
    line); a tunnel opened after this call ends at once, the same way.
    """
    global _shutting_down  # noqa: PLW0603 - this worker's one switch
    _shutting_down = True
    tunnels = list(_open_tunnels)
    for tunnel in tunnels:
        tunnel.end("tunnel:shutdown")
    return len(tunnels)


def _head(status: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}\r\n", *(f"{name}: {value}\r\n" for name, value in headers)]
    return ("".join(lines) + "\r\n").encode("latin-1")


class _Tunnel:
    """Two sockets joined: one greenlet per direction, and a watch for idleness."""

    def __init__(
        self, client: Any, backend: Any, idle_timeout: float, stats: Stats, index: int
    ) -> None:
        self._client = client
        self._backend = backend
        self._idle_timeout = idle_timeout
        self._stats = stats
        self._index = index
        self._last_byte = time.monotonic()
        self._ending = gevent.event.Event()  # set by end(): the tunnel ends now
        self.up = 0  # bytes to the backend
        self.down = 0  # bytes to the client
        # Why the tunnel ended other than by both sides closing: "tunnel:idle", ...
        self.ended_by = ""

    def end(self, why: str) -> None:
        """End the tunnel now (from another greenlet), noting ``why``."""
        if not self.ended_by:
            self.ended_by = why
        self._ending.set()

    def relay(self, to_backend: bytes, to_client: bytes) -> None:
        """Copy both ways until both have ended, either failed, or nothing moved for too long."""
        for sock in (self._client, self._backend):
            sock.settimeout(None)  # idleness is watched here, for both ways at once
        pumps = [
            gevent.spawn(self._pump, self._client, self._backend, to_backend, True),
            gevent.spawn(self._pump, self._backend, self._client, to_client, False),
        ]
        _open_tunnels.add(self)
        if _shutting_down:
            self.end("tunnel:shutdown")
        try:
            while True:
                running = [pump for pump in pumps if not pump.ready()]
                if not running or self._ending.is_set():
                    return
                ends = {pump.value for pump in pumps if pump.ready()}
                if _RESET in ends:
                    self.ended_by = "tunnel:reset"
                    return
                if _ENDED in ends:
                    return
                idle_left = self._last_byte + self._idle_timeout - time.monotonic()
                if idle_left <= 0:
                    self.ended_by = "tunnel:idle"
                    return
                gevent.wait([*running, self._ending], timeout=idle_left, count=1)
        finally:
            _open_tunnels.discard(self)
            gevent.killall(pumps)
            _shut(self._backend)

    def _pump(self, source: Any, dest: Any, first: bytes, upward: bool) -> str:
        """Copy ``first``, then ``source`` to ``dest``, until the end; how it ended."""
        try:
            data = first
            while True:
                if data:
                    dest.sendall(data)
                    if upward:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    self._stats.tunnel_bytes(self._index, up=upward, count=len(data))
                data = source.recv(RELAY_CHUNK)
                if not data:
                    break
                self._last_byte = time.monotonic()
            if isinstance(dest, ssl.SSLSocket):
                return _ENDED  # TLS cannot half-close and still read: the tunnel ends
            dest.shutdown(socket.SHUT_WR)
        except OSError:
            return _RESET
        return _HALF_CLOSED


def _shut(sock: Any) -> None:
    # Both ways, so that the peer sees the end even while a reference to the
    # socket lives on (gunicorn closes its client socket itself, later).
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)

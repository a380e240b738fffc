"""Gunicorn's gevent worker, with deadlines on the client connection while a request is served.

Gunicorn bounds the wait for a request head (``keepalive``) but not the
request body or the response: a client that stops reading would hold its
greenlet and a backend connection for ever. Here the client socket has a
timeout of ``client_timeout`` while a request is served, so a client silent
that long gets 408 (while it sends the body, see ``downstream.py``) or is
disconnected (while it leaves the response unread: the worker never buffers
more than the socket does; the connection is reset, so that a cut body
cannot look whole). The TLS handshake, which gunicorn makes with no timeout
at all, is bounded the same way. Between requests the timeout is off again,
and gunicorn's keepalive bound applies.

A connection answered without its request body being read (413) closes
gently: the answer, a FIN, then up to two seconds of reading and dropping
what the client still sends, so that it sees the answer rather than a reset.

Gunicorn's request object is handed to the app (``request_context``) here,
around each request, rather than by a server hook that an operator's own
``pre_request`` would replace.

A tunnel (``tunnel.py``) answers on the socket itself and returns gunicorn's
``ALREADY_HANDLED``: the connection then ends here, rather than being read
for another request; the tunnel's access line goes through this worker's log.

At a graceful stop (TERM, and the old workers of a HUP) gunicorn stops
accepting and waits ``graceful_timeout`` for its connections, but the master
SIGKILLs a worker still running at that deadline (on TERM) before gunicorn's
own late end of its connections runs: open tunnels are ended here, just
before the deadline, so that each is closed and written to the access log.

Each open client connection (one greenlet) is counted in the shared table,
for the admin document and the ``prefork_lb_client_connections`` metric.

With TLS and the PROXY protocol both on (an L4 front passing TLS through),
the front's header precedes the TLS hello: it is read here, off the plain
socket (``proxy_reader.py``), checked against ``proxy_allow_ips``, and only
then does TLS start. The header read before TLS is the one every request of
the connection sees; one found inside TLS (sent by the client itself) is
refused. A connection without a header is served as from its TCP peer, as
gunicorn does for plain HTTP.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from typing import Any

import gevent
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.errors import InvalidHeader, InvalidProxyLine, UnsupportedTransferCoding
from gunicorn.workers.base_async import ALREADY_HANDLED
from gunicorn.workers.ggevent import GeventWorker

from prefork_lb import request_context, shared
from prefork_lb.downstream import reset_on_close
from prefork_lb.proxy_header import ProxyHeaderError
from prefork_lb.proxy_reader import proxy_allowed, read_proxy_header
from prefork_lb.tls import PendingTLS

# gunicorn-h1c 0.6.10's words for a transfer coding it does not know; gunicorn
# passes them on as InvalidHeader (400), where its Python parser answers 501.
_H1C_UNSUPPORTED_CODING = "Unsupported Transfer-Encoding"

# How long a connection refused without reading its request body keeps reading
# (and dropping) what the client still sends, after the answer (nginx: 30 s).
LINGER_SECONDS = 2.0
# How long before graceful_timeout runs out open tunnels are ended (at most a
# tenth of it): the master SIGKILLs its workers at that deadline.
TUNNEL_END_MARGIN = 1.0


def tunnel_end_delay(graceful_timeout: float) -> float:
    """Seconds after a graceful stop begins that a worker ends its open tunnels."""
    return max(graceful_timeout - min(TUNNEL_END_MARGIN, graceful_timeout / 10), 0.0)


class CoalescingResponse(wsgi.Response):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn's response, sending its head together with the first body bytes.

    gunicorn's ``write`` sends the head in a ``sendall`` of its own: two sends
    (and two wake-ups of the client) for a small response. Here the first
    non-empty write sends head and bytes in one. An empty write still sends
    the head alone, at once (``upstream.stream_body`` makes one when the
    body is not at hand yet); so does ``close()`` for a response without a body.
    """

    headers_sent: bool  # gunicorn's, set in its __init__
    _head: bytes | None = None

    def write(self, arg: Any) -> None:
        """gunicorn's ``write``; the first one with bytes takes the head along."""
        if arg == b"":
            self.send_headers()  # gunicorn would go on to send the empty bytes too
            return
        if self.headers_sent:
            super().write(arg)
            return
        self._head = self._encoded_head()
        self.headers_sent = True
        try:
            super().write(arg)
        finally:
            # gunicorn wrote no body (HEAD, a full Content-Length): the head alone.
            head, self._head = self._head, None
            if head is not None:
                util.write(self.sock, head)

    def _emit_body(self, data: bytes) -> None:
        head, self._head = self._head, None
        if head is None:
            super()._emit_body(data)
        elif self.chunked:
            self.sock.sendall(b"%b%X\r\n%b\r\n" % (head, len(data), data))
        else:
            self.sock.sendall(head + data)

    def _encoded_head(self) -> bytes:
        # gunicorn 27.0.1's send_headers, line for line, without the send.
        tosend = self.default_headers()
        tosend.extend(["%s: %s\r\n" % (k, v) for k, v in self.headers])  # noqa: UP031
        header_str = "%s\r\n" % "".join(tosend)  # noqa: UP031
        encoded: bytes = util.to_bytestring(header_str, "latin-1")
        return encoded


class Worker(GeventWorker):  # type: ignore[misc]  # gunicorn has no type hints
    """The gevent worker prefork_lb runs (``worker_class`` in gunicorn.conf.py)."""

    client_timeout: float  # from the settings, in init_process
    _in_flight: shared.InFlightTable | None = None
    _slot: int | None = None
    _stopping = False
    # TLS connections whose PROXY header came before TLS: what gunicorn would
    # have recorded for it (None: the connection had none), by client socket.
    _headers_before_tls: dict[Any, dict[str, Any] | None] | None = None

    def init_process(self) -> None:
        """Read the client deadline from the settings the master installed, then serve."""
        state = shared.installed()
        self.client_timeout = state.settings.client_timeout
        self._in_flight = state.in_flight
        self._slot = shared.worker_slot()
        request_context.access_log = self.log.access
        # Set on the instance either way: the request path's check finds it at once.
        proxy_before_tls = self.cfg.is_ssl and self.cfg.proxy_protocol != "off"
        self._headers_before_tls = {} if proxy_before_tls else None
        # gunicorn's async worker makes its responses through wsgi.create(),
        # which takes the module's Response: in this worker process, ours.
        wsgi.Response = CoalescingResponse
        super().init_process()

    def handle_exit(self, sig: Any, frame: Any) -> None:
        """A graceful stop: gunicorn's, and open tunnels ended just before its deadline."""
        super().handle_exit(sig, frame)
        if not self._stopping:
            self._stopping = True
            gevent.spawn_later(tunnel_end_delay(self.cfg.graceful_timeout), self._end_tunnels)

    def _end_tunnels(self) -> None:
        # Imported here: this module is imported by the master too, which must
        # not import urllib3 (tunnel.py does); in a worker it is loaded already.
        from prefork_lb.tunnel import end_open_tunnels  # noqa: PLC0415

        ended = end_open_tunnels()
        if ended:
            self.log.info("prefork_lb: graceful timeout near: ended %d open tunnel(s)", ended)

    def is_already_handled(self, respiter: Any) -> bool:
        """Whether the app answered on the socket itself (a tunnel); then the connection ends.

        Gunicorn's async worker returns from the request and, with keepalive
        on, reads the next request from the same socket: after a tunnel that
        socket is shut down, and a TLS one no longer speaks TLS.
        ``StopIteration`` ends the connection instead (as gunicorn's comment
        on this method suggests).
        """
        if respiter is ALREADY_HANDLED:
            raise StopIteration
        return False

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn's error answer; an unknown transfer coding is a 501 whichever parser saw it.

        (RFC 9112 section 6.1; gunicorn does the same for a gunicorn-h1c that
        raises its own error for it, which 0.6.10 does not.)
        """
        if isinstance(exc, InvalidHeader) and exc.hdr == _H1C_UNSUPPORTED_CODING:
            exc = UnsupportedTransferCoding(exc.hdr)
        super().handle_error(req, client, addr, exc)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """Serve one client connection, counted in the shared table while it is open."""
        table, slot = self._in_flight, self._slot
        if table is not None and slot is not None:
            table.add_connection(slot, 1)
        try:
            if isinstance(client, PendingTLS):
                client = self._proxy_header_then_tls(client, addr)
                if client is None:
                    return
            if isinstance(client, ssl.SSLSocket) and not self._handshake(client, addr):
                return
            super().handle(listener, client, addr)
        finally:
            if table is not None and slot is not None:
                table.add_connection(slot, -1)
            if self._headers_before_tls is not None:
                self._headers_before_tls.pop(client, None)

    def _proxy_header_then_tls(self, pending: PendingTLS, addr: Any) -> ssl.SSLSocket | None:
        """Read the PROXY header before TLS, then start TLS; None (and closed) if refused.

        The header must come whole within ``client_timeout``; one that is not
        valid, or comes from a peer outside ``proxy_allow_ips``, closes the
        connection with one line in the log, before anything is forwarded.
        """
        mode = self.cfg.proxy_protocol
        try:
            header = read_proxy_header(pending.sock, mode, self.client_timeout)
            if header is not None and not proxy_allowed(addr, self.cfg):
                raise ProxyHeaderError("a PROXY header from a peer not in proxy_allow_ips")
        except (ProxyHeaderError, OSError) as err:
            self.log.warning("Invalid request from ip=%s: %s", addr[0] if addr else "-", err)
            with contextlib.suppress(OSError):
                pending.close()
            return None
        info = header.gunicorn_info() if header is not None else None
        if info is not None and info["client_addr"] is None:
            _peer_for_local(info, addr)
        client = pending.start_tls()
        if self._headers_before_tls is not None:
            self._headers_before_tls[client] = info
        return client

    def _handshake(self, client: Any, addr: Any) -> bool:
        """The TLS handshake, bounded by ``client_timeout``; False (and closed) if it failed.

        gunicorn shakes hands on a socket with no timeout at all (its keepalive
        bound starts with the request head): a client that connects and never
        finishes its hello would hold a connection slot for ever. gunicorn's
        own ``do_handshake()`` that follows is then a no-op.
        """
        client.settimeout(self.client_timeout)
        try:
            client.do_handshake()
        except (OSError, ValueError) as err:
            # The same line gunicorn logs for a failed handshake.
            self.log.warning("Invalid request from ip=%s: %s", addr[0] if addr else "-", err)
            with contextlib.suppress(OSError):
                client.close()
            return False
        with contextlib.suppress(OSError):
            client.settimeout(None)
        return True

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        """Serve one request with the client socket's deadline on; end the connection if it hit."""
        sock.settimeout(self.client_timeout)
        if self._headers_before_tls is not None:
            _use_header_before_tls(req, self._headers_before_tls.get(sock))
        info = req.proxy_protocol_info
        if info and info["client_addr"] is None:
            _peer_for_local(info, addr)
        # The app reads the parsed header lines from here (the environ joins repeats).
        context = request_context.current_request.set(req)
        try:
            return super().handle_request(listener_name, req, sock, addr)
        except StopIteration:
            # gunicorn ends the connection after this response. When the app
            # refused the request without reading its body (a 413), the client
            # may still be sending it: close gently, or it may never see why.
            if req.must_close:
                _linger(sock)
            raise
        except OSError as err:
            if not _write_timed_out(err):
                raise
            # The response body was closed (and its backend connection dropped)
            # by gunicorn on the way out; only the connection is left to end,
            # with RST: to an HTTP/1.0 client a FIN would end the body as if whole.
            reset_on_close(sock)
            self.log.warning(
                "client %s did not read the response to %s %s for %g s: connection closed",
                info["client_addr"] if info else addr[0] if addr else "-",
                req.method,
                req.uri,
                self.client_timeout,
            )
            raise StopIteration from None
        finally:
            request_context.current_request.reset(context)
            with contextlib.suppress(OSError):
                sock.settimeout(None)


def _use_header_before_tls(req: Any, info: dict[str, Any] | None) -> None:
    """Give a request on a TLS connection the PROXY header read before TLS (or none).

    gunicorn looks for a header in the first request's bytes, inside TLS:
    one there was written by the TLS client itself, never by the front, and
    would let any client name its own address. It is refused (400).
    """
    if req.proxy_protocol_info:
        raise InvalidProxyLine("a PROXY header inside TLS; it must come before the TLS hello")
    req.proxy_protocol_info = info or {}


def _peer_for_local(info: dict[str, Any], addr: Any) -> None:
    """A PROXY header without a client (v2 ``LOCAL``, or ``UNSPEC``): the TCP peer is the client.

    HAProxy sends ``LOCAL`` on its own health checks over a ``send-proxy-v2``
    server line. Gunicorn then sets ``REMOTE_ADDR`` to None, which every use
    of the client's address (X-Forwarded-For, the access log, ``admin_allow``,
    ``hash_key = "ip"``) would trip on. Filled in here, in gunicorn's own
    record of the header, the environ gunicorn builds from it is right for
    all of them (and for this connection's later requests, which reuse it).
    """
    if isinstance(addr, tuple):
        info["client_addr"], info["client_port"] = addr[0], addr[1]
    else:  # a Unix socket's peer, as gunicorn writes it into REMOTE_ADDR
        info["client_addr"] = addr.decode() if isinstance(addr, bytes) else str(addr or "")
        info["client_port"] = ""


def _linger(sock: Any) -> None:
    """Close as nginx's lingering close does: FIN after the response, then read and drop.

    Closing a socket with unread bytes sends RST, and a client's kernel may
    then drop the response before the client has read it. For
    ``LINGER_SECONDS`` at most, whatever the client still sends is read and
    thrown away, so it can finish sending and read the answer.
    """
    deadline = time.monotonic() + LINGER_SECONDS
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return


def _write_timed_out(err: OSError) -> bool:
    # gevent raises TimeoutError from a plain socket, and an SSLError saying
    # "The write operation timed out" from a TLS one.
    return isinstance(err, TimeoutError) or (
        isinstance(err, ssl.SSLError) and "timed out" in str(err)
    )

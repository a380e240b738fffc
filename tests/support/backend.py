"""A scripted HTTP/1.1 backend on raw sockets, so tests control every byte it sends.

``ScriptedBackend`` listens on 127.0.0.1 with an ephemeral port, parses requests itself and
records each one exactly as it arrived (header case, order and duplicates, raw
request-target, body framing). By default it answers ``200 OK`` with its name as the body;
``route()`` installs handlers that script the response byte for byte, stream it, truncate it
or reset the connection. Everything is stdlib-only and every thread is a daemon thread, and
``stop()`` shuts every socket down so that nothing a test leaves open can hang the run.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import socket
import ssl
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from tests.support.fields import header_tokens

Framing = Literal["length", "chunked", "none"]
Handler = Callable[["RecordedRequest", "Responder"], None]

# Bounds on what a request head may contain; far above anything a proxy sends, but they
# keep a runaway or garbage peer from growing memory without limit.
MAX_LINE_BYTES = 64 * 1024
MAX_HEADER_LINES = 1000

# How long a closing connection keeps reading (and discarding) what the peer still sends
# after our FIN: closing with unread data would send an RST, which can make the peer's
# kernel drop response bytes it has not handed to the application yet.
LINGER_SECONDS = 1.0
LINGER_MAX_BYTES = 4 * 1024 * 1024

# Upper bound on how long stop() waits for connection threads to finish; a handler that is
# blocked on a test's own event must not make stop() hang.
STOP_JOIN_SECONDS = 2.0

# How long restart() retries binding the old port: an outgoing connection elsewhere on the
# machine may briefly hold it as its ephemeral source port.
REBIND_SECONDS = 5.0

# A prime period, so that dropped, duplicated or reordered 64 KiB pieces of a big body
# change its bytes instead of happening to line up with the pattern.
_PATTERN = bytes(range(251))


def pattern_bytes(size: int, offset: int = 0) -> bytes:
    """Return ``size`` bytes of the deterministic pattern ``big_body`` sends, from ``offset``."""
    start = offset % len(_PATTERN)
    repeats = (start + size) // len(_PATTERN) + 1
    return (_PATTERN * repeats)[start : start + size]


class BadRequestError(Exception):
    """The peer sent something that is not a well-formed HTTP/1.1 request."""


@dataclass
class RecordedRequest:
    """One request as the backend received it, header bytes and all.

    ``body`` grows while a ``read_body=False`` handler reads it; ``complete`` turns True once
    the whole framed body has arrived (at once for requests without a body).
    """

    backend: str
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    framing: Framing
    connection_id: int
    complete: bool = False
    trailers: list[tuple[str, str]] = field(default_factory=list)
    # A bytearray grows in place as pieces arrive; ``body`` hands out an immutable copy.
    _body: bytearray = field(default_factory=bytearray, repr=False)

    @property
    def body(self) -> bytes:
        """Return the body bytes received so far (de-chunked when chunked)."""
        return bytes(self._body)

    def header(self, name: str) -> list[str]:
        """Return every value of header ``name`` (case-insensitive), in order received."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


class _SocketReader:
    """Buffered reads from a blocking socket; EOF and resets both read as ``b""``."""

    def __init__(self, sock: socket.socket) -> None:
        """Wrap ``sock``; the reader never closes it."""
        self._sock = sock
        self._buffer = bytearray()
        self.eof = False

    def _fill(self) -> bool:
        """Receive more bytes into the buffer; return False at EOF or on a reset."""
        if self.eof:
            return False
        try:
            data = self._sock.recv(65536)
        except OSError:
            # A reset, or stop() shutting the socket down under us: both end the stream.
            data = b""
        if not data:
            self.eof = True
            return False
        self._buffer += data
        return True

    def readline(self, limit: int = MAX_LINE_BYTES) -> bytes:
        """Return one line including its LF, or fewer bytes at EOF or past ``limit``."""
        while True:
            end = self._buffer.find(b"\n", 0, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buffer) >= limit or not self._fill():
                return self._take(min(limit, len(self._buffer)))

    def read1(self, size: int) -> bytes:
        """Return between 1 and ``size`` bytes, waiting only if none are buffered."""
        if not self._buffer and not self._fill():
            return b""
        return self._take(min(size, len(self._buffer)))

    def read_exact(self, size: int) -> bytes:
        """Return ``size`` bytes, or fewer if the stream ends first."""
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(min(size, len(self._buffer)))

    def _take(self, size: int) -> bytes:
        """Remove and return the first ``size`` buffered bytes."""
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


def _split_header_line(line: bytes) -> tuple[str, str]:
    """Split ``Name: value`` keeping the name's case; raise on anything malformed."""
    text = line.rstrip(b"\r\n").decode("latin-1")
    name, colon, value = text.partition(":")
    if not colon or not name or name != name.strip() or text[0] in " \t":
        # No colon, whitespace before the colon, or obsolete line folding: RFC 9112 says
        # reject, and guessing here would hide proxy bugs the tests exist to catch.
        raise BadRequestError(f"malformed header line {text!r}")
    return name, value.strip(" \t")


def _read_header_block(reader: _SocketReader) -> list[tuple[str, str]] | None:
    """Read header lines up to the blank line; return None if the stream ends first."""
    headers: list[tuple[str, str]] = []
    while True:
        line = reader.readline()
        if not line.endswith(b"\n"):
            if len(line) >= MAX_LINE_BYTES:
                raise BadRequestError("header line too long")
            return None
        if line in (b"\r\n", b"\n"):
            return headers
        if len(headers) >= MAX_HEADER_LINES:
            raise BadRequestError("too many header lines")
        headers.append(_split_header_line(line))


def _request_framing(headers: list[tuple[str, str]]) -> tuple[Framing, int]:
    """Decide how the request body is framed (RFC 9112 section 6.3) and its length."""
    codings = header_tokens(headers, "transfer-encoding")
    if codings:
        # Transfer-Encoding overrides Content-Length; a request whose final coding is not
        # chunked has no determinable length, which a server must answer with 400.
        if codings[-1] != "chunked":
            raise BadRequestError(f"request transfer-coding {codings!r} does not end in chunked")
        return "chunked", 0
    lengths = {token for token in header_tokens(headers, "content-length")}
    if not lengths:
        return "none", 0
    if len(lengths) > 1 or not next(iter(lengths)).isdigit():
        raise BadRequestError(f"invalid Content-Length {sorted(lengths)!r}")
    length = int(next(iter(lengths)))
    return ("length", length) if length else ("none", 0)


class _RequestBody:
    """Incremental decoder of one request body that records what it reads."""

    def __init__(
        self, reader: _SocketReader, record: RecordedRequest, framing: Framing, length: int
    ) -> None:
        """Prepare to read the body ``framing`` announces for ``record``."""
        self._reader = reader
        self._record = record
        self._framing = framing
        self._remaining = length
        self._chunk_left = 0
        self.done = framing == "none"
        if self.done:
            record.complete = True

    def read(self, size: int = 65536) -> bytes:
        """Return up to ``size`` decoded body bytes, or ``b""`` once the body has ended."""
        if size < 1:
            raise ValueError("size must be at least 1")
        while not self.done:
            if self._framing == "length":
                data = self._reader.read1(min(size, self._remaining))
                if not data:
                    self.done = True  # cut short: complete stays False
                    return b""
                self._remaining -= len(data)
                if self._remaining == 0:
                    self.done = True
                    self._record.complete = True
                self._record._body += data
                return data
            if self._chunk_left == 0 and not self._start_chunk():
                continue  # end of body (complete or cut short): the loop condition says which
            data = self._reader.read1(min(size, self._chunk_left))
            if not data:
                self.done = True
                return b""
            self._chunk_left -= len(data)
            if self._chunk_left == 0 and self._reader.read_exact(2) != b"\r\n":
                self.done = True
                if not self._reader.eof:
                    raise BadRequestError("chunk data not followed by CRLF")
            self._record._body += data
            return data
        return b""

    def _start_chunk(self) -> bool:
        """Read a chunk-size line; return False when the body ends instead."""
        line = self._reader.readline()
        if not line.endswith(b"\n"):
            self.done = True
            return False
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            self.done = True
            raise BadRequestError(f"invalid chunk-size line {line!r}")
        self._chunk_left = int(size_text, 16)
        if self._chunk_left:
            return True
        trailers = _read_header_block(self._reader)
        self.done = True
        if trailers is not None:
            self._record.trailers = trailers
            self._record.complete = True
        return False

    def read_all(self) -> None:
        """Read and record whatever is left of the body."""
        while self.read():
            pass


class Responder:
    """What a route handler uses to answer: raw bytes, whole responses, chunks, or a reset."""

    def __init__(
        self,
        sock: socket.socket,
        request: RecordedRequest,
        body: _RequestBody,
        stopped: threading.Event,
    ) -> None:
        """Bind a responder to one request on ``sock``."""
        self.sock = sock
        self.request = request
        # Set when the backend is stopped; handlers that wait use it so stop() ends them.
        self.stopped = stopped
        self._body = body
        self.bytes_sent = 0
        self.closed = False
        self.was_reset = False
        self.close_after = False

    def send(self, raw: bytes) -> None:
        """Write exactly ``raw`` to the connection."""
        if self.closed:
            raise ConnectionError("the handler already closed this connection")
        self.sock.sendall(raw)
        self.bytes_sent += len(raw)

    def respond(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        """Send a whole response, adding Content-Length unless framing is already given."""
        head_fields = list(headers or [])
        names = {name.lower() for name, _ in head_fields}
        bodiless_status = status < 200 or status in (204, 304)
        if not bodiless_status and not names & {"content-length", "transfer-encoding"}:
            head_fields.append(("Content-Length", str(len(body))))
        if "close" in header_tokens(head_fields, "connection"):
            self.close_after = True
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in head_fields
        )
        payload = b"" if self.request.method == "HEAD" or bodiless_status else body
        self.send(head.encode("latin-1") + b"\r\n" + payload)

    def send_chunk(self, data: bytes) -> None:
        """Send ``data`` as one chunk of a chunked body whose head the handler already sent."""
        if not data:
            raise ValueError("an empty chunk would end the body; call end_chunks() for that")
        self.send(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")

    def end_chunks(self, trailers: list[tuple[str, str]] | None = None) -> None:
        """Send the last chunk and optional trailer fields, ending the chunked body."""
        fields = "".join(f"{name}: {value}\r\n" for name, value in trailers or [])
        self.send(b"0\r\n" + fields.encode("latin-1") + b"\r\n")

    def read_body(self, size: int = 65536) -> bytes:
        """Return up to ``size`` more request-body bytes as they arrive; ``b""`` at its end."""
        return self._body.read(size)

    def body_reader(self, size: int = 65536) -> Iterator[bytes]:
        """Yield request-body pieces as they arrive, until the body ends."""
        while piece := self._body.read(size):
            yield piece

    @property
    def body_done(self) -> bool:
        """Whether the request body has ended (fully received or cut short)."""
        return self._body.done

    def peer_closed(self) -> bool:
        """Return True if the peer has closed or reset the connection (never blocks)."""
        if self.closed:
            return True
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def wait_until_stopped_or_peer_closed(self, poll: float = 0.05) -> None:
        """Block until the backend stops or the peer goes away."""
        while not self.stopped.wait(poll):
            if self.peer_closed():
                return

    def close(self) -> None:
        """Close the connection now (FIN after everything sent); no more requests on it."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            # Half-close so the FIN goes out now; the connection loop lingers and then
            # closes the descriptor, so unread request bytes do not turn the FIN into an RST.
            self.sock.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), right now."""
        if self.closed and self.was_reset:
            return
        self.closed = True
        self.was_reset = True
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@dataclass
class _Route:
    """A handler and whether the server reads the body before calling it."""

    handler: Handler
    read_body: bool


@dataclass
class _Generation:
    """Everything belonging to one start()..stop() lifetime of the backend."""

    listener: socket.socket
    stopped: threading.Event = field(default_factory=threading.Event)
    accept_thread: threading.Thread | None = None
    connections: dict[socket.socket, threading.Thread] = field(default_factory=dict)


class ScriptedBackend:
    """A real HTTP/1.1 server on 127.0.0.1 whose responses tests script byte for byte.

    The port is chosen once, at the first start(), and kept: stop() then start() (or
    restart()) serves the same address again, so a test can kill and revive a backend.
    """

    def __init__(self, name: str, *, tls: ssl.SSLContext | None = None) -> None:
        """Create a stopped backend called ``name`` (its default response body).

        With ``tls`` (a server-side context) every connection is TLS: the handshake runs
        in the connection's thread, and a failed one is noted in ``tls_failures``.
        (``Responder.peer_closed`` peeks at the raw socket, which TLS does not allow.)
        """
        self.name = name
        self.tls = tls
        self.tls_failures: list[str] = []
        self.port = 0
        # Servers answer ``Expect: 100-continue`` before reading a body; handlers on
        # read_body=False routes decide for themselves.
        self.auto_continue = True
        self.errors: list[str] = []
        self._routes: dict[str, _Route] = {}
        self._requests: list[RecordedRequest] = []
        self._changed = threading.Condition()
        self._connection_ids = itertools.count(1)
        self._connections_accepted = 0
        self._lock = threading.Lock()
        self._generation: _Generation | None = None

    @property
    def url(self) -> str:
        """Return ``http://127.0.0.1:PORT`` (``https://`` with TLS)."""
        if not self.port:
            raise RuntimeError(f"backend {self.name!r} has not been started")
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the backend is currently accepting connections."""
        return self._generation is not None

    def start(self) -> ScriptedBackend:
        """Bind (the same port again after a stop) and serve in daemon threads."""
        if self._generation is not None:
            raise RuntimeError(f"backend {self.name!r} is already running")
        listener = self._bind()
        self.port = listener.getsockname()[1]
        generation = _Generation(listener)
        generation.accept_thread = threading.Thread(
            target=self._accept_loop,
            args=(generation,),
            name=f"backend-{self.name}-accept",
            daemon=True,
        )
        self._generation = generation
        generation.accept_thread.start()
        return self

    def _bind(self) -> socket.socket:
        """Return a listening socket on 127.0.0.1 at ``self.port`` (0: any free port)."""
        deadline = time.monotonic() + REBIND_SECONDS
        while True:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind(("127.0.0.1", self.port))
                listener.listen(128)
            except OSError as error:
                listener.close()
                if error.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            # Accept with a timeout so the accept thread notices stop() without relying on
            # platform-specific wake-ups of a blocked accept().
            listener.settimeout(0.05)
            return listener

    def stop(self) -> None:
        """Close the listener and every open connection; returns promptly."""
        generation = self._generation
        if generation is None:
            return
        self._generation = None
        generation.stopped.set()
        if generation.accept_thread is not None:
            generation.accept_thread.join()
        generation.listener.close()
        with self._lock:
            connections = dict(generation.connections)
        for sock in connections:
            # shutdown() wakes threads blocked in recv/send on the socket; close() alone
            # would not on Linux.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + STOP_JOIN_SECONDS
        for thread in connections.values():
            # A handler may stop its own backend (to simulate a crash mid-response).
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        for sock in connections:
            # Threads stuck in a test's handler still hold theirs; close it for them.
            sock.close()

    def restart(self) -> ScriptedBackend:
        """Stop, then serve again on the same port."""
        self.stop()
        return self.start()

    def __enter__(self) -> ScriptedBackend:
        """Start the backend unless it is already running."""
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the backend."""
        self.stop()

    def route(self, path_prefix: str, handler: Handler, *, read_body: bool = True) -> None:
        """Answer targets starting with ``path_prefix`` with ``handler`` (longest prefix wins).

        With ``read_body=False`` the handler is called as soon as the head has arrived and
        reads the body itself through ``Responder.read_body``/``body_reader``.
        """
        with self._lock:
            self._routes[path_prefix] = _Route(handler, read_body)

    def _match(self, target: str) -> _Route:
        """Return the route with the longest prefix of ``target``, else the default."""
        with self._lock:
            matches = [prefix for prefix in self._routes if target.startswith(prefix)]
            if not matches:
                return _Route(default_response, read_body=True)
            return self._routes[max(matches, key=len)]

    @property
    def requests(self) -> list[RecordedRequest]:
        """Return a copy of the list of requests recorded so far."""
        with self._changed:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Return the recorded requests once there are at least ``n``; AssertionError if not."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= n, timeout):
                seen = [f"{r.method} {r.target}" for r in self._requests]
                raise AssertionError(
                    f"backend {self.name!r}: expected at least {n} request(s) within "
                    f"{timeout}s, got {len(self._requests)}: {seen}"
                )
            return list(self._requests)

    def clear(self, *, routes: bool = False) -> None:
        """Forget the recorded requests and errors (and the routes, if asked)."""
        with self._changed:
            self._requests.clear()
            self.errors.clear()
        if routes:
            with self._lock:
                self._routes.clear()

    @property
    def connections_accepted(self) -> int:
        """Return how many TCP connections were accepted since creation."""
        return self._connections_accepted

    @property
    def open_connections(self) -> int:
        """Return how many accepted connections are currently open."""
        generation = self._generation
        if generation is None:
            return 0
        with self._lock:
            return len(generation.connections)

    def _record(self, request: RecordedRequest) -> None:
        """Add ``request`` to the record and wake waiters."""
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _error(self, message: str) -> None:
        """Remember a protocol or handler error for tests to inspect."""
        with self._changed:
            self.errors.append(message)

    def _accept_loop(self, generation: _Generation) -> None:
        """Accept connections until stopped, one daemon thread each."""
        while not generation.stopped.is_set():
            try:
                sock, _ = generation.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                connection_id = next(self._connection_ids)
                self._connections_accepted += 1
                thread = threading.Thread(
                    target=self._serve_connection,
                    args=(generation, sock, connection_id),
                    name=f"backend-{self.name}-conn-{connection_id}",
                    daemon=True,
                )
                generation.connections[sock] = thread
            thread.start()

    def _serve_connection(
        self, generation: _Generation, sock: socket.socket, connection_id: int
    ) -> None:
        """Serve requests on one connection until either side ends it."""
        try:
            if self.tls is not None:
                tls_sock = self._handshake(generation, sock, connection_id)
                if tls_sock is None:
                    return
                sock = tls_sock
            reader = _SocketReader(sock)
            while not generation.stopped.is_set():
                if not self._serve_one(generation, sock, reader, connection_id):
                    break
        except Exception:  # a thread must not die with an unhandled exception under pytest
            self._error(f"connection {connection_id}: {traceback.format_exc()}")
        finally:
            self._linger_close(sock)
            with self._lock:
                generation.connections.pop(sock, None)

    def _handshake(
        self, generation: _Generation, sock: socket.socket, connection_id: int
    ) -> ssl.SSLSocket | None:
        """Wrap ``sock`` in TLS and shake hands; None (socket closed) if that fails."""
        assert self.tls is not None
        tls_sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._lock:
            # The wrapper now owns the descriptor: stop() must shut down this one.
            thread = generation.connections.pop(sock, None)
            if thread is not None:
                generation.connections[tls_sock] = thread
        try:
            tls_sock.do_handshake()
        except (ssl.SSLError, OSError) as error:
            with self._changed:
                self.tls_failures.append(f"connection {connection_id}: {error}")
            with self._lock:
                generation.connections.pop(tls_sock, None)
            tls_sock.close()
            return None
        return tls_sock

    def _serve_one(
        self,
        generation: _Generation,
        sock: socket.socket,
        reader: _SocketReader,
        connection_id: int,
    ) -> bool:
        """Read and answer one request; return whether the connection can serve another."""
        responder: Responder | None = None
        try:
            head = _read_request_head(reader)
            if head is None:
                return False
            method, target, version, headers = head
            try:
                framing, length = _request_framing(headers)
            except BadRequestError:
                # Still record it, so tests see what the proxy actually sent.
                self._record(
                    RecordedRequest(
                        self.name, method, target, version, headers, "none", connection_id
                    )
                )
                raise
            record = RecordedRequest(
                self.name, method, target, version, headers, framing, connection_id
            )
            body = _RequestBody(reader, record, framing, length)
            responder = Responder(sock, record, body, generation.stopped)
            return self._dispatch(record, responder, body)
        except BadRequestError as error:
            self._error(f"connection {connection_id}: bad request: {error}")
            if responder is None or responder.bytes_sent == 0:
                with contextlib.suppress(OSError):
                    sock.sendall(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n"
                    )
            return False
        except OSError:
            return False  # the peer went away or stop() shut the socket: nothing to report

    def _dispatch(self, record: RecordedRequest, responder: Responder, body: _RequestBody) -> bool:
        """Run the matching handler; return whether the connection can serve another request."""
        route = self._match(record.target)
        if route.read_body:
            if (
                self.auto_continue
                and record.framing != "none"
                and record.version == "HTTP/1.1"
                and "100-continue" in header_tokens(record.headers, "expect")
            ):
                responder.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                body.read_all()
            finally:
                self._record(record)
            if not record.complete:
                return False
        else:
            self._record(record)
        route.handler(record, responder)
        if responder.closed:
            return False
        # Leave the stream positioned at the next request, as a keep-alive server must.
        body.read_all()
        return (
            record.complete
            and not responder.close_after
            and not _wants_close(record.version, record.headers)
        )

    def _linger_close(self, sock: socket.socket) -> None:
        """Send FIN, discard what the peer still sends for a moment, then close."""
        if sock.fileno() == -1:
            return  # already closed by reset() or stop()
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(LINGER_SECONDS)
            deadline = time.monotonic() + LINGER_SECONDS
            discarded = 0
            while time.monotonic() < deadline and discarded < LINGER_MAX_BYTES:
                data = sock.recv(65536)
                if not data:
                    break
                discarded += len(data)
        except OSError:
            pass
        finally:
            sock.close()


def _read_request_head(
    reader: _SocketReader,
) -> tuple[str, str, str, list[tuple[str, str]]] | None:
    """Read a request line and headers; return None on a clean end of the connection."""
    line = reader.readline()
    # RFC 9112 section 2.2: a server should ignore empty lines before the request-line.
    while line in (b"\r\n", b"\n"):
        line = reader.readline()
    if not line:
        return None
    if not line.endswith(b"\n"):
        if len(line) >= MAX_LINE_BYTES:
            raise BadRequestError("request line too long")
        return None  # closed mid request-line: not a request
    parts = line.rstrip(b"\r\n").decode("latin-1").split(" ")
    if len(parts) != 3 or not all(parts) or not parts[2].startswith("HTTP/"):
        raise BadRequestError(f"malformed request line {line!r}")
    method, target, version = parts
    headers = _read_header_block(reader)
    if headers is None:
        return None
    return method, target, version, headers


def _wants_close(version: str, headers: list[tuple[str, str]]) -> bool:
    """Whether the request asks for the connection to be closed after the response."""
    tokens = header_tokens(headers, "connection")
    if version == "HTTP/1.0":
        return "keep-alive" not in tokens
    return "close" in tokens


# --- handler factories -------------------------------------------------------------------


def default_response(request: RecordedRequest, responder: Responder) -> None:
    """Answer ``200 OK`` with ``text/plain`` body ``f"{backend name}\\n"``."""
    responder.respond(200, "OK", [("Content-Type", "text/plain")], f"{request.backend}\n".encode())


def echo() -> Handler:
    """Return a handler that answers 200 with a JSON description of the request."""

    def handle(request: RecordedRequest, responder: Responder) -> None:
        """Read any unread body, then describe the request as JSON."""
        for _ in responder.body_reader():
            pass
        body = request.body
        document = {
            "backend": request.backend,
            "method": request.method,
            "target": request.target,
            "version": request.version,
            "headers": [[name, value] for name, value in request.headers],
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        responder.respond(
            200, "OK", [("Content-Type", "application/json")], json.dumps(document).encode()
        )

    return handle


def fixed(
    status: int,
    reason: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Handler:
    """Return a handler that sends this response (Content-Length added unless framed)."""

    def handle(request: RecordedRequest, responder: Responder) -> None:
        """Send the fixed response."""
        responder.respond(status, reason, headers, body)

    return handle


def raw(data: bytes, then_close: bool = True) -> Handler:
    """Return a handler that sends exactly ``data``, then closes unless told not to."""

    def handle(request: RecordedRequest, responder: Responder) -> None:
        """Send the raw bytes."""
        responder.send(data)
        if then_close:
            responder.close()

    return handle


_CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def slow_chunks(chunks: list[bytes], gate: Callable[[int], None]) -> Handler:
    """Return a handler streaming a chunked 200, calling ``gate(i)`` before chunk ``i``."""

    def handle(request: RecordedRequest, responder: Responder) -> None:
        """Send the head at once, then each chunk when its gate opens."""
        responder.send(_CHUNKED_HEAD)
        if request.method == "HEAD":
            return
        for index, chunk in enumerate(chunks):
            gate(index)
            responder.send_chunk(chunk)
        responder.end_chunks()

    return handle


def big_body(size: int, chunk: int = 65536) -> Handler:
    """Return a handler sending a ``size``-byte ``pattern_bytes`` body piece by piece."""

    def handle(request: RecordedRequest, responder: Responder) -> None:
        """Send the head, then the body in ``chunk``-sized writes."""
        responder.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode("ascii")
        )
        if request.method == "HEAD":
            return
        for offset in range(0, size, chunk):
            responder.send(pattern_bytes(min(chunk, size - offset), offset))

    return handle


def truncated(declared: int, sent: int, chunked: bool = False) -> Handler:
    """Return a handler that announces a body, sends only part of it and closes.

    Without ``chunked`` the head says Content-Length ``declared`` and ``sent`` pattern bytes
    follow. With ``chunked`` one chunk of size ``declared`` is announced and ``sent`` bytes of
    it follow (with the chunk's CRLF if ``sent == declared``); the last chunk never comes.
    """
    if sent > declared:
        raise ValueError("sent must not exceed declared")

    def handle(request: RecordedRequest, responder: Responder) -> None:
        """Send the announced head and the partial body, then close."""
        if chunked:
            responder.send(_CHUNKED_HEAD)
            if declared:
                chunk_end = b"\r\n" if sent == declared else b""
                responder.send(
                    f"{declared:x}\r\n".encode("ascii") + pattern_bytes(sent) + chunk_end
                )
        else:
            responder.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                + f"Content-Length: {declared}\r\n\r\n".encode("ascii")
                + pattern_bytes(sent)
            )
        responder.close()

    return handle


def hang_after_headers() -> Handler:
    """Return a handler that sends a head announcing 100 bytes, then never sends them."""

    def handle(request: RecordedRequest, responder: Responder) -> None:
        """Send the head and wait for stop() (or the peer giving up), then close."""
        responder.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
        )
        responder.wait_until_stopped_or_peer_closed()
        responder.close()

    return handle


def sleep_then_respond(seconds: float, then: Handler = default_response) -> Handler:
    """Return a handler that waits ``seconds`` (cut short by stop()), then runs ``then``."""

    def handle(request: RecordedRequest, responder: Responder) -> None:
        """Sleep, then answer unless the backend was stopped meanwhile."""
        if responder.stopped.wait(seconds):
            return
        then(request, responder)

    return handle


def drop_without_answer(*, reset: bool = True) -> Handler:
    """Return a handler that takes the whole request, then resets (or closes) unanswered."""

    def handle(request: RecordedRequest, responder: Responder) -> None:
        """Drop the connection: RST with ``reset``, else FIN."""
        if reset:
            responder.reset()
        else:
            responder.close()

    return handle


def hold_until(gate: threading.Event, then: Handler = default_response) -> Handler:
    """Return a handler that waits for ``gate``, then runs ``then``.

    It gives up without answering if the backend stops or the peer goes away first, so a
    held request never outlives the test or the balancer worker that sent it.
    """

    def handle(request: RecordedRequest, responder: Responder) -> None:
        """Wait for the gate (or the end), then answer."""
        while not gate.wait(0.05):
            if responder.stopped.is_set() or responder.peer_closed():
                return
        then(request, responder)

    return handle

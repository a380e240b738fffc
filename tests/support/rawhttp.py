"""Raw-socket HTTP/1.1 client helpers, so tests see exactly what the proxy sends back.

Unlike an HTTP library these helpers never normalise, retry or hide anything: headers keep
their case, order and duplicates, and a response cut short is returned with
``complete=False`` (and why it ended) instead of raising. Every read has a timeout.
Stdlib-only.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol

from tests.support.fields import header_tokens

EndReason = Literal["", "framing", "eof", "reset", "timeout"]

# Far above anything a proxy sends; they only stop a garbage stream growing without limit.
MAX_LINE_BYTES = 64 * 1024
MAX_HEADER_LINES = 1000


class RawHTTPError(Exception):
    """Base class for what these helpers raise."""


class ConnectionClosed(RawHTTPError):
    """The peer closed or reset the connection before any byte of a response arrived."""

    def __init__(self, message: str, *, reset: bool = False) -> None:
        """Record whether the connection was reset rather than closed."""
        super().__init__(message)
        self.reset = reset


class ResponseTimeout(RawHTTPError, TimeoutError):
    """No complete status line arrived before the timeout."""


class MalformedResponse(RawHTTPError):
    """Bytes arrived that are not a parseable HTTP/1.1 response."""


class BinaryReader(Protocol):
    """What response parsing reads from: ``sock.makefile("rb")`` or a ``RawConnection``."""

    def readline(self, size: int = -1, /) -> bytes:
        """Return one line, or fewer bytes at EOF or past ``size``."""
        ...

    def read1(self, size: int = -1, /) -> bytes:
        """Return up to ``size`` bytes with at most one underlying read."""
        ...


@dataclass
class RawResponse:
    """One response as received: status, headers as sent, body de-chunked."""

    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool
    chunked: bool
    trailers: list[tuple[str, str]] = field(default_factory=list)
    # Why the body ended: "framing" (as announced), "eof" (peer closed), "reset", "timeout".
    end_reason: EndReason = ""
    # 1xx responses that preceded this one (filled by RawConnection, which skips them).
    interim: list[RawResponse] = field(default_factory=list)

    def header(self, name: str) -> list[str]:
        """Return every value of header ``name`` (case-insensitive), in order received."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


class ResponseStream:
    """One response whose head has been read and whose body is read as it arrives.

    Use it to prove streaming: ``read_exactly(n)`` returns as soon as ``n`` body bytes are
    in, while the rest of the body may not even exist yet. ``finish()`` reads the rest and
    returns the whole ``RawResponse``.
    """

    def __init__(self, source: BinaryReader, method: str = "GET") -> None:
        """Read the status line and headers from ``source`` (raises if nothing arrives)."""
        self._source = source
        self.framing = "head"  # until the headers say how the body is delimited
        self._body = bytearray()
        self.trailers: list[tuple[str, str]] = []
        self.end_reason: EndReason = ""
        self.complete = False
        self._remaining = 0
        self._chunk_left = 0
        self.version, self.status, self.reason = self._read_status_line()
        headers = self._read_headers()
        self.headers = headers if headers is not None else []
        self.framing = self._framing(method) if headers is not None else "cut"
        self.chunked = self.framing == "chunked"
        if self.framing == "none":
            self._end("framing")

    @property
    def ended(self) -> bool:
        """Whether the body has ended, completely or not (``end_reason`` says how)."""
        return self.end_reason != ""

    def _end(self, reason: EndReason) -> None:
        """Mark the body as ended for ``reason``."""
        self.end_reason = reason
        self.complete = reason == "framing" or (reason == "eof" and self.framing == "close")

    def _readline(self) -> bytes:
        """Read one line; on EOF, reset or timeout end the body and return what arrived."""
        try:
            line = self._source.readline(MAX_LINE_BYTES)
        except TimeoutError:
            self._end("timeout")
            return b""
        except OSError:
            self._end("reset")
            return b""
        if not line.endswith(b"\n"):
            if len(line) >= MAX_LINE_BYTES:
                raise MalformedResponse(f"line longer than {MAX_LINE_BYTES} bytes")
            self._end("eof")
        return line

    def _read_status_line(self) -> tuple[str, int, str]:
        """Read and parse the status line, raising if it is missing or malformed."""
        try:
            line = self._source.readline(MAX_LINE_BYTES)
        except TimeoutError as error:
            raise ResponseTimeout("no complete status line before the timeout") from error
        except OSError as error:
            raise ConnectionClosed(
                f"connection failed before a complete status line: {error}", reset=True
            ) from error
        if not line:
            raise ConnectionClosed("connection closed before any response byte")
        if not line.endswith(b"\n"):
            raise MalformedResponse(f"connection ended inside the status line {line!r}")
        text = line.rstrip(b"\r\n").decode("latin-1")
        version, _, rest = text.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
            raise MalformedResponse(f"malformed status line {line!r}")
        return version, int(code), reason

    def _read_headers(self) -> list[tuple[str, str]] | None:
        """Read header lines up to the blank line; None if the stream ends first."""
        headers: list[tuple[str, str]] = []
        while True:
            line = self._readline()
            if self.ended:
                self.complete = False
                return None
            if line in (b"\r\n", b"\n"):
                return headers
            if len(headers) >= MAX_HEADER_LINES:
                raise MalformedResponse("too many header lines")
            name, colon, value = line.rstrip(b"\r\n").decode("latin-1").partition(":")
            if not colon or not name:
                raise MalformedResponse(f"malformed header line {line!r}")
            headers.append((name, value.strip(" \t")))

    def _framing(self, method: str) -> str:
        """Decide how the body is delimited (RFC 9112 section 6.3)."""
        if method.upper() == "HEAD" or self.status < 200 or self.status in (204, 304):
            return "none"
        codings = header_tokens(self.headers, "transfer-encoding")
        if codings:
            return "chunked" if codings[-1] == "chunked" else "close"
        lengths = set(header_tokens(self.headers, "content-length"))
        if not lengths:
            return "close"
        if len(lengths) > 1 or not next(iter(lengths)).isdigit():
            raise MalformedResponse(f"invalid Content-Length {sorted(lengths)!r}")
        self._remaining = int(next(iter(lengths)))
        return "length" if self._remaining else "none"

    def _read1(self, size: int) -> bytes:
        """Read up to ``size`` raw bytes; on EOF, reset or timeout end the body."""
        try:
            data = self._source.read1(size)
        except TimeoutError:
            self._end("timeout")
            return b""
        except OSError:
            self._end("reset")
            return b""
        if not data:
            self._end("eof")
        return data

    def read_some(self, size: int = 65536) -> bytes:
        """Return the next 1..``size`` decoded body bytes, or ``b""`` once the body ended."""
        if size < 1:
            raise ValueError("size must be at least 1")
        while not self.ended:
            if self.framing in ("close", "length"):
                want = size if self.framing == "close" else min(size, self._remaining)
                data = self._read1(want)
                self._remaining -= len(data)
                if self.framing == "length" and self._remaining == 0:
                    self._end("framing")
            elif self._chunk_left == 0:
                self._start_chunk()
                continue
            else:
                data = self._read1(min(size, self._chunk_left))
                self._chunk_left -= len(data)
                if data and self._chunk_left == 0:
                    self._finish_chunk()
            self._body += data
            return data
        return b""

    def _start_chunk(self) -> None:
        """Read a chunk-size line (and the trailer section after the last chunk)."""
        line = self._readline()
        if self.ended:
            return
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise MalformedResponse(f"invalid chunk-size line {line!r}")
        self._chunk_left = int(size_text, 16)
        if self._chunk_left:
            return
        while True:
            line = self._readline()
            if self.ended:
                return
            if line in (b"\r\n", b"\n"):
                self._end("framing")
                return
            name, _, value = line.rstrip(b"\r\n").decode("latin-1").partition(":")
            self.trailers.append((name, value.strip(" \t")))

    def _finish_chunk(self) -> None:
        """Consume the CRLF after a chunk's data."""
        line = self._readline()
        if not self.ended and line not in (b"\r\n", b"\n"):
            raise MalformedResponse(f"chunk data not followed by CRLF but {line!r}")

    def read_exactly(self, size: int) -> bytes:
        """Return the next ``size`` body bytes, or fewer if the body ends first."""
        pieces = bytearray()
        while len(pieces) < size and (piece := self.read_some(size - len(pieces))):
            pieces += piece
        return bytes(pieces)

    def finish(self) -> RawResponse:
        """Read the rest of the body and return the whole response."""
        while self.read_some():
            pass
        return RawResponse(
            status=self.status,
            reason=self.reason,
            version=self.version,
            headers=self.headers,
            body=bytes(self._body),
            complete=self.complete,
            chunked=self.chunked,
            trailers=self.trailers,
            end_reason=self.end_reason,
        )


def read_response(sock_file: BinaryReader, method: str = "GET") -> RawResponse:
    """Parse one response from ``sock_file``; a body cut short gives ``complete=False``.

    1xx responses are returned as they are (no body); call again for the final response.
    Raises ConnectionClosed / ResponseTimeout only when no status line arrived at all, and
    MalformedResponse for bytes that are not HTTP.
    """
    return ResponseStream(sock_file, method).finish()


def build_request(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] | None = None,
    body: bytes | Sequence[bytes] = b"",
    *,
    chunked: bool = False,
    host: str | None = None,
) -> bytes:
    """Return the bytes of a request; adds Host, Content-Length or chunked framing if absent.

    With ``chunked`` the body is sent as one chunk, or as given when it is a list of chunks.
    """
    fields = list(headers or [])
    names = {name.lower() for name, _ in fields}
    if host is not None and "host" not in names:
        fields.insert(0, ("Host", host))
    pieces = [body] if isinstance(body, bytes) else list(body)
    if chunked:
        if "transfer-encoding" not in names:
            fields.append(("Transfer-Encoding", "chunked"))
        payload = b"".join(
            f"{len(piece):x}\r\n".encode("ascii") + piece + b"\r\n" for piece in pieces if piece
        )
        payload += b"0\r\n\r\n"
    else:
        payload = b"".join(pieces)
        if payload and "content-length" not in names:
            fields.append(("Content-Length", str(len(payload))))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in fields
    )
    return head.encode("latin-1") + b"\r\n" + payload


def send_raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` to 127.0.0.1:``port`` and return all bytes read until close or timeout."""
    received = bytearray()
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                piece = sock.recv(65536)
            except OSError:  # timeout or reset: return what arrived
                break
            if not piece:
                break
            received += piece
    return bytes(received)


class _SocketReader:
    """A ``BinaryReader`` over a socket that, unlike makefile(), survives timeouts."""

    def __init__(self, sock: socket.socket) -> None:
        """Wrap ``sock``; the reader never closes it."""
        self._sock = sock
        self.buffer = bytearray()

    def fill(self) -> bool:
        """Receive more bytes into the buffer; return False at EOF (errors propagate)."""
        data = self._sock.recv(65536)
        self.buffer += data
        return bool(data)

    def readline(self, size: int = -1, /) -> bytes:
        """Return one line including its LF, or fewer bytes at EOF or past ``size``."""
        limit = size if size >= 0 else None
        while True:
            end = self.buffer.find(b"\n", 0, limit)
            if end >= 0:
                return self._take(end + 1)
            if (limit is not None and len(self.buffer) >= limit) or not self.fill():
                return self._take(len(self.buffer) if limit is None else limit)

    def read1(self, size: int = -1, /) -> bytes:
        """Return up to ``size`` bytes, receiving only if none are buffered."""
        if not self.buffer:
            self.fill()
        return self._take(len(self.buffer) if size < 0 else size)

    def _take(self, size: int) -> bytes:
        """Remove and return up to ``size`` buffered bytes."""
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


class RawConnection:
    """One keep-alive client connection to 127.0.0.1:``port``, as a context manager."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        """Connect; ``timeout`` bounds every single read and write."""
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._reader = _SocketReader(self.sock)

    def __enter__(self) -> RawConnection:
        """Return the connection."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the connection."""
        self.close()

    def send(self, data: bytes) -> None:
        """Write ``data`` as is."""
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] | None = None,
        body: bytes | Sequence[bytes] = b"",
        chunked: bool = False,
    ) -> RawResponse:
        """Send a request built by ``build_request`` and return the final response."""
        self.send(
            build_request(
                method,
                target,
                headers,
                body,
                chunked=chunked,
                host=f"127.0.0.1:{self.port}",
            )
        )
        return self.read_response(method)

    def read1(self, size: int = 65536) -> bytes:
        """Up to ``size`` raw bytes (a tunnel's, after a 101), buffered ones first; b"" at EOF."""
        return self._reader.read1(size)

    def read_head(self, method: str = "GET", *, skip_interim: bool = True) -> ResponseStream:
        """Read the next response's head (skipping 1xx unless told); the body is read on demand."""
        while True:
            stream = ResponseStream(self._reader, method)
            # 101 ends HTTP on this connection, so it counts as final.
            if not skip_interim or not 100 <= stream.status < 200 or stream.status == 101:
                return stream

    def read_response(self, method: str = "GET") -> RawResponse:
        """Read the next final response, keeping any 1xx responses in ``interim``."""
        interim: list[RawResponse] = []
        while True:
            response = read_response(self._reader, method)
            if not 100 <= response.status < 200 or response.status == 101:
                response.interim = interim
                return response
            interim.append(response)

    def is_closed_by_peer(self, timeout: float = 1.0) -> bool:
        """Return True if the peer closes (or resets) the connection within ``timeout``.

        Bytes that arrive meanwhile are kept for the next read.
        """
        deadline = time.monotonic() + timeout
        original_timeout = self.sock.gettimeout()
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                self.sock.settimeout(remaining)
                try:
                    if not self._reader.fill():
                        return True
                except TimeoutError:
                    return False
                except OSError:
                    return True
            return False
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(original_timeout)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.sock.close()

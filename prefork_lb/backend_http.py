"""The http.client layer under urllib3: how a backend's response is read, and when a
pooled connection is fit to reuse.

urllib3 builds on ``http.client``, which a proxy cannot take as it is:

- interim 1xx responses (``103 Early Hints``) must be skipped, as
  http.client skips ``100 Continue``, not returned as the final response;
- http.client takes the end of the stream for the blank line that ends a
  head, so a backend that dies mid-head would pass for a complete response;
- urllib3 puts a connection back in its pool inside the read that finishes
  the body, so bytes a backend sent beyond its response (a body on a HEAD)
  would stay on the pooled connection and answer the next request on it;
- http.client parses every head with the email package, and urllib3 checks
  each idle connection through gevent's cooperative poll: together about a
  tenth of a worker's CPU per request, for what a regular expression and a
  plain ``poll(2)`` do as well.

``_FinalResponse`` and the connection and pool classes here do all four;
``upstream.py`` uses the pools.
"""

from __future__ import annotations

import contextlib
import email.parser
import http.client
import re
import select
import socket
import ssl
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from gevent.monkey import get_original
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3._base_connection import _ResponseOptions
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util import SKIP_HEADER
from urllib3.util.request import _METHODS_NOT_EXPECTING_BODY

MAX_INTERIM_RESPONSES = 16
# The standard library's poll, whether or not gevent has patched select.
_blocking_poll = get_original("select", "poll")


class IncompleteHead(http.client.HTTPException):
    """The connection ended before the blank line that ends the response head."""


# A header line the email parser reads as plainly as this: a token name, a colon,
# a value of visible characters, spaces and tabs (latin-1), then CRLF or LF.
_PLAIN_LINE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\x84\x86-\xff]*\r?\n\Z")


def parse_head(
    lines: list[bytes], _class: type[http.client.HTTPMessage] = http.client.HTTPMessage
) -> http.client.HTTPMessage:
    """``http.client.parse_headers`` of the head's ``lines``, without the email parser.

    The same message (the same header lines, no defects, an empty payload)
    for a head whose every line is ``name: value`` and that ends with a
    blank line; anything else (folded lines, odd characters, a multipart or
    message Content-Type) goes to the email parser.
    """
    if lines[-1] in (b"\r\n", b"\n"):
        msg = _class()
        for raw in lines[:-1]:
            line = raw.decode("iso-8859-1")
            if not _PLAIN_LINE.match(line):
                break
            name, _, value = line.partition(":")
            if name.lower() == "content-type" and (
                "multipart" in value.lower() or "message" in value.lower()
            ):
                break
            msg.set_raw(name, value.lstrip(" \t").rstrip("\r\n"))
        else:
            msg.set_payload("")
            return msg
    text = b"".join(lines).decode("iso-8859-1")
    return email.parser.Parser(_class=_class).parsestr(text)


class _FinalResponse(http.client.HTTPResponse):
    """An http.client response that skips every interim (1xx) response but 101.

    ``begin()`` skips a ``100 Continue`` and reads on; reporting any other
    interim status as 100 makes it skip those too (RFC 9110 section 15.2
    lets the recipient of a 1xx it did not ask for ignore it).

    ``begin()`` is http.client's (CPython 3.11, line for line; check it when
    Python moves) but for the head: ``parse_head`` gives the same message as
    ``http.client.parse_headers`` without the email parser's cost for a
    plain head (about 6% of a worker's CPU per proxied request), and a head
    cut short is an error.
    """

    _interim_seen = 0

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self._backend_sock = sock

    def begin(self) -> None:  # noqa: PLR0912 - http.client's begin, line for line
        """Read the status line and the head: http.client's, with ``parse_head``.

        And one check more: a head must end with a blank line, not with the
        end of the stream.
        """
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            skipped = http.client._read_headers(self.fp)
            if self.debuglevel > 0:
                print("headers:", skipped)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        lines = http.client._read_headers(self.fp)
        if lines[-1] == b"":
            raise IncompleteHead(f"response head cut short after {len(lines) - 1} lines")
        self.headers = self.msg = parse_head(lines)
        if self.debuglevel > 0:
            for name, value in self.headers.items():
                print("header:", name + ":", value)
        transfer_encoding = self.headers.get("transfer-encoding")
        if transfer_encoding and transfer_encoding.lower() == "chunked":
            self.chunked = True
            self.chunk_left = None
        else:
            self.chunked = False
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if (
            status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED)
            or 100 <= status < 200
            or self._method == "HEAD"
        ):
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True

    def _close_conn(self) -> None:
        # The file's buffer holds what was read ahead of the response's end, and
        # goes with the file. Bytes there put the backend out of step with its
        # own framing: they would answer the next request on this connection.
        # urllib3 puts the connection back in the pool as this runs; shut down,
        # the pool's check at its next checkout finds it dropped and closes it.
        fp = self.fp
        if fp is not None and _has_buffered_bytes(fp, self._backend_sock):
            with contextlib.suppress(OSError):
                self._backend_sock.shutdown(socket.SHUT_RDWR)
        super()._close_conn()  # type: ignore[misc]

    def _read_status(self) -> tuple[str, int, str]:
        version, status, reason = super()._read_status()  # type: ignore[misc]
        if 100 <= status < 200 and status != http.client.SWITCHING_PROTOCOLS:
            self._interim_seen += 1
            if self._interim_seen > MAX_INTERIM_RESPONSES:
                raise http.client.HTTPException(f"more than {MAX_INTERIM_RESPONSES} 1xx responses")
            return version, http.client.CONTINUE, reason
        return version, status, reason


def _has_buffered_bytes(fp: Any, sock: socket.socket) -> bool:
    """Whether ``fp`` holds bytes not read yet (or the socket has some), without waiting."""
    timeout = sock.gettimeout()
    try:
        sock.settimeout(0.0)
        # peek() returns what is buffered; only an empty buffer reads the socket.
        return bool(fp.peek(1))
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except (OSError, ValueError):
        return True  # broken, or closed already: not to be reused either way
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)


def body_at_hand(response: http.client.HTTPResponse) -> bool:
    """Whether the first read of a body framed by its length returns without waiting.

    True when bytes of it were read in with the head (or wait in the
    socket). A chunked body is never at hand here: its first read may wait
    for the rest of a chunk-size line.
    """
    fp = response.fp
    if fp is None or response.chunked or not isinstance(response, _FinalResponse):
        return False
    return _has_buffered_bytes(fp, response._backend_sock)


def take_read_ahead(response: http.client.HTTPResponse) -> bytes:
    """The bytes the response's reader holds beyond its head, taken out; nothing is waited for.

    After a ``101`` the backend may speak the new protocol at once, and
    http.client reads the head in buffered blocks: what followed the head
    sits in its buffer, not in the socket. The response's reader is closed
    (the socket is not: it is the caller's now).
    """
    fp = response.fp
    if fp is None:
        return b""
    sock = response._backend_sock if isinstance(response, _FinalResponse) else None
    timeout = sock.gettimeout() if sock is not None else None
    try:
        if sock is not None:
            sock.settimeout(0.0)
        # peek() returns what is buffered; only an empty buffer reads the socket.
        data = fp.read(len(fp.peek(1)))
    except (BlockingIOError, ssl.SSLWantReadError):
        data = b""
    finally:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(timeout)
    fp.close()
    response.fp = None  # type: ignore[assignment]  # as http.client's own _close_conn does
    return bytes(data)


def _readable_now(sock: Any) -> bool:
    """Whether a pooled connection has anything to read (data, EOF or an error) right now.

    urllib3's check (``wait_for_read(sock, timeout=0)``) gives the same
    answer through gevent's cooperative ``select.poll``, which makes, starts
    and stops a libev watcher and waits on an event for every check (about
    6% of a worker's CPU per proxied request). A plain ``poll(2)`` with a
    zero timeout never blocks, so it needs no cooperation from the hub.
    """
    poller = _blocking_poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


# A field block every line of which http.client's putheader would pass as it is:
# a token name, ": ", a value without CR or LF. (http.client lets a CR or LF
# followed by a space or tab through; such a block goes line by line instead.)
_PLAIN_FIELDS = re.compile(r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+: [^\r\n]*\r\n)*")


class HeaderLines(Mapping[str, str]):
    """Header lines for a request, in order, repeated names kept (a dict cannot hold them).

    urllib3 takes them as a mapping (it iterates names and ``items()``); the
    connections here take a request without a body as one field block.
    """

    def __init__(self, lines: Iterable[tuple[str, str]]) -> None:
        self._lines = list(lines)
        self.names = {name.lower() for name, _ in self._lines}

    def append(self, line: tuple[str, str]) -> None:
        """Add one more line at the end."""
        self._lines.append(line)
        self.names.add(line[0].lower())

    def __getitem__(self, name: str) -> str:
        for line_name, value in self._lines:
            if line_name.lower() == name.lower():
                return value
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def items(self) -> Iterator[tuple[str, str]]:  # type: ignore[override]
        """Every line, repeated names included, in order."""
        return iter(self._lines)

    def field_block(self, method: str) -> bytes | None:
        """The encoded lines (SKIP_HEADER ones left out) if urllib3 would send just these.

        None when urllib3's ``request`` would add or frame something itself
        (no Host, Accept-Encoding or User-Agent decision; a method that
        expects a body without a Content-Length), or when a line is not
        plainly valid: those go through urllib3 and http.client line by line,
        with their checks and their errors.
        """
        names = self.names
        if (
            "host" not in names
            or "accept-encoding" not in names
            or "user-agent" not in names
            or "transfer-encoding" in names
            or ("content-length" not in names and method.upper() not in _METHODS_NOT_EXPECTING_BODY)
        ):
            return None
        text = "".join(
            f"{name}: {value}\r\n" for name, value in self._lines if value is not SKIP_HEADER
        )
        if not _PLAIN_FIELDS.fullmatch(text):
            return None
        try:
            return text[:-2].encode("latin-1")  # http.client joins the lines with CRLF itself
        except UnicodeEncodeError:
            return None


class _PreparedHead(HTTPConnection):
    """urllib3's connection, sending a bodiless request's checked field block as one piece.

    Everything else is urllib3's and http.client's own: the socket timeout,
    the response options, ``putrequest`` (its checks of the method and the
    target, and the connection's state), ``endheaders`` (connecting if need
    be, one send).
    """

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        chunked: bool = False,
        preload_content: bool = True,
        decode_content: bool = True,
        enforce_content_length: bool = True,
    ) -> None:
        """urllib3's ``request``; a ``HeaderLines`` head without a body goes as one block."""
        block = None
        if body is None and not chunked and isinstance(headers, HeaderLines):
            block = headers.field_block(method)
        if block is None:
            super().request(
                method,
                url,
                body,
                headers,
                chunked=chunked,
                preload_content=preload_content,
                decode_content=decode_content,
                enforce_content_length=enforce_content_length,
            )
            return
        if self.sock is not None:
            self.sock.settimeout(self.timeout)
        self._response_options = _ResponseOptions(
            request_method=method,
            request_url=url,
            preload_content=preload_content,
            decode_content=decode_content,
            enforce_content_length=enforce_content_length,
        )
        self.putrequest(method, url, skip_host=True, skip_accept_encoding=True)
        self._buffer.append(block)  # type: ignore[attr-defined]  # http.client's own list
        self.endheaders()


class _HTTPConnection(_PreparedHead):
    response_class = _FinalResponse

    @property
    def is_connected(self) -> bool:
        """Whether the connection is still usable: urllib3's check, made cheaper."""
        return self.sock is not None and not _readable_now(self.sock)


class _HTTPSConnection(_PreparedHead, HTTPSConnection):
    response_class = _FinalResponse

    @property
    def is_connected(self) -> bool:
        """Whether the connection is still usable: urllib3's check, made cheaper."""
        return self.sock is not None and not _readable_now(self.sock)


class BackendHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class BackendHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection

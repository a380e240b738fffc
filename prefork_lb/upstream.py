"""Talking to backends: one urllib3 PoolManager per worker, and the error mapping.

Built in the worker, after gevent has patched the standard library (a pool
made in the master would carry real thread locks). Requests go out on a
pooled connection through the pool's ``_make_request``, not ``urlopen``:
``HTTPConnectionPool.urlopen`` (and ``PoolManager.urlopen``) re-encode the
target (``%2f`` becomes ``%2F``, ``"`` becomes ``%22``), and the balancer
forwards the target byte for byte. Retries and redirects are the
balancer's business, so urllib3's are off.

A request that fails on a reused keep-alive connection before any answer
(the backend closed it as it went idle) is sent once more on a fresh
connection, when that cannot repeat anything: an idempotent method, no body.
How responses are read (interim 1xx skipped, heads cut short refused, stray
bytes never pooled) is ``backend_http.py``'s.

Every urllib3 or socket exception is turned into an ``LBError`` here, by one
ordered table, most specific first: ``NewConnectionError`` subclasses
``ConnectTimeoutError``, so the other order would report "connection refused"
as a timeout (504 instead of 502).

``https://`` backends are verified (``backend_tls_verify``) against
``backend_ca_bundle`` or the system's trust store, with one TLS context per
worker that requests and health checks share. A failed handshake happens
while connecting: nothing was sent, so any request may go on to another
backend, which is verified the same way.
"""

from __future__ import annotations

import http.client
import ssl
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from urllib3 import HTTPConnectionPool, PoolManager
from urllib3.connection import HTTPConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    InsecureRequestWarning,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.response import BaseHTTPResponse, HTTPResponse
from urllib3.util import SKIP_HEADER, Timeout
from urllib3.util.response import assert_header_parsing
from urllib3.util.ssl_ import create_urllib3_context

from prefork_lb.backend_http import (
    BackendHTTPConnectionPool,
    BackendHTTPSConnectionPool,
    HeaderLines,
    IncompleteHead,
    body_at_hand,
    take_read_ahead,
)
from prefork_lb.config import Backend, Settings
from prefork_lb.errors import (
    BackendError,
    BackendTimeout,
    BackendUnreachable,
    BadBackendResponse,
)
from prefork_lb.headers import Headers
from prefork_lb.scheduling import IDEMPOTENT

if TYPE_CHECKING:
    from urllib3._base_connection import BaseHTTPConnection

RESPONSE_CHUNK = 64 * 1024
# A reused connection the backend closed or reset before answering. It most
# likely closed it as it went idle, but it may have seen the request: only
# idempotent requests are replayed (RFC 9110 section 9.2.2).
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError)


# Most specific first; the first match wins.
_ERROR_TABLE: tuple[tuple[type[BaseException], type[BackendError], str], ...] = (
    (NewConnectionError, BackendUnreachable, "connection failed"),
    (ConnectTimeoutError, BackendTimeout, "connect timed out"),
    (ReadTimeoutError, BackendTimeout, "read timed out"),
    (TimeoutError, BackendTimeout, "timed out"),
    (SSLError, BackendUnreachable, "TLS failed"),
    (http.client.RemoteDisconnected, BackendUnreachable, "closed the connection before answering"),
    (IncompleteHead, BackendUnreachable, "closed the connection mid-head"),
    (http.client.IncompleteRead, BackendUnreachable, "closed the connection mid-body"),
    (ConnectionResetError, BackendUnreachable, "reset the connection"),
    (http.client.HTTPException, BadBackendResponse, "sent an invalid response"),
    (OSError, BackendUnreachable, "connection failed"),
    (HTTPError, BadBackendResponse, "sent an invalid response"),
)
# Raised while connecting: the request cannot have reached the backend.
# urllib3 raises its SSLError only from the handshake of a new connection;
# TLS errors later on are plain ssl.SSLError (an OSError).
_NOT_SENT = (NewConnectionError, ConnectTimeoutError, SSLError)


def backend_tls_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for urllib3 HTTPS pools: certificate checks as the settings say.

    One context (and one load of the CA certificates) serves every
    connection; urllib3 would otherwise build and load one per connection.
    """
    verify = settings.backend_tls_verify
    cert_reqs = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    # check_hostname follows cert_reqs: the name in the backend's URL is checked.
    context = create_urllib3_context(cert_reqs=cert_reqs)
    if verify and settings.backend_ca_bundle:
        context.load_verify_locations(cafile=settings.backend_ca_bundle)
    elif verify:
        context.load_default_certs()
    else:
        # The operator turned checks off and was warned once at start; urllib3
        # would warn again on every request.
        warnings.filterwarnings("ignore", category=InsecureRequestWarning)
    return {"ssl_context": context, "cert_reqs": cert_reqs}


def map_upstream_error(err: BaseException, backend: Backend) -> BackendError:
    """Translate what urllib3 or the socket raised into the balancer's own error."""
    # ProtocolError wraps the low-level cause ("Connection broken: IncompleteRead(...)").
    if isinstance(err, ProtocolError) and len(err.args) > 1:
        cause = err.args[1]
        if isinstance(cause, BaseException):
            err = cause
    for raised, mapped, what in _ERROR_TABLE:
        if isinstance(err, raised):
            return mapped(
                f"backend {backend.url} {what}: {err}",
                reason=os_reason(err) or what,
                request_sent=not isinstance(err, _NOT_SENT),
            )
    return BadBackendResponse(f"backend {backend.url} failed: {err!r}")


def os_reason(err: BaseException) -> str:
    """The operating system's (or TLS's) words for a failure ("connection refused")."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {cause.verify_message or cause.reason}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed: {(cause.reason or str(cause)).lower()}"
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    return ""


class Upstream:
    """The worker's connections to every backend, and how requests go out on them."""

    def __init__(self, settings: Settings) -> None:
        self._timeout = Timeout(connect=settings.connect_timeout, read=settings.read_timeout)
        self._manager = PoolManager(
            num_pools=max(len(settings.backends), 1),
            maxsize=settings.pool_size,
            block=False,
            retries=False,
            timeout=self._timeout,
            **backend_tls_options(settings),
        )
        self._manager.pool_classes_by_scheme = {
            "http": BackendHTTPConnectionPool,
            "https": BackendHTTPSConnectionPool,
        }
        # The manager keeps one pool per backend (num_pools) and so never
        # evicts one: each is looked up once, not on every request.
        self._pools: dict[tuple[str, str, int | None], HTTPConnectionPool] = {}

    def send(
        self,
        backend: Backend,
        method: str,
        target: str,
        headers: Headers,
        body: Iterable[bytes] | None,
        *,
        chunked: bool,
    ) -> BaseHTTPResponse:
        """Send one request and return the response with its body still unread."""
        pool = self._pool(backend)
        upstream_headers = _header_lines(headers)
        conn = pool._get_conn()
        replayable = body is None and method in IDEMPOTENT
        while True:
            reused = not conn.is_closed
            try:
                response = pool._make_request(
                    conn,
                    method,
                    target,
                    body=None if body is None else self._upload(conn, body),
                    headers=upstream_headers,
                    chunked=chunked,
                    timeout=self._timeout,
                    response_conn=conn,
                    preload_content=False,
                    decode_content=False,
                    enforce_content_length=True,
                )
                _check_header_parsing(response)
            except BaseException as err:
                # As urlopen does: a connection in an unknown state is closed, its slot kept.
                conn.close()
                if reused and replayable and isinstance(err, _STALE_CONNECTION):
                    continue  # once more, on a fresh connection (conn is closed now)
                pool._put_conn(conn)
                if isinstance(err, HTTPError | OSError | http.client.HTTPException):
                    raise map_upstream_error(err, backend) from err
                raise
            return response

    def send_upgrade(
        self, backend: Backend, method: str, target: str, headers: Headers
    ) -> tuple[BaseHTTPResponse, HTTPConnection]:
        """Send an upgrade request on a fresh connection; the response head and the connection.

        The connection is the pool's kind (the same TLS context and checks)
        but never goes back to the pool: the response does not know it, and
        it is the caller's to close. ``read_timeout`` bounds the wait for
        the answer.
        """
        pool = self._pool(backend)
        conn = pool._new_conn()
        try:
            response = pool._make_request(
                conn,
                method,
                target,
                body=None,
                headers=_header_lines(headers),
                timeout=self._timeout,
                response_conn=None,  # so that releasing the response never pools it
                preload_content=False,
                decode_content=False,
                enforce_content_length=True,
            )
            _check_header_parsing(response)
        except BaseException as err:
            conn.close()
            if isinstance(err, HTTPError | OSError | http.client.HTTPException):
                raise map_upstream_error(err, backend) from err
            raise
        assert isinstance(conn, HTTPConnection)  # the pools here make nothing else
        return response, conn

    def keep_only(self, backends: Iterable[Backend]) -> None:
        """Close the pools of every backend but these (addresses DNS no longer gives).

        Their idle keep-alive connections would otherwise stay open for the
        life of the worker, one set per address ever found.
        """
        keep = {(backend.scheme, backend.host, backend.port) for backend in backends}
        for key in [key for key in self._pools if key not in keep]:
            self._pools.pop(key).close()
        # keys(): a copy; the container refuses to be iterated over.
        for pool_key in self._manager.pools.keys():  # noqa: SIM118
            if (pool_key.key_scheme, pool_key.key_host, pool_key.key_port) not in keep:
                del self._manager.pools[pool_key]

    def _pool(self, backend: Backend) -> HTTPConnectionPool:
        key = (backend.scheme, backend.host, backend.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._manager.connection_from_host(backend.host, backend.port, backend.scheme)
            self._pools[key] = pool
        return pool

    def _upload(self, conn: BaseHTTPConnection, body: Iterable[bytes]) -> Iterator[bytes]:
        # urllib3 keeps the connect timeout on the socket for the whole request;
        # once connected, sending the body is bounded by the read timeout.
        first = True
        for piece in body:
            if first and isinstance(conn, HTTPConnection) and conn.sock is not None:
                conn.sock.settimeout(self._timeout.read_timeout)
                first = False
            yield piece


def _header_lines(headers: Headers) -> HeaderLines:
    lines = HeaderLines(headers)
    # http.client adds these when absent; a proxy must not invent them.
    if "user-agent" not in lines.names:
        lines.append(("User-Agent", SKIP_HEADER))
    if "accept-encoding" not in lines.names:
        lines.append(("Accept-Encoding", SKIP_HEADER))
    return lines


def _check_header_parsing(response: BaseHTTPResponse) -> None:
    # http.client silently stops at a header line it cannot parse and treats
    # the rest as body; urllib3 only logs it. Here it is a bad response.
    original = getattr(response, "_original_response", None)
    if isinstance(original, http.client.HTTPResponse):
        try:
            assert_header_parsing(original.msg)
        except HTTPError as err:
            raise http.client.HTTPException(f"unparseable header lines: {err}") from err


def stream_body(
    response: BaseHTTPResponse, backend: Backend, on_complete: Callable[[], None]
) -> Iterator[bytes]:
    """Yield the response body as the backend sends it; raise LBError if it breaks off.

    However it ends, the connection goes back to the pool: reusable after a
    complete body, closed after anything else (including the client leaving).
    ``on_complete`` runs once the whole body is in: when Content-Length says
    so, before the last piece is yielded, so the backend's connection and its
    in-flight count are given back before the client has the end of the body.

    The first piece is ``b""`` unless body bytes are at hand already: the
    server sends the response head at the first write, so the head goes out
    at once when the body may be long in coming (or never come), and
    together with the first body bytes (one send) when they are here.
    """
    complete = False
    original = getattr(response, "_original_response", None)
    at_hand = isinstance(original, http.client.HTTPResponse) and body_at_hand(original)
    try:
        if not at_hand:
            yield b""
        while not complete:
            chunk = response.read1(RESPONSE_CHUNK)
            complete = not chunk or getattr(response, "length_remaining", None) == 0
            if complete:
                release(response, keep=True)
                on_complete()
            if chunk:
                yield chunk
    except (HTTPError, OSError, http.client.HTTPException) as err:
        raise map_upstream_error(err, backend) from err
    finally:
        if not complete:
            release(response, keep=False)


def switched_read_ahead(response: BaseHTTPResponse) -> bytes:
    """After a ``101``: the bytes of the new protocol already read behind the head.

    The response is done with: its reader is closed, the connection left as it is.
    """
    original = getattr(response, "_original_response", None)
    if not isinstance(original, http.client.HTTPResponse):
        return b""
    return take_read_ahead(original)


def release_without_body(response: BaseHTTPResponse, *, head: bool) -> None:
    """Return the connection of a response that has no body (HEAD, 204, 304) unread.

    Such a response ends with its head whatever its headers say (RFC 9112
    section 6.3); a 204 or 304 that announces chunked framing comes from a
    backend that may send a body anyway, so its connection is closed.
    """
    keep = head or "transfer-encoding" not in response.headers
    if keep:
        # Nothing to read, but reading closes http.client's response; left
        # open, the next request on the connection would fail (ResponseNotReady).
        try:
            response.read(decode_content=False)
        except (HTTPError, OSError, http.client.HTTPException):
            keep = False
    release(response, keep=keep)


def release(response: BaseHTTPResponse, *, keep: bool) -> None:
    """Return the response's connection to its pool, closing it first unless ``keep``."""
    if not keep:
        response.close()
    if isinstance(response, HTTPResponse):
        response.release_conn()

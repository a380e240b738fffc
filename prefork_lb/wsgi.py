"""The WSGI callable each worker runs: environ in, streamed backend response out.

``create_app()`` is gunicorn's app factory (``wsgi_app`` in gunicorn.conf.py);
it runs in each worker after gevent has patched it, so the urllib3 pools are
built there. Each request:

1. becomes a ``ProxyRequest`` (raw target, header lines, body framing);
2. goes to the backend the shared rotation (or the least-connections
   policy) picks among those that are up (``selection.Selector``);
3. goes upstream with rewritten headers and its body streamed from the
   client as it arrives. If the try fails before an answer, it may go on to
   the next backend (``balancer.may_retry`` says when);
4. comes back as status, checked and rewritten headers, and a body streamed
   chunk by chunk. A failure before the status line becomes a short
   plain-text error response; after it, the client connection is aborted.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prefork_lb import hooks, shared
from prefork_lb.admin import AdminEndpoint
from prefork_lb.config import Settings
from prefork_lb.downstream import BodyLimits, RequestBody, request_body, reset_on_close
from prefork_lb.errors import (
    AbortResponse,
    BackendError,
    LBError,
    NoBackendAvailable,
    error_kind,
)
from prefork_lb.headers import (
    REQUEST_ID,
    AddressSet,
    canonical_name,
    client_request_id,
    response_head,
    upstream_request_headers,
)
from prefork_lb.prober import HealthProber
from prefork_lb.request import (
    ProxyRequest,
    body_framing,
    check_host,
    upstream_target,
)
from prefork_lb.scheduling import may_retry
from prefork_lb.selector import Selector
from prefork_lb.upstream import (
    Upstream,
    backend_tls_options,
    release,
    release_without_body,
    stream_body,
)

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

log = logging.getLogger("gunicorn.error").getChild("prefork_lb")


def create_app() -> ProxyApp:
    """Gunicorn's app factory: the balancer, built from the state the master installed."""
    state = shared.installed()
    _log_urllib3_warnings()
    slot = shared.worker_slot()
    selector = Selector(state.settings, state, slot)
    HealthProber(selector, state.health, backend_tls_options(state.settings)).start()
    stats = _Stats(state.stats, slot) if slot is not None else None
    return ProxyApp(state.settings, selector, AdminEndpoint(state, selector), stats)


def _log_urllib3_warnings() -> None:
    # urllib3 logs "Connection pool is full" (pool_size too small) to a
    # NullHandler; send the pool's warnings where the operator looks. (Not
    # urllib3.connection's: its header-parsing warning is a 502 here already.)
    urllib3_log = logging.getLogger("urllib3.connectionpool")
    urllib3_log.setLevel(logging.WARNING)
    for handler in logging.getLogger("gunicorn.error").handlers:
        urllib3_log.addHandler(handler)


class ProxyApp:
    """A WSGI application that forwards every request to one of the backends."""

    def __init__(
        self,
        settings: Settings,
        selector: Selector,
        admin: AdminEndpoint,
        stats: _Stats | None = None,
    ) -> None:
        self._settings = settings
        self._selector = selector
        self._admin = admin
        self._stats = stats
        self._index = {backend.url: i for i, backend in enumerate(settings.backends)}
        self._upstream = Upstream(settings)
        self._trusted_proxies = AddressSet(settings.trusted_proxies)
        self._body_limits = BodyLimits(
            settings.client_timeout, settings.client_min_rate, settings.max_body_size
        )

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Forward one request; the body of the answer streams from the backend."""
        try:
            request = read_request(environ)
            if self._admin.serves(request):
                return self._admin.respond(request, start_response)
            environ["prefork_lb.request_id"] = (
                client_request_id(request.headers) or uuid.uuid4().hex
            )
            return self._forward(environ, start_response, request)
        except LBError as err:
            environ["prefork_lb.error"] = type(err).__name__
            if environ.get("CONTENT_LENGTH", "0") not in ("", "0") or (
                "HTTP_TRANSFER_ENCODING" in environ
            ):
                # Some of the body may be unread: gunicorn would read (and drop)
                # the rest of it to find a next request. Close instead.
                hooks.close_connection_after_response()
            if self._stats is not None:
                self._count_own_answer(environ, err)
            log.warning(
                "%s %s -> %d: %s",
                environ.get("REQUEST_METHOD"),
                environ.get("RAW_URI"),
                err.status.value,
                err.detail,
            )
            status, headers, body = err.response()
            if "prefork_lb.request_id" in environ:
                headers.append((REQUEST_ID, environ["prefork_lb.request_id"]))
            start_response(status, headers)
            return [body]

    def _count_own_answer(self, environ: Environ, err: LBError) -> None:
        """Count an answer the balancer made itself: by the backend that failed, if one did."""
        assert self._stats is not None
        column = self._stats.balancer
        if isinstance(err, BackendError):
            # Its try was counted when it failed; the answer is that backend's.
            column = self._index.get(environ.get("prefork_lb.backend", ""), column)
        else:
            self._stats.table.count_error(self._stats.slot, column, error_kind(err))
        self._stats.table.count_response(self._stats.slot, column, err.status.value)

    def _forward(
        self, environ: Environ, start_response: StartResponse, request: ProxyRequest
    ) -> Iterable[bytes]:
        """Try backends in rotation order until one answers or retrying must stop."""
        body = self._body(environ, request)
        tried: list[int] = []
        last_error: BackendError | None = None
        first_try = time.monotonic()
        while True:
            index = self._next_backend(tried, last_error)
            environ["prefork_lb.backend"] = self._selector.backends[index].url
            try:
                return self._try(environ, start_response, request, index, body)
            except BackendError as err:
                tried.append(index)
                if self._stats is not None:
                    self._stats.table.count_error(self._stats.slot, index, error_kind(err))
                retry = err.counts_as_failure and may_retry(
                    method=request.method,
                    request_sent=err.request_sent or (body is not None and body.started),
                    body_replayable=body is None or body.replayable,
                    tries=len(tried),
                    retries=self._settings.retries,
                    elapsed=time.monotonic() - first_try,
                    budget=self._settings.retry_timeout,
                )
                if not retry:
                    raise
                if self._stats is not None:
                    self._stats.table.count_retry(self._stats.slot, index)
                environ["prefork_lb.retries"] = str(len(tried))
                log.warning(
                    "%s %s: %s; trying another backend",
                    request.method,
                    environ.get("RAW_URI"),
                    err.detail,
                )
                last_error = err

    def _next_backend(self, tried: list[int], last_error: BackendError | None) -> int:
        try:
            return self._selector.choose(frozenset(tried))
        except NoBackendAvailable:
            if last_error is not None:
                # Every other backend is down or was tried: report the last failure.
                raise last_error from None
            raise

    def _try(
        self,
        environ: Environ,
        start_response: StartResponse,
        request: ProxyRequest,
        index: int,
        body: RequestBody | None,
    ) -> Iterable[bytes]:
        """One try on one backend; it counts as in flight until the backend is done with it."""
        in_flight = _InFlight(self._selector, index)
        try:
            answer = self._exchange(
                environ, start_response, request, index, body, backend_done=in_flight.end
            )
        except BaseException:
            in_flight.end()
            raise
        return _ClosingBody(answer, in_flight.end)

    def _exchange(
        self,
        environ: Environ,
        start_response: StartResponse,
        request: ProxyRequest,
        index: int,
        body: RequestBody | None,
        *,
        backend_done: Callable[[], None],
    ) -> Iterable[bytes]:
        backend = self._selector.backends[index]
        headers = upstream_request_headers(
            request,
            trusted=request.client_addr in self._trusted_proxies,
            preserve_host=self._settings.preserve_host,
            backend_authority=backend.authority,
            request_id=environ["prefork_lb.request_id"],
        )
        started = time.monotonic()
        try:
            response = self._upstream.send(
                backend, request.method, request.target.path, headers, body, chunked=request.chunked
            )
        except BackendError as err:
            if err.counts_as_failure:
                self._selector.request_failed(index, err.reason)
            raise
        upstream_time = time.monotonic() - started
        environ["prefork_lb.upstream_time"] = f"{upstream_time:.3f}"
        stats = self._stats
        if stats is not None:
            stats.table.observe_latency(stats.slot, index, upstream_time)
        try:
            status, response_headers = response_head(
                response.status,
                response.reason or "",
                response.headers.items(),
                version="1.1" if response.version == 11 else "1.0",
                chunked=bool(getattr(response, "chunked", False)),
            )
        except LBError as err:
            release(response, keep=False)
            err.detail = f"backend {backend.url}: {err.detail}"
            raise
        self._selector.request_succeeded(index)
        start_response(status, response_headers)
        if stats is not None:
            stats.table.count_response(stats.slot, index, response.status)
        if request.method == "HEAD" or response.status in (204, 304):
            release_without_body(response, head=request.method == "HEAD")
            backend_done()
            return []
        on_abort = None if stats is None else functools.partial(stats.count_abort, index)
        return _relay_body(stream_body(response, backend, backend_done), environ, on_abort)

    def _body(self, environ: Environ, request: ProxyRequest) -> RequestBody | None:
        return request_body(environ["wsgi.input"], request, self._body_limits)


class _Stats:
    """Where this worker counts what it does: its own row of the shared stats table."""

    def __init__(self, table: shared.StatsTable, slot: int) -> None:
        self.table = table
        self.slot = slot
        self.balancer = table.count  # the column for answers no backend was chosen for

    def count_abort(self, index: int, err: LBError) -> None:
        """A response from this backend was cut off after its head, by ``err``."""
        self.table.count_aborted(self.slot, index)
        self.table.count_error(self.slot, index, error_kind(err))


class _InFlight:
    """One try's place in its backend's in-flight count, given back exactly once."""

    def __init__(self, selector: Selector, index: int) -> None:
        self._selector = selector
        self._index = index
        self._ended = False
        selector.started(index)

    def end(self) -> None:
        """The backend is done with this try (or it failed, or the client left)."""
        if not self._ended:
            self._ended = True
            self._selector.finished(self._index)


class _ClosingBody:
    """A response body that calls ``on_close`` when the server closes it.

    A generator's ``finally`` does not run if it is closed before it starts;
    gunicorn calls ``close()`` on the response iterable however it ended.
    """

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close  # idempotent: _InFlight.end

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        """Close the wrapped body, then report the request finished."""
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


def read_request(environ: Environ) -> ProxyRequest:
    """Turn gunicorn's environ (and its parsed header lines) into a ProxyRequest."""
    method = environ["REQUEST_METHOD"]
    target = upstream_target(method, environ["RAW_URI"])
    received = hooks.current_request.get()
    headers = (
        [(canonical_name(name), value) for name, value in received.headers]
        if received is not None
        else headers_from_environ(environ)
    )
    version = environ.get("SERVER_PROTOCOL", "HTTP/1.1").removeprefix("HTTP/")
    check_host(target, headers, version)
    content_length, chunked = body_framing(
        environ.get("HTTP_TRANSFER_ENCODING"), environ.get("CONTENT_LENGTH")
    )
    return ProxyRequest(
        method=method,
        target=target,
        headers=headers,
        client_addr=environ.get("REMOTE_ADDR", ""),
        scheme=environ["wsgi.url_scheme"],
        version=version,
        content_length=content_length,
        chunked=chunked,
    )


def headers_from_environ(environ: Environ) -> list[tuple[str, str]]:
    """Header lines rebuilt from a plain WSGI environ (repeated fields arrive joined)."""
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((canonical_name(key[5:].replace("_", "-")), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers.append((canonical_name(key.replace("_", "-")), value))
    return headers


def _relay_body(
    chunks: Iterator[bytes],
    environ: Environ,
    on_abort: Callable[[LBError], None] | None = None,
) -> Iterator[bytes]:
    """Pass the body through; if the backend fails mid-body, abort the client connection.

    Gunicorn sends the status line at the first write: an empty first write
    sends it as soon as the backend's head has arrived, not with the first
    body byte (which may be long in coming, or never).
    """
    try:
        yield b""
        yield from chunks
    except LBError as err:
        environ["prefork_lb.error"] = f"aborted:{type(err).__name__}"
        if on_abort is not None:
            on_abort(err)
        log.warning(
            "%s %s: response aborted after the status line: %s",
            environ.get("REQUEST_METHOD"),
            environ.get("RAW_URI"),
            err.detail,
        )
        reset_on_close(environ.get("gunicorn.socket"))
        raise AbortResponse(err.detail) from err

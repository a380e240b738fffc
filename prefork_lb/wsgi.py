"""The WSGI callable each worker runs: environ in, streamed backend response out.

``create_app()`` is gunicorn's app factory (``wsgi_app`` in gunicorn.conf.py);
it runs in each worker after gevent has patched it, so the urllib3 pools are
built there. ``ProxyApp`` takes each request through named steps:

1. **read** the client's request into a ``ProxyRequest`` (raw target, header
   lines, body framing) and its body (``downstream.py``); the ready and live
   probes (``probes.py``) and admin requests are answered here;
2. **route** it to a pool (``routes.py``), with the target that pool gets
   (only when ``[[routes]]`` are configured; otherwise the one pool);
3. **forward** it (``forward.py``): choose a backend, exchange with it, and
   retry on the next one where that is safe, until a response head comes back;
4. **relay** the answer: status and checked headers, then the body chunk by
   chunk. A failure before the status line becomes a short plain-text error
   response; after it, the client connection is aborted;
5. **record**: every step writes what happened into the request's
   ``RequestRecord`` (``record.py``), which the access log reads; the shared
   stats count the same events.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, Protocol

from prefork_lb import request_context, shared
from prefork_lb.admin import AdminEndpoint
from prefork_lb.config import Settings
from prefork_lb.downstream import BodyLimits, request_body, reset_on_close
from prefork_lb.errors import AbortResponse, BackendError, LBError, NoRoute
from prefork_lb.forward import Answer, Forwarder
from prefork_lb.headers import REQUEST_ID, canonical_name, client_request_id, upgrade_offer
from prefork_lb.prober import HealthProber
from prefork_lb.probes import ProbeEndpoints
from prefork_lb.record import NO_STATS, RECORD_KEY, RequestRecord, Stats
from prefork_lb.request import ProxyRequest, Target, body_framing, check_host, upstream_target
from prefork_lb.routes import RouteTable
from prefork_lb.selector import Selector
from prefork_lb.tunnel import run_tunnel
from prefork_lb.upstream import Upstream, backend_tls_options, release_without_body, stream_body

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
    if state.settings.dns_groups:
        # Imported only when needed: without DNS sources no worker loads dnspython.
        from prefork_lb.dns_follower import DnsFollower  # noqa: PLC0415

        DnsFollower(state).start()
    stats = Stats(state.stats, slot, state.in_flight) if slot is not None else NO_STATS
    admin = AdminEndpoint(state, selector)
    if state.settings.extensions:
        # Decided once: without extensions the plain ProxyApp runs, unchanged.
        from prefork_lb.extension_app import extended_app  # noqa: PLC0415 - imports wsgi

        return extended_app(state.settings, selector, admin, stats)
    return ProxyApp(state.settings, selector, admin, stats)


def _log_urllib3_warnings() -> None:
    # urllib3 logs "Connection pool is full" (pool_size too small) to a
    # NullHandler; send the pool's warnings where the operator looks. (Not
    # urllib3.connection's: its header-parsing warning is a 502 here already.)
    urllib3_log = logging.getLogger("urllib3.connectionpool")
    urllib3_log.setLevel(logging.WARNING)
    for handler in logging.getLogger("gunicorn.error").handlers:
        urllib3_log.addHandler(handler)


class ProxyHooks(Protocol):
    """What may act on a request between the steps (the extensions' phases do)."""

    def routed(self, request: ProxyRequest) -> ProxyRequest:
        """The request to forward, once routed."""

    def answered(self, answer: Answer) -> None:
        """A backend's answer, before its head goes to the client; may raise ``LBError``."""


class ProxyApp:
    """A WSGI application that forwards every request to one of the backends."""

    def __init__(
        self,
        settings: Settings,
        selector: Selector,
        admin: AdminEndpoint,
        stats: Stats = NO_STATS,
        *,
        forwarder: Forwarder | None = None,
    ) -> None:
        self._admin = admin
        self._stats = stats
        self._forwarder = forwarder or Forwarder(settings, selector, Upstream(settings), stats)
        self._body_limits = BodyLimits(
            settings.client_timeout, settings.client_min_rate, settings.max_body_size
        )
        self._upgrade_protocols = settings.upgrade_protocols
        self._tunnel_timeout = settings.tunnel_timeout
        self._probes = ProbeEndpoints(settings, selector).paths
        # Compiled once. None without [[routes]] when pool 0 is "default": every
        # request goes there (without a default pool each one is a 404).
        names = [pool.name for pool in selector.pools]
        self._routes = (
            RouteTable(settings.routes, names) if settings.routes or names[0] != "default" else None
        )

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes] | object:
        """Forward one request; the body of the answer streams from the backend.

        After a tunnel, gunicorn's ``ALREADY_HANDLED`` (not an iterable): the
        connection was answered, and has ended, on the socket itself.
        """
        record = environ[RECORD_KEY] = RequestRecord()
        try:
            request = read_request(environ)
            probe = self._probes.get(request.target.path)
            if probe is not None:
                return probe(request, start_response)
            if self._admin.serves(request):
                return self._admin.respond(request, start_response, environ["wsgi.input"])
        except LBError as err:
            return self._answer_error(environ, start_response, record, err)
        record.request_id = client_request_id(request.headers) or uuid.uuid4().hex
        return self._handle(environ, start_response, record, request)

    def _handle(
        self,
        environ: Environ,
        start_response: StartResponse,
        record: RequestRecord,
        request: ProxyRequest,
    ) -> Iterable[bytes] | object:
        """What follows reading a request (``extension_app`` puts its phases around it)."""
        return self._proxy(environ, start_response, record, request)

    def _proxy(
        self,
        environ: Environ,
        start_response: StartResponse,
        record: RequestRecord,
        request: ProxyRequest,
        hooks: ProxyHooks | None = None,
    ) -> Iterable[bytes] | object:
        """Route, forward and relay a request read from the client (or tunnel it)."""
        client = environ.get("gunicorn.socket")
        try:
            pool = 0
            if self._routes is not None:
                request, pool = route(self._routes, request)
            if hooks is not None:
                request = hooks.routed(request)
            upgrade = None
            if "HTTP_UPGRADE" in environ and self._upgrade_protocols:
                upgrade = upgrade_offer(request, self._upgrade_protocols)
            body = request_body(environ["wsgi.input"], request, self._body_limits)
            answer = self._forwarder.forward(request, body, record, upgrade, pool, client)
            if hooks is not None:
                hooks.answered(answer)
        except LBError as err:
            return self._answer_error(environ, start_response, record, err)
        if answer.switched:
            self._stats.responded(answer.index, 101)
            return run_tunnel(
                answer,
                client,
                environ,
                record,
                idle_timeout=self._tunnel_timeout,
                stats=self._stats,
            )
        return self._relay(answer, request, start_response, record, client)

    def _relay(
        self,
        answer: Answer,
        request: ProxyRequest,
        start_response: StartResponse,
        record: RequestRecord,
        client: Any,
    ) -> Iterable[bytes]:
        """Send the answer's head, then stream its body; the backend is in flight until done."""
        try:
            start_response(answer.status, answer.headers)
            self._stats.responded(answer.index, answer.response.status)
            if request.method == "HEAD" or answer.response.status in (204, 304):
                release_without_body(answer.response, head=request.method == "HEAD")
                answer.done()
                return []
            chunks = stream_body(answer.response, answer.backend, answer.done)
            relayed = _relay_body(
                chunks,
                index=answer.index,
                request=request,
                record=record,
                stats=self._stats,
                client=client,
            )
        except BaseException:
            answer.done()
            raise
        return ClosingBody(relayed, answer.done)

    def _answer_error(
        self,
        environ: Environ,
        start_response: StartResponse,
        record: RequestRecord,
        err: LBError,
    ) -> Iterable[bytes]:
        """Answer a failure before any response head: its status, a short text, the request id."""
        record.error = type(err).__name__
        if environ.get("CONTENT_LENGTH", "0") not in ("", "0") or (
            "HTTP_TRANSFER_ENCODING" in environ
        ):
            # Some of the body may be unread: gunicorn would read (and drop)
            # the rest of it to find a next request. Close instead.
            request_context.close_connection_after_response()
        self._stats.own_answer(err, err.backend if isinstance(err, BackendError) else None)
        log.warning(
            "%s %s -> %d: %s",
            environ.get("REQUEST_METHOD"),
            environ.get("RAW_URI"),
            err.status.value,
            err.detail,
        )
        status, headers, body = err.response()
        if record.request_id is not None:
            headers.append((REQUEST_ID, record.request_id))
        start_response(status, headers)
        record.body_bytes = len(body)
        return [body]


class ClosingBody:
    """A response body that calls ``on_close`` when the server closes it.

    A generator's ``finally`` does not run if it is closed before it starts;
    gunicorn calls ``close()`` on the response iterable however it ended.
    """

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close

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
    received = request_context.current_request.get()
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


def route(table: RouteTable, request: ProxyRequest) -> tuple[ProxyRequest, int]:
    """The request as its pool gets it (its prefix stripped, if so routed), and the pool."""
    host = request.target.authority
    if host is None:
        host = next((value for name, value in request.headers if name == "Host"), "")
    found = table.match(host, request.target.path, request.method)
    if found is None:
        raise NoRoute(f"no route for host {host!r} and target {request.target.path!r}")
    if found.target != request.target.path:
        request = replace(request, target=Target(found.target, request.target.authority))
    return request, found.pool


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
    *,
    index: int,
    request: ProxyRequest,
    record: RequestRecord,
    stats: Stats,
    client: Any,
) -> Iterator[bytes]:
    """Pass the body through; if the backend fails mid-body, abort the client connection.

    Gunicorn sends the status line at the first write: ``stream_body`` starts
    with an empty piece unless body bytes are at hand, so the head goes out
    as soon as the backend's head has arrived, not with a late first body byte.
    """
    try:
        for chunk in chunks:
            record.body_bytes += len(chunk)
            yield chunk
    except LBError as err:
        record.error = f"aborted:{type(err).__name__}"
        stats.aborted(index, err)
        log.warning(
            "%s %s: response aborted after the status line: %s",
            request.method,
            request.target.path,
            err.detail,
        )
        reset_on_close(client)
        raise AbortResponse(err.detail) from err

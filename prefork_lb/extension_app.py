"""The request path with extensions: ``ProxyApp``'s steps with the four phases hooked in.

``create_app`` builds an ``ExtendedProxyApp`` only when extensions are
configured; without them the plain ``ProxyApp`` runs, untouched. The phases
hook into the named steps:

1. after **read**: ``on_request`` (in order; the first ``Response`` is sent
   at once and nothing else runs); its header changes go upstream;
2. in **forward**, for every try (retries included), just before the
   request's headers are rewritten for the backend: ``on_upstream_request``;
   ``request.backend`` (a backend's name) picks the backend while it is usable;
3. before **relay** sends the head: ``on_response`` (status and headers; the
   body streams untouched, its framing headers stay the backend's);
4. once the server closes the response (after its last byte, or a failure):
   ``on_complete``, for every request but admin ones.

An exception in the first three becomes a 500 (``ExtensionFailed``), logged
with the extension's name and counted; in ``on_complete`` it is logged and
counted. The worker goes on either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from urllib3.connection import HTTPConnection
from urllib3.response import BaseHTTPResponse

from prefork_lb import request_context
from prefork_lb.admin import AdminEndpoint
from prefork_lb.config import Backend, Settings
from prefork_lb.downstream import RequestBody
from prefork_lb.errors import BackendError, ExtensionFailed, LBError
from prefork_lb.extension_loader import build
from prefork_lb.extension_types import (
    CompleteInfo,
    Headers,
    Request,
    Response,
    check_status,
    header_lines,
    status_line,
)
from prefork_lb.forward import Answer, Forwarder
from prefork_lb.headers import REQUEST_ID
from prefork_lb.record import RequestRecord, Stats
from prefork_lb.request import ProxyRequest, Target
from prefork_lb.selector import Selector
from prefork_lb.shared.extension_memory import SharedCounter, extension_memory
from prefork_lb.upstream import Upstream, release
from prefork_lb.wsgi import ClosingBody, Environ, ProxyApp, StartResponse

log = logging.getLogger("gunicorn.error").getChild("prefork_lb")

# Set by the balancer from the body it relays, never by an extension.
_FRAMING = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    }
)
_NO_BODY = (204, 304)


class Phases:
    """The extensions' phase methods in the configured order; a missing one costs nothing."""

    def __init__(
        self,
        extensions: Sequence[tuple[str, object]],
        errors: dict[tuple[str, str], SharedCounter],
    ) -> None:
        def bound(phase: str) -> tuple[tuple[str, Callable[..., Any]], ...]:
            found = ((name, getattr(ext, phase, None)) for name, ext in extensions)
            return tuple((name, method) for name, method in found if method is not None)

        self._request = bound("on_request")
        self._upstream_request = bound("on_upstream_request")
        self._response = bound("on_response")
        self._complete = bound("on_complete")
        self._errors = errors
        # A phase no extension has is skipped, with what only it needs.
        self.has_upstream_request = bool(self._upstream_request)
        self.has_response = bool(self._response)
        self.has_complete = bool(self._complete)

    def request(self, request: Request) -> Response | None:
        """``on_request`` in order: the first ``Response`` returned, or None to go on."""
        for name, method in self._request:
            try:
                answer = method(request)
                if answer is not None and not isinstance(answer, Response):
                    raise TypeError(f"on_request returned {answer!r}, not a Response or None")
            except Exception as err:
                raise self._failed(name, "on_request", err) from err
            if answer is not None:
                return answer
        return None

    def upstream_request(self, request: Request, backend: Backend) -> None:
        """``on_upstream_request`` in order, before one try on ``backend``."""
        for name, method in self._upstream_request:
            try:
                method(request, backend)
            except Exception as err:
                raise self._failed(name, "on_upstream_request", err) from err

    def response(self, request: Request, response: Response) -> None:
        """``on_response`` in order; a status that would change how the body is framed fails."""
        before = response.status
        for name, method in self._response:
            try:
                method(request, response)
                check_status(response.status)
                if (response.status in _NO_BODY) != (before in _NO_BODY):
                    raise ValueError(f"status {before} cannot become {response.status}")
                if not isinstance(response.headers, Headers):
                    raise TypeError("response.headers must stay a Headers")
            except Exception as err:
                raise self._failed(name, "on_response", err) from err

    def complete(self, request: Request, response: Response, info: CompleteInfo) -> None:
        """``on_complete`` in order; an exception is logged and counted, the others still run."""
        for name, method in self._complete:
            try:
                method(request, response, info)
            except Exception:
                self._count(name, "on_complete")
                log.exception("extension %s: on_complete raised", name)

    def _failed(self, name: str, phase: str, err: Exception) -> ExtensionFailed:
        self._count(name, phase)
        log.error(
            "extension %s: %s raised %s: %s", name, phase, type(err).__name__, err, exc_info=err
        )
        return ExtensionFailed(
            f"extension {name}: {phase} raised {type(err).__name__}", extension=name, phase=phase
        )

    def _count(self, name: str, phase: str) -> None:
        counter = self._errors.get((name, phase))
        if counter is not None:
            counter.add()


@dataclass(frozen=True, slots=True)
class _ViewedRequest(ProxyRequest):
    """The request as forwarded, with the phases' view of it (headers, target, backend)."""

    view: Request


_REQUEST_FIELDS = tuple(f.name for f in fields(ProxyRequest))


def _viewed(request: ProxyRequest, view: Request) -> _ViewedRequest:
    return _ViewedRequest(**{name: getattr(request, name) for name in _REQUEST_FIELDS}, view=view)


class ExtendedForwarder(Forwarder):
    """The retry loop, with ``on_upstream_request`` before every try and ``request.backend``."""

    def __init__(
        self,
        settings: Settings,
        selector: Selector,
        upstream: Upstream,
        stats: Stats,
        phases: Phases,
    ) -> None:
        super().__init__(settings, selector, upstream, stats)
        self._phases = phases
        self._by_name = {backend.name: i for i, backend in enumerate(selector.backends)}

    def _choose(  # noqa: PLR0917 - Forwarder._choose's
        self,
        request: ProxyRequest,
        tried: frozenset[int],
        last_error: BackendError | None,
        pool: int = 0,
        key: int | None = None,
        prefer: int | None = None,
        client: Any = None,
    ) -> int:
        wanted = request.view.backend if isinstance(request, _ViewedRequest) else None
        if wanted is not None:
            index = self._by_name.get(wanted)
            if index is None and self._selector.follows_dns:
                # A backend found through DNS: named by its ip:port, as it is now.
                index = next(
                    (
                        i
                        for i, b in enumerate(self._selector.backends)
                        if b.name == wanted and self._selector.present(i)
                    ),
                    None,
                )
            if index is None:
                raise ExtensionFailed(f"request.backend {wanted!r} names no backend")
            if self._selector.limited[pool]:
                # Under max_conns: preferred, but admitted (and counted) as any other.
                prefer = index
            elif index not in tried and self._selector.health()[index].up:
                return index
        return super()._choose(request, tried, last_error, pool, key, prefer, client)

    def _send(
        self,
        request: ProxyRequest,
        body: RequestBody | None,
        index: int,
        record: RequestRecord,
        upgrade: str | None,
    ) -> tuple[BaseHTTPResponse, HTTPConnection | None]:
        if isinstance(request, _ViewedRequest):
            view = request.view
            if self._phases.has_upstream_request:
                self._phases.upstream_request(view, self._selector.backends[index])
            lines, target = header_lines(view.headers), request.target
            if lines is not request.headers or view.target != target.path:
                # Changed by a phase (add() changes the list in place: no copy needed then).
                target = Target(view.target, target.authority)
                request = replace(request, headers=list(lines), target=target)
        return super()._send(request, body, index, record, upgrade)


class ExtendedProxyApp(ProxyApp):
    """``ProxyApp`` with the extensions' phases on every request but admin ones."""

    def __init__(
        self,
        settings: Settings,
        selector: Selector,
        admin: AdminEndpoint,
        stats: Stats,
        phases: Phases,
    ) -> None:
        forwarder = ExtendedForwarder(settings, selector, Upstream(settings), stats, phases)
        super().__init__(settings, selector, admin, stats, forwarder=forwarder)
        self._phases = phases
        self._by_url = {backend.url: backend for backend in settings.backends}
        self._selector_backends = selector.backends

    def _handle(
        self,
        environ: Environ,
        start_response: StartResponse,
        record: RequestRecord,
        request: ProxyRequest,
    ) -> Iterable[bytes] | object:
        """The request through the phases; ``on_complete`` once the server closes it.

        After a tunnel, ``ALREADY_HANDLED`` (as ``ProxyApp``): ``on_complete``
        has run when the tunnel ended.
        """
        view = Request(
            method=request.method,
            target=request.target.path,
            headers=Headers.trusted(request.headers),
            client_addr=request.client_addr,
            scheme=request.scheme,
            id=record.request_id or "",
        )
        if not self._phases.has_complete:
            return self._through_phases(environ, start_response, record, request, view)
        head = _SentHead(start_response)
        try:
            body = self._through_phases(environ, head, record, request, view)
        except BaseException:
            self._completed(view, head, record)
            raise
        if not isinstance(body, Iterable):  # ALREADY_HANDLED: a tunnel, ended
            self._completed(view, head, record)
            return body
        return ClosingBody(body, lambda: self._completed(view, head, record))

    def _through_phases(
        self,
        environ: Environ,
        start_response: StartResponse,
        record: RequestRecord,
        request: ProxyRequest,
        view: Request,
    ) -> Iterable[bytes] | object:
        try:
            early = self._phases.request(view)
        except LBError as err:
            return self._answer_error(environ, start_response, record, err)
        if early is not None:
            return self._answer_now(early, request, start_response, record)
        on_response = self._on_response if self._phases.has_response else None
        hooks = _PhaseHooks(view, start_response, on_response)
        return self._proxy(environ, start_response, record, request, hooks)

    def _on_response(self, answer: Answer, view: Request) -> None:
        """``on_response`` on the backend's head; the body's framing stays the backend's."""
        status = answer.response.status
        framing = [(n, v) for n, v in answer.headers if n.lower() in _FRAMING]
        response = Response.__new__(Response)
        response.status, response.body = status, b""
        response.headers = Headers.trusted(answer.headers)
        try:
            self._phases.response(view, response)
        except BaseException:
            release(answer.response, keep=False)
            answer.done()
            raise
        if response.status != status:
            answer.status = status_line(response.status)
        kept = [(n, v) for n, v in response.headers.lines() if n.lower() not in _FRAMING]
        answer.headers = kept + framing

    def _answer_now(
        self,
        answer: Response,
        request: ProxyRequest,
        start_response: StartResponse,
        record: RequestRecord,
    ) -> list[bytes]:
        """Send an ``on_request`` answer; the request's body, if any, is never read."""
        if request.has_body:
            # Gunicorn would read (and drop) the unread body to find a next request.
            request_context.close_connection_after_response()
        headers = [(n, v) for n, v in answer.headers.lines() if n.lower() not in _FRAMING]
        body = answer.body
        if answer.status in _NO_BODY:
            body = b""
        else:
            headers.append(("Content-Length", str(len(body))))
        if record.request_id is not None and answer.headers.get(REQUEST_ID) is None:
            headers.append((REQUEST_ID, record.request_id))
        start_response(status_line(answer.status), headers)
        self._stats.extension_answer(answer.status)
        if request.method == "HEAD":
            body = b""
        record.body_bytes = len(body)
        return [body]

    def _completed(self, view: Request, head: _SentHead, record: RequestRecord) -> None:
        status = int(head.status.split(" ", 1)[0]) if head.status else 500
        response = Response.__new__(Response)
        response.status, response.body = status, b""
        response.headers = Headers.trusted(list(head.headers))
        backend = self._by_url.get(record.backend) if record.backend else None
        if backend is None and record.backend:
            # A backend found through DNS: as it is now.
            backend = next((b for b in self._selector_backends if b.url == record.backend), None)
        info = CompleteInfo(
            backend=backend,
            upstream_time=record.upstream_time,
            bytes_sent=record.body_bytes,
            error=record.error,
            tries=record.tries,
        )
        self._phases.complete(view, response, info)


class _PhaseHooks:
    """The phases between ``ProxyApp``'s steps, for one request and its view."""

    __slots__ = ("_on_response", "_start_response", "_view")

    def __init__(
        self,
        view: Request,
        start_response: StartResponse,
        on_response: Callable[[Answer, Request], None] | None,
    ) -> None:
        self._view = view
        self._start_response = start_response
        self._on_response = on_response

    def routed(self, request: ProxyRequest) -> ProxyRequest:
        """The routed request, carrying the view ``on_upstream_request`` may change."""
        self._view.target = request.target.path  # as it goes upstream (strip_prefix)
        return _viewed(request, self._view)

    def answered(self, answer: Answer) -> None:
        """``on_response`` on a backend's head; a 101 goes out on the socket, as it came."""
        if answer.switched:
            if isinstance(self._start_response, _SentHead):
                self._start_response.status = answer.status
                self._start_response.headers = answer.headers
        elif self._on_response is not None:
            self._on_response(answer, self._view)


class _SentHead:
    """A ``start_response`` that remembers the head it sent, for ``on_complete``."""

    __slots__ = ("headers", "start_response", "status")

    def __init__(self, start_response: StartResponse) -> None:
        self.start_response = start_response
        self.status = ""
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status, self.headers = status, headers
        if exc_info is None:
            return self.start_response(status, headers)
        return self.start_response(status, headers, exc_info)


def extended_app(
    settings: Settings, selector: Selector, admin: AdminEndpoint, stats: Stats
) -> ExtendedProxyApp:
    """The app with the configured extensions, each built once in this worker."""
    extensions = build(settings)
    phases = Phases(extensions, extension_memory().errors)
    return ExtendedProxyApp(settings, selector, admin, stats, phases)

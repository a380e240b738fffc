"""The admin endpoint: what the balancer knows about its backends, as JSON.

Served under ``admin_path`` (default ``/_prefork_lb``) to clients whose own
address (the TCP peer, or the client a PROXY header from Gunicorn's
``proxy_allow_ips`` names; never a forwarded header) is in ``admin_allow``
(default: loopback only), and whose request carries no forwarding header: a
proxy on the same host (a TLS terminator on 127.0.0.1) would otherwise make
every client look local. For everybody else the path is ordinary traffic
and goes to a backend like any other, so the endpoint cannot be found from
outside. ``admin_path = ""`` turns it off.

``GET <admin_path>/backends`` answers with every backend's health,
in-flight count and open tunnels, read from the memory all workers share;
``GET <admin_path>/metrics`` with Prometheus metrics, summed over all
workers (``metrics.py``); ``GET <admin_path>/`` with the same as a page for
a person with a browser (``status_page.py``).

Writes (``runtime.py``): ``POST <admin_path>/backends/NAME/state`` with
``{"state": "ready" | "drain" | "maint"}`` and ``POST .../NAME/weight`` with
``{"weight": N}``. They need ``admin_allow`` and ``Authorization: Bearer
<admin_token>`` (compared in constant time); without a token configured
they are refused with 403. Each one is logged with the client and the
change, and written to ``state_file`` when one is set.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefork_lb import metrics
from prefork_lb.headers import AddressSet
from prefork_lb.request import ProxyRequest
from prefork_lb.runtime import (
    Change,
    ControlError,
    admin_state,
    backend_index,
    parse_body,
    parse_state,
    parse_weight,
)
from prefork_lb.selector import Selector
from prefork_lb.shared import Figures, SharedState
from prefork_lb.state_file import save_state
from prefork_lb.status_page import BackendTraffic, render_status_page

log = logging.getLogger("gunicorn.error").getChild("prefork_lb")

StartResponse = Callable[..., Any]
# Headers a proxy adds: a request that passed through one is not the peer's own.
_FORWARDING = frozenset({"x-forwarded-for", "forwarded", "x-real-ip"})
# A write's body is a small JSON object.
_MAX_WRITE_BODY = 4096


class AdminEndpoint:
    """Recognises admin requests from allowed clients and answers them."""

    def __init__(self, state: SharedState, selector: Selector) -> None:
        self._state = state
        self._selector = selector
        self._path = state.settings.admin_path
        self._allowed = AddressSet(state.settings.admin_allow)
        self._token = state.settings.admin_token.encode()

    def serves(self, request: ProxyRequest) -> bool:
        """Whether this request is for the admin endpoint (and may use it)."""
        if not self._path:
            return False
        path = request.target.path.partition("?")[0]
        if path != self._path and not path.startswith(self._path + "/"):
            return False
        if any(name.lower() in _FORWARDING for name, _ in request.headers):
            return False
        return request.client_addr in self._allowed

    def respond(
        self, request: ProxyRequest, start_response: StartResponse, body: Any = None
    ) -> list[bytes]:
        """Answer one admin request (``body``: the WSGI input, for writes)."""
        path = request.target.path.partition("?")[0]
        write = _WRITE_PATH.fullmatch(path[len(self._path) :])
        if write is not None:
            return self._write(request, start_response, body, write[1], write[2])
        if path in (self._path, f"{self._path}/"):
            return self._status_page(request, start_response)
        is_metrics = path == f"{self._path}/metrics"
        if not is_metrics and path not in (f"{self._path}/backends", f"{self._path}/backends.json"):
            return _json(
                start_response,
                "404 Not Found",
                {
                    "error": "not found",
                    "see": [f"{self._path}/", f"{self._path}/backends", f"{self._path}/metrics"],
                },
            )
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed(request, start_response)
        if is_metrics:
            text = metrics.render(self._state, self._figures(), now=time.monotonic())
            start_response(
                "200 OK",
                [
                    ("Content-Type", metrics.CONTENT_TYPE_LATEST),
                    ("Content-Length", str(len(text))),
                    ("Cache-Control", "no-store"),
                ],
            )
            return [] if request.method == "HEAD" else [text]
        body = _json(start_response, "200 OK", self._document(self._figures()))
        return [] if request.method == "HEAD" else body

    def _write(
        self, request: ProxyRequest, start_response: StartResponse, body: Any, name: str, what: str
    ) -> list[bytes]:
        """Apply one operator write, or refuse it and change nothing."""
        if request.method != "POST":
            return _json(
                start_response,
                "405 Method Not Allowed",
                {"error": f"method {request.method} not allowed; writes are POST"},
                [("Allow", "POST")],
            )
        try:
            self._authorize(request)
            document = parse_body(_read_body(request, body))
            names = self._names()
            backend_index([n for n in names if n], name)  # 404 unless a backend has it now
            index = names.index(name)
            change = (
                Change(index, state=parse_state(document))
                if what == "state"
                else Change(index, weight=parse_weight(document))
            )
        except ControlError as err:
            return _json(start_response, _STATUS[err.status], {"error": err.message})
        old = self._selector.control(change)
        backend = self._selector.backends[index]
        new = change.apply(old)
        if change.state is not None:
            told = f"state {admin_state(old).label} -> {admin_state(new).label}"
        else:
            told = f"weight {old.weight or backend.weight} -> {new.weight}"
        log.warning("admin write from %s: backend %s %s", request.client_addr, name, told)
        if self._state.settings.state_file:
            try:
                save_state(
                    self._state.settings.state_file,
                    self._names(),
                    self._state.health,
                    self._state.pending_states,
                )
            except OSError as err:
                log.error("state_file %s not written: %s", self._state.settings.state_file, err)
        return _json(
            start_response,
            "200 OK",
            {
                "name": name,
                "url": backend.url,
                "admin_state": admin_state(new).label,
                "weight": new.weight or backend.weight,
                "changed": told,
            },
        )

    def _authorize(self, request: ProxyRequest) -> None:
        """Refuse a write without the configured token (403 when none is configured)."""
        if not self._token:
            raise ControlError(
                403,
                "admin writes are off: set admin_token (PREFORK_LB_ADMIN_TOKEN) to a "
                "secret of 16 or more characters and send it as Authorization: Bearer TOKEN",
            )
        given = next((v for n, v in request.headers if n.lower() == "authorization"), "")
        scheme, _, token = given.strip().partition(" ")
        if not given:
            raise ControlError(401, "admin writes need Authorization: Bearer TOKEN")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self._token
        ):
            raise ControlError(403, "the admin token is wrong")

    def _names(self) -> tuple[str, ...]:
        """Every backend's name now, by index ("" for a DNS slot without an address)."""
        backends = self._selector.backends
        return tuple(b.name if self._selector.present(i) else "" for i, b in enumerate(backends))

    def _figures(self) -> Figures:
        """Every backend's shared figures, with the health rows this worker acts on."""
        return self._state.figures(self._selector.health(), self._selector.backends)

    def _document(self, figures: Figures) -> dict[str, Any]:
        """The ``/backends`` document for figures just read."""
        return backends_document(self._state, figures, now=time.monotonic(), wall_now=time.time())

    def _status_page(self, request: ProxyRequest, start_response: StartResponse) -> list[bytes]:
        """The ``/backends`` document as an HTML page for a person with a browser."""
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed(request, start_response)
        figures = self._figures()
        page = render_status_page(
            self._document(figures), traffic(figures), json_href=f"{self._path}/backends"
        )
        body = page.encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [] if request.method == "HEAD" else [body]


def backends_document(
    state: SharedState, figures: Figures, *, now: float, wall_now: float
) -> dict[str, Any]:
    """The JSON document for ``/backends``: settings and live state of every backend."""
    settings = state.settings
    current = {b.url for b in figures.backends}
    shown_urls = {
        index: backend.url
        for index, backend in enumerate(state.current_backends())
        if backend.url in current
    }
    slot_states = state.dns_states()
    backends = []
    for shown in figures.backends:
        backend, row = shown.backend, shown.health
        since = state.started_at if row.since == 0.0 else wall_now - (now - row.since)
        backends.append(
            {
                "url": backend.url,
                "state": "up" if row.up else "down",
                "usable": row.usable(now),
                "since": _iso(since),
                "seconds_in_state": round(wall_now - since, 3),
                "reason": row.reason or "up since the balancer started",
                "failed_requests": (
                    row.window_fails if now - row.window_start < backend.fail_timeout else 0
                ),
                "consecutive_failures": row.failures,
                "consecutive_successes": row.successes,
                "in_flight": shown.in_flight,
                "tunnels_open": shown.tunnels_open,
                "name": backend.name,
                "admin_state": admin_state(row).label,
                "ejected": now < row.ejected_until,
                "ejected_for": round(max(0.0, row.ejected_until - now), 3),
                "ejections": row.ejections,
                "consecutive_5xx": row.run_5xx,
                "weight": row.weight or backend.weight,
                "configured_weight": backend.weight,
                "backup": backend.backup,
                "health_check": backend.check.enabled,
                # The DNS source it was found through (None: a listed backend), and
                # whether DNS still gives it ("active") or no longer does ("draining").
                "dns": backend.dns or None,
                "dns_state": slot_states.get(backend.url) if backend.dns else None,
            }
        )
    return {
        "policy": settings.policy,
        "fail_open": settings.fail_open,
        "pid": os.getpid(),
        "time": _iso(wall_now),
        "client_connections": figures.client_connections,
        "backends": backends,
        "pools": [
            {
                "name": shown.name,
                "policy": shown.pool.policy,
                "backends": [
                    shown_urls[m.index] for m in shown.pool.members if m.index in shown_urls
                ],
                "waiting": shown.waiting,
                "max_queue": shown.pool.max_queue,
                "queue_timeout": shown.pool.queue_timeout,
            }
            for shown in figures.pools
        ],
        "unavailable": figures.unavailable(),
    }


def traffic(figures: Figures) -> dict[str, BackendTraffic]:
    """Requests, errors and upstream latency so far, per backend URL, over all workers."""
    return {
        shown.url: BackendTraffic(
            requests=shown.requests,
            errors=shown.failures,
            latency_sum=shown.latency_sum,
            latency_count=shown.latency_count,
        )
        for shown in figures.backends
    }


def _read_body(request: ProxyRequest, body: Any) -> bytes:
    """The write's body, up to ``_MAX_WRITE_BODY`` bytes (400 beyond)."""
    if body is None or not request.has_body:
        return b""
    if request.content_length is not None and request.content_length > _MAX_WRITE_BODY:
        raise ControlError(400, f"the body is larger than {_MAX_WRITE_BODY} bytes")
    data: bytes = body.read(_MAX_WRITE_BODY + 1)
    if len(data) > _MAX_WRITE_BODY:
        raise ControlError(400, f"the body is larger than {_MAX_WRITE_BODY} bytes")
    return data


_WRITE_PATH = re.compile(r"/backends/([A-Za-z0-9._:\[\]-]{1,64})/(state|weight)")
_STATUS = {
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    404: "404 Not Found",
}


def _method_not_allowed(request: ProxyRequest, start_response: StartResponse) -> list[bytes]:
    return _json(
        start_response,
        "405 Method Not Allowed",
        {"error": f"method {request.method} not allowed"},
        [("Allow", "GET, HEAD")],
    )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def _json(
    start_response: StartResponse,
    status: str,
    document: dict[str, Any],
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = (json.dumps(document, indent=2) + "\n").encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        *(extra or []),
    ]
    start_response(status, headers)
    return [body]

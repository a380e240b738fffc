"""The admin endpoint: what the balancer knows about its backends, as JSON.

Served under ``admin_path`` (default ``/_prefork_lb``) to clients whose own
address (the TCP peer, never a forwarded header) is in ``admin_allow``
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
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefork_lb import metrics
from prefork_lb.headers import AddressSet
from prefork_lb.request import ProxyRequest
from prefork_lb.selector import Selector
from prefork_lb.shared import Figures, SharedState
from prefork_lb.status_page import BackendTraffic, render_status_page

StartResponse = Callable[..., Any]
# Headers a proxy adds: a request that passed through one is not the peer's own.
_FORWARDING = frozenset({"x-forwarded-for", "forwarded", "x-real-ip"})


class AdminEndpoint:
    """Recognises admin requests from allowed clients and answers them."""

    def __init__(self, state: SharedState, selector: Selector) -> None:
        self._state = state
        self._selector = selector
        self._path = state.settings.admin_path
        self._allowed = AddressSet(state.settings.admin_allow)

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

    def respond(self, request: ProxyRequest, start_response: StartResponse) -> list[bytes]:
        """Answer one admin request."""
        path = request.target.path.partition("?")[0]
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

    def _figures(self) -> Figures:
        """Every backend's shared figures, with the health rows this worker acts on."""
        return self._state.figures(self._selector.health())

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
                "weight": backend.weight,
                "backup": backend.backup,
                "health_check": backend.check.enabled,
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
                "backends": [settings.backends[m.index].url for m in shown.pool.members],
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

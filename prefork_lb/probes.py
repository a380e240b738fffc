"""The ready and live endpoints, for an L4 balancer or a kubelet that probes the instance.

``ready_path`` (default ``/_prefork_lb/ready``) and ``live_path`` (default
``/_prefork_lb/live``) are answered by the balancer itself, to any client:
unlike the admin endpoint they are not limited to ``admin_allow``, since the
front that probes them is not on the loopback, and they tell it no more
than one word. The path must match exactly (no query). They never reach a
backend and are not counted in the backends' metrics; the access log shows
them, with no backend, as it shows admin requests. The rule for "ready" is
in ``readiness.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefork_lb import request_context
from prefork_lb.config import Settings
from prefork_lb.readiness import (
    LIVE,
    READY,
    Answer,
    has_usable_backend,
    probe_answer,
    ready_pools,
)
from prefork_lb.request import ProxyRequest
from prefork_lb.selector import Selector

StartResponse = Callable[..., Any]
Probe = Callable[[ProxyRequest, StartResponse], list[bytes]]


class ProbeEndpoints:
    """The probe paths this instance answers itself, each with its answer."""

    def __init__(self, settings: Settings, selector: Selector) -> None:
        self._selector = selector
        self._pools = tuple(selector.pools[index] for index in ready_pools(selector.pools))
        paths: dict[str, Probe] = {}
        if settings.ready_path:
            paths[settings.ready_path] = self._ready
        if settings.live_path:
            paths[settings.live_path] = self._live
        # The request path looks a target up here: one dict lookup per request.
        self.paths = paths

    def is_ready(self) -> bool:
        """Whether a pool readiness looks at has a usable backend now."""
        rows = self._selector.health()
        now = time.monotonic()
        return any(has_usable_backend(rows, pool.members, now) for pool in self._pools)

    def _ready(self, request: ProxyRequest, start_response: StartResponse) -> list[bytes]:
        ready = request.method in ("GET", "HEAD") and self.is_ready()
        return _send(probe_answer(request.method, ready, READY), request, start_response)

    def _live(self, request: ProxyRequest, start_response: StartResponse) -> list[bytes]:
        return _send(probe_answer(request.method, True, LIVE), request, start_response)


def _send(answer: Answer, request: ProxyRequest, start_response: StartResponse) -> list[bytes]:
    status, headers, body = answer
    if request.has_body:
        # The body is not read: close rather than let gunicorn read it to find a next request.
        request_context.close_connection_after_response()
    start_response(status, headers)
    return [body] if body else []

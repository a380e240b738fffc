"""Requests that carry a given header or cookie go to one backend, by name: a canary.

Options: ``backend`` (the backend's ``name``, required: its ``name`` option,
or ``host:port``), ``header`` (a request header that selects the canary)
and ``cookie`` (a cookie that does), at least one of the two, and ``value``
(the value they must have; any value if absent). While the canary backend
is down, its requests go where the others do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import prefork_lb
from prefork_lb import Request


class Canary:
    """Sets ``request.backend`` for the requests that ask for the canary."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        backend = options.get("backend")
        names = prefork_lb.backend_names()
        if backend not in names:
            raise ValueError(
                f"option 'backend' must name a backend ({', '.join(names)}): {backend!r}"
            )
        self._backend: str = backend
        header, cookie = options.get("header"), options.get("cookie")
        if not header and not cookie:
            raise ValueError("give option 'header' or 'cookie' (or both)")
        self._header = str(header) if header else None
        self._cookie = str(cookie) if cookie else None
        value = options.get("value")
        self._value = None if value is None else str(value)

    def on_request(self, request: Request) -> None:
        """Send the request to the canary backend if it asks for it."""
        if self._wants_canary(request):
            request.backend = self._backend

    def _wants_canary(self, request: Request) -> bool:
        if self._header is not None:
            value = request.headers.get(self._header)
            if value is not None and self._value in (None, value.strip()):
                return True
        if self._cookie is not None:
            for line in request.headers.get_all("Cookie"):
                for pair in line.split(";"):
                    name, equals, value = pair.strip().partition("=")
                    if equals and name == self._cookie and self._value in (None, value):
                        return True
        return False

"""401 unless a request header carries one of the configured API keys.

Options: ``keys`` (a list of keys, required), ``header`` (default
``X-API-Key``), ``forward_key`` (default false: the key is removed before
the request goes to a backend). Keys are compared in constant time, each
of them every time, so the answer's timing tells nothing about a key.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from prefork_lb import Request, Response

_UNAUTHORIZED = b"401 Unauthorized: a valid API key is required\n"


class ApiKey:
    """Lets a request through only with a valid key in its key header."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        keys = options.get("keys")
        if (
            not isinstance(keys, list)
            or not keys
            or not all(isinstance(k, str) and k for k in keys)
        ):
            raise ValueError("option 'keys' must be a list of one or more non-empty strings")
        self._keys = [key.encode() for key in keys]
        self._header = str(options.get("header", "X-API-Key"))
        self._forward_key = bool(options.get("forward_key", False))
        self._refusal = Response(
            401,
            {
                "Content-Type": "text/plain; charset=utf-8",
                "WWW-Authenticate": f'ApiKey header="{self._header}"',
            },
            _UNAUTHORIZED,
        )

    def on_request(self, request: Request) -> Response | None:
        """None (go on) if the key header holds a configured key; else a 401."""
        offered = request.headers.get(self._header)
        if offered is not None:
            given = offered.encode("utf-8", "surrogateescape")
            matched = False
            for key in self._keys:
                matched |= hmac.compare_digest(given, key)
            if matched:
                if not self._forward_key:
                    request.headers.remove(self._header)
                return None
        return self._refusal

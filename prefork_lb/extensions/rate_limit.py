"""A token bucket per client, shared by every worker: past the limit, 429 with Retry-After.

Options: ``rate`` (requests a second, required), ``burst`` (requests at
once, default ``rate``), ``header`` (count per value of this request header
instead of per client IP; requests without it count per client IP). The
client IP is the TCP peer: behind a proxy, use a header it sets.
The buckets live in the shared rate limiter ``prefork_lb.rate_limit``, so the
limit holds for the balancer as a whole, however many workers it runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import prefork_lb
from prefork_lb import Request, Response

LIMITER = "prefork_lb.rate_limit"


class RateLimit:
    """Answers 429 once a client has used up its bucket."""

    rate_limiters = (LIMITER,)

    def __init__(self, options: Mapping[str, Any]) -> None:
        rate = options.get("rate")
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise ValueError("option 'rate' (requests a second) is required: a positive number")
        burst = options.get("burst", rate)
        self._limiter = prefork_lb.rate_limiter(LIMITER, rate, burst)
        header = options.get("header")
        self._header = str(header) if header else None

    def on_request(self, request: Request) -> Response | None:
        """None while the client's bucket has a token; else 429 with Retry-After."""
        key = None
        if self._header is not None:
            value = request.headers.get(self._header)
            key = None if value is None else "header:" + value
        decision = self._limiter.take(key or "ip:" + request.client_addr)
        if decision.allowed:
            return None
        return Response(
            429,
            {
                "Retry-After": str(max(1, math.ceil(decision.retry_after))),
                "Content-Type": "text/plain; charset=utf-8",
            },
            b"429 Too Many Requests: slow down\n",
        )

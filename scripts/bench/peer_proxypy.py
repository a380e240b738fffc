"""proxy.py's reverse proxy as a balancer for the load test (threaded mode).

A route plugin sending every path, unchanged, to the backends in
PEER_BACKENDS in turn. Run by loadtest.sh with the peers' own virtualenv,
from the project root (so that this module imports):

  PEER_BACKENDS=http://a,http://b python -m proxy --threaded --enable-reverse-proxy \
      --plugins scripts.bench.peer_proxypy.BackendsReverseProxy ...
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from proxy.http import Url
from proxy.http.server import ReverseProxyBasePlugin

_BACKENDS = itertools.cycle(
    url.rstrip("/").encode() for url in os.environ.get("PEER_BACKENDS", "").split(",") if url
)


class BackendsReverseProxy(ReverseProxyBasePlugin):  # type: ignore[misc]  # no type hints
    """Every request path goes to the next backend, as it came."""

    def routes(self) -> list[str]:
        """One dynamic route that matches every path."""
        return [r"/.*$"]

    def handle_route(self, request: Any, pattern: Any) -> Any:
        """The next backend, with the request's own path (and query)."""
        url = Url.from_bytes(next(_BACKENDS) + (request.path or b"/"))
        return url

"""WSGIProxy2 as a balancer for the load test, on gunicorn's gevent worker.

Its best configuration here: urllib3 as the client (keep-alive pools; its
default http.client client opens a connection per request), one
``HostProxy`` per backend, taken in turn. Run by loadtest.sh with the
peers' own virtualenv:

  PEER_BACKENDS=http://a,http://b gunicorn -k gevent 'scripts.bench.peer_wsgiproxy:create_app()'

The app is built in the worker, after gevent has patched it (no preload).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from typing import Any

from wsgiproxy import HostProxy

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def create_app() -> App:
    """One WSGIProxy2 HostProxy per backend in PEER_BACKENDS, in turn."""
    backends = os.environ["PEER_BACKENDS"].split(",")
    proxies = itertools.cycle([HostProxy(url, client="urllib3") for url in backends])

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        proxy: App = next(proxies)
        return proxy(environ, start_response)

    return app

"""prefork_lb: an HTTP/1.1 load balancer on a Gunicorn master and gevent workers.

Importing the package imports nothing heavy: the master imports ``config``,
``shared`` and ``hooks`` only, so urllib3 is first imported in each worker,
after gevent has patched it.

What extensions use is public here: the ``Request``, ``Response`` and
``Headers`` the phases see, ``CompleteInfo`` for ``on_complete``, and the
state shared by every worker: ``shared_counter(name)`` and
``rate_limiter(name, rate, burst)`` (names declared by the extension's class
in ``shared_counters`` and ``rate_limiters``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefork_lb.extension_types import CompleteInfo, Headers, Request, Response

if TYPE_CHECKING:
    from prefork_lb.shared.extension_memory import RateLimiter, SharedCounter

__version__ = "0.1.0"

__all__ = [
    "CompleteInfo",
    "Headers",
    "Request",
    "Response",
    "backend_names",
    "rate_limiter",
    "shared_counter",
]


def shared_counter(name: str) -> SharedCounter:
    """The counter ``name``, shared exactly by every worker (``add(n=1)``, ``value``).

    The extension's class must list ``name`` in ``shared_counters``: the
    master makes the counters before it forks the workers.
    """
    from prefork_lb.shared.extension_memory import extension_memory  # noqa: PLC0415 - lazy

    counter = extension_memory().counters.get(name)
    if counter is None:
        raise LookupError(
            f"no shared counter {name!r}: list it in the extension class's shared_counters"
        )
    return counter


def rate_limiter(name: str, rate: float, burst: float) -> RateLimiter:
    """Token buckets by key, shared exactly by every worker: ``rate`` a second, ``burst`` at most.

    ``take(key)`` answers whether a request may go and, if not, after how
    many seconds it could. The extension's class must list ``name`` in
    ``rate_limiters``; every worker must ask for the same rate and burst.
    """
    from prefork_lb.shared.extension_memory import (  # noqa: PLC0415 - lazy
        RateLimiter,
        extension_memory,
    )

    table = extension_memory().limiters.get(name)
    if table is None:
        raise LookupError(
            f"no rate limiter {name!r}: list it in the extension class's rate_limiters"
        )
    return RateLimiter(table, rate, burst)


def backend_names() -> tuple[str, ...]:
    """The names of the backends (the ``name`` option, default ``host:port``).

    Addresses found through DNS are those found now, each named ``ip:port``.
    """
    from prefork_lb import shared  # noqa: PLC0415 - lazy

    state = shared.installed()
    shown = state.shown()
    return tuple(
        backend.name
        for index, backend in enumerate(state.current_backends())
        if shown is None or shown[index]
    )

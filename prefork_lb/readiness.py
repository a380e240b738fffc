"""What the ready and live probes answer: the rule for "ready", and the answers' bytes.

Pure: ``probes.py`` reads the health rows and the clock and asks here.
An instance is ready while one of its default pool's backends is usable
now: up, or down but due the trial that may bring it back (without active
checks, only a request can bring a backend back: an instance that said
"not ready" until then would never get that request), and neither drained,
in maintenance nor ejected. That is the selector's own notion of a usable
backend, without its two ways of forwarding to a backend that is not:
``fail_open`` and the lone backend (nginx's rule that one backend is never
down). Readiness says whether a backend is usable, not whether the
balancer would still forward.

The default pool is the pool named ``default`` (the top-level ``backends``):
the one requests no route takes go to. With ``[pools.*]`` and no pool of
that name, the instance is ready while any pool has a usable backend: it
can still serve the routes to that pool, and an instance taken out of the
front for one pool's outage would turn it into an outage of every route.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefork_lb.config import Member, Pool
from prefork_lb.health import BackendHealth

DEFAULT_POOL = "default"

READY = b"ready\n"
NOT_READY = b"not ready\n"
LIVE = b"live\n"
_NOT_ALLOWED = b"method not allowed\n"
_METHODS = ("GET", "HEAD")

Answer = tuple[str, list[tuple[str, str]], bytes]


def ready_pools(pools: Sequence[Pool]) -> tuple[int, ...]:
    """The pools readiness looks at: ``default``, or every pool when none has that name."""
    named = [index for index, pool in enumerate(pools) if pool.name == DEFAULT_POOL]
    return tuple(named) if named else tuple(range(len(pools)))


def is_usable(row: BackendHealth, now: float) -> bool:
    """Whether a request may go to this backend now on its own merits (no fail-open)."""
    return not row.admin and row.usable(now) and now >= row.ejected_until


def has_usable_backend(
    rows: Sequence[BackendHealth], members: Sequence[Member], now: float
) -> bool:
    """Whether one of ``members`` is usable now (``rows`` indexed by backend)."""
    return any(is_usable(rows[member.index], now) for member in members)


def probe_answer(method: str, ok: bool, word: bytes, failed: bytes = NOT_READY) -> Answer:
    """The status, headers and body of a probe's answer (none for HEAD; 405 for other methods)."""
    if method not in _METHODS:
        return (
            "405 Method Not Allowed",
            _headers(_NOT_ALLOWED, [("Allow", "GET, HEAD")]),
            _NOT_ALLOWED,
        )
    body = word if ok else failed
    status = "200 OK" if ok else "503 Service Unavailable"
    return status, _headers(body), b"" if method == "HEAD" else body


def _headers(body: bytes, extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        *(extra or []),
    ]

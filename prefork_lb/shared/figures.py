"""A backend's shared figures as one typed, read-only value: what operators are shown.

The tables keep their figures in arrays laid out for cheap writes (a column
per backend, a cell per status class, error kind and latency bucket). Readers
outside this package never index them: ``read_figures`` sums the rows and
hands out one ``BackendFigures`` per backend, every figure under its name,
and one ``BalancerFigures`` for the answers no backend was chosen for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from prefork_lb.admission import WAIT_BUCKETS
from prefork_lb.config import Backend, Pool
from prefork_lb.errors import ERROR_KINDS
from prefork_lb.health import BackendHealth
from prefork_lb.shared.admission import AdmissionTable
from prefork_lb.shared.in_flight import InFlightTable
from prefork_lb.shared.stats import LATENCY_BUCKETS, STATUS_CLASSES, BackendStats, StatsTable

# The upper bound of every latency bucket, the last one unbounded.
_BOUNDS = (*LATENCY_BUCKETS, math.inf)


@dataclass(frozen=True, slots=True)
class BackendFigures:
    """One backend's live state and its counts so far, summed over every worker.

    Counts run from the start of the balancer (carried over reloads by URL).
    ``responses`` and ``errors`` are keyed by status class ("1xx" to "5xx")
    and by error kind (every name in ``errors.ERROR_KINDS``), each key
    present even at 0. ``latency`` is the histogram of the time from sending
    a request to having its response head: ``(upper bound in seconds,
    count)`` per bucket, not cumulative, the last bound ``math.inf``.
    """

    backend: Backend
    health: BackendHealth
    in_flight: int
    responses: Mapping[str, int]
    errors: Mapping[str, int]
    aborted: int  # responses cut off after their head went to the client
    retries: int  # tries that failed here and went on to another backend
    tunnels_open: int  # now, over all workers (each also counted in ``in_flight``)
    tunnels_opened: int  # tunnels (101s relayed) so far
    tunnel_bytes_up: int  # tunnel bytes relayed from clients to the backend so far
    tunnel_bytes_down: int  # tunnel bytes relayed from the backend to clients so far
    latency: tuple[tuple[float, int], ...]
    latency_sum: float  # seconds, over every try in ``latency``

    @property
    def url(self) -> str:
        """The backend's base URL, which names it."""
        return self.backend.url

    @property
    def requests(self) -> int:
        """Responses that went to clients from this backend."""
        return sum(self.responses.values())

    @property
    def failures(self) -> int:
        """Failed tries and cut-off responses."""
        return sum(self.errors.values()) + self.aborted

    @property
    def latency_count(self) -> int:
        """Tries that got a response head (the ones timed in ``latency``)."""
        return sum(count for _, count in self.latency)


@dataclass(frozen=True, slots=True)
class BalancerFigures:
    """The balancer's own answers, for requests no backend was chosen for (503, 413 ...)."""

    responses: Mapping[str, int]  # by status class, as in ``BackendFigures``
    errors: Mapping[str, int]  # by error kind, as in ``BackendFigures``


# The balancer's own 503s by reason: the error kind that counts each.
UNAVAILABLE_REASONS = {
    "no_backend": "NoBackendAvailable",
    "queue_full": "QueueFull",
    "queue_timeout": "QueueTimeout",
}


@dataclass(frozen=True, slots=True)
class PoolFigures:
    """One pool's waiting room: requests waiting now, and how long waits took so far.

    ``queue_wait`` is a histogram as ``BackendFigures.latency`` is: ``(upper
    bound in seconds, count)`` per bucket, not cumulative, the last ``inf``.
    """

    pool: Pool
    waiting: int
    queue_wait: tuple[tuple[float, int], ...]
    queue_wait_sum: float

    @property
    def name(self) -> str:
        """The pool's name."""
        return self.pool.name


@dataclass(frozen=True, slots=True)
class Figures:
    """Everything the shared tables say at one moment, by backend."""

    backends: tuple[BackendFigures, ...]  # in the order of ``Settings.backends``
    balancer: BalancerFigures
    client_connections: int  # open now, over all workers
    pools: tuple[PoolFigures, ...] = ()  # in the order of ``config.effective_pools``

    def unavailable(self) -> dict[str, int]:
        """The balancer's own 503s so far, by reason (``UNAVAILABLE_REASONS``)."""
        errors = self.balancer.errors
        return {reason: errors.get(kind, 0) for reason, kind in UNAVAILABLE_REASONS.items()}


def read_figures(
    backends: Sequence[Backend],
    health: Sequence[BackendHealth],
    in_flight: InFlightTable,
    stats: StatsTable,
    *,
    pools: Sequence[Pool] = (),
    admission: AdmissionTable | None = None,
    shown: Sequence[bool] | None = None,
) -> Figures:
    """Read the tables for ``backends`` (their health rows already read) into ``Figures``.

    ``shown``: which backends to include (default: all); a DNS slot without an
    address is not shown anywhere.
    """
    *columns, own = stats.totals()
    rooms = []
    if admission is not None:
        for number, pool in enumerate(pools):
            counts, total = admission.wait_histogram(number)
            rooms.append(
                PoolFigures(
                    pool=pool,
                    waiting=admission.waiting(number),
                    queue_wait=tuple(zip((*WAIT_BUCKETS, math.inf), counts, strict=True)),
                    queue_wait_sum=total,
                )
            )
    every = zip(backends, health, in_flight.totals(), in_flight.tunnels(), columns, strict=True)
    return Figures(
        backends=tuple(
            _backend_figures(backend, row, count, tunnels, column)
            for number, (backend, row, count, tunnels, column) in enumerate(every)
            if shown is None or shown[number]
        ),
        balancer=BalancerFigures(
            responses=_by_name(STATUS_CLASSES, own.responses),
            errors=_by_name(ERROR_KINDS, own.errors),
        ),
        client_connections=in_flight.connections(),
        pools=tuple(rooms),
    )


def _backend_figures(
    backend: Backend, health: BackendHealth, in_flight: int, tunnels: int, stats: BackendStats
) -> BackendFigures:
    return BackendFigures(
        backend=backend,
        health=health,
        in_flight=in_flight,
        responses=_by_name(STATUS_CLASSES, stats.responses),
        errors=_by_name(ERROR_KINDS, stats.errors),
        aborted=stats.aborted,
        retries=stats.retries,
        tunnels_open=tunnels,
        tunnels_opened=stats.tunnels,
        tunnel_bytes_up=stats.tunnel_up,
        tunnel_bytes_down=stats.tunnel_down,
        latency=tuple(zip(_BOUNDS, stats.latency_buckets, strict=True)),
        latency_sum=stats.latency_sum,
    )


def _by_name(names: Sequence[str], counts: Sequence[int]) -> Mapping[str, int]:
    return MappingProxyType(dict(zip(names, counts, strict=True)))

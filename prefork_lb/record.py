"""What one request did, written by the steps of the request path and read once at the end.

The steps (``wsgi.py`` reads and relays, ``forward.py`` tries backends) fill a
``RequestRecord``; the access log reads it (its ``prefork_lb.*`` fields) and
nothing writes those values into the environ along the way. ``Stats`` counts
the same events in this worker's row of the shared stats table (and open
tunnels in its row of the in-flight table); a worker
without a row (more workers than rows) gets ``NO_STATS``, which counts
nothing, so that no step has to ask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefork_lb.errors import BackendError, LBError, error_kind

if TYPE_CHECKING:
    from prefork_lb.shared import InFlightTable, StatsTable

# Where the record sits in the environ: the one key the request path adds.
RECORD_KEY = "prefork_lb.record"


@dataclass(slots=True)
class RequestRecord:
    """One request's story: who answered, after how many tries, how long, and what failed."""

    request_id: str | None = None
    # The URL of the backend tried last (the one that answered, or failed last).
    backend: str | None = None
    tries: int = 0
    retries: int = 0
    # Seconds from sending the request to the backend's response head (the last try).
    upstream_time: float | None = None
    # The failure's class name ("BackendTimeout"), or "aborted:<name>" after the head.
    error: str | None = None
    body_bytes: int = 0
    # A tunnel's bytes (after a 101): client to backend, backend to client.
    tunnel_up: int | None = None
    tunnel_down: int | None = None

    def log_fields(self) -> dict[str, str]:
        """The access log's ``%({prefork_lb.*}e)s`` values, "-" for what did not happen."""
        return {name: field(self) for name, field in LOG_FIELDS.items()}


# Each access-log field the record answers for, and how it is written.
LOG_FIELDS: dict[str, Callable[[RequestRecord], str]] = {
    "prefork_lb.backend": lambda record: record.backend or "-",
    "prefork_lb.upstream_time": lambda record: (
        "-" if record.upstream_time is None else f"{record.upstream_time:.3f}"
    ),
    "prefork_lb.retries": lambda record: str(record.retries) if record.retries else "-",
    "prefork_lb.error": lambda record: record.error or "-",
    "prefork_lb.request_id": lambda record: record.request_id or "-",
    "prefork_lb.tunnel": lambda record: (
        "-" if record.tunnel_up is None else f"{record.tunnel_up}/{record.tunnel_down}"
    ),
}


class Stats:
    """Counts a worker's requests in its own row of the shared stats table (no lock)."""

    def __init__(
        self, table: StatsTable, slot: int, in_flight: InFlightTable | None = None
    ) -> None:
        self._table = table
        self._slot = slot
        self._balancer = table.count  # the column for answers no backend was chosen for
        self._in_flight = in_flight  # where open tunnels are counted, if anywhere

    def try_failed(self, index: int, err: LBError) -> None:
        """A try on backend ``index`` failed before its response head was relayed."""
        self._table.count_error(self._slot, index, error_kind(err))

    def retried(self, index: int) -> None:
        """The request goes on to another backend after backend ``index`` failed."""
        self._table.count_retry(self._slot, index)

    def upstream_latency(self, index: int, seconds: float) -> None:
        """Backend ``index`` sent its response head ``seconds`` after the request went out."""
        self._table.observe_latency(self._slot, index, seconds)

    def responded(self, index: int, status: int) -> None:
        """Backend ``index``'s response head (``status``) went to the client."""
        self._table.count_response(self._slot, index, status)

    def tunnel_opened(self, index: int) -> None:
        """A tunnel to backend ``index`` opened: counted, and open until ``tunnel_ended``."""
        self._table.count_tunnel(self._slot, index)
        if self._in_flight is not None:
            self._in_flight.add_tunnel(self._slot, index, 1)

    def tunnel_bytes(self, index: int, *, up: bool, count: int) -> None:
        """A tunnel to backend ``index`` relayed ``count`` bytes: to it (``up``) or from it."""
        self._table.count_tunnel_bytes(self._slot, index, up=up, count=count)

    def tunnel_ended(self, index: int) -> None:
        """A tunnel to backend ``index`` that ``tunnel_opened`` counted has ended."""
        if self._in_flight is not None:
            self._in_flight.add_tunnel(self._slot, index, -1)

    def aborted(self, index: int, err: LBError) -> None:
        """A response from backend ``index`` was cut off after its head, by ``err``."""
        self._table.count_aborted(self._slot, index)
        self._table.count_error(self._slot, index, error_kind(err))

    def extension_answer(self, status: int) -> None:
        """An extension answered the request itself, with ``status``; no backend was chosen."""
        self._table.count_response(self._slot, self._balancer, status)

    def own_answer(self, err: LBError, backend: int | None) -> None:
        """The balancer answered ``err`` itself: counted as the failed backend's, if one did.

        A backend's failure was counted when its try failed; any other
        failure is counted here, in the balancer's own column.
        """
        if isinstance(err, BackendError) and backend is not None:
            column = backend
        else:
            column = self._balancer
            self._table.count_error(self._slot, column, error_kind(err))
        self._table.count_response(self._slot, column, err.status.value)


class _NoStats(Stats):
    """Counts nothing: for a worker that has no row in the stats table."""

    def __init__(self) -> None:
        pass

    def try_failed(self, index: int, err: LBError) -> None:
        pass

    def retried(self, index: int) -> None:
        pass

    def upstream_latency(self, index: int, seconds: float) -> None:
        pass

    def responded(self, index: int, status: int) -> None:
        pass

    def tunnel_opened(self, index: int) -> None:
        pass

    def tunnel_bytes(self, index: int, *, up: bool, count: int) -> None:
        pass

    def tunnel_ended(self, index: int) -> None:
        pass

    def aborted(self, index: int, err: LBError) -> None:
        pass

    def extension_answer(self, status: int) -> None:
        pass

    def own_answer(self, err: LBError, backend: int | None) -> None:
        pass


NO_STATS: Stats = _NoStats()

"""The request record and the stats recorder: what a request did, written once, counted once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prefork_lb.errors import (
    ERROR_KINDS,
    BackendTimeout,
    BadRequest,
    LBError,
    NoBackendAvailable,
)
from prefork_lb.record import LOG_FIELDS, NO_STATS, RequestRecord, Stats
from prefork_lb.shared import StatsTable

TIMEOUT = ERROR_KINDS.index("BackendTimeout")
NO_BACKEND = ERROR_KINDS.index("NoBackendAvailable")
BAD_REQUEST = ERROR_KINDS.index("BadRequest")
CLASS_2XX, CLASS_4XX, CLASS_5XX = 1, 3, 4


@pytest.fixture
def table() -> Iterator[StatsTable]:
    stats = StatsTable(2, len(ERROR_KINDS))
    yield stats
    stats.close()


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param(
            RequestRecord(),
            {
                "prefork_lb.backend": "-",
                "prefork_lb.upstream_time": "-",
                "prefork_lb.retries": "-",
                "prefork_lb.error": "-",
                "prefork_lb.request_id": "-",
                "prefork_lb.tunnel": "-",
            },
            id="nothing-happened",
        ),
        pytest.param(
            RequestRecord(
                request_id="5b0f",
                backend="http://127.0.0.1:9002",
                tries=3,
                retries=2,
                upstream_time=0.01234,
                error="aborted:BackendTimeout",
            ),
            {
                "prefork_lb.backend": "http://127.0.0.1:9002",
                "prefork_lb.upstream_time": "0.012",
                "prefork_lb.retries": "2",
                "prefork_lb.error": "aborted:BackendTimeout",
                "prefork_lb.request_id": "5b0f",
                "prefork_lb.tunnel": "-",
            },
            id="retried-then-aborted",
        ),
        pytest.param(
            RequestRecord(
                request_id="ws1",
                backend="http://127.0.0.1:9001",
                tries=1,
                upstream_time=0.002,
                tunnel_up=2048,
                tunnel_down=0,
            ),
            {
                "prefork_lb.backend": "http://127.0.0.1:9001",
                "prefork_lb.upstream_time": "0.002",
                "prefork_lb.retries": "-",
                "prefork_lb.error": "-",
                "prefork_lb.request_id": "ws1",
                "prefork_lb.tunnel": "2048/0",
            },
            id="tunnel",
        ),
    ],
)
def test_log_fields(record: RequestRecord, expected: dict[str, str]) -> None:
    """The access log gets each field as text, and "-" for what did not happen."""
    assert record.log_fields() == expected
    assert set(LOG_FIELDS) == set(expected)


def test_stats_count_each_event_in_the_workers_row(table: StatsTable) -> None:
    """Every event a step reports lands in the backend's (or the balancer's) column."""
    stats = Stats(table, 1)
    stats.upstream_latency(0, 0.02)
    stats.responded(0, 200)
    stats.try_failed(1, BackendTimeout("slow"))
    stats.retried(1)
    stats.aborted(0, BackendTimeout("cut"))
    first, second, balancer = table.totals()
    assert first.responses[CLASS_2XX] == 1
    assert sum(first.latency_buckets) == 1
    assert (first.aborted, first.errors[TIMEOUT]) == (1, 1)
    assert (second.retries, second.errors[TIMEOUT]) == (1, 1)
    assert balancer.responses == (0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("err", "column", "kind", "status_class"),
    [
        # The backend's failure was counted with its try; the answer is its.
        pytest.param(BackendTimeout("slow", backend=1), 1, None, CLASS_5XX, id="backend"),
        pytest.param(NoBackendAvailable("none"), 2, NO_BACKEND, CLASS_5XX, id="no-backend"),
        pytest.param(BadRequest("bad"), 2, BAD_REQUEST, CLASS_4XX, id="client"),
    ],
)
def test_own_answers_are_counted_where_they_belong(
    table: StatsTable, err: LBError, column: int, kind: int | None, status_class: int
) -> None:
    """A balancer's own answer is the failed backend's, else its own column's, with its kind."""
    backend = err.backend if isinstance(err, BackendTimeout) else None
    Stats(table, 0).own_answer(err, backend)
    totals = table.totals()
    assert totals[column].responses[status_class] == 1
    assert sum(totals[column].errors) == (0 if kind is None else 1)
    if kind is not None:
        assert totals[column].errors[kind] == 1


def test_no_stats_counts_nothing(table: StatsTable) -> None:
    """A worker without a stats row counts nothing, and every step may still report."""
    NO_STATS.upstream_latency(0, 0.02)
    NO_STATS.responded(0, 200)
    NO_STATS.try_failed(0, BackendTimeout("slow"))
    NO_STATS.retried(0)
    NO_STATS.aborted(0, BackendTimeout("cut"))
    NO_STATS.own_answer(NoBackendAvailable("none"), None)
    assert all(column.responses == (0, 0, 0, 0, 0) for column in table.totals())

"""Prometheus metrics for the admin endpoint, read from the memory all workers share.

The counting is done in ``shared.StatsTable`` (a few array additions per
request, no lock, no files); prometheus_client only writes the exposition
format, through a collector that reads the tables at scrape time. Its own
multiprocess mode is not used: it needs a directory of per-process files set
up before import and cleaned after every worker exit, and a lock and a dict
look-up per observation, where the tables here are already shared, kill-safe
and kept across reloads.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from prefork_lb.errors import ERROR_KINDS
from prefork_lb.health import BackendHealth
from prefork_lb.shared import LATENCY_BUCKETS, STATUS_CLASSES, BackendStats, SharedState

__all__ = ["CONTENT_TYPE_LATEST", "render"]

PREFIX = "prefork_lb_"
BACKEND = "backend"


class BalancerCollector(Collector):
    """Yields every prefork_lb metric from the shared tables, summed over all workers."""

    def __init__(self, state: SharedState, health: tuple[BackendHealth, ...], now: float) -> None:
        self._state = state
        self._health = health
        self._now = now

    def collect(self) -> Iterator[Metric]:
        """The metric families, as they are at this moment."""
        urls = [backend.url for backend in self._state.settings.backends]
        totals = self._state.stats.totals()
        by_column = [*zip([*urls, ""], totals, strict=True)]
        yield from _counters(by_column)
        yield _latency(by_column[:-1])
        in_flight = GaugeMetricFamily(
            PREFIX + "in_flight",
            "Requests being forwarded to the backend now, over all workers.",
            labels=[BACKEND],
        )
        for url, count in zip(urls, self._state.in_flight.totals(), strict=True):
            in_flight.add_metric([url], count)
        yield in_flight
        yield GaugeMetricFamily(
            PREFIX + "client_connections",
            "Client connections open now, over all workers (a greenlet each).",
            value=self._state.in_flight.connections(),
        )
        up = GaugeMetricFamily(
            PREFIX + "backend_up",
            "1 if the backend is up (gets traffic), 0 if it is down.",
            labels=[BACKEND],
        )
        since = GaugeMetricFamily(
            PREFIX + "backend_state_seconds",
            "Seconds since the backend last went up or down (or since the balancer started).",
            labels=[BACKEND],
        )
        started = time.time() - self._state.started_at
        for url, row in zip(urls, self._health, strict=True):
            up.add_metric([url], 1 if row.up else 0)
            since.add_metric([url], started if row.since == 0.0 else self._now - row.since)
        yield up
        yield since


def _counters(by_column: list[tuple[str, BackendStats]]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        PREFIX + "requests",
        "Responses the clients got, by backend and status class (backend is empty for "
        "the balancer's own answers when no backend was tried).",
        labels=[BACKEND, "class"],
    )
    aborted = CounterMetricFamily(
        PREFIX + "responses_aborted",
        "Responses cut off after their head had gone to the client (also counted in "
        "prefork_lb_requests_total by their status).",
        labels=[BACKEND],
    )
    retries = CounterMetricFamily(
        PREFIX + "retries",
        "Tries on the backend that failed and went on to another backend.",
        labels=[BACKEND],
    )
    errors = CounterMetricFamily(
        PREFIX + "errors",
        "Failures by kind: a try on the backend, or (backend empty) the request itself.",
        labels=[BACKEND, "kind"],
    )
    for url, stats in by_column:
        for name, count in zip(STATUS_CLASSES, stats.responses, strict=True):
            if count or name != "1xx":
                requests.add_metric([url, name], count)
        for kind, count in zip(ERROR_KINDS, stats.errors, strict=True):
            if count:
                errors.add_metric([url, kind], count)
        if url:
            aborted.add_metric([url], stats.aborted)
            retries.add_metric([url], stats.retries)
    yield from (requests, aborted, retries, errors)


def _latency(by_backend: list[tuple[str, BackendStats]]) -> HistogramMetricFamily:
    latency = HistogramMetricFamily(
        PREFIX + "upstream_latency_seconds",
        "Time from sending a request to the backend to having its response head, "
        "for every try that got one.",
        labels=[BACKEND],
    )
    bounds = [*(str(bound) for bound in LATENCY_BUCKETS), "+Inf"]
    for url, stats in by_backend:
        cumulative, buckets = 0, []
        for bound, count in zip(bounds, stats.latency_buckets, strict=True):
            cumulative += count
            buckets.append((bound, float(cumulative)))
        latency.add_metric([url], buckets, stats.latency_sum)
    return latency


def render(state: SharedState, health: tuple[BackendHealth, ...], *, now: float) -> bytes:
    """The metrics in Prometheus' text format (``CONTENT_TYPE_LATEST``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BalancerCollector(state, health, now))
    return generate_latest(registry)

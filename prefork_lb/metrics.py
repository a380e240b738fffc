"""Prometheus metrics for the admin endpoint, read from the memory all workers share.

The counting is done in ``shared.StatsTable`` (a few array additions per
request, no lock, no files); prometheus_client only writes the exposition
format, from the shared figures read at scrape time. Its own
multiprocess mode is not used: it needs a directory of per-process files set
up before import and cleaned after every worker exit, and a lock and a dict
look-up per observation, where the tables here are already shared, kill-safe
and kept across reloads.
"""

from __future__ import annotations

import math
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

from prefork_lb.runtime import AdminState, admin_state
from prefork_lb.shared import (
    BackendFigures,
    Figures,
    SharedCounter,
    SharedState,
    extension_memory,
)

__all__ = ["CONTENT_TYPE_LATEST", "render"]

PREFIX = "prefork_lb_"
BACKEND = "backend"


class BalancerCollector(Collector):
    """Yields every prefork_lb metric from the shared figures, summed over all workers."""

    def __init__(self, state: SharedState, figures: Figures, now: float) -> None:
        self._state = state
        self._figures = figures
        self._now = now

    def collect(self) -> Iterator[Metric]:
        """The metric families, as they are at this moment."""
        backends = self._figures.backends
        yield from _counters(self._figures)
        yield from _tunnels(backends)
        yield _latency(backends)
        yield from _waiting_rooms(self._figures)
        in_flight = GaugeMetricFamily(
            PREFIX + "in_flight",
            "Requests being forwarded to the backend now, over all workers.",
            labels=[BACKEND],
        )
        for backend in backends:
            in_flight.add_metric([backend.url], backend.in_flight)
        yield in_flight
        yield GaugeMetricFamily(
            PREFIX + "client_connections",
            "Client connections open now, over all workers (a greenlet each).",
            value=self._figures.client_connections,
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
        admin = GaugeMetricFamily(
            PREFIX + "backend_admin_state",
            "1 for the operator's state the backend is in (ready, drain, maint), else 0.",
            labels=[BACKEND, "name", "state"],
        )
        weight = GaugeMetricFamily(
            PREFIX + "backend_weight",
            "The weight selection uses: the operator's, else the configured one.",
            labels=[BACKEND, "name"],
        )
        ejected = GaugeMetricFamily(
            PREFIX + "backend_ejected",
            "1 while outlier ejection keeps the backend out, else 0.",
            labels=[BACKEND, "name"],
        )
        started = time.time() - self._state.started_at
        for backend in backends:
            row = backend.health
            up.add_metric([backend.url], 1 if row.up else 0)
            since.add_metric([backend.url], started if row.since == 0.0 else self._now - row.since)
            name = backend.backend.name
            held = admin_state(row)
            for state in AdminState:
                admin.add_metric([backend.url, name, state.label], 1 if state is held else 0)
            weight.add_metric([backend.url, name], row.weight or backend.backend.weight)
            ejected.add_metric([backend.url, name], 1 if self._now < row.ejected_until else 0)
        yield up
        yield since
        yield admin
        yield weight
        yield ejected
        errors = extension_memory().errors
        if errors:
            yield _extension_errors(errors)
        if self._state.settings.dns_groups:
            yield from _dns(self._state, backends)


def _dns(state: SharedState, backends: tuple[BackendFigures, ...]) -> Iterator[Metric]:
    """Which backends DNS found, and each source's resolving figures."""
    info = GaugeMetricFamily(
        PREFIX + "backend_dns_info",
        "1 for each backend found through DNS, with the source (name:port or SRV name) it "
        "came from.",
        labels=[BACKEND, "dns"],
    )
    for backend in backends:
        if backend.backend.dns:
            info.add_metric([backend.url, backend.backend.dns], 1)
    yield info
    failures = CounterMetricFamily(
        PREFIX + "dns_failures",
        "Resolutions of a DNS source that failed, by reason (the last good set was kept).",
        labels=["pool", "source", "reason"],
    )
    addresses = GaugeMetricFamily(
        PREFIX + "dns_addresses",
        "Addresses the last good answer of a DNS source gave.",
        labels=["pool", "source"],
    )
    resolved = GaugeMetricFamily(
        PREFIX + "dns_last_resolved_timestamp_seconds",
        "When a DNS source last answered with addresses (Unix time; 0: not yet).",
        labels=["pool", "source"],
    )
    for number, group in enumerate(state.settings.dns_groups):
        figures = state.addresses.figures(number)
        source = group.source.label
        # A pool's own: two pools may name one source, each resolving it.
        for reason, count in figures.failures.items():
            failures.add_metric([group.pool, source, reason], count)
        addresses.add_metric([group.pool, source], figures.addresses)
        resolved.add_metric([group.pool, source], figures.last_resolved)
    yield failures
    yield addresses
    yield resolved


def _extension_errors(errors: dict[tuple[str, str], SharedCounter]) -> Metric:
    family = CounterMetricFamily(
        PREFIX + "extension_errors",
        "Exceptions an extension raised, by extension and phase (in on_request, "
        "on_upstream_request or on_response the client got a 500).",
        labels=["extension", "phase"],
    )
    for (extension, phase), counter in errors.items():
        family.add_metric([extension, phase], counter.value)
    return family


def _counters(figures: Figures) -> Iterator[Metric]:
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
    answers = [(b.url, b.responses, b.errors) for b in figures.backends]
    answers.append(("", figures.balancer.responses, figures.balancer.errors))
    for url, by_class, by_kind in answers:
        for name, count in by_class.items():
            if count or name != "1xx":
                requests.add_metric([url, name], count)
        for kind, count in by_kind.items():
            if count:
                errors.add_metric([url, kind], count)
    for backend in figures.backends:
        aborted.add_metric([backend.url], backend.aborted)
        retries.add_metric([backend.url], backend.retries)
    yield from (requests, aborted, retries, errors)


def _waiting_rooms(figures: Figures) -> Iterator[Metric]:
    """Queue length and queue waits per pool; the balancer's own 503s by reason."""
    length = GaugeMetricFamily(
        PREFIX + "queue_length",
        "Requests waiting now for a backend of the pool below its max_conns, over all workers.",
        labels=["pool"],
    )
    wait = HistogramMetricFamily(
        PREFIX + "queue_wait_seconds",
        "Time requests waited for a backend below its max_conns (admitted or not).",
        labels=["pool"],
    )
    for pool in figures.pools:
        length.add_metric([pool.name], pool.waiting)
        wait.add_metric([pool.name], _cumulative(pool.queue_wait), pool.queue_wait_sum)
    unavailable = CounterMetricFamily(
        PREFIX + "unavailable",
        "503s the balancer answered itself, by reason: no_backend (every backend down), "
        "queue_full, queue_timeout.",
        labels=["reason"],
    )
    for reason, count in figures.unavailable().items():
        unavailable.add_metric([reason], count)
    yield from (length, wait, unavailable)


def _cumulative(histogram: tuple[tuple[float, int], ...]) -> list[tuple[str, float]]:
    cumulative, buckets = 0, []
    for bound, count in histogram:
        cumulative += count
        buckets.append(("+Inf" if math.isinf(bound) else str(bound), float(cumulative)))
    return buckets


def _tunnels(backends: tuple[BackendFigures, ...]) -> Iterator[Metric]:
    open_now = GaugeMetricFamily(
        PREFIX + "tunnels_open",
        "Tunnels (WebSocket and other upgrades) open to the backend now, over all workers "
        "(also counted in prefork_lb_in_flight).",
        labels=[BACKEND],
    )
    opened = CounterMetricFamily(
        PREFIX + "tunnels_opened",
        "Tunnels opened to the backend: its 101 went to the client.",
        labels=[BACKEND],
    )
    relayed = CounterMetricFamily(
        PREFIX + "tunnel_bytes",
        "Bytes relayed through tunnels, by direction: to_backend (from clients) or "
        "to_client (from the backend).",
        labels=[BACKEND, "direction"],
    )
    for backend in backends:
        open_now.add_metric([backend.url], backend.tunnels_open)
        opened.add_metric([backend.url], backend.tunnels_opened)
        relayed.add_metric([backend.url, "to_backend"], backend.tunnel_bytes_up)
        relayed.add_metric([backend.url, "to_client"], backend.tunnel_bytes_down)
    yield from (open_now, opened, relayed)


def _latency(backends: tuple[BackendFigures, ...]) -> HistogramMetricFamily:
    latency = HistogramMetricFamily(
        PREFIX + "upstream_latency_seconds",
        "Time from sending a request to the backend to having its response head, "
        "for every try that got one.",
        labels=[BACKEND],
    )
    for backend in backends:
        cumulative, buckets = 0, []
        for bound, count in backend.latency:
            cumulative += count
            buckets.append(("+Inf" if math.isinf(bound) else str(bound), float(cumulative)))
        latency.add_metric([backend.url], buckets, backend.latency_sum)
    return latency


def render(state: SharedState, figures: Figures, *, now: float) -> bytes:
    """The metrics in Prometheus' text format (``CONTENT_TYPE_LATEST``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BalancerCollector(state, figures, now))
    return generate_latest(registry)

"""A backend's shared figures: every table read into one typed, read-only value per backend."""

from __future__ import annotations

import dataclasses
import math

import pytest

from prefork_lb import shared
from prefork_lb.admin import traffic
from prefork_lb.config import Settings, parse_backend_url
from prefork_lb.errors import ERROR_KINDS
from prefork_lb.health import BackendHealth
from prefork_lb.shared import LATENCY_BUCKETS, STATUS_CLASSES
from prefork_lb.status_page import BackendTraffic
from tests.support.forking import exit_code, fork_running

A, B = "http://127.0.0.1:9001", "http://127.0.0.1:9002"
UNREACHABLE = ERROR_KINDS.index("BackendUnreachable")
NO_BACKEND = ERROR_KINDS.index("NoBackendAvailable")


@pytest.fixture
def state(empty_slot: None) -> shared.SharedState:
    """Two backends' shared state, installed (``empty_slot`` closes it afterwards)."""
    settings = Settings(backends=tuple(parse_backend_url("test", url) for url in (A, B)))
    return shared.install(settings)


def test_a_fresh_state_has_every_figure_named_and_zero(state: shared.SharedState) -> None:
    """Before any request, each backend is up with every count present and 0."""
    figures = state.figures()
    assert [backend.url for backend in figures.backends] == [A, B]
    first = figures.backends[0]
    assert first.health == BackendHealth()
    assert first.in_flight == 0
    assert dict(first.responses) == dict.fromkeys(STATUS_CLASSES, 0)
    assert dict(first.errors) == dict.fromkeys(ERROR_KINDS, 0)
    assert (first.aborted, first.retries, first.latency_sum) == (0, 0, 0.0)
    assert (first.tunnels_open, first.tunnels_opened) == (0, 0)
    assert (first.tunnel_bytes_up, first.tunnel_bytes_down) == (0, 0)
    assert [bound for bound, _ in first.latency] == [*LATENCY_BUCKETS, math.inf]
    assert (first.requests, first.failures, first.latency_count) == (0, 0, 0)
    assert dict(figures.balancer.responses) == dict.fromkeys(STATUS_CLASSES, 0)
    assert figures.client_connections == 0


def test_figures_sum_what_every_worker_counted(state: shared.SharedState) -> None:
    """What workers counted in their own rows shows under its name, summed, per backend."""
    worker, other = shared.assign_worker_slot(), shared.assign_worker_slot()
    assert worker is not None
    assert other is not None

    def serve() -> None:
        state.in_flight.add(worker, 1, 2)
        state.in_flight.add_connection(worker, 1)
        state.stats.observe_latency(worker, 1, 0.02)
        state.stats.count_response(worker, 1, 200)
        state.stats.count_aborted(worker, 1)
        state.stats.count_error(worker, 0, UNREACHABLE)
        state.stats.count_retry(worker, 0)

    assert exit_code(fork_running(serve)) == 0
    state.stats.count_response(other, 1, 503)
    state.stats.count_error(other, state.stats.count, NO_BACKEND)
    state.stats.count_response(other, state.stats.count, 503)
    first, second = state.figures().backends
    assert (first.errors["BackendUnreachable"], first.retries, first.failures) == (1, 1, 1)
    assert (second.in_flight, second.responses["2xx"], second.responses["5xx"]) == (2, 1, 1)
    assert (second.requests, second.aborted, second.failures) == (2, 1, 1)
    assert dict(second.latency)[0.025] == 1
    assert second.latency_count == 1
    assert second.latency_sum == pytest.approx(0.02)
    balancer = state.figures().balancer
    assert (balancer.responses["5xx"], balancer.errors["NoBackendAvailable"]) == (1, 1)
    assert state.figures().client_connections == 1


def test_tunnels_are_figures_of_their_backend(state: shared.SharedState) -> None:
    """Open tunnels (live, per worker row) and tunnels opened and bytes each way (counts) show."""
    worker, other = shared.assign_worker_slot(), shared.assign_worker_slot()
    assert worker is not None
    assert other is not None

    def relay() -> None:
        state.in_flight.add_tunnel(worker, 1, 2)
        state.stats.count_tunnel(worker, 1)
        state.stats.count_tunnel(worker, 1)
        state.stats.count_tunnel_bytes(worker, 1, up=True, count=100)
        state.stats.count_tunnel_bytes(worker, 1, up=False, count=7)

    assert exit_code(fork_running(relay)) == 0
    state.in_flight.add_tunnel(other, 1, 1)
    state.stats.count_tunnel(other, 1)
    state.stats.count_tunnel_bytes(other, 1, up=False, count=3)
    first, second = state.figures().backends
    assert (first.tunnels_open, first.tunnels_opened, first.tunnel_bytes_up) == (0, 0, 0)
    assert (second.tunnels_open, second.tunnels_opened) == (3, 3)
    assert (second.tunnel_bytes_up, second.tunnel_bytes_down) == (100, 10)
    shared.release_worker_slot(worker)
    first, second = state.figures().backends
    assert (second.tunnels_open, second.tunnels_opened, second.tunnel_bytes_down) == (1, 3, 10)


def test_health_rows_given_are_used(state: shared.SharedState) -> None:
    """A reader's own copy of the health rows is what the figures show; else the table's."""
    down = BackendHealth(up=False, reason="refused")
    state.health.update(1, lambda _: (down, None))
    assert [b.health.up for b in state.figures().backends] == [True, False]
    given = (down, BackendHealth())
    assert [b.health for b in state.figures(given).backends] == list(given)


def test_figures_are_read_only(state: shared.SharedState) -> None:
    """Neither a field nor a count of a backend's figures can be changed by a reader."""
    first = state.figures().backends[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.in_flight = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        first.responses["2xx"] = 3  # type: ignore[index]


def test_the_status_page_traffic_comes_from_the_figures(state: shared.SharedState) -> None:
    """The status page's requests and errors per backend are the figures' totals."""
    slot = shared.assign_worker_slot()
    assert slot is not None
    state.stats.observe_latency(slot, 0, 0.5)
    state.stats.count_response(slot, 0, 200)
    state.stats.count_error(slot, 1, UNREACHABLE)
    assert traffic(state.figures()) == {
        A: BackendTraffic(requests=1, errors=0, latency_sum=0.5, latency_count=1),
        B: BackendTraffic(requests=0, errors=1, latency_sum=0.0, latency_count=0),
    }

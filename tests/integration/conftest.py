"""Fixtures for the integration tier: real backends, a real gunicorn, real clients."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence

import pytest

from tests.support.backend import ScriptedBackend
from tests.support.balancer import BalancerProcess

StartBalancer = Callable[..., BalancerProcess]


@pytest.fixture
def start_balancer() -> Iterator[StartBalancer]:
    """Start balancers in front of the given backend URLs; all are stopped afterwards."""
    started: list[BalancerProcess] = []

    def start(
        backends: Sequence[str],
        *,
        workers: int = 2,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> BalancerProcess:
        balancer = BalancerProcess(backends, workers=workers, env=env, args=args)
        started.append(balancer)
        return balancer.wait_ready()

    yield start
    for balancer in started:
        balancer.stop(quick=True)


@pytest.fixture
def three_backends() -> Iterator[list[ScriptedBackend]]:
    """Three scripted backends, each answering with its own name by default."""
    backends = [ScriptedBackend(f"backend-{i}") for i in (1, 2, 3)]
    for backend in backends:
        backend.start()
    yield backends
    for backend in backends:
        backend.stop()


@pytest.fixture(scope="module")
def echo_backend() -> Iterator[ScriptedBackend]:
    """One scripted backend shared by a module's tests; its routes and records are reset."""
    backend = ScriptedBackend("echo")
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def echo_balancer(echo_backend: ScriptedBackend) -> Iterator[BalancerProcess]:
    """A balancer with 2 workers in front of the shared backend, for a whole module."""
    balancer = BalancerProcess([echo_backend.url], workers=2)
    balancer.wait_ready()
    yield balancer
    balancer.stop(quick=True)


@pytest.fixture
def backend(echo_backend: ScriptedBackend, echo_balancer: BalancerProcess) -> ScriptedBackend:
    """The shared backend with no routes or recorded requests, behind a running balancer."""
    echo_backend.clear(routes=True)
    return echo_backend


@pytest.fixture
def unanswered_listener() -> Iterator[int]:
    """A port whose accept queue is full, so new connections hang until they time out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    yield port
    filler.close()
    listener.close()

"""max_conns and the shared waiting room through a real balancer with real clients."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.backend import RecordedRequest, Responder, ScriptedBackend, default_response
from tests.support.balancer import BalancerProcess
from tests.support.client import fetch
from tests.support.polling import wait_for


class Concurrency:
    """A handler that counts the requests it holds at once, each for ``hold`` seconds."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.now = 0
        self.most = 0
        self.served = 0
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest, responder: Responder) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.hold)
        with self._lock:
            self.now -= 1
            self.served += 1
        default_response(request, responder)


class Gate:
    """A handler that holds each request until the test opens it, counting those it holds."""

    def __init__(self) -> None:
        self.held = 0
        self.opened = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest, responder: Responder) -> None:
        with self._lock:
            self.held += 1
        self.opened.wait(30)
        default_response(request, responder)


@pytest.fixture(scope="module")
def backends() -> Iterator[list[ScriptedBackend]]:
    """Five scripted backends l1..l5."""
    started = [ScriptedBackend(f"l{i}").start() for i in range(1, 6)]
    yield started
    for backend in started:
        backend.stop()


@pytest.fixture(scope="module")
def limited(
    backends: list[ScriptedBackend], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BalancerProcess]:
    """Pools: default (l1, l2: max_conns 3), tiny (l3: 1, no room), short (l4: 1, 1.5 s, room
    for 1), patient (l5: 1, 10 s)."""
    u = [b.url for b in backends]
    config = tmp_path_factory.mktemp("limits") / "lb.toml"
    config.write_text(
        f"""
max_conns = 3
queue_timeout = 30
[[backends]]
url = "{u[0]}"
[[backends]]
url = "{u[1]}"

[pools.tiny]
max_queue = 0
max_conns = 1
backends = ["{u[2]}"]

[pools.short]
queue_timeout = 1.5
max_queue = 1
backends = [{{ url = "{u[3]}", max_conns = 1 }}]

[pools.patient]
queue_timeout = 10
max_conns = 1
backends = ["{u[4]}"]

[[routes]]
path_prefix = "/tiny"
pool = "tiny"
[[routes]]
path_prefix = "/short"
pool = "short"
[[routes]]
path_prefix = "/patient"
pool = "patient"
"""
    )
    balancer = BalancerProcess([], workers=2, env={"PREFORK_LB_CONFIG": str(config)})
    balancer.wait_ready()
    yield balancer
    balancer.stop(quick=True)


def test_max_conns_holds_across_workers(
    limited: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """100 clients on 2 workers: each backend never holds more than max_conns = 3 at once,
    and every request is answered."""
    counters = [Concurrency(0.02), Concurrency(0.02)]
    for backend, counter in zip(backends[:2], counters, strict=True):
        backend.route("/", counter)
    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(lambda _: fetch(limited.port, "/").status, range(400)))
    assert statuses == [200] * 400
    assert [c.most for c in counters] == [3, 3]
    assert sum(c.served for c in counters) == 400


def _hold(port: int, target: str) -> threading.Thread:
    """A request to ``target`` in the background (its backend holds it)."""
    thread = threading.Thread(target=fetch, args=(port, target), daemon=True)
    thread.start()
    return thread


def queue_length(port: int, pool: str) -> float:
    """How many requests wait for ``pool``, as the metrics page says (any worker sees all)."""
    metrics = fetch(port, "/_prefork_lb/metrics").body.decode()
    return _metric(metrics, f'prefork_lb_queue_length{{pool="{pool}"}}')


def test_no_waiting_room_is_503_at_once(
    limited: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """With max_queue = 0, a request finding the backend at its limit gets 503 and Retry-After
    while the backend still holds the first one (it does not wait for the slot)."""
    gate = Gate()
    backends[2].route("/", gate)
    holder = _hold(limited.port, "/tiny/1")
    wait_for(lambda: gate.held == 1, "l3 holding /tiny/1", context=limited.log)
    reply = fetch(limited.port, "/tiny/2", timeout=10)
    assert not gate.opened.is_set()
    assert reply.status == 503
    assert reply.header("Retry-After") == ["30"]  # its queue_timeout
    assert b"queue is full" in reply.body
    gate.opened.set()
    holder.join()
    assert fetch(limited.port, "/tiny/3").status == 200


def test_queue_timeout_and_queue_full(
    limited: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """A waiting request gets 503 after queue_timeout; one more than max_queue gets it at once."""
    gate = Gate()
    backends[3].route("/", gate)
    holder = _hold(limited.port, "/short/1")
    wait_for(lambda: gate.held == 1, "l4 holding /short/1", context=limited.log)
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(fetch, limited.port, "/short/2")
        wait_for(lambda: queue_length(limited.port, "short") == 1, "/short/2 waiting")
        # Turned away, not queued: a queued one would get "stayed busy" after queue_timeout.
        full = fetch(limited.port, "/short/3")
        timed_out = waiting.result()
    assert full.status == 503
    assert b"queue is full" in full.body
    assert timed_out.status == 503
    assert timed_out.header("Retry-After") == ["2"]  # 1.5 s, rounded up
    assert b"stayed busy" in timed_out.body
    assert gate.held == 1
    gate.opened.set()
    holder.join()


def test_a_client_that_hangs_up_leaves_the_queue(
    limited: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """A queued client that hangs up does not hold up the ones behind it (queue_timeout 10 s)."""
    counter = Concurrency(1.0)
    backends[4].route("/", counter)
    holder = _hold(limited.port, "/patient/1")
    wait_for(lambda: counter.now == 1, "l5 holding /patient/1", context=limited.log)
    quitter = socket.create_connection(("127.0.0.1", limited.port))
    quitter.sendall(b"GET /patient/2 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    quitter.close()
    started = time.monotonic()
    reply = fetch(limited.port, "/patient/3")
    assert reply.status == 200
    # Served when the holder's slot freed (about 0.5 s from here), not after the quitter's 10 s.
    assert time.monotonic() - started < 3
    holder.join()


def _metric(text: str, name: str) -> float:
    """The value of the sample named (with labels) ``name`` in a metrics page."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no sample {name} in:\n{text}")


def test_queue_figures_in_metrics_and_status_page(
    limited: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """The metrics and the status page show each pool's waiting requests, the waits so far
    and the balancer's own 503s by reason."""
    gate = Gate()
    backends[4].route("/", gate)
    holder = _hold(limited.port, "/patient/1")
    wait_for(lambda: gate.held == 1, "l5 holding /patient/1", context=limited.log)
    waiters = [_hold(limited.port, f"/patient/{n}") for n in (2, 3)]
    wait_for(lambda: queue_length(limited.port, "patient") == 2, "two waiting for patient")
    metrics = fetch(limited.port, "/_prefork_lb/metrics").body.decode()
    assert _metric(metrics, 'prefork_lb_queue_length{pool="default"}') == 0
    page = fetch(limited.port, "/_prefork_lb/").body.decode()
    assert '<td class="num waiting">2</td>' in page
    tiny_gate = Gate()
    backends[2].route("/", tiny_gate)
    busy = _hold(limited.port, "/tiny/1")
    wait_for(lambda: tiny_gate.held == 1, "l3 holding /tiny/1", context=limited.log)
    assert fetch(limited.port, "/tiny/2").status == 503  # queue_full: tiny has no room
    gate.opened.set()
    tiny_gate.opened.set()
    for thread in [holder, *waiters, busy]:
        thread.join()
    metrics = fetch(limited.port, "/_prefork_lb/metrics").body.decode()
    assert _metric(metrics, 'prefork_lb_queue_length{pool="patient"}') == 0
    assert _metric(metrics, 'prefork_lb_queue_wait_seconds_count{pool="patient"}') >= 2
    assert _metric(metrics, 'prefork_lb_queue_wait_seconds_bucket{le="0.001",pool="patient"}') < (
        _metric(metrics, 'prefork_lb_queue_wait_seconds_count{pool="patient"}')
    )
    assert _metric(metrics, 'prefork_lb_unavailable_total{reason="queue_full"}') >= 1
    assert 'prefork_lb_unavailable_total{reason="no_backend"}' in metrics
    assert 'id="unavailable"' in fetch(limited.port, "/_prefork_lb/").body.decode()


def test_a_worker_killed_while_requests_wait_leaves_no_trace(
    limited: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """SIGKILL a worker while requests wait on both: the master frees its places in the
    room (and its slot), and the other worker's waiters are served in time, not after
    queue_timeout (10 s) behind tickets nobody holds any more."""
    backends[4].route("/", Concurrency(0.3))
    results: list[int | str] = []

    def client(n: int) -> None:
        try:
            results.append(fetch(limited.port, f"/patient/{n}", timeout=15).status)
        except OSError as err:
            results.append(type(err).__name__)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(8)]
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    wait_for(lambda: queue_length(limited.port, "patient") >= 5, "five waiting for patient")
    victim = limited.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    for thread in threads:
        thread.join(timeout=15)
    assert time.monotonic() - started < 6
    assert 200 in results
    assert set(results) <= {200, "RemoteDisconnected", "ConnectionResetError"}
    deadline = time.monotonic() + 5
    while True:
        metrics = fetch(limited.port, "/_prefork_lb/metrics").body.decode()
        if _metric(metrics, 'prefork_lb_queue_length{pool="patient"}') == 0:
            break
        assert time.monotonic() < deadline, metrics
        time.sleep(0.1)
    started = time.monotonic()
    assert fetch(limited.port, "/patient/after").status == 200
    assert time.monotonic() - started < 2

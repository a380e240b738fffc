"""Failover and selection end to end: real gunicorn, real backends, real clients.

A failed try goes on to another backend when repeating it can do no harm; the
rotation stays exact with weights and with a backend down; least_conn follows
the requests in flight in every worker; a returning backend is ramped up slowly.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import (
    RecordedRequest,
    ScriptedBackend,
    drop_without_answer,
    fixed,
    hold_until,
    pattern_bytes,
    raw,
    sleep_then_respond,
)
from tests.support.balancer import BalancerProcess
from tests.support.client import Reply, fetch, send
from tests.support.polling import wait_for

HEALTH_CHECK_AGENT = "prefork_lb-health-check"
ADMIN = "/_prefork_lb/backends"


def _get_name(port: int, target: str = "/") -> str:
    """One GET on a fresh connection (so any worker may take it); the answering backend."""
    reply = fetch(port, target)
    assert reply.status == 200, reply
    return reply.body.decode().strip()


def _traffic(backends: list[ScriptedBackend], prefix: str = "/") -> list[RecordedRequest]:
    """What the backends recorded under ``prefix``, health checks left out."""
    return [
        request
        for backend in backends
        for request in backend.requests
        if request.target.startswith(prefix)
        and request.header("User-Agent") != [HEALTH_CHECK_AGENT]
    ]


def _admin_rows(lb: BalancerProcess) -> dict[str, dict[str, object]]:
    """The admin endpoint's row for every backend, by URL."""
    reply = fetch(lb.port, ADMIN)
    assert reply.status == 200, reply
    return {row["url"]: row for row in json.loads(reply.body)["backends"]}


def _in_flight(lb: BalancerProcess) -> dict[str, object]:
    """Requests in flight to each backend, summed over every worker, by URL."""
    return {url: row["in_flight"] for url, row in _admin_rows(lb).items()}


def _access_line(lb: BalancerProcess, method: str, target: str, status: int) -> re.Match[str]:
    """The access log line of one request; group 1 is its ``retries`` field."""
    return lb.wait_for_log(
        rf'"{method} {re.escape(target)} HTTP/1\.1" {status} .* retries=(\S+) ', timeout=5
    )


def _down_line(url: str) -> str:
    return rf"backend {re.escape(url)} down: "


# --- a connection that failed: any method goes on --------------------------------------------

CONNECT_FAILOVER = [
    ("GET", None),
    # Larger than the replay limit: streamed from the client, so a failed connect must not
    # have consumed any of it.
    ("POST", pattern_bytes(200 * 1024)),
    ("PATCH", b"patch body"),
]


def test_connect_failure_fails_over_for_any_method(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A request whose connection was refused goes to the next backend, whatever its method."""
    stopped = three_backends[0]
    stopped.stop()
    lb = start_balancer([b.url for b in three_backends], env={"PREFORK_LB_MAX_FAILS": "0"})
    for method, body in CONNECT_FAILOVER:
        # Never marked down, the stopped backend comes up in the rotation every few requests.
        for attempt in range(4):
            target = f"/{method.lower()}/{attempt}"
            reply = fetch(lb.port, target, method=method, body=body)
            assert reply.status == 200, reply
            assert reply.body in (b"backend-2\n", b"backend-3\n")
            seen = [r for r in _traffic(three_backends) if r.target == target]
            assert [(r.method, r.body, r.complete) for r in seen] == [(method, body or b"", True)]
            if _access_line(lb, method, target, 200)[1] == "1":
                break
        else:
            raise AssertionError(f"no {method} met the stopped backend:\n{lb.log()}")
        assert re.search(
            rf"{method} {re.escape(target)}: backend {re.escape(stopped.url)} connection failed",
            lb.log(),
        )


# --- one flaky backend of three: failures after the request went out -------------------------


@pytest.fixture(scope="module")
def flaky_trio() -> Iterator[tuple[list[ScriptedBackend], BalancerProcess]]:
    """Backend-1 fails on /reset, /close, /slow and /garbage; backends 2 and 3 always answer.

    Backend-1 closes every connection after answering, so each try reaches it on a fresh
    connection (the upstream resends an idempotent request that met a stale pooled one,
    which would make it record a request twice). MAX_FAILS=0 keeps it in the rotation.
    """
    backends = [ScriptedBackend(f"backend-{i}") for i in (1, 2, 3)]
    flaky = backends[0]
    flaky.route("/", fixed(200, "OK", [("Connection", "close")], b"backend-1\n"))
    flaky.route("/reset", drop_without_answer(reset=True))
    flaky.route("/close", drop_without_answer(reset=False))
    flaky.route("/slow", sleep_then_respond(3))
    flaky.route("/garbage", raw(b"garbage\r\n\r\n"))
    for backend in backends:
        backend.start()
    env = {"PREFORK_LB_MAX_FAILS": "0", "PREFORK_LB_READ_TIMEOUT": "1"}
    balancer = BalancerProcess([b.url for b in backends], workers=2, env=env)
    try:
        balancer.wait_ready()
        yield backends, balancer
    finally:
        balancer.stop(quick=True)
        for backend in backends:
            backend.stop()


@pytest.fixture
def flaky(
    flaky_trio: tuple[list[ScriptedBackend], BalancerProcess],
) -> tuple[list[ScriptedBackend], BalancerProcess]:
    """The flaky trio with nothing recorded, its rotation set so the next try hits backend-1."""
    backends, lb = flaky_trio
    # Every backend is usable, so the position after the one that gave backend-3 gives
    # backend-1.
    for _ in range(3):
        if _get_name(lb.port) == "backend-3":
            break
    else:
        raise AssertionError("backend-3 answered none of three GETs")
    for backend in backends:
        backend.clear()
    return backends, lb


def _send(port: int, method: str, target: str, body: bytes | list[bytes] | None) -> Reply:
    """Send with Content-Length, or chunked when ``body`` is a list of chunks."""
    if isinstance(body, list):
        return send(port, method, target, [("Host", "lb.test")], body)
    return fetch(port, target, method=method, body=body)


AFTER_SENDING = [
    pytest.param("GET", "/reset", None, 200, id="GET-reset"),
    pytest.param("GET", "/close", None, 200, id="GET-closed"),
    pytest.param("DELETE", "/reset", None, 200, id="DELETE-reset"),
    pytest.param("PUT", "/reset", b"small body", 200, id="PUT-small-body"),
    pytest.param("POST", "/reset", b"form=1", 502, id="POST-reset"),
    pytest.param("POST", "/close", b"form=1", 502, id="POST-closed"),
    pytest.param("PATCH", "/reset", b"patch", 502, id="PATCH-reset"),
    pytest.param("PUT", "/reset", [b"chunked ", b"body"], 502, id="PUT-chunked-body"),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), AFTER_SENDING)
def test_failure_after_sending_is_retried_only_when_repeating_is_safe(
    method: str,
    path: str,
    body: bytes | list[bytes] | None,
    status: int,
    flaky: tuple[list[ScriptedBackend], BalancerProcess],
) -> None:
    """A try dropped after the request went out is repeated only for an idempotent, held request."""
    (first, *others), lb = flaky
    target = f"{path}/{method.lower()}"
    reply = _send(lb.port, method, target, body)
    assert reply.status == status, reply
    sent = b"".join(body) if isinstance(body, list) else body or b""
    # The failing backend got the whole request, exactly once.
    assert [(r.method, r.target, r.body, r.complete) for r in first.requests] == [
        (method, target, sent, True)
    ]
    elsewhere = _traffic(others)
    if status == 200:
        assert [(r.method, r.target, r.body) for r in elsewhere] == [(method, target, sent)]
        assert reply.body == f"{elsewhere[0].backend}\n".encode()
        assert _access_line(lb, method, target, 200)[1] == "1"
    else:
        assert elsewhere == []
        assert _access_line(lb, method, target, 502)[1] == "-"


@pytest.mark.parametrize(
    ("method", "body", "status"),
    [
        pytest.param("GET", None, 200, id="GET-retried"),
        pytest.param("POST", b"form=1", 504, id="POST-504"),
    ],
)
def test_read_timeout_is_retried_only_for_idempotent_requests(
    method: str,
    body: bytes | None,
    status: int,
    flaky: tuple[list[ScriptedBackend], BalancerProcess],
) -> None:
    """A try that timed out waiting for its answer is repeated elsewhere for a GET, not a POST."""
    (first, *others), lb = flaky
    target = f"/slow/{method.lower()}"
    reply = fetch(lb.port, target, method=method, body=body)
    assert reply.status == status, reply
    assert [r.target for r in first.requests] == [target]
    elsewhere = _traffic(others)
    assert [r.target for r in elsewhere] == ([target] if status == 200 else [])
    line = _access_line(lb, method, target, status)
    assert line[1] == ("1" if status == 200 else "-")


def test_malformed_answer_is_502_and_neither_retried_nor_counted(
    flaky: tuple[list[ScriptedBackend], BalancerProcess],
) -> None:
    """A malformed answer is a 502 from the backend that sent it: not retried, not a failure."""
    (first, *others), lb = flaky
    failures = _admin_rows(lb)[first.url]["failed_requests"]
    reply = fetch(lb.port, "/garbage")
    assert reply.status == 502, reply
    assert [r.target for r in first.requests] == ["/garbage"]
    assert _traffic(others) == []
    assert _access_line(lb, "GET", "/garbage", 502)[1] == "-"
    assert _admin_rows(lb)[first.url]["failed_requests"] == failures


# --- how many tries --------------------------------------------------------------------------


@pytest.fixture
def four_backends() -> Iterator[list[ScriptedBackend]]:
    """Four scripted backends, each answering with its own name by default."""
    backends = [ScriptedBackend(f"backend-{i}") for i in (1, 2, 3, 4)]
    for backend in backends:
        backend.start()
    yield backends
    for backend in backends:
        backend.stop()


@pytest.mark.parametrize(
    ("failure", "retries"),
    [
        pytest.param("refused", 0, id="retries-0-refused"),
        pytest.param("refused", 1, id="retries-1-refused"),
        pytest.param("reset", 1, id="retries-1-reset"),
        pytest.param("reset", 3, id="retries-3-reset"),
    ],
)
def test_retries_bound_the_tries(
    failure: str,
    retries: int,
    four_backends: list[ScriptedBackend],
    start_balancer: StartBalancer,
) -> None:
    """A request is tried on at most RETRIES + 1 backends (RETRIES=0: never failed over)."""
    *failing, healthy = four_backends
    # Backends 1-3 fail; backend-4 answers, but is the last one the rotation reaches.
    tries = min(retries + 1, len(failing) + 1)
    status = 200 if tries > len(failing) else 502
    urls = [b.url for b in four_backends]
    for backend in failing:
        if failure == "refused":
            backend.stop()
        else:
            backend.route("/", drop_without_answer(reset=True))
    lb = start_balancer(urls, env={"PREFORK_LB_RETRIES": str(retries)})
    # A fresh rotation starts at backend-1; each retry takes the next position among the
    # backends not tried yet, which reaches backend-4 only at the fourth try.
    reply = fetch(lb.port, "/flaky")
    assert reply.status == status, reply
    assert _access_line(lb, "GET", "/flaky", status)[1] == (str(tries - 1) if tries > 1 else "-")
    assert lb.log().count("trying another backend") == tries - 1
    failed_tries = tries - 1 if status == 200 else tries
    if failure == "reset":
        assert len(_traffic(failing)) == failed_tries
    assert len(healthy.requests) == (1 if status == 200 else 0)


# --- a backend dies under load -------------------------------------------------------------


def test_killing_a_backend_under_load_fails_no_idempotent_request(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """While one of three backends dies under concurrent GETs, every GET still gets a 200."""
    env = {
        "PREFORK_LB_HEALTH_CHECK": "1",
        "PREFORK_LB_HEALTH_INTERVAL": "0.2",
        "PREFORK_LB_HEALTH_TIMEOUT": "2",
    }
    lb = start_balancer([b.url for b in three_backends], workers=4, env=env)
    victim = three_backends[1]
    stop = threading.Event()
    lock = threading.Lock()
    outcomes: list[tuple[float, str]] = []

    def client() -> None:
        while not stop.is_set():
            try:
                outcome = _get_name(lb.port)
            except (OSError, http.client.HTTPException, AssertionError) as err:
                outcome = f"failed: {err!r}"
            with lock:
                outcomes.append((time.monotonic(), outcome))

    clients = [threading.Thread(target=client) for _ in range(8)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(1.5)
        killed_at = time.monotonic()
        victim.stop()
        time.sleep(1.5)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=30)
    assert [outcome for _, outcome in outcomes if outcome.startswith("failed")] == []
    assert "backend-2" in {outcome for at, outcome in outcomes if at < killed_at}
    assert sum(at > killed_at + 0.5 for at, _ in outcomes) > 0
    # Requests did meet the dead backend, and were answered by the others.
    assert "trying another backend" in lb.log()
    lb.wait_for_log(_down_line(victim.url), timeout=5)
    for survivor in (three_backends[0], three_backends[2]):
        assert not re.search(_down_line(survivor.url), lb.log())
    k = 15
    names = [_get_name(lb.port) for _ in range(2 * k)]
    assert Counter(names) == {"backend-1": k, "backend-3": k}


# --- weights ---------------------------------------------------------------------------------


def test_weighted_rotation_is_exact(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """Weights 5, 1, 1 give the order a a b a c a a, and any 7*k requests split 5k/k/k exactly."""
    a, b, c = three_backends
    lb = start_balancer([f"{a.url} weight=5", b.url, c.url], workers=2)
    k = 10
    names = [_get_name(lb.port) for _ in range(7 * k)]
    assert [name[-1] for name in names[:7]] == ["1", "1", "2", "1", "3", "1", "1"]
    assert Counter(names) == {"backend-1": 5 * k, "backend-2": k, "backend-3": k}
    with ThreadPoolExecutor(max_workers=20) as pool:
        names = list(pool.map(lambda _: _get_name(lb.port), range(7 * 20)))
    assert Counter(names) == {"backend-1": 100, "backend-2": 20, "backend-3": 20}
    # The counts only prove the rotation is shared if more than one worker served.
    assert len(set(re.findall(r"pid=<(\d+)>", lb.log()))) == 2


def test_heavy_backend_down_leaves_an_even_rotation(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """With the weight-5 backend down, the two weight-1 backends share the requests evenly."""
    heavy, *light = three_backends
    heavy.stop()
    lb = start_balancer(
        [f"{heavy.url} weight=5", *(b.url for b in light)],
        env={"PREFORK_LB_FAIL_TIMEOUT": "60"},
    )
    # The first position of the schedule is the heavy backend: refused, marked down.
    assert _get_name(lb.port) in ("backend-2", "backend-3")
    lb.wait_for_log(_down_line(heavy.url) + "1 failure", timeout=5)
    k = 10
    names = [_get_name(lb.port) for _ in range(2 * k)]
    assert Counter(names) == {"backend-2": k, "backend-3": k}


# --- least connections -----------------------------------------------------------------------


def _hold_two_on_one_backend(
    lb: BalancerProcess,
    backends: list[ScriptedBackend],
    gates: dict[str, threading.Event],
    pool: ThreadPoolExecutor,
) -> tuple[ScriptedBackend, list[Future[Reply]]]:
    """Leave two held requests in flight on one backend and none on the other two.

    Four held requests sent one at a time spread 2/1/1, each going to a least loaded
    backend; then the two backends holding one are released.
    """
    held: list[Future[Reply]] = []
    for count in range(1, 5):
        held.append(pool.submit(fetch, lb.port, f"/hold/{count}"))
        # Its in-flight count is up before the backend sees it: the next one is chosen
        # knowing of it.
        _wait_for_held(backends, count)
    per_backend = Counter(r.backend for r in _traffic(backends, "/hold"))
    assert sorted(per_backend.values()) == [1, 1, 2], per_backend
    busy = next(b for b in backends if per_backend[b.name] == 2)
    for backend in backends:
        if backend is not busy:
            gates[backend.name].set()
    expected = {b.url: 2 if b is busy else 0 for b in backends}
    wait_for(lambda: _in_flight(lb) == expected, f"in flight {expected}", timeout=10)
    return busy, held


def _wait_for_held(backends: list[ScriptedBackend], count: int) -> None:
    """Wait until the backends hold ``count`` requests for /hold."""
    wait_for(
        lambda: len(_traffic(backends, "/hold")) >= count, f"{count} held requests", timeout=10
    )


def _holding_backends(backends: list[ScriptedBackend]) -> dict[str, threading.Event]:
    """Make /hold wait on each backend until its gate opens; return the gates by name."""
    gates = {backend.name: threading.Event() for backend in backends}
    for backend in backends:
        backend.route("/hold", hold_until(gates[backend.name]))
    return gates


def test_sequential_least_conn_requests_take_turns_exactly(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """Under least_conn, requests sent one after another tie at zero and so rotate exactly."""
    lb = start_balancer(
        [b.url for b in three_backends], workers=2, env={"PREFORK_LB_POLICY": "least_conn"}
    )
    k = 100
    names = [_get_name(lb.port) for _ in range(3 * k)]
    # A finished request still counted in flight would send the next one elsewhere.
    assert [this for this, following in itertools.pairwise(names) if this == following] == []
    assert Counter(names) == {"backend-1": k, "backend-2": k, "backend-3": k}


def test_least_conn_skips_the_busy_backend(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """Under least_conn, new requests avoid the backend with requests in flight and alternate."""
    gates = _holding_backends(three_backends)
    lb = start_balancer(
        [b.url for b in three_backends], workers=2, env={"PREFORK_LB_POLICY": "least_conn"}
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        try:
            busy, held = _hold_two_on_one_backend(lb, three_backends, gates, pool)
            names = [_get_name(lb.port) for _ in range(10)]
        finally:
            for gate in gates.values():
                gate.set()
        assert busy.name not in names
        assert all(this != following for this, following in itertools.pairwise(names))
        assert sorted(Counter(names).values()) == [5, 5]
        assert [future.result(timeout=10).status for future in held] == [200] * 4


def test_least_conn_forgets_the_requests_of_killed_workers(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """SIGKILLed workers' in-flight requests stop counting: least_conn spreads evenly again."""
    gates = _holding_backends(three_backends)
    workers = 2
    lb = start_balancer(
        [b.url for b in three_backends], workers=workers, env={"PREFORK_LB_POLICY": "least_conn"}
    )
    old = set(lb.worker_pids())
    with ThreadPoolExecutor(max_workers=4) as pool:
        _, held = _hold_two_on_one_backend(lb, three_backends, gates, pool)
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        for future in held:
            # The two still held die with the workers.
            future.exception(timeout=10)

    def respawned() -> bool:
        pids = set(lb.worker_pids())
        booted = lb.log().count("Booting worker with pid")
        return len(pids) == workers and not pids & old and booted >= 2 * workers

    wait_for(respawned, "new workers", timeout=30)
    assert set(_in_flight(lb).values()) == {0}
    k = 10
    names = [_get_name(lb.port) for _ in range(3 * k)]
    assert Counter(names) == {"backend-1": k, "backend-2": k, "backend-3": k}


# --- slow start ------------------------------------------------------------------------------


def test_returning_backend_is_ramped_up_slowly(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A backend back up gets a small share at first and its full share after slow_start."""
    env = {
        "PREFORK_LB_SLOW_START": "3",
        "PREFORK_LB_HEALTH_CHECK": "1",
        "PREFORK_LB_HEALTH_INTERVAL": "0.2",
        "PREFORK_LB_HEALTH_TIMEOUT": "2",
        "PREFORK_LB_HEALTH_RISE": "1",
        "PREFORK_LB_HEALTH_FALL": "2",
    }
    lb = start_balancer([b.url for b in three_backends], workers=2, env=env)
    returning = three_backends[0]
    returning.stop()
    lb.wait_for_log(_down_line(returning.url), timeout=5)
    returning.start()
    lb.wait_for_log(rf"backend {re.escape(returning.url)} up: ", timeout=5)
    came_back = time.monotonic()
    early: list[str] = []
    while time.monotonic() < came_back + 0.5:
        early.append(_get_name(lb.port))
    assert len(early) >= 10
    assert early.count("backend-1") < 0.2 * len(early), Counter(early)
    time.sleep(max(0.0, came_back + 3.3 - time.monotonic()))
    k = 10
    names = [_get_name(lb.port) for _ in range(3 * k)]
    assert Counter(names) == {"backend-1": k, "backend-2": k, "backend-3": k}

"""Health shared by all workers: passive and active checks, backups, fail-open, the admin view."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import (
    RecordedRequest,
    Responder,
    ScriptedBackend,
    fixed,
    hold_until,
    sleep_then_respond,
)
from tests.support.balancer import BalancerProcess
from tests.support.client import fetch, get_name
from tests.support.polling import wait_for

PROBE_AGENT = "prefork_lb-health-check"
FAILOVER = "; trying another backend"
# Active checks fast enough for a test: a probe every 0.2 s.
ACTIVE = {
    "PREFORK_LB_HEALTH_CHECK": "1",
    "PREFORK_LB_HEALTH_INTERVAL": "0.2",
    "PREFORK_LB_HEALTH_PATH": "/health",
}


def _names(port: int, count: int) -> Counter[str]:
    """Which backend answered each of ``count`` sequential requests."""
    return Counter(get_name(port) for _ in range(count))


def _is_probe(request: RecordedRequest) -> bool:
    return request.header("User-Agent") == [PROBE_AGENT]


def _probes(backend: ScriptedBackend) -> list[RecordedRequest]:
    return [r for r in backend.requests if _is_probe(r)]


def _traffic(backend: ScriptedBackend) -> list[RecordedRequest]:
    """What a backend received from clients (everything but health checks)."""
    return [r for r in backend.requests if not _is_probe(r)]


def _admin(lb: BalancerProcess, prefix: str = "/_prefork_lb") -> dict[str, Any]:
    reply = fetch(lb.port, f"{prefix}/backends")
    assert reply.status == 200, reply
    assert reply.header("Content-Type") == ["application/json"]
    document: dict[str, Any] = json.loads(reply.body)
    return document


def _start(
    start_balancer: StartBalancer,
    backends: list[str],
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
) -> BalancerProcess:
    """Start a balancer and wait until every worker has answered (its app is loaded)."""
    lb = start_balancer(backends, workers=workers, env=env)
    _wait_until_every_worker_answers(lb)
    return lb


def _wait_until_every_worker_answers(lb: BalancerProcess) -> None:
    """Wait until each current worker has answered (it logs "Booting" before loading the app)."""
    pids = set(lb.worker_pids())
    seen: set[int] = set()

    def every_worker_answered() -> bool:
        seen.add(_admin(lb)["pid"])
        return seen >= pids

    wait_for(every_worker_answered, f"workers {sorted(pids)} answering", timeout=10)


def _state(lb: BalancerProcess, backend: ScriptedBackend) -> dict[str, Any]:
    """The admin JSON entry of one backend."""
    entry: dict[str, Any] = next(b for b in _admin(lb)["backends"] if b["url"] == backend.url)
    return entry


def _wait_for_state(
    lb: BalancerProcess, backends: list[ScriptedBackend], state: str, timeout: float = 5.0
) -> None:
    urls = [b.url for b in backends]
    wait_for(
        lambda: all(_state(lb, b)["state"] == state for b in backends),
        f"{urls} {state} in the admin view",
        timeout,
    )


def _down_lines(lb: BalancerProcess, backend: ScriptedBackend) -> list[str]:
    return re.findall(rf"backend {re.escape(backend.url)} down: .*", lb.log())


def _request_until_logged(lb: BalancerProcess, pattern: str, limit: int = 10) -> None:
    """Send sequential requests (each answered 200) until the log matches ``pattern``."""
    for _ in range(limit):
        get_name(lb.port)
        if re.search(pattern, lb.log()):
            return
    raise AssertionError(f"no log line matching {pattern!r} after {limit} requests:\n{lb.log()}")


def _in_flight(lb: BalancerProcess) -> list[int]:
    return [b["in_flight"] for b in _admin(lb)["backends"]]


# Passive checks ------------------------------------------------------------------------


def test_refused_backend_leaves_every_workers_rotation_at_once(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A backend that refuses one connection is out of every worker's rotation, which stays even."""
    b1, b2, b3 = three_backends
    env = {"PREFORK_LB_MAX_FAILS": "1", "PREFORK_LB_FAIL_TIMEOUT": "30"}
    lb = _start(start_balancer, [b.url for b in three_backends], workers=2, env=env)
    assert _names(lb.port, 3) == {"backend-1": 1, "backend-2": 1, "backend-3": 1}
    b2.stop()
    stopped_at = len(lb.log())
    down = rf"backend {re.escape(b2.url)} down: 1 failure in 30 s \(connection refused\)"
    _request_until_logged(lb, down, limit=3)
    assert lb.log().count(FAILOVER) == 1

    b1.clear()
    b3.clear()
    assert _names(lb.port, 40) == {"backend-1": 20, "backend-3": 20}
    # No worker tried it again: one failed try in all, one transition.
    assert lb.log().count(FAILOVER) == 1
    assert len(_down_lines(lb, b2)) == 1
    assert f"backend={b2.url} " not in lb.log()[stopped_at:]
    assert len(b1.requests) == len(b3.requests) == 20


def test_down_transition_is_logged_once_under_concurrency(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """However many workers see a backend fail at once, its going down is logged exactly once."""
    b2 = three_backends[1]
    lb = _start(start_balancer, [b.url for b in three_backends], workers=4)
    b2.stop()
    with ThreadPoolExecutor(max_workers=20) as pool:
        names = Counter(pool.map(lambda _: get_name(lb.port), range(80)))
    assert set(names) == {"backend-1", "backend-3"}
    assert sum(names.values()) == 80
    assert len(_down_lines(lb, b2)) == 1
    assert _state(lb, b2)["state"] == "down"


def test_fewer_than_max_fails_keep_a_backend_up(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """With max_fails=3 two failures within fail_timeout leave a backend up; the third downs it."""
    b2 = three_backends[1]
    env = {"PREFORK_LB_MAX_FAILS": "3", "PREFORK_LB_FAIL_TIMEOUT": "30"}
    lb = _start(start_balancer, [b.url for b in three_backends], workers=2, env=env)
    b2.stop()
    for _ in range(20):
        get_name(lb.port)
        if lb.log().count(FAILOVER) == 2:
            break
    assert lb.log().count(FAILOVER) == 2
    state = _state(lb, b2)
    assert (state["state"], state["usable"], state["failed_requests"]) == ("up", True, 2)
    # Failed requests are not failed health checks: they do not count towards fall.
    assert state["consecutive_failures"] == 0
    assert _down_lines(lb, b2) == []

    down = rf"backend {re.escape(b2.url)} down: 3 failures in 30 s \(connection refused\)"
    _request_until_logged(lb, down, limit=6)
    assert _state(lb, b2)["state"] == "down"


def test_down_backend_goes_on_trial_after_fail_timeout(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """Without active checks a down backend gets a request again after fail_timeout; success: up."""
    b2 = three_backends[1]
    env = {"PREFORK_LB_MAX_FAILS": "1", "PREFORK_LB_FAIL_TIMEOUT": "1"}
    lb = _start(start_balancer, [b.url for b in three_backends], workers=2, env=env)
    b2.stop()
    _request_until_logged(lb, rf"backend {re.escape(b2.url)} down: ", limit=3)
    assert _state(lb, b2)["state"] == "down"
    b2.start()

    def reached() -> bool:
        get_name(lb.port)
        return bool(b2.requests)

    wait_for(reached, "a request reaching the restarted backend")
    lb.wait_for_log(
        rf"backend {re.escape(b2.url)} up: a request succeeded on trial after \d+ s down"
    )
    state = _state(lb, b2)
    assert (state["state"], state["usable"]) == ("up", True)
    assert _names(lb.port, 30) == {"backend-1": 10, "backend-2": 10, "backend-3": 10}


def test_only_one_request_at_a_time_tries_a_down_backend(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A trial is one request across every worker: a backend that hangs holds up no one else."""
    b3 = three_backends[2]
    fail_timeout = 1.0
    env = {
        "PREFORK_LB_MAX_FAILS": "1",
        "PREFORK_LB_FAIL_TIMEOUT": f"{fail_timeout:g}",
        "PREFORK_LB_READ_TIMEOUT": "2",
    }
    lb = _start(start_balancer, [b.url for b in three_backends], workers=2, env=env)
    b3.stop()
    _request_until_logged(lb, rf"backend {re.escape(b3.url)} down: ", limit=3)
    # Back, but hanging: it accepts and never answers within the read timeout.
    hang = sleep_then_respond(10)
    arrivals: list[float] = []

    def note_then_hang(request: RecordedRequest, responder: Responder) -> None:
        arrivals.append(time.monotonic())
        hang(request, responder)

    b3.route("/", note_then_hang)
    b3.start()
    time.sleep(1.2)  # fail_timeout has passed: one trial is due
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        names = list(pool.map(lambda _: get_name(lb.port), range(80)))
    took = time.monotonic() - started
    # Every request was answered (the trial timed out and went on to another backend) ...
    assert set(names) <= {"backend-1", "backend-2"}
    assert len(names) == 80
    # ... and only the one that took a trial waited for the hanging backend. A trial keeps
    # every other request off it until it is decided or fail_timeout passes (health.py), so
    # the 80 make one trial, or one more per fail_timeout if a loaded machine makes them last.
    assert len(arrivals) == len(_traffic(b3))
    assert 1 <= len(arrivals) <= took / fail_timeout + 1, (arrivals, took)
    assert _state(lb, b3)["reason"].startswith("failed again on trial")


# Active checks -------------------------------------------------------------------------


class _SwitchableHealth:
    """A health route whose status the test flips; notes each answer and the log at that time."""

    def __init__(self, status: int, up_line: str) -> None:
        self.status = status
        self.up_line = up_line
        self.lb: BalancerProcess | None = None
        # (status answered, whether the up line was already logged when it was answered)
        self.answers: list[tuple[int, bool]] = []

    def __call__(self, request: RecordedRequest, responder: Responder) -> None:
        status = self.status
        logged = self.lb is not None and re.search(self.up_line, self.lb.log()) is not None
        self.answers.append((status, logged))
        responder.respond(status, "Health", [], b"")


def test_failing_health_checks_take_a_backend_out_until_it_rises(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A backend failing fall checks is down though it serves; it returns after rise passed ones."""
    b1, b2, b3 = three_backends
    up_line = rf"backend {re.escape(b2.url)} up: 3 passed health checks in a row"
    health = _SwitchableHealth(500, up_line)
    b2.route("/health", health)
    env = {**ACTIVE, "PREFORK_LB_HEALTH_FALL": "2", "PREFORK_LB_HEALTH_RISE": "3"}
    lb = _start(start_balancer, [b.url for b in three_backends], workers=2, env=env)
    health.lb = lb
    lb.wait_for_log(
        rf"backend {re.escape(b2.url)} down: 2 failed health checks in a row \(status 500\)"
    )
    assert fetch(b2.port, "/").body == b"backend-2\n"  # it serves; only its checks fail

    b2.clear()
    assert _names(lb.port, 20) == {"backend-1": 10, "backend-3": 10}
    assert _traffic(b2) == []

    health.status = 200
    lb.wait_for_log(up_line)
    passed_before_up = [logged for status, logged in health.answers if status == 200]
    assert passed_before_up.count(False) >= 3
    assert _state(lb, b2)["state"] == "up"
    assert _names(lb.port, 30) == {"backend-1": 10, "backend-2": 10, "backend-3": 10}
    assert len(_down_lines(lb, b2)) == 1
    assert _down_lines(lb, b1) == _down_lines(lb, b3) == []


@pytest.mark.parametrize(
    ("status_setting", "passes"),
    [
        pytest.param({}, True, id="default-200-399-passes-204"),
        pytest.param({"PREFORK_LB_HEALTH_STATUS": "200"}, False, id="only-200-fails-204"),
    ],
)
def test_health_status_range_decides_what_passes(
    status_setting: dict[str, str],
    passes: bool,
    three_backends: list[ScriptedBackend],
    start_balancer: StartBalancer,
) -> None:
    """A health check passes when its status is within health_status, and fails otherwise."""
    b2 = three_backends[1]
    b2.route("/health", fixed(204, "No Content"))
    env = {**ACTIVE, "PREFORK_LB_HEALTH_FALL": "2", **status_setting}
    lb = _start(start_balancer, [b.url for b in three_backends], workers=2, env=env)

    def checked_three_times() -> bool:
        state = _state(lb, b2)
        checks: int = state["consecutive_failures"] + state["consecutive_successes"]
        return checks >= 3

    wait_for(checked_three_times, "three health checks of backend-2")
    state = _state(lb, b2)
    if passes:
        assert (state["state"], state["consecutive_failures"]) == ("up", 0)
        assert _down_lines(lb, b2) == []
    else:
        assert state["state"] == "down"
        assert state["reason"] == "2 failed health checks in a row (status 204)"


def test_one_worker_probes_for_all(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """Under four workers exactly one probes, so each backend is checked about once per interval."""
    lb = _start(start_balancer, [b.url for b in three_backends], workers=4, env=ACTIVE)
    lb.wait_for_log(r"now runs the health checks")
    for backend in three_backends:
        backend.clear()
    time.sleep(2.0)
    for backend in three_backends:
        probes = backend.requests
        assert all(_is_probe(r) and r.target == "/health" for r in probes)
        # About 2 / 0.2 = 10; four probers would make about 40.
        assert 4 <= len(probes) <= 20, (backend.name, len(probes))
    assert len(re.findall(r"worker \d+ now runs the health checks", lb.log())) == 1


def test_another_worker_takes_over_from_a_killed_prober(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """When the probing worker is SIGKILLed, another worker takes over and the probes go on."""
    lb = _start(start_balancer, [b.url for b in three_backends], workers=2, env=ACTIVE)
    prober = int(lb.wait_for_log(r"worker (\d+) now runs the health checks")[1])
    assert prober in lb.worker_pids()
    os.kill(prober, signal.SIGKILL)
    successor = lb.wait_for_log(rf"worker (?!{prober}\b)(\d+) now runs the health checks", 3)
    assert int(successor[1]) != prober
    for backend in three_backends:
        backend.clear()
    for backend in three_backends:
        backend.wait_for_requests(3, timeout=3)
        assert all(_is_probe(r) for r in backend.requests)
    assert len(re.findall(r"now runs the health checks", lb.log())) == 2


def test_backend_option_overrides_the_health_path(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A backend's own health_path option is probed instead of the global one."""
    b1, b2, b3 = three_backends
    lb = _start(
        start_balancer, [b1.url, f"{b2.url} health_path=/other", b3.url], workers=1, env=ACTIVE
    )
    for backend in three_backends:
        backend.wait_for_requests(2, timeout=3)
    assert lb.log().count("now runs the health checks") == 1
    assert {r.target for r in _probes(b1)} == {"/health"}
    assert {r.target for r in _probes(b2)} == {"/other"}
    assert {r.target for r in _probes(b3)} == {"/health"}


# Nothing up: 503 or fail-open ----------------------------------------------------------


def test_all_backends_down_is_503_without_trying_any(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """When every backend is down the balancer answers 503 at once, trying none of them."""
    env = {**ACTIVE, "PREFORK_LB_HEALTH_FALL": "1", "PREFORK_LB_CONNECT_TIMEOUT": "10"}
    lb = _start(start_balancer, [b.url for b in three_backends], workers=2, env=env)
    for backend in three_backends:
        backend.stop()
    _wait_for_state(lb, three_backends, "down")
    started = time.monotonic()
    reply = fetch(lb.port, "/")
    elapsed = time.monotonic() - started
    assert reply.status == 503
    assert reply.body == b"503 Service Unavailable: no backend is available\n"
    assert reply.header("Content-Type") == ["text/plain; charset=utf-8"]
    assert elapsed < 5  # a connect attempt could take CONNECT_TIMEOUT (10 s)
    lb.wait_for_log(r'"GET / HTTP/1.1" 503 .* backend=- .* retries=- error=NoBackendAvailable')
    assert FAILOVER not in lb.log()


@pytest.mark.parametrize(
    ("fail_open", "status"),
    [pytest.param("0", 503, id="fail-closed"), pytest.param("1", 200, id="fail-open")],
)
def test_fail_open_forwards_when_every_backend_looks_down(
    fail_open: str,
    status: int,
    three_backends: list[ScriptedBackend],
    start_balancer: StartBalancer,
) -> None:
    """When every check fails, requests get 503 untried, or with fail_open go to all primaries."""
    for backend in three_backends:
        backend.route("/health", fixed(500, "Internal Server Error"))
    env = {**ACTIVE, "PREFORK_LB_HEALTH_FALL": "1", "PREFORK_LB_FAIL_OPEN": fail_open}
    lb = _start(start_balancer, [b.url for b in three_backends], workers=2, env=env)
    _wait_for_state(lb, three_backends, "down")
    assert _admin(lb)["fail_open"] is (fail_open == "1")
    replies = [fetch(lb.port, "/") for _ in range(6)]
    assert [r.status for r in replies] == [status] * 6
    if status == 200:
        assert Counter(r.body for r in replies) == {
            b"backend-1\n": 2,
            b"backend-2\n": 2,
            b"backend-3\n": 2,
        }
    else:
        assert all(_traffic(b) == [] for b in three_backends)
    # Requests answered on fail-open do not bring a backend back: only its checks can.
    assert [e["state"] for e in _admin(lb)["backends"]] == ["down"] * 3


def test_backup_serves_only_while_every_primary_is_down(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A backup gets no traffic while a primary is up, all of it when none is, none once one is."""
    b1, b2, b3 = three_backends
    env = {**ACTIVE, "PREFORK_LB_HEALTH_FALL": "1", "PREFORK_LB_HEALTH_RISE": "1"}
    lb = _start(start_balancer, [b1.url, b2.url, f"{b3.url} backup"], workers=2, env=env)
    assert _names(lb.port, 10) == {"backend-1": 5, "backend-2": 5}

    b1.stop()
    _wait_for_state(lb, [b1], "down")
    assert _names(lb.port, 10) == {"backend-2": 10}

    b2.stop()
    _wait_for_state(lb, [b2], "down")
    assert _names(lb.port, 10) == {"backend-3": 10}

    b1.start()
    _wait_for_state(lb, [b1], "up")
    b3.clear()
    assert _names(lb.port, 10) == {"backend-1": 10}
    assert _traffic(b3) == []
    # Each switch followed the shared health, never a failed try on a down primary.
    assert FAILOVER not in lb.log()


# The admin endpoint --------------------------------------------------------------------

ENTRY_KEYS = {
    "url",
    "state",
    "usable",
    "since",
    "seconds_in_state",
    "reason",
    "failed_requests",
    "consecutive_failures",
    "consecutive_successes",
    "in_flight",
    "tunnels_open",
    "weight",
    "backup",
    "health_check",
    # Runtime control (test_runtime_control.py) and outlier ejection.
    "name",
    "admin_state",
    "configured_weight",
    "ejected",
    "ejected_for",
    "ejections",
    "consecutive_5xx",
    # Backends from DNS (test_dns_backends.py): None for a listed backend.
    "dns",
    "dns_state",
}


def test_admin_view_describes_every_backend(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """The admin JSON shows each backend's state and settings; other paths 404, POST 405."""
    b1, b2, b3 = three_backends
    backends = [f"{b1.url} weight=5", b2.url, f"{b3.url} backup health_check=1"]
    lb = _start(start_balancer, backends, workers=2)
    document = _admin(lb)
    assert set(document) == {
        "policy",
        "fail_open",
        "pid",
        "time",
        "client_connections",
        "backends",
        "pools",
        "unavailable",
    }
    assert [pool["name"] for pool in document["pools"]] == ["default"]
    assert document["unavailable"] == {"no_backend": 0, "queue_full": 0, "queue_timeout": 0}
    assert (document["policy"], document["fail_open"]) == ("round_robin", False)
    assert document["pid"] in lb.worker_pids()
    entries = document["backends"]
    assert all(set(entry) == ENTRY_KEYS for entry in entries)
    assert [e["url"] for e in entries] == [b.url for b in three_backends]
    assert [e["state"] for e in entries] == ["up"] * 3
    assert [e["usable"] for e in entries] == [True] * 3
    assert [e["in_flight"] for e in entries] == [0, 0, 0]
    assert [e["weight"] for e in entries] == [5, 1, 1]
    assert [(e["dns"], e["dns_state"]) for e in entries] == [(None, None)] * 3
    assert [e["backup"] for e in entries] == [False, False, True]
    assert [e["health_check"] for e in entries] == [False, False, True]
    assert entries[0]["reason"] == "up since the balancer started"
    assert entries[0]["consecutive_failures"] == 0

    missing = fetch(lb.port, "/_prefork_lb/nothing")
    assert missing.status == 404
    assert json.loads(missing.body)["error"] == "not found"
    post = fetch(lb.port, "/_prefork_lb/backends", method="POST", body=b"{}")
    assert post.status == 405
    assert post.header("Allow") == ["GET, HEAD"]
    assert all(_traffic(b) == [] for b in three_backends)


@pytest.mark.parametrize(
    ("env", "admin_target", "proxied_target"),
    [
        pytest.param(
            {"PREFORK_LB_ADMIN_ALLOW": "10.0.0.0/8"},
            None,
            "/_prefork_lb/backends",
            id="client-not-allowed",
        ),
        pytest.param({"PREFORK_LB_ADMIN_PATH": "off"}, None, "/_prefork_lb/backends", id="off"),
        pytest.param(
            {"PREFORK_LB_ADMIN_PATH": "/lbadmin"},
            "/lbadmin/backends",
            "/_prefork_lb/backends",
            id="custom-path",
        ),
    ],
)
def test_admin_path_is_ordinary_traffic_unless_served(
    env: dict[str, str],
    admin_target: str | None,
    proxied_target: str,
    three_backends: list[ScriptedBackend],
    start_balancer: StartBalancer,
) -> None:
    """The admin path is proxied like any other for a client not allowed, or when moved or off."""
    backend = three_backends[0]
    lb = start_balancer([backend.url], workers=1, env=env)
    if admin_target is not None:
        document = json.loads(fetch(lb.port, admin_target).body)
        assert [e["url"] for e in document["backends"]] == [backend.url]
    assert backend.requests == []
    reply = fetch(lb.port, proxied_target)
    assert (reply.status, reply.body) == (200, b"backend-1\n")
    assert [r.target for r in backend.requests] == [proxied_target]


def test_admin_path_is_ordinary_traffic_when_forwarded(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A request that came through a proxy is not local, even from 127.0.0.1: it is proxied."""
    backend = three_backends[0]
    lb = start_balancer([backend.url], workers=1)
    for name in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        backend.clear()
        reply = fetch(lb.port, "/_prefork_lb/backends", headers={name: "for=203.0.113.9"})
        assert (reply.status, reply.body) == (200, b"backend-1\n"), name
        assert [r.target for r in backend.requests] == ["/_prefork_lb/backends"]


def test_admin_counts_requests_in_flight_across_workers(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """The admin view sums the requests every worker has in flight to a backend; 0 once done."""
    backend = three_backends[0]
    lb = _start(start_balancer, [backend.url], workers=2)
    serving: set[str] = set()
    # Until the three requests happen to be held by both workers (the kernel picks).
    for attempt in range(3):
        release = threading.Event()
        target = f"/slow-{attempt}"
        backend.route(target, hold_until(release))
        backend.clear()
        with ThreadPoolExecutor(max_workers=3) as pool:
            try:
                replies = [pool.submit(fetch, lb.port, target) for _ in range(3)]
                backend.wait_for_requests(3)
                assert _in_flight(lb) == [3]
            finally:
                release.set()
            assert [r.result().status for r in replies] == [200] * 3
        wait_for(lambda: _in_flight(lb) == [0], "in_flight back to 0")
        lb.wait_for_log(rf"(?s)(GET {target} .*){{3}}")
        serving = set(re.findall(rf"GET {target} .* pid=<(\d+)>", lb.log()))
        if len(serving) == 2:
            break
    assert len(serving) == 2


def _fetch_ignoring_errors(port: int, target: str) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):  # its worker is killed
        fetch(port, target, timeout=30)


def test_killed_workers_requests_do_not_stay_in_flight(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """Requests in flight on SIGKILLed workers stop counting once the master has reaped them."""
    backend = three_backends[0]
    release = threading.Event()
    backend.route("/slow", hold_until(release))
    lb = _start(start_balancer, [backend.url], workers=2)
    with ThreadPoolExecutor(max_workers=4) as pool:
        try:
            for _ in range(4):
                pool.submit(_fetch_ignoring_errors, lb.port, "/slow")
            backend.wait_for_requests(4)
            assert _in_flight(lb) == [4]
            killed = lb.worker_pids()
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

            def respawned() -> bool:
                pids = lb.worker_pids()
                return len(pids) == 2 and not set(pids) & set(killed)

            wait_for(respawned, "two new workers", timeout=15)
            _wait_until_every_worker_answers(lb)
            wait_for(lambda: _in_flight(lb) == [0], "in_flight back to 0")
        finally:
            release.set()

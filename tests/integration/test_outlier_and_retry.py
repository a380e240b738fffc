"""Outlier ejection and retry_on_status with real processes: who gets which request."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import ScriptedBackend, fixed
from tests.support.balancer import BalancerProcess
from tests.support.client import fetch
from tests.support.polling import wait_for


@pytest.fixture
def backends() -> Iterator[list[ScriptedBackend]]:
    """Three backends, each answering with its own name."""
    started = [ScriptedBackend(f"backend-{i}").start() for i in (1, 2, 3)]
    yield started
    for backend in started:
        backend.stop()


def _shown(lb: BalancerProcess) -> dict[str, dict[str, Any]]:
    document = json.loads(fetch(lb.port, "/_prefork_lb/backends").body)
    return {b["name"]: b for b in document["backends"]}


def _start(start: StartBalancer, backends: list[ScriptedBackend], **env: str) -> BalancerProcess:
    return start([b.url for b in backends], env=env)


def test_retry_on_status_tries_another_backend_for_idempotent_requests_only(
    start_balancer: StartBalancer, backends: list[ScriptedBackend]
) -> None:
    """A 502 to a GET is retried elsewhere; a POST gets the 502, never sent twice."""
    backends[0].route("/r", fixed(502, "Bad Gateway", body=b"broken"))
    lb = _start(
        start_balancer, backends, PREFORK_LB_RETRY_ON_STATUS="502, 503", PREFORK_LB_RETRIES="2"
    )
    posts = [fetch(lb.port, "/r", method="POST", body=b"x").status for _ in range(6)]
    assert Counter(posts) == {200: 4, 502: 2}
    assert len(backends[0].requests) == 2
    gets = [fetch(lb.port, "/r") for _ in range(9)]
    assert {reply.status for reply in gets} == {200}
    assert {reply.body for reply in gets} == {b"backend-2\n", b"backend-3\n"}
    lb.wait_for_log(r"GET /r: backend http://127\.0\.0\.1:\d+ answered 502; trying another")


def test_when_tries_run_out_the_last_answer_is_sent(
    start_balancer: StartBalancer, backends: list[ScriptedBackend]
) -> None:
    """With every backend answering 503, the client gets the last 503 after 1 + retries tries."""
    for backend in backends:
        backend.route("/all", fixed(503, "Service Unavailable", body=b"busy"))
    lb = _start(start_balancer, backends, PREFORK_LB_RETRY_ON_STATUS="503", PREFORK_LB_RETRIES="1")
    reply = fetch(lb.port, "/all")
    assert (reply.status, reply.body) == (503, b"busy")
    assert sum(len(b.requests) for b in backends) == 2


def test_runs_of_5xx_eject_with_back_off_and_within_the_pool_limit(
    start_balancer: StartBalancer, backends: list[ScriptedBackend]
) -> None:
    """Three 503s in a row eject a backend for 1 s, then 2 s; a second bad one stays in (50%)."""
    backends[0].route("/", fixed(503, "Service Unavailable"))
    backends[1].route("/", fixed(503, "Service Unavailable"))
    lb = _start(
        start_balancer,
        backends,
        PREFORK_LB_EJECT_CONSECUTIVE_5XX="3",
        PREFORK_LB_EJECT_TIME="1",
        PREFORK_LB_EJECT_MAX_TIME="5",
    )

    most_at_once = 0
    second: dict[str, Any] = {}

    def ejected_twice() -> bool:
        nonlocal most_at_once
        fetch(lb.port, "/")
        shown = _shown(lb).values()
        most_at_once = max(most_at_once, sum(b["ejected"] for b in shown))
        second.update(next((b for b in shown if b["ejected"] and b["ejections"] == 2), {}))
        return bool(second)

    wait_for(ejected_twice, "a backend ejected a second time", timeout=15, context=lb.log)
    assert most_at_once == 1
    assert 1 < second["ejected_for"] <= 2
    lb.wait_for_log(r"ejected for 1 s: 3 answers 5xx in a row \(ejection 1\)")
    lb.wait_for_log(r"ejected for 2 s: \d+ answers 5xx in a row \(ejection 2\)")


def test_nothing_is_ejected_while_ejection_is_off(
    start_balancer: StartBalancer, backends: list[ScriptedBackend]
) -> None:
    """With eject_consecutive_5xx at 0, a run of 503s ejects nothing."""
    backends[0].route("/", fixed(503, "Service Unavailable"))
    lb = _start(start_balancer, backends)
    for _ in range(12):
        fetch(lb.port, "/")
    assert not any(b["ejected"] or b["consecutive_5xx"] for b in _shown(lb).values())


def test_passing_health_checks_end_an_ejection_early(
    start_balancer: StartBalancer, backends: list[ScriptedBackend]
) -> None:
    """With active checks, a backend ejected for 60 s is back once health_rise checks pass."""
    backends[0].route("/", fixed(503, "Service Unavailable"))
    backends[0].route("/health", fixed(200, "OK"))
    lb = _start(
        start_balancer,
        backends,
        PREFORK_LB_EJECT_CONSECUTIVE_5XX="2",
        PREFORK_LB_EJECT_TIME="60",
        PREFORK_LB_HEALTH_CHECK="1",
        PREFORK_LB_HEALTH_INTERVAL="0.3",
        PREFORK_LB_HEALTH_PATH="/health",
        PREFORK_LB_HEALTH_RISE="2",
    )

    def web_1_ejected() -> bool:
        fetch(lb.port, "/")
        return bool(_shown(lb)[backends[0].url.removeprefix("http://")]["ejected"])

    wait_for(web_1_ejected, "backend-1 ejected", context=lb.log)
    lb.wait_for_log(r"back from ejection: checks pass", timeout=5)
    assert not _shown(lb)[backends[0].url.removeprefix("http://")]["ejected"]


def test_a_discarded_answer_never_leaves_its_connection_half_read(
    start_balancer: StartBalancer, backends: list[ScriptedBackend]
) -> None:
    """After retried 502s with large bodies, the same backend's next answers arrive whole."""
    big = b"x" * 200_000
    backends[0].route("/big", fixed(502, "Bad Gateway", body=big))
    # One worker: its pooled connection to backend-1 is the one the next request reuses.
    lb = start_balancer(
        [b.url for b in backends], workers=1, env={"PREFORK_LB_RETRY_ON_STATUS": "502"}
    )
    assert {fetch(lb.port, "/big").status for _ in range(6)} == {200}
    posts = [fetch(lb.port, "/big", method="POST", body=b"x") for _ in range(3)]
    assert sorted(p.status for p in posts) == [200, 200, 502]
    assert next(p.body for p in posts if p.status == 502) == big

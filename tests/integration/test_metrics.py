"""Prometheus metrics on the admin endpoint: summed over all workers, kept when workers die."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import StartBalancer
from tests.support.backend import (
    ScriptedBackend,
    fixed,
    hold_until,
    raw,
    truncated,
)
from tests.support.balancer import BalancerProcess
from tests.support.client import fetch, get_name
from tests.support.polling import wait_for
from tests.support.rawhttp import RawConnection

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(lb: BalancerProcess) -> Samples:
    """Every sample of ``/_prefork_lb/metrics``, keyed by name and sorted labels."""
    reply = fetch(lb.port, "/_prefork_lb/metrics")
    assert reply.status == 200, reply
    assert reply.header("Content-Type")[0].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _requests(samples: Samples, backend: ScriptedBackend, status_class: str = "2xx") -> float:
    return _value(
        samples, "prefork_lb_requests_total", backend=backend.url, **{"class": status_class}
    )


def _start(start_balancer: StartBalancer, backends: list[ScriptedBackend]) -> BalancerProcess:
    lb = start_balancer([b.url for b in backends], workers=2)
    pids = set(lb.worker_pids())
    seen: set[int] = set()

    def every_worker_answered() -> bool:
        seen.add(json.loads(fetch(lb.port, "/_prefork_lb/backends").body)["pid"])
        return seen >= pids

    wait_for(every_worker_answered, "every worker answering", timeout=10, context=lb.log)
    return lb


def test_requests_are_counted_over_all_workers(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """Six GETs over three backends and two workers count two 2xx per backend, with latencies."""
    lb = _start(start_balancer, three_backends)
    for _ in range(6):
        get_name(lb.port)
    samples = _scrape(lb)
    for backend in three_backends:
        assert _requests(samples, backend) == 2
        latency = "prefork_lb_upstream_latency_seconds"
        assert _value(samples, f"{latency}_count", backend=backend.url) == 2
        assert _value(samples, f"{latency}_bucket", backend=backend.url, le="+Inf") == 2
        assert 0 < _value(samples, f"{latency}_sum", backend=backend.url) < 2
        assert _value(samples, "prefork_lb_backend_up", backend=backend.url) == 1
        assert _value(samples, "prefork_lb_in_flight", backend=backend.url) == 0
        assert _value(samples, "prefork_lb_retries_total", backend=backend.url) == 0


def test_status_classes_and_bad_answers(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """A 404 counts as 4xx; a garbage answer as BadBackendResponse and the 502 the client got."""
    backend.route("/missing", fixed(404, "Not Found", body=b"no\n"))
    backend.route("/garbage", raw(b"HELLO THERE\r\n\r\n"))
    before = _scrape(echo_balancer)
    assert fetch(echo_balancer.port, "/missing").status == 404
    assert fetch(echo_balancer.port, "/garbage").status == 502
    after = _scrape(echo_balancer)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    url = backend.url
    assert grew("prefork_lb_requests_total", backend=url, **{"class": "4xx"}) == 1
    assert grew("prefork_lb_requests_total", backend=url, **{"class": "5xx"}) == 1
    assert grew("prefork_lb_errors_total", backend=url, kind="BadBackendResponse") == 1
    assert grew("prefork_lb_retries_total", backend=url) == 0


def test_failover_counts_a_retry_and_the_error(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """A stopped backend: one retry and one BackendUnreachable on it, then it shows down."""
    lb = _start(start_balancer, three_backends)
    stopped = three_backends[1]
    stopped.stop()
    for _ in range(6):
        get_name(lb.port)
    samples = _scrape(lb)
    assert _value(samples, "prefork_lb_retries_total", backend=stopped.url) == 1
    kind = "BackendUnreachable"
    assert _value(samples, "prefork_lb_errors_total", backend=stopped.url, kind=kind) == 1
    assert _requests(samples, stopped) == 0
    assert sum(_requests(samples, backend) for backend in three_backends) == 6
    assert _value(samples, "prefork_lb_backend_up", backend=stopped.url) == 0


def test_a_response_cut_after_its_head_counts_as_aborted(
    backend: ScriptedBackend, echo_balancer: BalancerProcess
) -> None:
    """A body the backend breaks off counts one aborted response and one error, on that backend."""
    backend.route("/cut", truncated(100_000, 5_000))
    before = _scrape(echo_balancer)
    with RawConnection(echo_balancer.port, timeout=10) as conn:
        assert not conn.request("GET", "/cut").complete
    wait_for(
        lambda: (
            _value(
                _scrape(echo_balancer), "prefork_lb_responses_aborted_total", backend=backend.url
            )
            > _value(before, "prefork_lb_responses_aborted_total", backend=backend.url)
        ),
        "the abort counted",
    )
    after = _scrape(echo_balancer)

    def grew(name: str) -> float:
        return sum(
            value - before.get(key, 0.0)
            for key, value in after.items()
            if key[0] == name and ("backend", backend.url) in key[1]
        )

    assert grew("prefork_lb_responses_aborted_total") == 1
    assert grew("prefork_lb_errors_total") == 1
    assert grew("prefork_lb_requests_total") == 1


def test_balancer_level_errors_have_an_empty_backend(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """With every backend stopped, the 503s count under backend="" as NoBackendAvailable."""
    lb = _start(start_balancer, three_backends)
    for backend in three_backends:
        backend.stop()
    statuses = [fetch(lb.port, "/").status for _ in range(8)]
    assert 503 in statuses
    samples = _scrape(lb)
    no_backend = _value(samples, "prefork_lb_errors_total", backend="", kind="NoBackendAvailable")
    assert no_backend == statuses.count(503)
    assert _value(samples, "prefork_lb_requests_total", backend="", **{"class": "5xx"}) == (
        statuses.count(503)
    )


def test_in_flight_while_requests_are_held(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """Requests a backend holds show in prefork_lb_in_flight, and leave it when answered."""
    backend = three_backends[0]
    release = threading.Event()
    backend.route("/slow", hold_until(release))
    lb = _start(start_balancer, [backend])
    with ThreadPoolExecutor(max_workers=3) as pool:
        try:
            replies = [pool.submit(fetch, lb.port, "/slow") for _ in range(3)]
            backend.wait_for_requests(3)
            samples = _scrape(lb)
            assert _value(samples, "prefork_lb_in_flight", backend=backend.url) == 3
            # The three held ones, and the scrape's own.
            assert _value(samples, "prefork_lb_client_connections") == 4
        finally:
            release.set()
        assert [reply.result().status for reply in replies] == [200] * 3
    samples = _scrape(lb)
    assert _value(samples, "prefork_lb_in_flight", backend=backend.url) == 0
    assert _requests(samples, backend) == 3


def _kill_workers(lb: BalancerProcess) -> None:
    killed = lb.worker_pids()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)

    def respawned() -> bool:
        pids = lb.worker_pids()
        return len(pids) == 2 and not set(pids) & set(killed)

    wait_for(respawned, "two new workers", timeout=15, context=lb.log)


def test_totals_survive_killed_workers(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """After both workers are SIGKILLed and respawned, every total is what it was."""
    lb = _start(start_balancer, three_backends)
    three_backends[2].route("/missing", fixed(404, "Not Found"))
    for _ in range(6):
        get_name(lb.port)
    fetch(lb.port, "/missing")
    before = _scrape(lb)
    _kill_workers(lb)
    after = _answering_scrape(lb)
    counters = {
        key: value
        for key, value in before.items()
        if key[0].endswith(("_total", "_count", "_sum", "_bucket"))
    }
    assert counters
    assert {key: after.get(key) for key in counters} == counters


def _answering_scrape(lb: BalancerProcess) -> Samples:
    """A scrape once a new worker answers (the first connections may meet a dying one)."""
    result: list[Samples] = []

    def scraped() -> bool:
        with contextlib.suppress(OSError, http.client.HTTPException, AssertionError):
            result.append(_scrape(lb))
        return bool(result)

    wait_for(scraped, "a scrape answered", timeout=10, context=lb.log)
    return result[0]


def _write_backends(path: Path, backends: list[ScriptedBackend]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text("".join(f'[[backends]]\nurl = "{b.url}"\n\n' for b in backends))
    partial.replace(path)


def test_totals_are_kept_by_url_across_a_reload(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """A HUP that reorders and adds backends keeps each URL's totals; a new one starts at 0."""
    b1, b2, b3 = three_backends
    config = tmp_path / "prefork_lb.toml"
    _write_backends(config, [b1, b2])
    lb = start_balancer([], workers=2, env={"PREFORK_LB_CONFIG": str(config)})
    for _ in range(4):
        get_name(lb.port)
    old = set(lb.worker_pids())
    _write_backends(config, [b3, b2, b1])
    os.kill(lb.pid, signal.SIGHUP)

    def replaced() -> bool:
        pids = set(lb.worker_pids())
        ready = {int(p) for p in re.findall(r"prefork_lb: worker (\d+) ready", lb.log())}
        return len(pids) == 2 and not pids & old and pids <= ready

    wait_for(replaced, "workers replaced", timeout=15, context=lb.log)
    samples = _answering_scrape(lb)
    assert [_requests(samples, b) for b in (b1, b2, b3)] == [2, 2, 0]
    for _ in range(3):
        get_name(lb.port)
    samples = _scrape(lb)
    assert [_requests(samples, b) for b in (b1, b2, b3)] == [3, 3, 1]

"""One rotation across all workers: N*k requests reach each of N backends exactly k times."""

from __future__ import annotations

import http.client
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import ScriptedBackend
from tests.support.balancer import BalancerProcess
from tests.support.client import get_name


def _serving_pids(lb: BalancerProcess) -> set[str]:
    return set(re.findall(r"pid=<(\d+)>", lb.log()))


@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_sequential_requests_rotate_exactly(
    workers: int, three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """N*k requests sent one after another reach each of N backends exactly k times."""
    lb = start_balancer([b.url for b in three_backends], workers=workers)
    k = 20
    names = [get_name(lb.port) for _ in range(3 * k)]
    assert names[:3] == ["backend-1", "backend-2", "backend-3"]
    assert Counter(names) == {"backend-1": k, "backend-2": k, "backend-3": k}


@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_concurrent_requests_rotate_exactly(
    workers: int, three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """N*k requests from 50 concurrent clients reach each backend exactly k times."""
    lb = start_balancer([b.url for b in three_backends], workers=workers)
    k = 100
    with ThreadPoolExecutor(max_workers=50) as pool:
        names = list(pool.map(lambda _: get_name(lb.port), range(3 * k)))
    assert Counter(names) == {"backend-1": k, "backend-2": k, "backend-3": k}
    # The count only proves sharing if more than one worker did the serving.
    assert len(_serving_pids(lb)) >= min(workers, 2)


def test_sigkilled_workers_never_wedge_the_rotation(
    three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """Workers SIGKILLed under load are respawned, and every later request is served in rotation."""
    workers = 4
    lb = start_balancer([b.url for b in three_backends], workers=workers)
    stop = threading.Event()
    served = Counter[str]()

    def hammer() -> None:
        while not stop.is_set():
            try:
                get_name(lb.port)
                served["ok"] += 1
            except (OSError, http.client.HTTPException, AssertionError):
                served["failed"] += 1

    clients = [threading.Thread(target=hammer) for _ in range(20)]
    for client in clients:
        client.start()
    try:
        for _ in range(10):
            time.sleep(random.uniform(0.05, 0.25))
            pids = lb.worker_pids()
            if pids:
                os.kill(random.choice(pids), signal.SIGKILL)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)
    assert served["ok"] > 0
    deadline = time.monotonic() + 30
    while len(lb.worker_pids()) < workers and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(lb.worker_pids()) == workers

    k = 30
    names = [get_name(lb.port) for _ in range(3 * k)]
    assert Counter(names) == {"backend-1": k, "backend-2": k, "backend-3": k}
    # Consecutive requests keep the configured order, wherever the rotation stood.
    start = names.index("backend-1")
    assert names[start : start + 3] == ["backend-1", "backend-2", "backend-3"]

"""`kill -HUP` of the master: the settings file is read again, the workers replaced, losslessly."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import ScriptedBackend, fixed
from tests.support.balancer import BalancerProcess
from tests.support.client import fetch, get_name
from tests.support.polling import wait_for

PROBE_AGENT = "prefork_lb-health-check"
# Active checks fast enough for a test; fall is high so that a backend that starts
# up after a reload (its health lost) would take requests for seconds.
ACTIVE = 'health_check = true\nhealth_interval = 0.2\nhealth_path = "/health"\nhealth_fall = 10\n'


def _write_config(path: Path, backends: list[tuple[ScriptedBackend, int]], extra: str = "") -> None:
    """Write the settings file the way an editor or deploy tool should: whole, then renamed."""
    lines = [extra]
    for backend, weight in backends:
        lines += ["[[backends]]", f'url = "{backend.url}"', f"weight = {weight}", ""]
    partial = path.with_suffix(".partial")
    partial.write_text("\n".join(lines))
    partial.replace(path)


def _traffic(backend: ScriptedBackend) -> int:
    """How many client requests (not health checks) the backend has received."""
    return sum(1 for r in backend.requests if r.header("User-Agent") != [PROBE_AGENT])


def _reload(lb: BalancerProcess) -> list[int]:
    """HUP the master; return the new workers once they all serve and the old ones are gone."""
    old = set(lb.worker_pids())
    os.kill(lb.pid, signal.SIGHUP)

    def replaced() -> bool:
        pids = set(lb.worker_pids())
        ready = {int(p) for p in re.findall(r"prefork_lb: worker (\d+) ready", lb.log())}
        return len(pids) == lb.workers and not pids & old and pids <= ready

    wait_for(replaced, f"workers {sorted(old)} replaced", timeout=15, context=lb.log)
    assert lb.process.poll() is None, lb.log()
    return lb.worker_pids()


def _backend_state(lb: BalancerProcess, backend: ScriptedBackend) -> str:
    reply = fetch(lb.port, "/_prefork_lb/backends")
    assert reply.status == 200, reply
    document: dict[str, Any] = json.loads(reply.body)
    state: str = next(b["state"] for b in document["backends"] if b["url"] == backend.url)
    return state


class _Load:
    """Clients sending GETs one after another on fresh connections, until stopped."""

    def __init__(self, port: int, clients: int = 10) -> None:
        self.port = port
        self.served: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                name = get_name(self.port)
            except (OSError, http.client.HTTPException, AssertionError) as err:
                self.failures.append(repr(err))
            else:
                self.served.append((time.monotonic(), name))

    def since(self, moment: float) -> Counter[str]:
        """Which backends answered the requests that ended after ``moment``."""
        return Counter(name for at, name in self.served if at > moment)

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


StartFromFile = Callable[[], BalancerProcess]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Where the balancer's settings file goes (written by each test)."""
    return tmp_path / "prefork_lb.toml"


@pytest.fixture
def start_from_file(start_balancer: StartBalancer, config: Path) -> StartFromFile:
    """Start a balancer (2 workers) whose settings come from the file alone."""
    return lambda: start_balancer([], workers=2, env={"PREFORK_LB_CONFIG": str(config)})


def test_reload_adds_a_backend_under_load_without_a_failed_request(
    three_backends: list[ScriptedBackend], config: Path, start_from_file: StartFromFile
) -> None:
    """A backend added by HUP under 10 busy clients fails no request; it then gets its share."""
    b1, b2, b3 = three_backends
    _write_config(config, [(b1, 1), (b2, 1)])
    lb = start_from_file()
    old_workers = lb.worker_pids()
    with _Load(lb.port) as load:
        time.sleep(0.5)
        _write_config(config, [(b1, 1), (b2, 1), (b3, 2)])
        new_workers = _reload(lb)
        replaced_at = time.monotonic()
        time.sleep(2)
    assert load.failures == []
    assert set(new_workers).isdisjoint(old_workers)
    assert lb.process.poll() is None
    assert load.since(replaced_at)["backend-3"] > 0
    assert re.search(
        rf"reloaded settings from {re.escape(str(config))}: backends added \[{b3.url}\]", lb.log()
    )
    k = 15
    names = Counter(get_name(lb.port) for _ in range(4 * k))
    assert names == {"backend-1": k, "backend-2": k, "backend-3": 2 * k}


def test_a_removed_backend_gets_nothing_once_the_old_workers_are_gone(
    three_backends: list[ScriptedBackend], config: Path, start_from_file: StartFromFile
) -> None:
    """A backend taken out of the file by HUP gets no request after the new workers took over."""
    b1, b2, b3 = three_backends
    _write_config(config, [(b1, 1), (b2, 1), (b3, 1)])
    lb = start_from_file()
    with _Load(lb.port) as load:
        time.sleep(0.5)
        _write_config(config, [(b1, 1), (b3, 1)])
        _reload(lb)
        replaced_at = time.monotonic()
        received = _traffic(b2)
        time.sleep(1)
    assert load.failures == []
    assert received > 0
    assert _traffic(b2) == received
    assert set(load.since(replaced_at)) == {"backend-1", "backend-3"}
    assert re.search(rf"backends removed \[{b2.url}\]", lb.log())
    k = 20
    names = Counter(get_name(lb.port) for _ in range(2 * k))
    assert names == {"backend-1": k, "backend-3": k}


def test_a_down_backend_stays_down_across_a_reload(
    three_backends: list[ScriptedBackend], config: Path, start_from_file: StartFromFile
) -> None:
    """A backend the checks found down is still down for the new workers: it gets no request."""
    b1, b2, b3 = three_backends
    b2.route("/health", fixed(500, "Internal Server Error"))
    _write_config(config, [(b1, 1), (b2, 1)], extra=ACTIVE)
    lb = start_from_file()
    wait_for(lambda: _backend_state(lb, b2) == "down", "backend-2 down", timeout=10, context=lb.log)
    _write_config(config, [(b1, 1), (b2, 1), (b3, 1)], extra=ACTIVE)
    _reload(lb)
    received = _traffic(b2)
    names = Counter(get_name(lb.port) for _ in range(40))
    assert names == {"backend-1": 20, "backend-3": 20}
    assert _traffic(b2) == received
    assert _backend_state(lb, b2) == "down"
    assert _backend_state(lb, b3) == "up"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        pytest.param(b'[[backends]]\nurl = "http://127.0.0.1:1\n', "is not valid TOML", id="toml"),
        pytest.param(b"# caf\xe9\n", "is not UTF-8", id="not-utf8"),
    ],
)
def test_a_broken_file_keeps_the_running_settings(
    content: bytes,
    why: str,
    three_backends: list[ScriptedBackend],
    config: Path,
    start_from_file: StartFromFile,
) -> None:
    """HUP with a file that cannot be read as settings logs why; the balancer goes on as it was."""
    b1, b2, _ = three_backends
    _write_config(config, [(b1, 1), (b2, 1)])
    lb = start_from_file()
    with _Load(lb.port) as load:
        time.sleep(0.3)
        config.write_bytes(content)
        _reload(lb)
        time.sleep(0.5)
    assert load.failures == []
    assert re.search(
        r"\[ERROR\] prefork_lb: reload failed, keeping the running settings: "
        rf"PREFORK_LB_CONFIG: .* {why}",
        lb.log(),
    )
    assert lb.process.poll() is None
    k = 20
    names = Counter(get_name(lb.port) for _ in range(2 * k))
    assert names == {"backend-1": k, "backend-2": k}

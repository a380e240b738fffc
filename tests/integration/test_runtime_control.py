"""Runtime control with real processes: drain, maint, weights, the token, state_file and ctl."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import RecordedRequest, ScriptedBackend, hold_until
from tests.support.balancer import ROOT, BalancerProcess
from tests.support.client import Reply, fetch, get_name
from tests.support.polling import wait_for

TOKEN = "s3cret-token-for-tests"
ADMIN = "/_prefork_lb"
NAMES = ("web-1", "web-2", "web-3")
PROBE_AGENT = "prefork_lb-health-check"


@pytest.fixture(scope="module")
def backends() -> Iterator[list[ScriptedBackend]]:
    """Three backends for the module, each answering with its own name."""
    started = [ScriptedBackend(f"backend-{i}").start() for i in (1, 2, 3)]
    yield started
    for backend in started:
        backend.stop()


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the module's state file."""
    return tmp_path_factory.mktemp("runtime")


def _env(backends: list[ScriptedBackend], state_file: Path, **extra: str) -> dict[str, str]:
    listed = ",".join(f"{b.url} name={n}" for b, n in zip(backends, NAMES, strict=True))
    return {
        "PREFORK_LB_BACKENDS": listed,
        "PREFORK_LB_ADMIN_TOKEN": TOKEN,
        "PREFORK_LB_STATE_FILE": str(state_file),
        "PREFORK_LB_HEALTH_CHECK": "1",
        "PREFORK_LB_HEALTH_INTERVAL": "0.2",
        "PREFORK_LB_HEALTH_PATH": "/health",
        **extra,
    }


@pytest.fixture(scope="module")
def shared_lb(backends: list[ScriptedBackend], state_dir: Path) -> Iterator[BalancerProcess]:
    """One balancer for the module: two workers, the token, a state file, active checks."""
    with BalancerProcess([], workers=2, env=_env(backends, state_dir / "state.json")) as lb:
        yield lb.wait_ready()


@pytest.fixture
def lb(shared_lb: BalancerProcess, backends: list[ScriptedBackend]) -> BalancerProcess:
    """The shared balancer with every backend ready at its configured weight, records cleared."""
    for name in NAMES:
        assert _write(shared_lb, name, "state", {"state": "ready"}).status == 200
        assert _write(shared_lb, name, "weight", {"weight": 1}).status == 200
    for backend in backends:
        backend.clear(routes=True)
    return shared_lb


def _write(
    lb: BalancerProcess, name: str, what: str, body: Any, token: str | None = TOKEN
) -> Reply:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return fetch(
        lb.port, f"{ADMIN}/backends/{name}/{what}", method="POST", headers=headers, body=data
    )


def _shown(lb: BalancerProcess) -> dict[str, dict[str, Any]]:
    reply = fetch(lb.port, f"{ADMIN}/backends")
    assert reply.status == 200
    return {b["name"]: b for b in json.loads(reply.body)["backends"]}


def _served(backend: ScriptedBackend) -> list[RecordedRequest]:
    return [r for r in backend.requests if r.header("User-Agent") != [PROBE_AGENT]]


def _ctl(lb: BalancerProcess, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_LB_")}
    env["PREFORK_LB_ADMIN_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "prefork_lb", "ctl", "--url", lb.url, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_get_backends_shows_name_admin_state_and_weight(lb: BalancerProcess) -> None:
    """GET /backends shows each backend's name, admin state and weight."""
    shown = _shown(lb)
    assert list(shown) == list(NAMES)
    assert {(b["admin_state"], b["weight"]) for b in shown.values()} == {("ready", 1)}


@pytest.mark.parametrize(
    ("token", "status"),
    [pytest.param(None, 401, id="no-token"), pytest.param("wrong-token-xxxxxxxx", 403, id="wrong")],
)
def test_a_write_without_the_right_token_is_refused_and_changes_nothing(
    lb: BalancerProcess, token: str | None, status: int
) -> None:
    """A write with no token is 401, with a wrong one 403; the backend stays as it was."""
    reply = _write(lb, "web-1", "state", {"state": "drain"}, token=token)
    assert reply.status == status
    assert "error" in json.loads(reply.body)
    assert _shown(lb)["web-1"]["admin_state"] == "ready"


@pytest.mark.parametrize(
    ("name", "what", "body", "status", "message"),
    [
        pytest.param("web-1", "state", b"{not json", 400, "not valid JSON", id="not-json"),
        pytest.param("web-1", "state", {"state": "off"}, 400, '"state" must be', id="bad-state"),
        pytest.param("web-1", "weight", {"weight": -2}, 400, "negative", id="negative"),
        pytest.param("web-1", "weight", {"weight": "2"}, 400, "whole number", id="string"),
        pytest.param("web-9", "state", {"state": "drain"}, 404, "no backend named", id="unknown"),
    ],
)
def test_bad_writes_say_why_and_change_nothing(  # noqa: PLR0917 - one parameter per column
    lb: BalancerProcess, name: str, what: str, body: Any, status: int, message: str
) -> None:
    """A bad body or an unknown backend is a 400 or 404 that says why; nothing changes."""
    reply = _write(lb, name, what, body)
    assert reply.status == status
    assert message in json.loads(reply.body)["error"]
    assert {(b["admin_state"], b["weight"]) for b in _shown(lb).values()} == {("ready", 1)}


def test_every_write_is_logged_with_the_client_and_the_change(lb: BalancerProcess) -> None:
    """A write leaves a log line with the client's address and what changed."""
    assert _write(lb, "web-2", "weight", {"weight": 4}).status == 200
    lb.wait_for_log(r"admin write from 127\.0\.0\.1: backend web-2 weight 1 -> 4")


def test_a_weight_change_shifts_the_exact_schedule_across_workers(
    lb: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """After weight 3 on one backend, every 5 requests (any worker) go 3, 1, 1."""
    assert _write(lb, "web-1", "weight", {"weight": 3}).status == 200
    names = Counter(get_name(lb.port) for _ in range(5 * 6))
    assert names == {"backend-1": 18, "backend-2": 6, "backend-3": 6}


def test_drain_under_load_loses_nothing_and_sends_nothing_new(
    lb: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """Draining under 50 clients: no request fails, the held ones finish, and none arrives after."""
    gate = threading.Event()
    backends[0].route("/slow", hold_until(gate))
    held: list[threading.Thread] = []
    results: list[int] = []
    stop = threading.Event()
    statuses: list[int] = []

    def client() -> None:
        while not stop.is_set():
            statuses.append(fetch(lb.port, "/").status)

    with ThreadPoolExecutor(50) as pool:
        try:
            for _ in range(50):
                pool.submit(client)
            # Under the clients' load the rotation's position is anyone's guess: send
            # /slow until one is held on web-1 (the others are answered at once).
            while not any(r.target == "/slow" for r in backends[0].requests):
                assert len(held) < 40, "no /slow request reached web-1"
                thread = threading.Thread(
                    target=lambda: results.append(fetch(lb.port, "/slow").status)
                )
                thread.start()
                held.append(thread)
                thread.join(0.5)
            assert _write(lb, "web-1", "state", {"state": "drain"}).status == 200
            # A request chosen just before the write may still be on its way in: it is counted
            # in flight from its choice, so wait until web-1's in flight are the held ones.
            wait_for(
                lambda: (
                    _shown(lb)["web-1"]["in_flight"]
                    == sum(r.target == "/slow" for r in backends[0].requests)
                ),
                "web-1's requests chosen before the drain all at web-1",
                context=lb.log,
            )
            after = len(_served(backends[0]))
            time.sleep(1.0)
        finally:
            stop.set()
            gate_on_failure = threading.Timer(20, gate.set)
            gate_on_failure.start()
    assert len(_served(backends[0])) == after
    assert _shown(lb)["web-1"]["in_flight"] >= 1
    waiter = ThreadPoolExecutor(1).submit(_ctl, lb, "wait-drained", "web-1", "--timeout", "30")
    time.sleep(0.5)
    assert not waiter.done()
    gate.set()
    for thread in held:
        thread.join(20)
    assert waiter.result().returncode == 0
    assert set(statuses) == {200}
    assert len(statuses) > 100
    assert results.count(200) == len(results)
    gate_on_failure.cancel()


def test_maint_stops_health_checks_and_ready_resumes_them(
    lb: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """In maint a backend is not probed and shows MAINT; back to ready its probes resume."""
    assert _write(lb, "web-3", "state", {"state": "maint"}).status == 200
    time.sleep(0.5)  # a probe already under way may still land
    backends[2].clear()
    time.sleep(1.0)
    assert backends[2].requests == []
    page = fetch(lb.port, f"{ADMIN}/").body.decode()
    assert '<span class="badge maint">MAINT</span>' in page
    assert _write(lb, "web-3", "state", {"state": "ready"}).status == 200
    backends[2].wait_for_requests(1, timeout=3)


def test_state_is_kept_across_hup(lb: BalancerProcess, state_dir: Path) -> None:
    """A drain and a weight survive a HUP (the state file and the copied rows)."""
    assert _write(lb, "web-2", "state", {"state": "drain"}).status == 200
    assert _write(lb, "web-3", "weight", {"weight": 7}).status == 200
    saved = json.loads((state_dir / "state.json").read_text())
    assert saved["backends"]["web-2"]["state"] == "drain"
    old = set(lb.worker_pids())
    os.kill(lb.pid, signal.SIGHUP)
    wait_for(lambda: not set(lb.worker_pids()) & old, "workers replaced", timeout=15)
    lb.wait_ready()
    shown = _shown(lb)
    assert (shown["web-2"]["admin_state"], shown["web-3"]["weight"]) == ("drain", 7)


def test_ctl_status_drain_ready_and_weight(lb: BalancerProcess) -> None:
    """ctl prints a table and each change it makes, exiting 0."""
    drained = _ctl(lb, "drain", "web-1")
    assert drained.returncode == 0, drained.stderr
    assert drained.stdout.strip() == "state ready -> drain"
    status = _ctl(lb, "status")
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    assert lines[0].split() == ["NAME", "HEALTH", "ADMIN", "WEIGHT", "IN_FLIGHT", "TUNNELS", "URL"]
    assert lines[1].split()[:4] == ["web-1", "up", "drain", "1"]
    assert _ctl(lb, "weight", "web-1", "5").stdout.strip() == "weight 1 -> 5"
    assert _ctl(lb, "ready", "web-1").returncode == 0
    assert _shown(lb)["web-1"]["admin_state"] == "ready"


@pytest.mark.parametrize(
    ("args", "token", "code", "message"),
    [
        pytest.param(("drain", "web-1"), "wrong-token-xxxxxxxx", 4, "token is wrong", id="token"),
        pytest.param(("drain", "nope"), TOKEN, 5, "no backend named 'nope'", id="unknown"),
        pytest.param(("wait-drained", "nope"), TOKEN, 5, "no backend named", id="wait-unknown"),
    ],
)
def test_ctl_errors_have_clear_messages_and_exit_codes(
    lb: BalancerProcess, args: tuple[str, ...], token: str, code: int, message: str
) -> None:
    """ctl exits 4 for a refused token and 5 for an unknown name, saying so on stderr."""
    done = _ctl(lb, *args, token=token)
    assert done.returncode == code, done.stderr
    assert message in done.stderr


def test_ctl_says_when_the_balancer_cannot_be_reached() -> None:
    """ctl against a closed port exits 3 with "cannot reach"."""
    done = subprocess.run(
        [sys.executable, "-m", "prefork_lb", "ctl", "--url", "http://127.0.0.1:9", "status"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert "cannot reach http://127.0.0.1:9" in done.stderr


def test_state_file_is_read_at_restart_and_a_corrupt_one_is_ignored(
    start_balancer: StartBalancer, backends: list[ScriptedBackend], tmp_path: Path
) -> None:
    """A restart restores the saved state; unknown names warn; a corrupt file only logs."""
    path = tmp_path / "state.json"
    path.write_text(
        json.dumps(
            {"version": 1, "backends": {"web-1": {"state": "maint", "weight": 2}, "gone": {}}}
        )
    )
    first = start_balancer([], env=_env(backends, path))
    shown = _shown(first)
    assert (shown["web-1"]["admin_state"], shown["web-1"]["weight"]) == ("maint", 2)
    first.wait_for_log(r"backend 'gone' is no longer configured")
    path.write_text('{"backends": {"web-1": ')
    second = start_balancer([], env=_env(backends, path))
    assert _shown(second)["web-1"]["admin_state"] == "ready"
    second.wait_for_log(r"state_file .* is corrupt, ignored")


def test_without_a_token_configured_writes_are_403_saying_how_to_enable(
    start_balancer: StartBalancer, backends: list[ScriptedBackend], tmp_path: Path
) -> None:
    """With no admin_token, a write is 403 and the body names the setting to set."""
    env = _env(backends, tmp_path / "s.json", PREFORK_LB_ADMIN_TOKEN="")
    lb = start_balancer([], env=env)
    reply = _write(lb, "web-1", "state", {"state": "drain"}, token="anything-at-all-x")
    assert reply.status == 403
    assert "PREFORK_LB_ADMIN_TOKEN" in json.loads(reply.body)["error"]
    assert _shown(lb)["web-1"]["admin_state"] == "ready"


def test_outside_admin_allow_a_write_is_ordinary_traffic(
    start_balancer: StartBalancer, backends: list[ScriptedBackend], tmp_path: Path
) -> None:
    """From a client outside admin_allow the write path goes to a backend; nothing changes."""
    for backend in backends:
        backend.clear(routes=True)
    env = _env(backends, tmp_path / "s.json", PREFORK_LB_ADMIN_ALLOW="10.9.9.9")
    lb = start_balancer([], env=env)
    reply = _write(lb, "web-1", "state", {"state": "drain"})
    assert reply.status == 200
    assert re.fullmatch(r"backend-\d", reply.body.decode().strip())
    assert not (tmp_path / "s.json").exists()


def test_metrics_show_admin_state_and_weight_by_name(
    lb: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """The metrics carry each backend's name, admin state and weight as written."""
    assert _write(lb, "web-2", "state", {"state": "drain"}).status == 200
    assert _write(lb, "web-2", "weight", {"weight": 9}).status == 200
    text = fetch(lb.port, f"{ADMIN}/metrics").body.decode()
    url = backends[1].url
    labels = f'backend="{url}",name="web-2"'
    assert f'prefork_lb_backend_admin_state{{{labels},state="drain"}} 1.0' in text
    assert f'prefork_lb_backend_admin_state{{{labels},state="ready"}} 0.0' in text
    assert f"prefork_lb_backend_weight{{{labels}}} 9.0" in text
    assert f"prefork_lb_backend_ejected{{{labels}}} 0.0" in text

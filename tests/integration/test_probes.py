"""The ready and live endpoints, against real balancers in front of real backends.

One balancer serves the default pool of two actively checked backends, with
the admin endpoint open only to 127.0.0.2 (a loopback alias): the probes must
answer a client the admin endpoint refuses. A second one has pools and routes
but no default pool, its ready path moved and its live path off.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backend import ScriptedBackend
from tests.support.balancer import BalancerProcess
from tests.support.client import fetch
from tests.support.haproxy import HAProxy
from tests.support.polling import wait_for

READY = "/_prefork_lb/ready"
LIVE = "/_prefork_lb/live"
ADMIN_CLIENT = "127.0.0.2"
TOKEN = "probe-test-token-0123456789"
CHECKS = {
    "PREFORK_LB_HEALTH_CHECK": "1",
    "PREFORK_LB_HEALTH_INTERVAL": "0.2",
    "PREFORK_LB_HEALTH_TIMEOUT": "1",
    "PREFORK_LB_HEALTH_FALL": "1",
    "PREFORK_LB_HEALTH_RISE": "1",
}


@pytest.fixture(scope="module")
def backends() -> Iterator[list[ScriptedBackend]]:
    """Two backends for the module; each test finds them running, records cleared."""
    started = [ScriptedBackend(f"backend-{i}").start() for i in (1, 2)]
    yield started
    for backend in started:
        backend.stop()


@pytest.fixture(scope="module")
def balancer(backends: list[ScriptedBackend]) -> Iterator[BalancerProcess]:
    """The default pool of both backends, checked every 0.2 s; admin only for 127.0.0.2."""
    env = {
        **CHECKS,
        "PREFORK_LB_ADMIN_ALLOW": f"{ADMIN_CLIENT}/32",
        "PREFORK_LB_ADMIN_TOKEN": TOKEN,
    }
    with BalancerProcess([b.url for b in backends], workers=2, env=env) as lb:
        yield lb


@pytest.fixture
def lb(balancer: BalancerProcess, backends: list[ScriptedBackend]) -> BalancerProcess:
    """The shared balancer with both backends running and both seen up by its checks.

    Ready alone is not enough: it is 200 as soon as one backend is up.
    """
    for backend in backends:
        if not backend.running:
            backend.start()
        backend.clear(routes=True)
    wait_for(
        lambda: all(_state(balancer, b) == "up" for b in backends),
        "both backends up again",
        10,
        context=balancer.log,
    )
    return balancer


def _not_health_checks(backend: ScriptedBackend) -> list[str]:
    return [
        r.target for r in backend.requests if r.header("User-Agent") != ["prefork_lb-health-check"]
    ]


def test_ready_answers_200_ready_while_backends_are_up(
    lb: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """With its backends up, GET of the ready path is 200 "ready", plain text, never cached."""
    reply = fetch(lb.port, READY)
    assert (reply.status, reply.body) == (200, b"ready\n")
    assert reply.header("Content-Type") == ["text/plain; charset=utf-8"]
    assert reply.header("Cache-Control") == ["no-store"]
    assert all(READY not in _not_health_checks(b) for b in backends)


def test_ready_is_503_while_every_backend_is_down_and_200_once_one_is_back(
    lb: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """When the checks find every backend down, ready is 503 "not ready"; one back, 200."""
    for backend in backends:
        backend.stop()
    wait_for(lambda: fetch(lb.port, READY).status == 503, "503 not ready", 10, context=lb.log)
    reply = fetch(lb.port, READY)
    assert reply.body == b"not ready\n"
    assert reply.header("Cache-Control") == ["no-store"]
    assert fetch(lb.port, LIVE).status == 200
    backends[1].start()
    wait_for(lambda: fetch(lb.port, READY).status == 200, "200 ready", 10, context=lb.log)


def test_haproxy_takes_a_not_ready_instance_out_and_back_in(
    lb: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """HAProxy checking the ready path takes the instance out while no backend is usable."""
    with HAProxy([lb.port], proxy="", check_path=READY) as haproxy:
        haproxy.wait_for_states("UP")
        for backend in backends:
            backend.stop()
        haproxy.wait_for_states("DOWN")
        backends[0].start()
        haproxy.wait_for_states("UP")
        assert fetch(haproxy.port, "/through").status == 200


def test_a_drained_backend_does_not_count_as_usable(
    lb: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """One backend down and the other drained by an operator: the instance is not ready."""
    backends[0].stop()
    wait_for(lambda: _state(lb, backends[0]) == "down", "backend-1 down", 10, context=lb.log)
    assert fetch(lb.port, READY).status == 200
    _set_state(lb, backends[1], "drain")
    try:
        assert fetch(lb.port, READY).status == 503
    finally:
        _set_state(lb, backends[1], "ready")
    assert fetch(lb.port, READY).status == 200


def test_live_answers_200_live(lb: BalancerProcess) -> None:
    """GET of the live path is 200 "live", plain text, never cached."""
    reply = fetch(lb.port, LIVE)
    assert (reply.status, reply.body) == (200, b"live\n")
    assert reply.header("Cache-Control") == ["no-store"]


@pytest.mark.parametrize("path", [READY, LIVE])
def test_head_gets_the_head_without_the_word(lb: BalancerProcess, path: str) -> None:
    """HEAD of a probe path is 200 with the word's length and no body."""
    reply = fetch(lb.port, path, method="HEAD")
    assert (reply.status, reply.body) == (200, b"")
    assert reply.header("Content-Length") == [str(len(path.rsplit("/", 1)[1]) + 1)]


@pytest.mark.parametrize("method", ["POST", "DELETE"])
@pytest.mark.parametrize("path", [READY, LIVE])
def test_other_methods_get_405_with_allow(
    lb: BalancerProcess, backends: list[ScriptedBackend], path: str, method: str
) -> None:
    """Any method but GET and HEAD on a probe path is 405 with Allow, and goes nowhere."""
    reply = fetch(lb.port, path, method=method, body=b"x" * 10)
    assert reply.status == 405
    assert reply.header("Allow") == ["GET, HEAD"]
    assert all(path not in _not_health_checks(b) for b in backends)


def test_probes_answer_clients_the_admin_endpoint_refuses(
    lb: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """The probes answer whether the client may use the admin endpoint (127.0.0.2) or not."""
    assert fetch(lb.port, "/_prefork_lb/backends").status == 200
    assert "/_prefork_lb/backends" in _not_health_checks(backends[0]) + _not_health_checks(
        backends[1]
    )
    assert fetch(lb.port, READY).body == b"ready\n"
    assert fetch(lb.port, LIVE).body == b"live\n"
    admin = fetch(lb.port, "/_prefork_lb/backends", source=ADMIN_CLIENT)
    assert b'"backends"' in admin.body
    assert fetch(lb.port, READY, source=ADMIN_CLIENT).body == b"ready\n"


def test_probes_are_logged_but_not_counted_as_backend_requests(lb: BalancerProcess) -> None:
    """Probe answers get an access line without a backend, and no count in the metrics."""
    before = _requests_total(lb)
    fetch(lb.port, f"{LIVE}")
    fetch(lb.port, READY)
    lb.wait_for_log(r'"GET /_prefork_lb/live HTTP/1.1" 200 5 .* backend=- ')
    lb.wait_for_log(r'"GET /_prefork_lb/ready HTTP/1.1" 200 6 .* backend=- ')
    assert _requests_total(lb) == before


def _requests_total(lb: BalancerProcess) -> float:
    text = fetch(lb.port, "/_prefork_lb/metrics", source=ADMIN_CLIENT).body.decode()
    return sum(
        float(m[1]) for m in re.finditer(r"^prefork_lb_requests_total\{.*\} (\S+)$", text, re.M)
    )


def _state(lb: BalancerProcess, backend: ScriptedBackend) -> str:
    document = json.loads(fetch(lb.port, "/_prefork_lb/backends", source=ADMIN_CLIENT).body)
    (state,) = [b["state"] for b in document["backends"] if b["url"] == backend.url]
    return str(state)


def _set_state(lb: BalancerProcess, backend: ScriptedBackend, state: str) -> None:
    name = backend.url.removeprefix("http://")
    reply = fetch(
        lb.port,
        f"/_prefork_lb/backends/{name}/state",
        method="POST",
        body=json.dumps({"state": state}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        source=ADMIN_CLIENT,
    )
    assert reply.status == 200, reply


# --- pools without a default, the ready path moved, the live path off ------------------------

POOLS = """\
ready_path = "/healthz/ready"
live_path = "off"
admin_allow = []
health_check = true
health_interval = 0.2
health_timeout = 1
health_fall = 1
health_rise = 1

[pools.api]
backends = ["{api}"]

[pools.static]
backends = ["{static}"]

[[routes]]
path_prefix = "/api"
pool = "api"

[[routes]]
path_prefix = "/"
pool = "static"
"""


@pytest.fixture(scope="module")
def pools_balancer(
    backends: list[ScriptedBackend], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BalancerProcess]:
    """Pools api (backend-1) and static (backend-2), no default pool; probes moved and off."""
    config = Path(tmp_path_factory.mktemp("probes")) / "pools.toml"
    config.write_text(POOLS.format(api=backends[0].url, static=backends[1].url))
    with BalancerProcess([], workers=2, env={"PREFORK_LB_CONFIG": str(config)}) as lb:
        yield lb


@pytest.fixture
def pools_lb(pools_balancer: BalancerProcess, backends: list[ScriptedBackend]) -> BalancerProcess:
    """The pools balancer with both backends running and ready again."""
    for backend in backends:
        if not backend.running:
            backend.start()
        backend.clear(routes=True)
    wait_for(lambda: fetch(pools_balancer.port, "/healthz/ready").status == 200, "ready", 10)
    return pools_balancer


def test_without_a_default_pool_any_pool_with_a_usable_backend_is_ready(
    pools_lb: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """With pools and no default pool, ready holds while any pool has a usable backend."""
    marked_down = f"backend {backends[0].url} down"
    before = pools_lb.log().count(marked_down)
    backends[0].stop()
    wait_for(lambda: pools_lb.log().count(marked_down) > before, "api's backend down", 10)
    assert fetch(pools_lb.port, "/healthz/ready").status == 200
    backends[1].stop()
    wait_for(
        lambda: fetch(pools_lb.port, "/healthz/ready").status == 503,
        "not ready",
        10,
        context=pools_lb.log,
    )


def test_a_probe_turned_off_or_moved_is_forwarded_like_any_path(
    pools_lb: BalancerProcess, backends: list[ScriptedBackend]
) -> None:
    """live_path off and ready_path moved: the default paths go to the backend their route names."""
    for path in (LIVE, READY):
        reply = fetch(pools_lb.port, path)
        assert reply.status == 200
        assert reply.body != b"live\n"
    assert _not_health_checks(backends[1]) == [LIVE, READY]
    assert fetch(pools_lb.port, "/healthz/ready").body == b"ready\n"

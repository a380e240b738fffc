"""Pools chosen by host and path through a real balancer: the route table, per-pool rotation."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import ScriptedBackend
from tests.support.balancer import BalancerProcess
from tests.support.client import fetch


@pytest.fixture(scope="module")
def five_backends() -> Iterator[list[ScriptedBackend]]:
    """Five scripted backends b1..b5, each answering with its own name."""
    backends = [ScriptedBackend(f"b{i}").start() for i in range(1, 6)]
    yield backends
    for backend in backends:
        backend.stop()


def write_config(path: Path, backends: list[ScriptedBackend], *, default: bool = True) -> Path:
    """A config file: default = b1; api = b2, b3; static = b4; wild = b5 and b2 (shared)."""
    b = [backend.url for backend in backends]
    text = f"""
{f'backends = ["{b[0]}"]' if default else ""}

[pools.api]
backends = ["{b[1]}", "{b[2]}"]

[pools.static]
backends = ["{b[3]}"]

[pools.wild]
backends = ["{b[4]}", "{b[1]}"]

[[routes]]
path_prefix = "/api"
pool = "api"

[[routes]]
path_prefix = "/static"
pool = "static"
strip_prefix = true

[[routes]]
host = "*.example.com"
pool = "wild"

[[routes]]
host = "shop.example.com"
path_prefix = "/static"
pool = "api"
methods = ["POST"]
"""
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def routed(
    five_backends: list[ScriptedBackend], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BalancerProcess]:
    """One balancer with 2 workers and the routes above, for the whole module."""
    config = write_config(tmp_path_factory.mktemp("routing") / "lb.toml", five_backends)
    balancer = BalancerProcess([], workers=2, env={"PREFORK_LB_CONFIG": str(config)})
    balancer.wait_ready()
    yield balancer
    balancer.stop()


@pytest.mark.parametrize(
    ("method", "host", "target", "names", "upstream_target"),
    [
        pytest.param("GET", "x.test", "/", {"b1"}, "/", id="default"),
        pytest.param("GET", "x.test", "/apix", {"b1"}, "/apix", id="prefix-not-a-segment"),
        pytest.param("GET", "x.test", "/api", {"b2", "b3"}, "/api", id="prefix"),
        pytest.param("GET", "x.test", "/api/v1?q=%2F", {"b2", "b3"}, "/api/v1?q=%2F", id="below"),
        pytest.param("GET", "x.test", "/static/a%20b.css", {"b4"}, "/a%20b.css", id="strip"),
        pytest.param("GET", "x.test", "/static?v=1", {"b4"}, "/?v=1", id="strip-to-root"),
        pytest.param("GET", "a.b.example.com", "/static/x", {"b5", "b2"}, "/static/x", id="wild"),
        pytest.param("GET", "example.com", "/", {"b1"}, "/", id="wild-not-apex"),
        pytest.param("GET", "Shop.Example.com:80", "/x", {"b5", "b2"}, "/x", id="wild-falls-back"),
        pytest.param(
            "POST", "shop.example.com", "/static/1", {"b2", "b3"}, "/static/1", id="exact"
        ),
    ],
)
def test_route_table(  # noqa: PLR0917 - one parameter per column of the table
    routed: BalancerProcess,
    five_backends: list[ScriptedBackend],
    method: str,
    host: str,
    target: str,
    names: set[str],
    upstream_target: str,
) -> None:
    """Each request reaches a backend of the pool its route names, with the target it should."""
    for backend in five_backends:
        backend.clear()
    seen = set()
    for _ in range(4):
        reply = fetch(routed.port, target, method=method, headers={"Host": host}, body=b"")
        assert reply.status == 200
        seen.add(reply.body.decode().strip())
    assert seen == names
    received = [r.target for backend in five_backends for r in backend.requests]
    assert received == [upstream_target] * 4


def test_shared_backend_is_one_backend(
    routed: BalancerProcess, five_backends: list[ScriptedBackend]
) -> None:
    """A URL in two pools is one backend: the admin endpoint lists each URL once."""
    reply = fetch(routed.port, "/_prefork_lb/backends")
    listed = [entry["url"] for entry in json.loads(reply.body)["backends"]]
    assert sorted(listed) == sorted(b.url for b in five_backends)


def test_no_route_and_no_default_is_404(
    five_backends: list[ScriptedBackend], start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """Without a default pool, a request no route takes gets 404 with a short text body."""
    config = write_config(tmp_path / "lb.toml", five_backends, default=False)
    lb = start_balancer([], workers=1, env={"PREFORK_LB_CONFIG": str(config)})
    reply = fetch(lb.port, "/elsewhere")
    assert reply.status == 404
    assert reply.body == b"404 Not Found: no route for this host and path\n"
    assert fetch(lb.port, "/api/1").status == 200


@pytest.mark.parametrize("workers", [2, 4])
def test_each_pool_rotates_exactly(
    workers: int,
    five_backends: list[ScriptedBackend],
    start_balancer: StartBalancer,
    tmp_path: Path,
) -> None:
    """N*k concurrent requests to each pool reach each of its N backends exactly k times."""
    b = [backend.url for backend in five_backends]
    config = tmp_path / "lb.toml"
    config.write_text(
        f"""
[pools.three]
backends = ["{b[0]}", "{b[1]}", "{b[2]}"]
[pools.two]
backends = ["{b[3]}", "{b[1]}"]
[[routes]]
path_prefix = "/three"
pool = "three"
[[routes]]
path_prefix = "/two"
pool = "two"
"""
    )
    lb = start_balancer([], workers=workers, env={"PREFORK_LB_CONFIG": str(config)})
    k = 60
    targets = ["/three"] * (3 * k) + ["/two"] * (2 * k)

    def name(target: str) -> tuple[str, str]:
        reply = fetch(lb.port, target)
        assert reply.status == 200
        return target, reply.body.decode().strip()

    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = Counter(pool.map(name, targets[::2] + targets[1::2]))
    assert answers == {
        ("/three", "b1"): k,
        ("/three", "b2"): k,
        ("/three", "b3"): k,
        ("/two", "b4"): k,
        ("/two", "b2"): k,
    }


def test_routes_with_extensions(
    five_backends: list[ScriptedBackend], start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """With extensions configured the routes hold as well: pool, stripped target, and 404."""
    config = write_config(tmp_path / "lb.toml", five_backends, default=False)
    lb = start_balancer(
        [],
        workers=1,
        env={
            "PREFORK_LB_CONFIG": str(config),
            "PREFORK_LB_EXTENSIONS": "tests.support.extensions:Noop",
        },
    )
    for backend in five_backends:
        backend.clear()
    reply = fetch(lb.port, "/static/app.css?v=2")
    assert reply.status == 200
    assert reply.body == b"b4\n"
    assert [r.target for r in five_backends[3].requests] == ["/app.css?v=2"]
    assert fetch(lb.port, "/elsewhere").status == 404

"""Pools and routes in the TOML file: one backend per URL, pools of members, errors named."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefork_lb.config import ConfigError, Member, effective_pools, load_config
from prefork_lb.routes import Route

CONFIG = """
policy = "least_conn"
max_fails = 3

[[backends]]
url = "http://127.0.0.1:9001"

[pools.api]
policy = "round_robin"
max_fails = 3
[[pools.api.backends]]
url = "http://127.0.0.1:9002"
weight = 3
[[pools.api.backends]]
url = "http://127.0.0.1:9001"
backup = true

[pools.static]
health_check = true
[[pools.static.backends]]
url = "http://127.0.0.1:9003"

[[routes]]
host = "*.Example.com"
path_prefix = "/api"
methods = ["get", "POST"]
pool = "api"
strip_prefix = true

[[routes]]
pool = "static"
path_prefix = "/static"
"""


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "lb.toml"
    path.write_text(text)
    return load_config({"PREFORK_LB_CONFIG": str(path)})


def test_pools_and_routes(tmp_path: Path) -> None:
    """Top-level backends are pool default; a URL in two pools is one backend; options per pool."""
    path = tmp_path / "lb.toml"
    path.write_text(CONFIG)
    settings = load_config({"PREFORK_LB_CONFIG": str(path)})
    assert [b.url for b in settings.backends] == [
        "http://127.0.0.1:9001",
        "http://127.0.0.1:9002",
        "http://127.0.0.1:9003",
    ]
    assert settings.backends[2].check.enabled
    assert not settings.backends[0].check.enabled
    pools = effective_pools(settings)
    assert [(p.name, p.policy) for p in pools] == [
        ("default", "least_conn"),
        ("api", "round_robin"),
        ("static", "least_conn"),
    ]
    assert pools[0].members == (Member(0),)
    assert pools[1].members == (Member(1, weight=3), Member(0, backup=True))
    assert settings.routes == (
        Route(
            pool="api",
            host="*.example.com",
            path_prefix="/api",
            methods=("GET", "POST"),
            strip_prefix=True,
        ),
        Route(pool="static", path_prefix="/static"),
    )


def test_single_pool_from_environment_is_default() -> None:
    """Today's configuration (environment only) is one pool, default, of every backend."""
    settings = load_config({"PREFORK_LB_BACKENDS": "http://a:1 weight=2, http://b:2 backup"})
    assert settings.pools == ()
    (pool,) = effective_pools(settings)
    assert pool.name == "default"
    assert pool.members == (Member(0, weight=2), Member(1, backup=True))


def test_pools_without_default(tmp_path: Path) -> None:
    """Without top-level backends there is no default pool."""
    settings = load_config_text(tmp_path, '[pools.a]\nbackends = ["http://h:1"]\n')
    assert [p.name for p in effective_pools(settings)] == ["a"]


def load_config_text(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "lb.toml"
    path.write_text(text)
    return load_config({"PREFORK_LB_CONFIG": str(path)})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            'backends = ["http://h:1"]\n[[routes]]\npool = "nope"\n',
            "routes[0].pool: is not a pool (pools: default), got 'nope'",
            id="unknown-pool",
        ),
        pytest.param(
            'backends = ["http://h:1"]\n[pools.default]\nbackends = ["http://h:2"]\n',
            "pools.default: duplicate pool",
            id="duplicate-default",
        ),
        pytest.param(
            '[pools.a]\nbackends = ["http://h:1"]\n[pools.a]\nbackends = ["http://h:2"]\n',
            "is not valid TOML",
            id="duplicate-table",
        ),
        pytest.param(
            '[pools.a]\nbackends = ["http://h:1", "http://h:1"]\n',
            "pools.a.backends[1]",
            id="duplicate-backend-in-pool",
        ),
        pytest.param(
            'backends = ["http://h:1"]\n[[routes]]\npool = "default"\npath_prefix = "api"\n',
            "routes[0].path_prefix",
            id="prefix-without-slash",
        ),
        pytest.param(
            'backends = ["http://h:1"]\n[[routes]]\npool = "default"\npath_prefix = "/api/"\n',
            "routes[0].path_prefix: must not end with /",
            id="prefix-trailing-slash",
        ),
        pytest.param(
            'backends = ["http://h:1"]\n[[routes]]\npool = "default"\npath_prefix = "/a?b"\n',
            "routes[0].path_prefix",
            id="prefix-query",
        ),
        pytest.param(
            'backends = ["http://h:1"]\n[[routes]]\npool = "default"\nhost = "a b"\n',
            "routes[0].host",
            id="bad-host",
        ),
        pytest.param(
            'backends = ["http://h:1"]\n[[routes]]\npool = "default"\nmethods = "GET"\n',
            "routes[0].methods",
            id="methods-not-list",
        ),
        pytest.param(
            'backends = ["http://h:1"]\n[[routes]]\npool = "default"\nhots = "x"\n',
            "routes[0]: unknown key 'hots'",
            id="route-typo",
        ),
        pytest.param(
            '[pools.a]\nbackends = ["http://h:1"]\nretries = 1\n',
            "pools.a: unknown key 'retries'",
            id="not-a-pool-option",
        ),
        pytest.param(
            '[pools.a]\npolicy = "least_conn"\n', "pools.a: missing key 'backends'", id="empty"
        ),
        pytest.param(
            '[pools.a]\nbackends = ["http://h:1"]\n'
            '[pools.b]\nmax_fails = 5\nbackends = ["http://h:1"]\n',
            "pools.b.backends[0]: is also listed at pools.a.backends[0]",
            id="same-url-other-options",
        ),
        pytest.param('[pools."a b"]\nbackends = ["http://h:1"]\n', "pools.a b", id="bad-name"),
        pytest.param(
            'backends = ["http://h:1"]\nsticky_secret = "short"\n',
            "sticky_secret: must be at least 16 characters (or empty)",
            id="short-secret",
        ),
        pytest.param(
            'backends = ["http://h:1"]\nsticky_cookie = "a b"\n', "sticky_cookie", id="cookie"
        ),
        pytest.param(
            '[pools.a]\nbackends = ["http://h:1"]\nhash_key = "body"\n',
            "pools.a.hash_key: must be ip, path, header:NAME, cookie:NAME or query:NAME",
            id="hash-key",
        ),
        pytest.param(
            'backends = ["http://h:1"]\nhash_balance_factor = 0.5\n',
            "hash_balance_factor: must be 0 (off) or a number from 1 to 100",
            id="factor",
        ),
    ],
)
def test_pool_and_route_errors(tmp_path: Path, text: str, message: str) -> None:
    """A bad pool or route stops the start with a message naming the setting."""
    with pytest.raises(ConfigError) as caught:
        load_config_text(tmp_path, text)
    assert message in str(caught.value)


@pytest.mark.parametrize("name", ["PREFORK_LB_POOLS", "PREFORK_LB_ROUTES"])
def test_pools_and_routes_are_file_only(name: str) -> None:
    """Pools and routes cannot come from the environment."""
    with pytest.raises(ConfigError, match=f"{name}: .* PREFORK_LB_CONFIG file"):
        load_config({"PREFORK_LB_BACKENDS": "http://h:1", name: "x"})

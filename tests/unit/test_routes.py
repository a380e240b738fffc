"""Route matching: hosts, wildcards, segment-bounded prefixes, methods, precedence, strip_prefix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.routes import Match, Route, RouteTable, normalize_host

POOLS = ["default", "api", "static", "wild", "deep", "exact", "posts"]

TABLE = RouteTable(
    [
        Route(pool="api", path_prefix="/api"),
        Route(pool="static", path_prefix="/static", strip_prefix=True),
        Route(pool="wild", host="*.example.com"),
        Route(pool="deep", host="*.eu.example.com"),
        Route(pool="exact", host="shop.example.com"),
        Route(pool="exact", host="shop.example.com", path_prefix="/cart/items"),
        Route(pool="posts", host="shop.example.com", path_prefix="/cart", methods=("POST",)),
        Route(pool="api", host="api.test", path_prefix="/v1", strip_prefix=True),
    ],
    POOLS,
)


def _pool(name: str) -> int:
    return POOLS.index(name)


@pytest.mark.parametrize(
    ("host", "target", "method", "expected"),
    [
        pytest.param("x.test", "/api", "GET", Match(_pool("api"), "/api"), id="prefix-exact"),
        pytest.param("x.test", "/api/", "GET", Match(_pool("api"), "/api/"), id="prefix-slash"),
        pytest.param("x.test", "/api/x?q=1", "GET", Match(_pool("api"), "/api/x?q=1"), id="below"),
        pytest.param("x.test", "/api?q", "GET", Match(_pool("api"), "/api?q"), id="prefix-query"),
        pytest.param("x.test", "/apix", "GET", Match(0, "/apix"), id="not-a-segment"),
        pytest.param("x.test", "/API", "GET", Match(0, "/API"), id="case-sensitive-path"),
        pytest.param("x.test", "/%61pi", "GET", Match(0, "/%61pi"), id="no-decoding"),
        pytest.param(
            "x.test", "/static/a.css", "GET", Match(_pool("static"), "/a.css"), id="strip"
        ),
        pytest.param("x.test", "/static", "GET", Match(_pool("static"), "/"), id="strip-to-root"),
        pytest.param("x.test", "/static?v=2", "GET", Match(_pool("static"), "/?v=2"), id="strip-q"),
        pytest.param(
            "x.test", "/static//a%2F?x", "GET", Match(_pool("static"), "//a%2F?x"), id="strip-raw"
        ),
        pytest.param("a.example.com", "/", "GET", Match(_pool("wild"), "/"), id="wildcard"),
        pytest.param("a.b.example.com", "/", "GET", Match(_pool("wild"), "/"), id="wild-depth"),
        pytest.param("example.com", "/", "GET", Match(0, "/"), id="wild-not-apex"),
        pytest.param("A.Example.COM:8080", "/", "GET", Match(_pool("wild"), "/"), id="case-port"),
        pytest.param("a.example.com.", "/", "GET", Match(_pool("wild"), "/"), id="final-dot"),
        pytest.param("x.eu.example.com", "/", "GET", Match(_pool("deep"), "/"), id="longest-wild"),
        pytest.param("badexample.com", "/", "GET", Match(0, "/"), id="wild-label-boundary"),
        pytest.param("shop.example.com", "/", "GET", Match(_pool("exact"), "/"), id="exact-first"),
        pytest.param(
            "shop.example.com", "/api/x", "GET", Match(_pool("exact"), "/api/x"), id="exact-tier"
        ),
        pytest.param(
            "shop.example.com",
            "/cart/items/1",
            "POST",
            Match(_pool("exact"), "/cart/items/1"),
            id="longest-prefix-in-tier",
        ),
        pytest.param(
            "shop.example.com", "/cart", "POST", Match(_pool("posts"), "/cart"), id="method"
        ),
        pytest.param(
            "shop.example.com", "/cart", "GET", Match(_pool("exact"), "/cart"), id="method-miss"
        ),
        pytest.param(
            "api.test", "/v1/users", "GET", Match(_pool("api"), "/users"), id="host+strip"
        ),
        pytest.param("api.test", "/v2", "GET", Match(0, "/v2"), id="host-tier-falls-through"),
        pytest.param("[::1]:80", "/", "GET", Match(0, "/"), id="ipv6-host"),
        pytest.param("", "*", "OPTIONS", Match(0, "*"), id="asterisk"),
    ],
)
def test_route_table(host: str, target: str, method: str, expected: Match) -> None:
    """Each request goes to the pool (and with the target) the precedence rules give."""
    assert TABLE.match(host, target, method) == expected


def test_file_order_breaks_ties() -> None:
    """Two routes with the same host and prefix: the first in the file wins."""
    table = RouteTable(
        [Route(pool="api", path_prefix="/x"), Route(pool="static", path_prefix="/x")], POOLS
    )
    assert table.match("h", "/x/1", "GET") == Match(_pool("api"), "/x/1")


def test_no_default_pool_means_no_match() -> None:
    """Without a pool named default, a request no route takes has no pool (answered 404)."""
    table = RouteTable([Route(pool="api", path_prefix="/api")], ["api"])
    assert table.match("h", "/api/1", "GET") == Match(0, "/api/1")
    assert table.match("h", "/other", "GET") is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [("Example.COM", "example.com"), ("a.b:81", "a.b"), ("[::1]:8080", "[::1]"), ("x.", "x")],
)
def test_normalize_host(host: str, expected: str) -> None:
    """Hosts compare lower case, without port or final dot."""
    assert normalize_host(host) == expected


_SEGMENT = st.text(alphabet="abc%2F.-", min_size=1, max_size=4)


@given(
    prefix=st.lists(_SEGMENT, min_size=1, max_size=3),
    rest=st.text(alphabet="abc/%.?=", max_size=10),
)
def test_strip_prefix_is_byte_exact(prefix: list[str], rest: str) -> None:
    """Stripping removes exactly the prefix: prefix + what is sent upstream is the target."""
    path_prefix = "/" + "/".join(prefix)
    table = RouteTable([Route(pool="api", path_prefix=path_prefix, strip_prefix=True)], POOLS)
    for tail in ("", "/" + rest, "?" + rest):
        target = path_prefix + tail
        found = table.match("h", target, "GET")
        assert found is not None
        assert found.pool == _pool("api")
        sent = found.target
        if tail.startswith("/"):
            assert path_prefix + sent == target
        else:
            assert sent == "/" + tail


@given(prefix=st.lists(_SEGMENT, min_size=1, max_size=3), extra=_SEGMENT)
def test_prefixes_match_on_segment_boundaries(prefix: list[str], extra: str) -> None:
    """A prefix never matches a path that only shares its first characters."""
    path_prefix = "/" + "/".join(prefix)
    table = RouteTable([Route(pool="api", path_prefix=path_prefix)], POOLS)
    longer = path_prefix + extra.lstrip("/")
    if longer != path_prefix and not longer.startswith(path_prefix + "/"):
        assert table.match("h", longer, "GET") == Match(0, longer)


def test_no_routes_and_no_default_pool() -> None:
    """With pools but neither routes nor a default pool, no request has a pool."""
    assert RouteTable([], ["api", "web"]).match("h", "/", "GET") is None

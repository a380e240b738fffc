"""Route matching: which pool a request goes to, and the target it goes with. Pure.

Every rule of the route table is here. ``RouteTable`` is compiled once, at
start, from the ``[[routes]]`` entries; ``RouteTable.match`` is then a
function of (host, raw target, method) alone.

Precedence (the README has it as a table):

1. routes whose ``host`` is the request's host exactly;
2. then routes with a wildcard host, the longest suffix first
   (``*.a.example.com`` before ``*.example.com``);
3. then routes with no host.

Within each of those, the longest ``path_prefix`` wins, then file order. A
tier with no route matching the path and method falls through to the next.
No route at all: the ``default`` pool, if there is one (``None`` otherwise).

Hosts match case-insensitively with any port and a final dot removed; a
wildcard ``*.example.com`` matches any subdomain at any depth, never
``example.com`` itself. Prefixes match the raw target path (no decoding) on
segment boundaries: ``/api`` matches ``/api``, ``/api/``, ``/api/x`` and
``/api?q``, never ``/apix``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Route:
    """One ``[[routes]]`` entry, validated (``route_tables.py``): where matching requests go."""

    pool: str
    host: str = ""  # "" any host; "example.com" exact; "*.example.com" any subdomain
    path_prefix: str = "/"  # starts with "/", no trailing "/" unless it is "/"
    methods: tuple[str, ...] = ()  # empty: any method
    strip_prefix: bool = False


@dataclass(frozen=True, slots=True)
class Match:
    """Where a request goes: the pool's index and the target to send upstream."""

    pool: int
    target: str


@dataclass(frozen=True, slots=True)
class _Compiled:
    prefix: str
    methods: frozenset[str]
    pool: int
    strip: bool


def _best_first(routes: list[tuple[int, Route, int]]) -> tuple[_Compiled, ...]:
    # Longest prefix first; file order (the first element) breaks ties: sort is stable.
    ordered = sorted(routes, key=lambda item: -len(item[1].path_prefix))
    return tuple(
        _Compiled(
            prefix="" if route.path_prefix == "/" else route.path_prefix,
            methods=frozenset(route.methods),
            pool=pool,
            strip=route.strip_prefix,
        )
        for _, route, pool in ordered
    )


class RouteTable:
    """The compiled route table: three tiers, each ordered best first."""

    def __init__(self, routes: Sequence[Route], pools: Sequence[str]) -> None:
        """Compile ``routes``; ``pools`` are the pool names in index order."""
        index = {name: i for i, name in enumerate(pools)}
        exact: dict[str, list[tuple[int, Route, int]]] = {}
        wildcard: dict[str, list[tuple[int, Route, int]]] = {}
        anyhost: list[tuple[int, Route, int]] = []
        for order, route in enumerate(routes):
            item = (order, route, index[route.pool])
            host = route.host.lower()
            if not host:
                anyhost.append(item)
            elif host.startswith("*."):
                wildcard.setdefault(host[1:], []).append(item)  # ".example.com"
            else:
                exact.setdefault(host, []).append(item)
        self._exact = {host: _best_first(items) for host, items in exact.items()}
        self._wildcard = {suffix: _best_first(items) for suffix, items in wildcard.items()}
        self._any = _best_first(anyhost)
        self._default = index.get("default")

    def match(self, host: str, target: str, method: str) -> Match | None:
        """The pool and upstream target for a request; None if nothing (no default) takes it."""
        name = normalize_host(host)
        path, query_mark, query = target.partition("?")
        for tier in self._tiers(name):
            for route in tier:
                if route.methods and method not in route.methods:
                    continue
                if not _under(path, route.prefix):
                    continue
                if not route.strip:
                    return Match(route.pool, target)
                rest = path[len(route.prefix) :] or "/"
                return Match(route.pool, rest + query_mark + query)
        if self._default is None:
            return None
        return Match(self._default, target)

    def _tiers(self, host: str) -> list[tuple[_Compiled, ...]]:
        tiers = []
        if host in self._exact:
            tiers.append(self._exact[host])
        if self._wildcard:
            dot = host.find(".")
            while dot != -1:
                suffix = host[dot:]  # ".b.example.com", then ".example.com", ...
                if suffix in self._wildcard:
                    tiers.append(self._wildcard[suffix])
                dot = host.find(".", dot + 1)
        tiers.append(self._any)
        return tiers


def _under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or below it, on a segment boundary ("" is the root)."""
    if not prefix:
        return True
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")


def normalize_host(host: str) -> str:
    """A Host value as routes compare it: lower case, without port or final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    return host.partition(":")[0].rstrip(".")

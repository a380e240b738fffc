"""The ``[[routes]]`` tables of the file, each parsed and checked on its own.

Whether each names a pool that exists is checked once the pools are known
(``config.load_config``).
"""

from __future__ import annotations

import re

from prefork_lb.routes import Route
from prefork_lb.values import ConfigError, fail, parse_bool

# A route's host: a host name, or "*." and a domain (any subdomain of it).
_ROUTE_HOST = re.compile(r"(\*\.)?([A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?)")
_ROUTE_PREFIX = re.compile(r"/[!-~]*")
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ROUTE_KEYS = ("host", "path_prefix", "methods", "pool", "strip_prefix")


def parse_routes(where: str, value: object) -> tuple[Route, ...]:
    """The ``[[routes]]`` entries of the file, each checked on its own (pools: later)."""
    if isinstance(value, str) and not value.strip():
        return ()
    if isinstance(value, str):
        raise fail(where, value, "routes are [[routes]] tables in the PREFORK_LB_CONFIG file")
    if not isinstance(value, list):
        raise fail(where, value, "must be a list of [[routes]] tables")
    return tuple(_parse_route(f"routes[{i}]", table) for i, table in enumerate(value))


def _parse_route(here: str, table: object) -> Route:
    if not isinstance(table, dict):
        raise fail(here, table, "must be a table with a pool key")
    unknown = sorted(set(table) - set(_ROUTE_KEYS))
    if unknown:
        raise ConfigError(
            f"{here}: unknown key {unknown[0]!r} (known keys: {', '.join(_ROUTE_KEYS)})"
        )
    pool = table.get("pool")
    if not isinstance(pool, str) or not pool:
        raise fail(f"{here}.pool", pool, "must name a pool")
    host = table.get("host", "")
    if not isinstance(host, str) or (host and not _ROUTE_HOST.fullmatch(host)):
        raise fail(f"{here}.host", host, "must be a host name, or *.domain for its subdomains")
    prefix = table.get("path_prefix", "/")
    if not isinstance(prefix, str) or not _ROUTE_PREFIX.fullmatch(prefix) or "?" in prefix:
        raise fail(
            f"{here}.path_prefix", prefix, "must be a path starting with / (printable, no ? or #)"
        )
    if "#" in prefix:
        raise fail(f"{here}.path_prefix", prefix, "must not contain #")
    if prefix != "/" and prefix.endswith("/"):
        raise fail(
            f"{here}.path_prefix",
            prefix,
            f"must not end with / (prefixes match whole segments: {prefix.rstrip('/')!r} "
            f"matches {prefix!r} and what is below it)",
        )
    methods = table.get("methods", [])
    if not isinstance(methods, list) or not all(
        isinstance(m, str) and _METHOD.fullmatch(m) for m in methods
    ):
        raise fail(f"{here}.methods", methods, 'must be a list of methods such as ["GET"]')
    return Route(
        pool=pool,
        host=host.lower().rstrip("."),
        path_prefix=prefix,
        methods=tuple(m.upper() for m in methods),
        strip_prefix=parse_bool(f"{here}.strip_prefix", table.get("strip_prefix", False)),
    )

"""Settings: one frozen tree, read once in the master and validated there.

Settings come from a TOML file named by ``PREFORK_LB_CONFIG`` and from
``PREFORK_LB_*`` environment variables; a variable wins over the file. Every
setting is declared once in ``SETTINGS`` below, with its parser (from
``values.py``), its default and its documentation. The dataclasses that
follow take their defaults from it, and the README's settings table is
checked against it.

A bad value raises ``ConfigError`` naming the setting and the value, before
gunicorn binds its socket. Workers never read the environment: they inherit
the validated ``Settings`` from the master.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from prefork_lb.dns import DnsSource, parse_dns, parse_dns_srv, parse_resolver
from prefork_lb.routes import Route
from prefork_lb.values import (
    ConfigError,
    IPNetwork,
    fail,
    parse_admin_path,
    parse_admin_token,
    parse_backend_name,
    parse_balance_factor,
    parse_bool,
    parse_ca_bundle,
    parse_cookie_name,
    parse_count,
    parse_dns_slots,
    parse_extension_options,
    parse_extensions,
    parse_hash_key,
    parse_health_path,
    parse_networks,
    parse_percent,
    parse_policy,
    parse_positive_int,
    parse_probe_path,
    parse_protocols,
    parse_retry_statuses,
    parse_scheme,
    parse_seconds,
    parse_seconds_or_zero,
    parse_secret,
    parse_size,
    parse_state_file,
    parse_status_range,
    parse_weight,
    split_list,
)

__all__ = [
    "CONFIG_FILE_ENV",
    "ENV_PREFIX",
    "SETTINGS",
    "Backend",
    "ConfigError",
    "DnsGroup",
    "HealthCheck",
    "IPNetwork",
    "Member",
    "Pool",
    "Route",
    "Setting",
    "Settings",
    "doubtful_settings",
    "effective_pools",
    "inherit_settings",
    "load_config",
    "parse_backend_url",
]

ENV_PREFIX = "PREFORK_LB_"
CONFIG_FILE_ENV = "PREFORK_LB_CONFIG"


@dataclass(frozen=True, slots=True)
class Setting:
    """The declaration of one setting: its names, parser, default and documentation.

    ``default`` is the typed value, as ``parse`` returns it; the dataclasses
    below take their defaults from it. ``wording`` is for a default that reads
    better in other words than its value's (``1g`` for 1073741824); the tests
    check that it parses back to ``default``.
    """

    name: str
    parse: Callable[[str, object], Any]
    default: Any
    doc: str
    wording: str = ""

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return ENV_PREFIX + self.name.upper()

    @property
    def default_text(self) -> str:
        """The default as the README's settings table gives it."""
        return self.wording or _as_written(self.default)


def _as_written(value: object) -> str:
    """A default as a user would set it (reStructuredText: strings are literals)."""
    if value is None or (isinstance(value, str | tuple) and not value):
        return "(none)"
    if isinstance(value, tuple):
        return ", ".join(_as_written(item) for item in value)
    if isinstance(value, str):
        return f"``{value}``"
    if isinstance(value, IPNetwork) and value.num_addresses == 1:
        return str(value.network_address)
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_backend_url(where: str, value: object) -> Backend:
    """Validate one backend base URL such as ``http://10.0.0.5:8080``."""
    if not isinstance(value, str) or not value.strip():
        raise fail(where, value, "a backend must be a URL such as http://127.0.0.1:9001")
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise fail(where, text, "is not a valid URL (bad port or brackets?)") from None
    if parts.scheme not in ("http", "https"):
        raise fail(where, text, f"unsupported scheme {parts.scheme!r}: use http or https")
    if not parts.hostname:
        raise fail(where, text, "has no host")
    if not _HOSTNAME.fullmatch(parts.hostname) and not _is_ip(parts.hostname):
        raise fail(where, text, f"host {parts.hostname!r} is not a valid host name")
    if parts.username is not None or parts.password is not None:
        raise fail(where, text, "must not carry user info")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise fail(where, text, "must be scheme://host[:port] with no path, query or fragment")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    elif port == 0:
        raise fail(where, text, "port must be between 1 and 65535")
    url = f"{parts.scheme}://{_authority(parts.hostname, port)}"
    return Backend(url=url, scheme=parts.scheme, host=parts.hostname, port=port)


_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _BackendSpec:
    """A backend as listed, with the global settings it overrides for itself.

    The globals may come later (or from the environment when the backends
    come from the file), so ``load_config`` resolves the overrides at the end.
    """

    backend: Backend  # url, weight and backup already final
    overrides: tuple[tuple[str, Any], ...] = ()


def _parse_backend_options(
    here: str, backend: Backend, options: Mapping[str, object], sep: str
) -> _BackendSpec:
    """Apply ``weight`` and ``backup``; keep the (parsed) overrides of global settings."""
    overrides = []
    for key, raw in options.items():
        value = _BACKEND_OPTIONS[key](f"{here}{sep}{key}", raw)
        if key == "weight":
            backend = replace(backend, weight=value)
        elif key == "backup":
            backend = replace(backend, backup=value)
        elif key == "name":
            backend = replace(backend, name=value)
        else:
            overrides.append((key, value))
    return _BackendSpec(backend, tuple(overrides))


def _parse_backend_item(here: str, item: str) -> _BackendSpec:
    """One item of PREFORK_LB_BACKENDS: a URL, then ``key=value`` words or ``backup``."""
    url, *words = item.split()
    backend = parse_backend_url(here, url)
    options: dict[str, object] = {}
    for word in words:
        key, equals, raw = word.partition("=")
        if not equals and key == "backup":
            raw = "true"
        elif not equals:
            raise fail(here, item, f"option {word!r} must be key=value or backup")
        if key not in _BACKEND_OPTIONS:
            known = ", ".join(sorted(_BACKEND_OPTIONS))
            raise ConfigError(f"{here}: unknown option {key!r} (known: {known})")
        if key in options:
            raise fail(here, item, f"option {key!r} is given twice")
        options[key] = raw
    return _parse_backend_options(here, backend, options, ": ")


def _parse_backend_table(here: str, table: object) -> _BackendSpec:
    """One ``[[backends]]`` table of the file (or a plain URL string)."""
    if isinstance(table, str):
        return _BackendSpec(parse_backend_url(here, table))
    if not isinstance(table, dict):
        raise fail(here, table, "must be a table with a url key")
    unknown = sorted(set(table) - {"url"} - set(_BACKEND_OPTIONS))
    if unknown:
        known = ", ".join(["url", *sorted(_BACKEND_OPTIONS)])
        raise ConfigError(f"{here}: unknown key {unknown[0]!r} (known keys: {known})")
    if "url" not in table:
        raise ConfigError(f"{here}: missing key 'url'")
    backend = parse_backend_url(f"{here}.url", table["url"])
    options = {key: raw for key, raw in table.items() if key != "url"}
    return _parse_backend_options(here, backend, options, ".")


def _parse_backends(where: str, value: object) -> tuple[_BackendSpec, ...]:
    if isinstance(value, str):
        specs = tuple(
            _parse_backend_item(f"{where}[{i}]", item)
            for i, item in enumerate(split_list(where, value))
        )
    elif isinstance(value, list):
        specs = tuple(_parse_backend_table(f"{where}[{i}]", t) for i, t in enumerate(value))
    else:
        raise fail(where, value, "must be a list of [[backends]] tables")
    first_at: dict[str, int] = {}
    for i, spec in enumerate(specs):
        url = spec.backend.url
        if url in first_at:
            raise fail(f"{where}[{i}]", url, f"backend already listed at [{first_at[url]}]")
        first_at[url] = i
    names = [spec.backend.name for spec in specs]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise fail(f"{where}[{i}]", name, "another backend already has this name")
    if specs and all(spec.backend.backup for spec in specs):
        raise ConfigError(
            f"{where}: every backend is a backup; at least one must take traffic normally"
        )
    return specs


@dataclass(frozen=True, slots=True)
class _PoolSpec:
    """A ``[pools.NAME]`` table as listed: its backends and the settings it sets for itself."""

    name: str
    where: str
    backends: tuple[_BackendSpec, ...]
    options: tuple[tuple[str, Any], ...] = ()


_POOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _parse_pools(where: str, value: object) -> tuple[_PoolSpec, ...]:
    """The ``[pools.NAME]`` tables of the file (the environment has only the default pool)."""
    if isinstance(value, str) and not value.strip():
        return ()
    if isinstance(value, str):
        raise fail(where, value, "pools are [pools.NAME] tables in the PREFORK_LB_CONFIG file")
    if not isinstance(value, dict):
        raise fail(where, value, "must be [pools.NAME] tables")
    pools = []
    for name, table in value.items():
        here = f"pools.{name}"
        if not _POOL_NAME.fullmatch(name):
            raise fail(here, name, "a pool name is 1 to 64 letters, digits, '_', '-' or '.'")
        if not isinstance(table, dict):
            raise fail(here, table, "must be a table with a backends list")
        known = {"backends", *_POOL_OPTIONS}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(
                f"{here}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(known))})"
            )
        has_dns = bool(table.get("dns") or table.get("dns_srv"))
        if not table.get("backends") and not has_dns:
            raise ConfigError(
                f"{here}: missing key 'backends' (at least one [[{here}.backends]], "
                "or dns or dns_srv)"
            )
        backends = _parse_backends(f"{here}.backends", table.get("backends", []))
        options = tuple(
            (key, _BY_NAME[key].parse(f"{here}.{key}", raw))
            for key, raw in table.items()
            if key != "backends"
        )
        pools.append(_PoolSpec(name, f"{here}.backends", backends, options))
    return tuple(pools)


# A route's host: a host name, or "*." and a domain (any subdomain of it).
_ROUTE_HOST = re.compile(r"(\*\.)?([A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?)")
_ROUTE_PREFIX = re.compile(r"/[!-~]*")
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ROUTE_KEYS = ("host", "path_prefix", "methods", "pool", "strip_prefix")


def _parse_routes(where: str, value: object) -> tuple[Route, ...]:
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


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "backends",
        _parse_backends,
        (),
        "Backend base URLs, ``http://host:port`` or ``https://host:port``, each listed "
        "once. A backend may have options: ``weight`` (1 to 1000, default 1: its share "
        "of requests relative to the others), ``backup`` (used only while no other "
        "backend is usable; at least one backend must not be a backup), ``name`` (how "
        "extensions name it, default its ``host:port``) and any setting "
        "marked (per backend too), which then holds for that backend instead of the "
        "global value. In the environment: comma-separated items, each a URL followed by "
        "space-separated ``key=value`` options or the word ``backup``, as in "
        "``http://10.0.0.5:8080 weight=5, http://10.0.0.6:8080, http://10.0.0.9:8080 "
        "backup``. In the file: ``[[backends]]`` tables with a ``url`` key and the "
        "options as further keys (``weight = 5``, ``backup = true``, "
        '``health_path = "/healthz"``), or plain URL strings.',
    ),
    Setting(
        "connect_timeout",
        parse_seconds,
        5.0,
        "Seconds to wait for a backend to accept a connection before answering 504.",
    ),
    Setting(
        "read_timeout",
        parse_seconds,
        60.0,
        "Seconds a backend may stay silent (before its response, or between two reads "
        "of it) before the balancer answers 504 or aborts the response.",
    ),
    Setting(
        "client_timeout",
        parse_seconds,
        60.0,
        "Seconds a client may stay silent: while it sends its request body (then the "
        "balancer answers 408 and closes the backend connection), or while it leaves "
        "the response unread (each piece of up to 64 KiB must be taken within it; then "
        "the connection is reset and the backend's response dropped). Also bounds a "
        "client's TLS handshake, and the wait for the whole PROXY header before it.",
    ),
    Setting(
        "client_min_rate",
        parse_count,
        500,
        "Bytes per second a request body must average, after a grace of "
        "``client_timeout`` seconds, so that a body trickled a byte at a time cannot "
        "hold a connection for ever (as Apache's ``mod_reqtimeout`` ``MinRate``); "
        "slower gets 408. 0 turns the check off.",
    ),
    Setting(
        "max_body_size",
        parse_size,
        1024**3,
        "Largest request body forwarded, in bytes (``k``, ``m``, ``g`` suffixes: "
        "binary units). A larger Content-Length gets 413 before anything is sent "
        "upstream; a chunked body that grows past it gets 413 and its upstream request "
        "is cut off before it is complete. 0 means no limit.",
        wording="1g",
    ),
    Setting(
        "trusted_proxies",
        parse_networks,
        (),
        "Addresses or CIDR networks of proxies in front of the balancer whose "
        "forwarding headers are kept (``X-Forwarded-For`` is extended with their "
        "address). From anyone else ``X-Forwarded-*``, ``Forwarded`` and ``X-Real-IP`` "
        "are replaced.",
    ),
    Setting(
        "preserve_host",
        parse_bool,
        True,
        "Forward the client's ``Host`` header. When false, send the backend's own "
        "``host:port`` instead (the client's host still goes in ``X-Forwarded-Host``).",
    ),
    Setting(
        "pool_size",
        parse_positive_int,
        64,
        "Idle keep-alive connections each worker keeps open to each backend.",
    ),
    Setting(
        "backend_tls_verify",
        parse_bool,
        True,
        "Check the certificate of every ``https://`` backend, for requests and health "
        "checks alike: it must chain to a CA in ``backend_ca_bundle`` and name the host "
        "of the backend's URL. A backend that fails the check gets no request (502, "
        "``TLS failed`` in the log). False turns the check off (the balancer warns at "
        "start): traffic is still encrypted, but anyone on the path can pose as the "
        "backend.",
    ),
    Setting(
        "backend_ca_bundle",
        parse_ca_bundle,
        "",
        "A PEM file of the CA certificates that ``https://`` backends' certificates must "
        "chain to, such as an internal CA's, instead of the system's trust store. Read "
        "at start: a missing or unreadable file stops the balancer.",
        wording="(the system's)",
    ),
    Setting(
        "demo",
        parse_bool,
        False,
        "When no backends are configured, start three built-in demo backends that "
        "answer with their own name (``scripts/serve`` turns this on).",
    ),
    Setting(
        "policy",
        parse_policy,
        "round_robin",
        "How a request's backend is picked among the usable ones: ``round_robin`` "
        "(smooth weighted round robin: every run of requests is spread over the "
        "backends in proportion to their weights) or ``least_conn`` (the fewest "
        "requests in flight, counted over all workers, per unit of weight) or ``hash`` "
        "(consistent hashing on ``hash_key``: a key keeps going to the same backend) "
        "(per pool too).",
    ),
    Setting(
        "hash_key",
        parse_hash_key,
        "ip",
        'What ``policy = "hash"`` hashes: ``ip`` (the client\'s address as the balancer '
        "trusts it: from ``X-Forwarded-For`` only behind ``trusted_proxies``), ``path`` "
        "(without the query), ``header:NAME``, ``cookie:NAME`` or ``query:NAME``. A "
        "request without it goes round robin (per pool too).",
    ),
    Setting(
        "hash_balance_factor",
        parse_balance_factor,
        1.25,
        'Bounded load for ``policy = "hash"``: a key whose backend already has more '
        "than this factor times its share of the pool's requests in flight (counted over "
        "all workers) goes to the next backend in the hash table. 0 turns it off "
        "(per pool too).",
    ),
    Setting(
        "sticky_cookie",
        parse_cookie_name,
        "",
        "Sticky sessions: the name of a cookie that keeps a client on the backend that "
        "first answered it, while that backend is usable. A client without a valid one "
        "is balanced as usual and gets ``NAME=<token>; Path=/; HttpOnly; SameSite=Lax`` "
        "(and ``Secure`` over TLS); the token is opaque and signed with "
        "``sticky_secret``. A forged or stale token counts as none. The backend never "
        "sees this cookie. Empty: off (per pool too).",
    ),
    Setting(
        "sticky_secret",
        parse_secret,
        "",
        "The key (16 characters or more) that signs sticky-cookie tokens. Empty: one is "
        "made at start, shared by the workers and kept across reloads, but not across "
        "restarts; several instances behind one name must be given the same one.",
        wording="(made at start)",
    ),
    Setting(
        "max_conns",
        parse_count,
        0,
        "Requests in flight to a backend (open WebSocket tunnels included), counted over "
        "every worker, that it never exceeds; a request finding every eligible backend "
        "of its pool at its limit waits (``queue_timeout``, ``max_queue``). 0: no limit "
        "(per backend and per pool too).",
    ),
    Setting(
        "queue_timeout",
        parse_seconds,
        5.0,
        "Seconds a request may wait for a backend below its ``max_conns`` before it gets "
        "503 with ``Retry-After`` (per pool too).",
    ),
    Setting(
        "max_queue",
        parse_count,
        1024,
        "Requests that may wait for a pool's backends at once, over every worker; one "
        "more gets 503 with ``Retry-After`` at once. 0: no waiting room (per pool too).",
    ),
    Setting(
        "max_fails",
        parse_count,
        1,
        "Failed requests (the backend refused or reset the connection, or timed out; "
        "an invalid answer does not count) within ``fail_timeout`` seconds that mark a "
        "backend down, "
        "as nginx's passive checks do; 0: failed requests never mark it down "
        "(per backend too).",
    ),
    Setting(
        "fail_timeout",
        parse_seconds,
        10.0,
        "Seconds over which ``max_fails`` failed requests are counted, and how long a "
        "backend they marked down rests before requests may try it again (without "
        "active health checks; with them, only passed checks bring it back) "
        "(per backend too).",
    ),
    Setting(
        "health_check",
        parse_bool,
        False,
        "Check backends actively: a ``GET`` of ``health_path`` on a fresh connection "
        "every ``health_interval`` seconds, made by one worker for all of them; "
        "``health_fall`` failures in a row mark a backend down, ``health_rise`` "
        "passes bring it back (per backend too).",
    ),
    Setting(
        "health_path",
        parse_health_path,
        "/",
        "The path (and query) a health check requests: starts with ``/``, printable "
        "ASCII without spaces or ``#`` (per backend too).",
    ),
    Setting(
        "health_interval",
        parse_seconds,
        2.0,
        "Seconds between two health checks of a backend (per backend too).",
    ),
    Setting(
        "health_timeout",
        parse_seconds,
        1.0,
        "Seconds a health check may take before it counts as failed (per backend too).",
    ),
    Setting(
        "health_status",
        parse_status_range,
        (200, 399),
        "The statuses that pass a health check: an inclusive range such as "
        "``200-399``, or one status such as ``204``, within 100 to 599 "
        "(per backend too).",
        wording="200-399",
    ),
    Setting(
        "health_rise",
        parse_positive_int,
        2,
        "Passed health checks in a row that bring a down backend back up (per backend too).",
    ),
    Setting(
        "health_fall",
        parse_positive_int,
        3,
        "Failed health checks in a row that mark an up backend down (per backend too).",
    ),
    Setting(
        "retries",
        parse_count,
        2,
        "How many other backends a failed request may be tried on: always when the "
        "request never reached the backend, otherwise only for an idempotent method "
        "whose body the balancer still holds (POST and PATCH are never sent twice). "
        "0: never retry.",
    ),
    Setting(
        "retry_timeout",
        parse_seconds,
        90.0,
        "Seconds since a request's first try after which no further try starts. Keep "
        "it above ``connect_timeout`` + ``read_timeout``, or a timed-out try is never "
        "retried (the balancer warns at start when it is not).",
    ),
    Setting(
        "retry_on_status",
        parse_retry_statuses,
        (),
        "Statuses (500 to 599, e.g. ``502, 503, 504``) after which a request that may "
        "be repeated (the rules of ``retries``: idempotent, its body still held) is "
        "tried on another backend, within ``retries`` and ``retry_timeout``; the "
        "discarded answer's connection is closed. When tries run out the last answer "
        "is sent. Empty: answers are never retried.",
    ),
    Setting(
        "eject_consecutive_5xx",
        parse_count,
        0,
        "Outlier ejection: a backend that answers this many 502, 503 or 504 in a row "
        "(counted over all workers) is taken out of rotation for ``eject_time`` seconds "
        "times the number of times it has been ejected, at most ``eject_max_time``; "
        "with active health checks, ``health_rise`` passed checks end it early. 0: off.",
    ),
    Setting(
        "eject_on_500",
        parse_bool,
        False,
        "Count 500 answers towards ``eject_consecutive_5xx`` as well.",
    ),
    Setting(
        "eject_time",
        parse_seconds,
        30.0,
        "Seconds of a backend's first ejection; each further one lasts that much longer.",
    ),
    Setting(
        "eject_max_time",
        parse_seconds,
        300.0,
        "The longest an ejection lasts, in seconds.",
    ),
    Setting(
        "eject_max_percent",
        parse_percent,
        50,
        "At most this percentage of a pool's backends is ejected at once; a backend "
        "that would go beyond it stays in.",
    ),
    Setting(
        "fail_open",
        parse_bool,
        False,
        "When no backend is usable (every primary and every backup is down), send "
        "requests to all the primaries anyway, as Envoy's panic mode does, instead of "
        "answering 503.",
    ),
    Setting(
        "slow_start",
        parse_seconds_or_zero,
        0.0,
        "Seconds over which a backend that comes back up has its share of requests "
        "ramped up from little to its full weight; 0: at once.",
    ),
    Setting(
        "admin_path",
        parse_admin_path,
        "/_prefork_lb",
        "Path prefix of the admin endpoint (``<admin_path>/backends``: backend states as "
        "JSON), answered by the balancer itself for clients in ``admin_allow``; must "
        "start with ``/``, printable ASCII without spaces, ``?`` or ``#``. Empty or "
        "``off`` turns it off.",
    ),
    Setting(
        "admin_allow",
        parse_networks,
        (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")),
        "Client addresses or CIDR networks (the TCP peer, or the client named by a PROXY "
        "header from ``proxy_allow_ips``; never a forwarded header) "
        "allowed to use the admin endpoint. For anyone else its path is ordinary "
        "traffic, forwarded to a backend.",
    ),
    Setting(
        "admin_token",
        parse_admin_token,
        "",
        "The bearer token (16 or more printable characters) that admin writes "
        "(``POST <admin_path>/backends/NAME/state`` and ``/weight``) must carry as "
        "``Authorization: Bearer TOKEN``, from a client in ``admin_allow``. Empty: "
        "writes are refused (403); reads need no token. ``ctl`` reads it too.",
    ),
    Setting(
        "ready_path",
        parse_probe_path,
        "/_prefork_lb/ready",
        "The readiness probe, for an L4 balancer or a kubelet: ``GET`` (or ``HEAD``) of "
        "exactly this path answers ``200 ready`` while the default pool has a usable "
        "backend, else ``503 not ready``, to any client (``admin_allow`` does not apply). "
        "Empty or ``off``: the path is forwarded like any other.",
    ),
    Setting(
        "live_path",
        parse_probe_path,
        "/_prefork_lb/live",
        "The liveness probe: ``GET`` (or ``HEAD``) of exactly this path answers "
        "``200 live`` while a worker answers, to any client. Empty or ``off``: the path "
        "is forwarded like any other.",
    ),
    Setting(
        "state_file",
        parse_state_file,
        "",
        "A file that keeps what operators set (drain, maint, weights) across reloads "
        "and restarts: rewritten atomically on every change (by the worker that took "
        "it: its directory must be writable by the workers' user; ``FILE.lock`` beside "
        "it), read at start and on reload. Empty: changes last until the next restart.",
    ),
    Setting(
        "upgrade_protocols",
        parse_protocols,
        ("websocket",),
        "Protocols a client may switch to (``Upgrade``, case-insensitive): a request "
        "with ``Connection: upgrade`` naming one goes to a backend with its ``Upgrade`` "
        "header, on a connection of its own, and when the backend answers ``101`` for "
        "that protocol the balancer relays bytes both ways until either side closes. "
        "Other protocols (``h2c``) are stripped as hop-by-hop. Empty: no tunnels.",
    ),
    Setting(
        "tunnel_timeout",
        parse_seconds,
        3600.0,
        "Seconds an upgraded connection (a WebSocket) may carry no byte either way "
        "before the balancer closes it (as HAProxy's ``timeout tunnel``). "
        "``read_timeout`` bounds the wait for the backend's ``101``.",
    ),
    Setting(
        "dns",
        parse_dns,
        None,
        "Find the backends through DNS: ``name:port``, each A and AAAA record of the "
        "name a backend ``ip:port``, re-resolved while running (see Backends from DNS). "
        "The per-backend settings that hold for the pool hold for each. At the top level "
        "it is the default pool's, beside any ``backends`` listed (per pool too).",
    ),
    Setting(
        "dns_srv",
        parse_dns_srv,
        None,
        "Find the backends through DNS SRV records, as ``_http._tcp.api.internal``: "
        "each target's addresses on the record's port, the record's weight as the "
        "backend's, a priority number above the lowest a backup. Not with ``dns`` in the "
        "same pool (per pool too).",
    ),
    Setting(
        "dns_scheme",
        parse_scheme,
        "http",
        "``http`` or ``https``: how the balancer talks to the backends found through "
        "``dns`` or ``dns_srv`` (an ``https`` one's certificate must name its IP "
        "address) (per pool too).",
    ),
    Setting(
        "dns_slots",
        parse_dns_slots,
        32,
        "The most addresses a ``dns`` or ``dns_srv`` source holds at once (1 to 1024: "
        "shared memory is fixed in size, as HAProxy's ``server-template`` count is). "
        "More addresses than that are logged once and left out (per pool too).",
    ),
    Setting(
        "dns_resolver",
        parse_resolver,
        None,
        "The DNS server to ask, ``ip:port`` (port 53 if left out); empty: the system's "
        "(``/etc/resolv.conf``).",
    ),
    Setting(
        "dns_interval",
        parse_seconds,
        10.0,
        "Seconds between two resolutions of a DNS source, at most: a shorter TTL of "
        "the records makes it shorter, never below 1 s. After a failed one it asks "
        "again sooner: 1 s, doubling with each failure up to this.",
    ),
    Setting(
        "dns_timeout",
        parse_seconds,
        2.0,
        "Seconds to wait for the DNS server's answer (a timeout keeps the last good set).",
    ),
    Setting(
        "dns_allow_empty_start",
        parse_bool,
        False,
        "Start even when a DNS source cannot be resolved (or has no address): its pool "
        "answers 503 until addresses appear. By default such a start is an error.",
    ),
    Setting(
        "pools",
        _parse_pools,
        (),
        "File only: named sets of backends, ``[pools.NAME]`` tables each with its "
        "``[[pools.NAME.backends]]`` (the same per-backend options as ``backends``) and "
        "any setting marked (per pool too), which then holds for that pool instead of "
        "the global value, and any marked (per backend too), which then holds for the "
        "pool's backends. The top-level ``backends`` are the pool ``default``. A "
        "backend URL listed in two pools is one backend (one health state, one "
        "in-flight count); its weight and backup are per pool.",
    ),
    Setting(
        "routes",
        _parse_routes,
        (),
        "File only: ``[[routes]]`` tables choosing a pool by ``host`` (exact, or "
        "``*.example.com`` for any subdomain), ``path_prefix`` (whole segments of the "
        "raw path), ``methods`` (a list) and ``pool``; ``strip_prefix = true`` removes "
        "the prefix from the path sent upstream. See Routing for the precedence. A "
        "request no route takes goes to the ``default`` pool, or gets 404 without one.",
    ),
    Setting(
        "extensions",
        parse_extensions,
        (),
        "Extensions to run on every request, in this order: ``module:attribute`` names "
        "of classes (or callables) that each worker calls once with the extension's "
        "options (see Extensions). In the file a list, in the environment "
        "comma-separated. A name that does not import stops the start.",
    ),
    Setting(
        "extension_options",
        parse_extension_options,
        (),
        "Each extension's options: in the file a table "
        '``[extension_options."module:attribute"]`` per extension, in the environment '
        "a JSON object of objects. An extension without a table gets an empty dict.",
    ),
)

# Options a backend may set for itself: its own two, and the global settings
# it may override, with the same parsers (so the same rules and messages).
_OVERRIDABLE = (
    "max_conns",
    "max_fails",
    "fail_timeout",
    "health_check",
    "health_path",
    "health_interval",
    "health_timeout",
    "health_status",
    "health_rise",
    "health_fall",
)

# Settings a [pools.NAME] table may set for itself (and for its backends).
_POOL_OPTIONS = (
    "policy",
    "hash_key",
    "hash_balance_factor",
    "sticky_cookie",
    "queue_timeout",
    "max_queue",
    "dns",
    "dns_srv",
    "dns_scheme",
    "dns_slots",
    *_OVERRIDABLE,
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}
_BY_ENV = {setting.env: setting for setting in SETTINGS}
_BACKEND_OPTIONS: dict[str, Callable[[str, object], Any]] = {
    "weight": parse_weight,
    "backup": parse_bool,
    "name": parse_backend_name,
    **{name: _BY_NAME[name].parse for name in _OVERRIDABLE},
}


# The dataclasses' defaults are the declared ones: a backend without options
# of its own has what it would inherit from the default settings.
_DEFAULT = {setting.name: setting.default for setting in SETTINGS}


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """How the active health checker probes one backend."""

    enabled: bool = _DEFAULT["health_check"]
    path: str = _DEFAULT["health_path"]
    interval: float = _DEFAULT["health_interval"]
    timeout: float = _DEFAULT["health_timeout"]
    status: tuple[int, int] = _DEFAULT["health_status"]  # inclusive range of good statuses
    rise: int = _DEFAULT["health_rise"]
    fall: int = _DEFAULT["health_fall"]


@dataclass(frozen=True, slots=True)
class Backend:
    """One upstream server, addressed by its base URL (scheme, host and port only).

    In ``Settings.backends`` every field is resolved: a per-backend option if
    one was given, else the global setting of the same name.
    """

    url: str
    scheme: str
    host: str
    port: int
    # How extensions name it (``request.backend``); empty: its host:port.
    name: str = ""
    weight: int = 1  # 1..1000
    backup: bool = False
    max_conns: int = _DEFAULT["max_conns"]  # 0 = no limit
    max_fails: int = _DEFAULT["max_fails"]  # 0 = never marked down by failed requests
    fail_timeout: float = _DEFAULT["fail_timeout"]
    check: HealthCheck = HealthCheck()
    # A slot for an address found through DNS: the source (``name:port`` or an
    # SRV name); empty for a listed backend. In ``Settings.backends`` a slot's
    # url, host and port are placeholders; ``directory.Directory`` has its address.
    dns: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.authority)

    @property
    def authority(self) -> str:
        """``host:port`` as it belongs in a Host header (IPv6 literals in brackets)."""
        return _authority(self.host, self.port)


@dataclass(frozen=True, slots=True)
class Member:
    """A backend as one pool lists it: its index in ``Settings.backends``, weight, backup."""

    index: int
    weight: int = 1
    backup: bool = False


@dataclass(frozen=True, slots=True)
class Pool:
    """A named set of backends, with the selection settings that hold for it."""

    name: str
    members: tuple[Member, ...]
    policy: str = _DEFAULT["policy"]
    hash_key: str = _DEFAULT["hash_key"]
    hash_balance_factor: float = _DEFAULT["hash_balance_factor"]
    sticky_cookie: str = _DEFAULT["sticky_cookie"]
    queue_timeout: float = _DEFAULT["queue_timeout"]
    max_queue: int = _DEFAULT["max_queue"]


@dataclass(frozen=True, slots=True)
class DnsGroup:
    """One DNS source of one pool and its slots: ``Settings.backends[first:first + count]``."""

    pool: str
    source: DnsSource
    first: int
    count: int

    @property
    def indexes(self) -> range:
        """The slots' indexes in ``Settings.backends``."""
        return range(self.first, self.first + self.count)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker needs to know, fixed for the life of the worker."""

    backends: tuple[Backend, ...] = _DEFAULT["backends"]
    connect_timeout: float = _DEFAULT["connect_timeout"]
    read_timeout: float = _DEFAULT["read_timeout"]
    client_timeout: float = _DEFAULT["client_timeout"]
    client_min_rate: int = _DEFAULT["client_min_rate"]
    max_body_size: int = _DEFAULT["max_body_size"]
    trusted_proxies: tuple[IPNetwork, ...] = _DEFAULT["trusted_proxies"]
    preserve_host: bool = _DEFAULT["preserve_host"]
    pool_size: int = _DEFAULT["pool_size"]
    backend_tls_verify: bool = _DEFAULT["backend_tls_verify"]
    # An absolute path; empty: the system's trust store.
    backend_ca_bundle: str = _DEFAULT["backend_ca_bundle"]
    demo: bool = _DEFAULT["demo"]
    policy: str = _DEFAULT["policy"]
    hash_key: str = _DEFAULT["hash_key"]
    hash_balance_factor: float = _DEFAULT["hash_balance_factor"]
    sticky_cookie: str = _DEFAULT["sticky_cookie"]
    sticky_secret: str = field(default=_DEFAULT["sticky_secret"], repr=False)
    max_conns: int = _DEFAULT["max_conns"]
    queue_timeout: float = _DEFAULT["queue_timeout"]
    max_queue: int = _DEFAULT["max_queue"]
    max_fails: int = _DEFAULT["max_fails"]
    fail_timeout: float = _DEFAULT["fail_timeout"]
    health_check: bool = _DEFAULT["health_check"]
    health_path: str = _DEFAULT["health_path"]
    health_interval: float = _DEFAULT["health_interval"]
    health_timeout: float = _DEFAULT["health_timeout"]
    health_status: tuple[int, int] = _DEFAULT["health_status"]
    health_rise: int = _DEFAULT["health_rise"]
    health_fall: int = _DEFAULT["health_fall"]
    retries: int = _DEFAULT["retries"]
    retry_timeout: float = _DEFAULT["retry_timeout"]
    retry_on_status: tuple[int, ...] = _DEFAULT["retry_on_status"]
    eject_consecutive_5xx: int = _DEFAULT["eject_consecutive_5xx"]
    eject_on_500: bool = _DEFAULT["eject_on_500"]
    eject_time: float = _DEFAULT["eject_time"]
    eject_max_time: float = _DEFAULT["eject_max_time"]
    eject_max_percent: int = _DEFAULT["eject_max_percent"]
    fail_open: bool = _DEFAULT["fail_open"]
    slow_start: float = _DEFAULT["slow_start"]
    admin_path: str = _DEFAULT["admin_path"]
    admin_allow: tuple[IPNetwork, ...] = _DEFAULT["admin_allow"]
    admin_token: str = field(default=_DEFAULT["admin_token"], repr=False)
    ready_path: str = _DEFAULT["ready_path"]  # empty: off
    live_path: str = _DEFAULT["live_path"]  # empty: off
    state_file: str = _DEFAULT["state_file"]  # an absolute path; empty: none
    upgrade_protocols: tuple[str, ...] = _DEFAULT["upgrade_protocols"]  # lower case
    tunnel_timeout: float = _DEFAULT["tunnel_timeout"]
    dns: DnsSource | None = _DEFAULT["dns"]
    dns_srv: DnsSource | None = _DEFAULT["dns_srv"]
    dns_scheme: str = _DEFAULT["dns_scheme"]
    dns_slots: int = _DEFAULT["dns_slots"]
    dns_resolver: tuple[str, int] | None = _DEFAULT["dns_resolver"]  # None: the system's
    dns_interval: float = _DEFAULT["dns_interval"]
    dns_timeout: float = _DEFAULT["dns_timeout"]
    dns_allow_empty_start: bool = _DEFAULT["dns_allow_empty_start"]
    # Empty: one pool, "default", of every backend (effective_pools).
    pools: tuple[Pool, ...] = _DEFAULT["pools"]
    routes: tuple[Route, ...] = _DEFAULT["routes"]
    extensions: tuple[str, ...] = _DEFAULT["extensions"]
    # (extension, its options) pairs; options_for() looks one up.
    extension_options: tuple[tuple[str, dict[str, Any]], ...] = _DEFAULT["extension_options"]
    # Each DNS source's slots in ``backends`` (made by load_config from dns/dns_srv).
    dns_groups: tuple[DnsGroup, ...] = ()
    # Where the settings came from, for messages only.
    sources: tuple[str, ...] = field(default=(), compare=False)

    def options_for(self, extension: str) -> dict[str, Any]:
        """The options of ``extension`` (a copy; empty when it has none)."""
        return dict(dict(self.extension_options).get(extension, {}))


def _resolve_backend(spec: _BackendSpec, settings: Settings) -> Backend:
    """The backend with every option final: its own override, else the global setting."""
    overrides = dict(spec.overrides)

    def option(name: str) -> Any:
        return overrides.get(name, getattr(settings, name))

    check = HealthCheck(
        enabled=option("health_check"),
        path=option("health_path"),
        interval=option("health_interval"),
        timeout=option("health_timeout"),
        status=option("health_status"),
        rise=option("health_rise"),
        fall=option("health_fall"),
    )
    return replace(
        spec.backend,
        max_conns=option("max_conns"),
        max_fails=option("max_fails"),
        fail_timeout=option("fail_timeout"),
        check=check,
    )


def inherit_settings(backend: Backend, settings: Settings) -> Backend:
    """``backend`` with the global failure and health-check settings as its own.

    For backends made after ``load_config``, such as the demo ones; those in
    ``settings.backends`` already have theirs.
    """
    return _resolve_backend(_BackendSpec(backend), settings)


def effective_pools(settings: Settings) -> tuple[Pool, ...]:
    """The pools requests are balanced over: the configured ones, else ``default`` of all."""
    if settings.pools:
        return settings.pools
    members = tuple(Member(i, b.weight, b.backup) for i, b in enumerate(settings.backends))
    return (_pool("default", members, settings),)


def _pool(name: str, members: tuple[Member, ...], settings: Settings) -> Pool:
    """A pool whose options are those of ``settings`` (the global ones, or its own over them)."""
    return Pool(
        name=name,
        members=members,
        policy=settings.policy,
        hash_key=settings.hash_key,
        hash_balance_factor=settings.hash_balance_factor,
        sticky_cookie=settings.sticky_cookie,
        queue_timeout=settings.queue_timeout,
        max_queue=settings.max_queue,
    )


def _dns_of(where: str, own: Settings, options: Mapping[str, Any]) -> DnsSource | None:
    """The pool's DNS source, if any.

    A named pool has only its own (not the top level's, which is the default pool's).
    """
    dns = options.get("dns") if where != "backends" else own.dns
    srv = options.get("dns_srv") if where != "backends" else own.dns_srv
    prefix = "" if where == "backends" else where.removesuffix(".backends") + "."
    if dns and srv:
        raise ConfigError(f"{prefix}dns_srv: {srv.label!r}: a pool has dns or dns_srv, not both")
    if (dns or srv) and own.sticky_cookie:
        raise ConfigError(
            f"{prefix}sticky_cookie: {own.sticky_cookie!r}: sticky cookies are not "
            'supported for a pool whose backends come from DNS (use policy = "hash")'
        )
    source: DnsSource | None = dns or srv
    return source


def _dns_slots(pool: str, own: Settings, source: DnsSource, first: int) -> list[Backend]:
    """``own.dns_slots`` slots for the addresses of ``source``, each a template backend.

    Its URL is a placeholder (unique, never connected to) until an address fills it.
    """
    port = source.port
    slots = []
    for number in range(own.dns_slots):
        host = f"slot-{number}.{pool}.dns.invalid"
        template = Backend(
            url=f"{own.dns_scheme}://{host}:{port}",
            scheme=own.dns_scheme,
            host=host,
            port=port,
            name=f"dns-slot-{first + number}",
            dns=source.label,
        )
        slots.append(_resolve_backend(_BackendSpec(template), own))
    return slots


def _resolve_pools(
    settings: Settings, default: tuple[_BackendSpec, ...], specs: tuple[_PoolSpec, ...]
) -> Settings:
    """One list of backends, each URL once, and the pools as indexes into it."""
    if default or settings.dns or settings.dns_srv:
        if any(spec.name == "default" for spec in specs):
            raise ConfigError(
                "pools.default: duplicate pool: the top-level backends are the pool 'default'"
            )
        specs = (_PoolSpec("default", "backends", default), *specs)
    backends: list[Backend] = []
    first: dict[str, tuple[int, str]] = {}  # url -> (index, where first listed)
    pools = []
    groups: list[DnsGroup] = []
    for spec in specs:
        own = replace(settings, **dict(spec.options))
        members = []
        for i, backend_spec in enumerate(spec.backends):
            backend = _resolve_backend(backend_spec, own)
            url = backend.url
            if url not in first:
                first[url] = (len(backends), f"{spec.where}[{i}]")
                backends.append(backend)
            index, where = first[url]
            known = backends[index]
            if replace(backend, weight=known.weight, backup=known.backup) != known:
                raise fail(
                    f"{spec.where}[{i}]",
                    url,
                    f"is also listed at {where} with other options; a backend in two pools "
                    "is one server and needs the same health and failure settings in both",
                )
            members.append(Member(index, backend.weight, backend.backup))
        source = _dns_of(spec.where, own, dict(spec.options))
        if source is not None:
            start = len(backends)
            backends.extend(_dns_slots(spec.name, own, source, start))
            members.extend(Member(i) for i in range(start, len(backends)))
            groups.append(DnsGroup(spec.name, source, start, own.dns_slots))
        elif not members:
            raise ConfigError(f"{spec.where}: a pool needs backends, or dns or dns_srv")
        pools.append(_pool(spec.name, tuple(members), own))
    return replace(settings, backends=tuple(backends), pools=tuple(pools), dns_groups=tuple(groups))


def _check_routes(settings: Settings) -> None:
    names = {pool.name for pool in effective_pools(settings)}
    for i, route in enumerate(settings.routes):
        if route.pool not in names:
            known = ", ".join(sorted(names))
            raise fail(f"routes[{i}].pool", route.pool, f"is not a pool (pools: {known})")


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as err:
        raise ConfigError(f"{CONFIG_FILE_ENV}: cannot read {path!r}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        # TOML is UTF-8; tomllib decodes before it parses.
        raise ConfigError(
            f"{CONFIG_FILE_ENV}: {path!r} is not UTF-8 (byte {err.start}: {err.reason})"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{CONFIG_FILE_ENV}: {path!r} is not valid TOML: {err}") from None


def doubtful_settings(settings: Settings) -> list[str]:
    """Settings that are valid but probably not what the operator meant."""
    found = []
    longest_try = settings.connect_timeout + settings.read_timeout
    if settings.retries and settings.retry_timeout <= longest_try:
        found.append(
            f"retry_timeout ({settings.retry_timeout:g} s) is not above connect_timeout + "
            f"read_timeout ({longest_try:g} s): a request whose try timed out is not "
            "retried on another backend"
        )
    if not settings.backend_tls_verify:
        found.append(
            "backend_tls_verify is off: the certificates of https:// backends are not "
            "checked, anyone on the path can pose as them"
        )
        if settings.backend_ca_bundle:
            found.append("backend_ca_bundle is not used while backend_tls_verify is off")
    return found


def load_config(environ: Mapping[str, str]) -> Settings:
    """Build the settings from the environment (and the TOML file it names), or raise."""
    values: dict[str, Any] = {}
    sources = []
    path = environ.get(CONFIG_FILE_ENV)
    if path:
        sources.append(path)
        for key, raw in _read_file(path).items():
            setting = _BY_NAME.get(key)
            if setting is None:
                known = ", ".join(sorted(_BY_NAME))
                raise ConfigError(f"{path}: unknown setting {key!r} (known: {known})")
            values[key] = setting.parse(f"{path}: {key}", raw)
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_ENV:
            continue
        setting = _BY_ENV.get(name)
        if setting is None:
            known = ", ".join(sorted([*_BY_ENV, CONFIG_FILE_ENV]))
            raise ConfigError(f"{name}: unknown setting (known: {known})")
        values[setting.name] = setting.parse(name, raw)
        sources.append(name)
    # Per-backend options are resolved last: only now are all the globals known.
    specs: tuple[_BackendSpec, ...] = values.pop("backends", ())
    pool_specs: tuple[_PoolSpec, ...] = values.pop("pools", ())
    settings = Settings(**values, sources=tuple(sources))
    if pool_specs:
        settings = _resolve_pools(settings, specs, pool_specs)
    elif settings.dns or settings.dns_srv:
        # The default pool alone: its slots follow its listed backends.
        settings = replace(_resolve_pools(settings, specs, ()), pools=())
    else:
        backends = tuple(_resolve_backend(spec, settings) for spec in specs)
        settings = replace(settings, backends=backends)
    _check_routes(settings)
    if settings.ready_path and settings.ready_path == settings.live_path:
        raise ConfigError(
            f"live_path: must differ from ready_path, got {settings.live_path!r} for both"
        )
    unknown = sorted(set(dict(settings.extension_options)) - set(settings.extensions))
    if unknown:
        raise ConfigError(
            f"extension_options: {unknown[0]!r} is not one of the extensions "
            f"({', '.join(settings.extensions) or 'none listed'})"
        )
    if not settings.backends and not settings.demo:
        raise ConfigError(
            "no backends configured: set PREFORK_LB_BACKENDS=http://host:port,... or "
            "PREFORK_LB_CONFIG=/path/to/config.toml (or PREFORK_LB_DEMO=1 for demo backends)"
        )
    return settings

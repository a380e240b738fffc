"""Every setting, declared once: its name, parser, default and documentation.

The environment variable, the TOML key, the README's settings table (checked
against this by tests/integration/test_readme.py) and the defaults of the
dataclasses in ``settings_types.py`` all come from ``SETTINGS``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from prefork_lb.backend_tables import BackendSpec, PoolSpec, parse_backends, parse_pools
from prefork_lb.dns import parse_dns, parse_dns_srv, parse_resolver
from prefork_lb.route_tables import parse_routes
from prefork_lb.setting import Setting
from prefork_lb.values import (
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
)


def _backends(where: str, value: object) -> tuple[BackendSpec, ...]:
    return parse_backends(where, value, BACKEND_OPTIONS)


def _pools(where: str, value: object) -> tuple[PoolSpec, ...]:
    return parse_pools(where, value, POOL_OPTION_PARSERS, BACKEND_OPTIONS)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "backends",
        _backends,
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
        _pools,
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
        parse_routes,
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
OVERRIDABLE = (
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
POOL_OPTIONS = (
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
    *OVERRIDABLE,
)

BY_NAME = {setting.name: setting for setting in SETTINGS}
BY_ENV = {setting.env: setting for setting in SETTINGS}
BACKEND_OPTIONS: dict[str, Callable[[str, object], Any]] = {
    "weight": parse_weight,
    "backup": parse_bool,
    "name": parse_backend_name,
    **{name: BY_NAME[name].parse for name in OVERRIDABLE},
}
POOL_OPTION_PARSERS = {name: BY_NAME[name].parse for name in POOL_OPTIONS}


# The dataclasses' defaults are the declared ones: a backend without options
# of its own has what it would inherit from the default settings.
DEFAULT = {setting.name: setting.default for setting in SETTINGS}

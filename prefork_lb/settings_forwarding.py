"""Settings of forwarding and balancing, each declared once: timeouts, the
client's limits, whom to trust, the connections to backends, and how a
backend is chosen and limited.

A part of ``settings_table.SETTINGS``, in the order the README's table gives.
"""

from __future__ import annotations

from prefork_lb.setting import Setting
from prefork_lb.values import (
    parse_balance_factor,
    parse_bool,
    parse_ca_bundle,
    parse_cookie_name,
    parse_count,
    parse_hash_key,
    parse_networks,
    parse_policy,
    parse_positive_int,
    parse_seconds,
    parse_secret,
    parse_size,
)

FORWARDING: tuple[Setting, ...] = (
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
)

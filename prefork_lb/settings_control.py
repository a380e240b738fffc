"""Settings of control, each declared once: the admin endpoint, the ready and
live probes, the state file, and tunnels (WebSocket and other upgrades).

A part of ``settings_table.SETTINGS``, in the order the README's table gives.
"""

from __future__ import annotations

import ipaddress

from prefork_lb.setting import Setting
from prefork_lb.values import (
    parse_admin_path,
    parse_admin_token,
    parse_networks,
    parse_probe_path,
    parse_protocols,
    parse_seconds,
    parse_state_file,
)

CONTROL: tuple[Setting, ...] = (
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
)

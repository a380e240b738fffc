"""Settings of backends from DNS, each declared once: the names, the resolver,
how often it is asked, and what happens at start.

A part of ``settings_table.SETTINGS``, in the order the README's table gives.
"""

from __future__ import annotations

from prefork_lb.dns import parse_dns, parse_dns_srv, parse_resolver
from prefork_lb.setting import Setting
from prefork_lb.values import (
    parse_bool,
    parse_dns_slots,
    parse_scheme,
    parse_seconds,
)

DNS: tuple[Setting, ...] = (
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
)

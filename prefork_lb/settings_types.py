"""The settings as the workers use them: frozen dataclasses, built once by ``config.py``.

Their defaults are the declared ones (``settings_table.SETTINGS``): a backend
without options of its own has what it would inherit from the default settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefork_lb.backend_tables import authority
from prefork_lb.dns import DnsSource
from prefork_lb.routes import Route
from prefork_lb.settings_table import DEFAULT
from prefork_lb.values import IPNetwork


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """How the active health checker probes one backend."""

    enabled: bool = DEFAULT["health_check"]
    path: str = DEFAULT["health_path"]
    interval: float = DEFAULT["health_interval"]
    timeout: float = DEFAULT["health_timeout"]
    status: tuple[int, int] = DEFAULT["health_status"]  # inclusive range of good statuses
    rise: int = DEFAULT["health_rise"]
    fall: int = DEFAULT["health_fall"]


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
    max_conns: int = DEFAULT["max_conns"]  # 0 = no limit
    max_fails: int = DEFAULT["max_fails"]  # 0 = never marked down by failed requests
    fail_timeout: float = DEFAULT["fail_timeout"]
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
        return authority(self.host, self.port)


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
    policy: str = DEFAULT["policy"]
    hash_key: str = DEFAULT["hash_key"]
    hash_balance_factor: float = DEFAULT["hash_balance_factor"]
    sticky_cookie: str = DEFAULT["sticky_cookie"]
    queue_timeout: float = DEFAULT["queue_timeout"]
    max_queue: int = DEFAULT["max_queue"]


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

    backends: tuple[Backend, ...] = DEFAULT["backends"]
    connect_timeout: float = DEFAULT["connect_timeout"]
    read_timeout: float = DEFAULT["read_timeout"]
    client_timeout: float = DEFAULT["client_timeout"]
    client_min_rate: int = DEFAULT["client_min_rate"]
    max_body_size: int = DEFAULT["max_body_size"]
    trusted_proxies: tuple[IPNetwork, ...] = DEFAULT["trusted_proxies"]
    preserve_host: bool = DEFAULT["preserve_host"]
    pool_size: int = DEFAULT["pool_size"]
    backend_tls_verify: bool = DEFAULT["backend_tls_verify"]
    # An absolute path; empty: the system's trust store.
    backend_ca_bundle: str = DEFAULT["backend_ca_bundle"]
    demo: bool = DEFAULT["demo"]
    policy: str = DEFAULT["policy"]
    hash_key: str = DEFAULT["hash_key"]
    hash_balance_factor: float = DEFAULT["hash_balance_factor"]
    sticky_cookie: str = DEFAULT["sticky_cookie"]
    sticky_secret: str = field(default=DEFAULT["sticky_secret"], repr=False)
    max_conns: int = DEFAULT["max_conns"]
    queue_timeout: float = DEFAULT["queue_timeout"]
    max_queue: int = DEFAULT["max_queue"]
    max_fails: int = DEFAULT["max_fails"]
    fail_timeout: float = DEFAULT["fail_timeout"]
    health_check: bool = DEFAULT["health_check"]
    health_path: str = DEFAULT["health_path"]
    health_interval: float = DEFAULT["health_interval"]
    health_timeout: float = DEFAULT["health_timeout"]
    health_status: tuple[int, int] = DEFAULT["health_status"]
    health_rise: int = DEFAULT["health_rise"]
    health_fall: int = DEFAULT["health_fall"]
    retries: int = DEFAULT["retries"]
    retry_timeout: float = DEFAULT["retry_timeout"]
    retry_on_status: tuple[int, ...] = DEFAULT["retry_on_status"]
    eject_consecutive_5xx: int = DEFAULT["eject_consecutive_5xx"]
    eject_on_500: bool = DEFAULT["eject_on_500"]
    eject_time: float = DEFAULT["eject_time"]
    eject_max_time: float = DEFAULT["eject_max_time"]
    eject_max_percent: int = DEFAULT["eject_max_percent"]
    fail_open: bool = DEFAULT["fail_open"]
    slow_start: float = DEFAULT["slow_start"]
    admin_path: str = DEFAULT["admin_path"]
    admin_allow: tuple[IPNetwork, ...] = DEFAULT["admin_allow"]
    admin_token: str = field(default=DEFAULT["admin_token"], repr=False)
    ready_path: str = DEFAULT["ready_path"]  # empty: off
    live_path: str = DEFAULT["live_path"]  # empty: off
    state_file: str = DEFAULT["state_file"]  # an absolute path; empty: none
    upgrade_protocols: tuple[str, ...] = DEFAULT["upgrade_protocols"]  # lower case
    tunnel_timeout: float = DEFAULT["tunnel_timeout"]
    dns: DnsSource | None = DEFAULT["dns"]
    dns_srv: DnsSource | None = DEFAULT["dns_srv"]
    dns_scheme: str = DEFAULT["dns_scheme"]
    dns_slots: int = DEFAULT["dns_slots"]
    dns_resolver: tuple[str, int] | None = DEFAULT["dns_resolver"]  # None: the system's
    dns_interval: float = DEFAULT["dns_interval"]
    dns_timeout: float = DEFAULT["dns_timeout"]
    dns_allow_empty_start: bool = DEFAULT["dns_allow_empty_start"]
    # Empty: one pool, "default", of every backend (effective_pools).
    pools: tuple[Pool, ...] = DEFAULT["pools"]
    routes: tuple[Route, ...] = DEFAULT["routes"]
    extensions: tuple[str, ...] = DEFAULT["extensions"]
    # (extension, its options) pairs; options_for() looks one up.
    extension_options: tuple[tuple[str, dict[str, Any]], ...] = DEFAULT["extension_options"]
    # Each DNS source's slots in ``backends`` (made by load_config from dns/dns_srv).
    dns_groups: tuple[DnsGroup, ...] = ()
    # Where the settings came from, for messages only.
    sources: tuple[str, ...] = field(default=(), compare=False)

    def options_for(self, extension: str) -> dict[str, Any]:
        """The options of ``extension`` (a copy; empty when it has none)."""
        return dict(dict(self.extension_options).get(extension, {}))

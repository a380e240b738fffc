"""Settings: one frozen tree, read once in the master and validated there.

Settings come from a TOML file named by ``PREFORK_LB_CONFIG`` and from
``PREFORK_LB_*`` environment variables; a variable wins over the file. Every
setting is declared once (``settings_table.py``), with its parser (from
``values.py``), its default and its documentation; the tree's types are in
``settings_types.py``. This module reads the sources, resolves what each
backend and pool inherits, and checks what only the whole tree can tell.

A bad value raises ``ConfigError`` naming the setting and the value, before
gunicorn binds its socket. Workers never read the environment: they inherit
the validated ``Settings`` from the master.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from prefork_lb.backend_tables import BackendSpec, PoolSpec, parse_backend_address
from prefork_lb.dns import DnsSource
from prefork_lb.routes import Route
from prefork_lb.setting import CONFIG_FILE_ENV, ENV_PREFIX, Setting
from prefork_lb.settings_table import BY_ENV, BY_NAME, SETTINGS
from prefork_lb.settings_types import (
    Backend,
    DnsGroup,
    HealthCheck,
    Member,
    Pool,
    Settings,
)
from prefork_lb.values import ConfigError, IPNetwork, fail

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


def parse_backend_url(where: str, value: object) -> Backend:
    """Validate one backend base URL such as ``http://10.0.0.5:8080``: a backend of it."""
    address = parse_backend_address(where, value)
    return Backend(url=address.url, scheme=address.scheme, host=address.host, port=address.port)


def _listed(spec: BackendSpec) -> Backend:
    """The backend as listed: its address, weight, backup and name (the rest: defaults)."""
    address = spec.address
    return Backend(
        url=address.url,
        scheme=address.scheme,
        host=address.host,
        port=address.port,
        name=spec.name,
        weight=spec.weight,
        backup=spec.backup,
    )


def _resolve_backend(
    backend: Backend, settings: Settings, overrides: Mapping[str, Any] | None = None
) -> Backend:
    """The backend with every option final: its own override, else the global setting."""
    overrides = overrides or {}

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
        backend,
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
    return _resolve_backend(backend, settings)


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
        slots.append(_resolve_backend(template, own))
    return slots


def _resolve_pools(
    settings: Settings, default: tuple[BackendSpec, ...], specs: tuple[PoolSpec, ...]
) -> Settings:
    """One list of backends, each URL once, and the pools as indexes into it."""
    if default or settings.dns or settings.dns_srv:
        if any(spec.name == "default" for spec in specs):
            raise ConfigError(
                "pools.default: duplicate pool: the top-level backends are the pool 'default'"
            )
        specs = (PoolSpec("default", "backends", default), *specs)
    backends: list[Backend] = []
    first: dict[str, tuple[int, str]] = {}  # url -> (index, where first listed)
    pools = []
    groups: list[DnsGroup] = []
    for spec in specs:
        own = replace(settings, **dict(spec.options))
        members = []
        for i, backend_spec in enumerate(spec.backends):
            backend = _resolve_backend(_listed(backend_spec), own, dict(backend_spec.overrides))
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
            setting = BY_NAME.get(key)
            if setting is None:
                known = ", ".join(sorted(BY_NAME))
                raise ConfigError(f"{path}: unknown setting {key!r} (known: {known})")
            values[key] = setting.parse(f"{path}: {key}", raw)
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_ENV:
            continue
        setting = BY_ENV.get(name)
        if setting is None:
            known = ", ".join(sorted([*BY_ENV, CONFIG_FILE_ENV]))
            raise ConfigError(f"{name}: unknown setting (known: {known})")
        values[setting.name] = setting.parse(name, raw)
        sources.append(name)
    # Per-backend options are resolved last: only now are all the globals known.
    specs: tuple[BackendSpec, ...] = values.pop("backends", ())
    pool_specs: tuple[PoolSpec, ...] = values.pop("pools", ())
    settings = Settings(**values, sources=tuple(sources))
    if pool_specs:
        settings = _resolve_pools(settings, specs, pool_specs)
    elif settings.dns or settings.dns_srv:
        # The default pool alone: its slots follow its listed backends.
        settings = replace(_resolve_pools(settings, specs, ()), pools=())
    else:
        backends = tuple(
            _resolve_backend(_listed(spec), settings, dict(spec.overrides)) for spec in specs
        )
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

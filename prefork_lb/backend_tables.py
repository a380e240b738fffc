"""Backends and pools as written: ``[[backends]]``, ``[pools.NAME]`` and PREFORK_LB_BACKENDS.

Each backend is parsed and checked here, with the options it sets for itself
kept apart: the global settings it falls back on may come later in the file,
or from the environment, so ``config.load_config`` resolves them at the end.
The parsers of those options (the same as the settings', so the same rules
and messages) are passed in by ``settings_table.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from prefork_lb.dns import is_ip
from prefork_lb.values import ConfigError, fail, split_list

Parsers = Mapping[str, Callable[[str, object], Any]]

_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")
_POOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def authority(host: str, port: int) -> str:
    """``host:port`` as it belongs in a URL or a Host header (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class BackendAddress:
    """A backend's base URL, checked: ``scheme://host:port``, the port always given."""

    url: str
    scheme: str
    host: str
    port: int


def parse_backend_address(where: str, value: object) -> BackendAddress:
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
    if not _HOSTNAME.fullmatch(parts.hostname) and not is_ip(parts.hostname):
        raise fail(where, text, f"host {parts.hostname!r} is not a valid host name")
    if parts.username is not None or parts.password is not None:
        raise fail(where, text, "must not carry user info")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise fail(where, text, "must be scheme://host[:port] with no path, query or fragment")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    elif port == 0:
        raise fail(where, text, "port must be between 1 and 65535")
    url = f"{parts.scheme}://{authority(parts.hostname, port)}"
    return BackendAddress(url=url, scheme=parts.scheme, host=parts.hostname, port=port)


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """A backend as listed: its address, its own weight, backup and name, and the global
    settings it overrides for itself (parsed, not yet resolved)."""

    address: BackendAddress
    weight: int = 1
    backup: bool = False
    name: str = ""  # empty: its host:port
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def shown_name(self) -> str:
        """How extensions and messages name it."""
        return self.name or authority(self.address.host, self.address.port)


def _with_options(
    here: str, address: BackendAddress, options: Mapping[str, object], sep: str, parsers: Parsers
) -> BackendSpec:
    """Apply ``weight``, ``backup`` and ``name``; keep the (parsed) overrides of globals."""
    own: dict[str, Any] = {}
    overrides = []
    for key, raw in options.items():
        value = parsers[key](f"{here}{sep}{key}", raw)
        if key in ("weight", "backup", "name"):
            own[key] = value
        else:
            overrides.append((key, value))
    return BackendSpec(address, **own, overrides=tuple(overrides))


def _parse_item(here: str, item: str, parsers: Parsers) -> BackendSpec:
    """One item of PREFORK_LB_BACKENDS: a URL, then ``key=value`` words or ``backup``."""
    url, *words = item.split()
    address = parse_backend_address(here, url)
    options: dict[str, object] = {}
    for word in words:
        key, equals, raw = word.partition("=")
        if not equals and key == "backup":
            raw = "true"
        elif not equals:
            raise fail(here, item, f"option {word!r} must be key=value or backup")
        if key not in parsers:
            known = ", ".join(sorted(parsers))
            raise ConfigError(f"{here}: unknown option {key!r} (known: {known})")
        if key in options:
            raise fail(here, item, f"option {key!r} is given twice")
        options[key] = raw
    return _with_options(here, address, options, ": ", parsers)


def _parse_table(here: str, table: object, parsers: Parsers) -> BackendSpec:
    """One ``[[backends]]`` table of the file (or a plain URL string)."""
    if isinstance(table, str):
        return BackendSpec(parse_backend_address(here, table))
    if not isinstance(table, dict):
        raise fail(here, table, "must be a table with a url key")
    unknown = sorted(set(table) - {"url"} - set(parsers))
    if unknown:
        known = ", ".join(["url", *sorted(parsers)])
        raise ConfigError(f"{here}: unknown key {unknown[0]!r} (known keys: {known})")
    if "url" not in table:
        raise ConfigError(f"{here}: missing key 'url'")
    address = parse_backend_address(f"{here}.url", table["url"])
    options = {key: raw for key, raw in table.items() if key != "url"}
    return _with_options(here, address, options, ".", parsers)


def parse_backends(where: str, value: object, parsers: Parsers) -> tuple[BackendSpec, ...]:
    """A list of backends (the environment's comma-separated items, or the file's tables),
    each URL and each name once, not all of them backups; ``parsers`` for their options."""
    if isinstance(value, str):
        specs = tuple(
            _parse_item(f"{where}[{i}]", item, parsers)
            for i, item in enumerate(split_list(where, value))
        )
    elif isinstance(value, list):
        specs = tuple(_parse_table(f"{where}[{i}]", t, parsers) for i, t in enumerate(value))
    else:
        raise fail(where, value, "must be a list of [[backends]] tables")
    first_at: dict[str, int] = {}
    for i, spec in enumerate(specs):
        url = spec.address.url
        if url in first_at:
            raise fail(f"{where}[{i}]", url, f"backend already listed at [{first_at[url]}]")
        first_at[url] = i
    names = [spec.shown_name for spec in specs]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise fail(f"{where}[{i}]", name, "another backend already has this name")
    if specs and all(spec.backup for spec in specs):
        raise ConfigError(
            f"{where}: every backend is a backup; at least one must take traffic normally"
        )
    return specs


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A ``[pools.NAME]`` table as listed: its backends and the settings it sets for itself."""

    name: str
    where: str
    backends: tuple[BackendSpec, ...]
    options: tuple[tuple[str, Any], ...] = ()


def parse_pools(
    where: str, value: object, pool_parsers: Parsers, backend_parsers: Parsers
) -> tuple[PoolSpec, ...]:
    """The ``[pools.NAME]`` tables of the file (the environment has only the default pool);
    ``pool_parsers`` for the settings a pool may set for itself."""
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
        known = {"backends", *pool_parsers}
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
        backends = parse_backends(f"{here}.backends", table.get("backends", []), backend_parsers)
        options = tuple(
            (key, pool_parsers[key](f"{here}.{key}", raw))
            for key, raw in table.items()
            if key != "backends"
        )
        pools.append(PoolSpec(name, f"{here}.backends", backends, options))
    return tuple(pools)

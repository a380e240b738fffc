"""Settings: one frozen tree, read once in the master and validated there.

Settings come from a TOML file named by ``PREFORK_LB_CONFIG`` and from
``PREFORK_LB_*`` environment variables; a variable wins over the file. Every
setting is declared once in ``SETTINGS`` below, with its default and its
documentation; the README's settings table is checked against it.

A bad value raises ``ConfigError`` naming the setting and the value, before
gunicorn binds its socket. Workers never read the environment: they inherit
the validated ``Settings`` from the master.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "PREFORK_LB_"
CONFIG_FILE_ENV = "PREFORK_LB_CONFIG"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A setting has a value the balancer cannot run with; the message names both."""


@dataclass(frozen=True, slots=True)
class Backend:
    """One upstream server, addressed by its base URL (scheme, host and port only)."""

    url: str
    scheme: str
    host: str
    port: int

    @property
    def authority(self) -> str:
        """``host:port`` as it belongs in a Host header (IPv6 literals in brackets)."""
        return _authority(self.host, self.port)


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker needs to know, fixed for the life of the worker."""

    backends: tuple[Backend, ...] = ()
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    client_timeout: float = 60.0
    trusted_proxies: tuple[IPNetwork, ...] = ()
    preserve_host: bool = True
    pool_size: int = 64
    demo: bool = False
    # Where the settings came from, for messages only.
    sources: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Setting:
    """The declaration of one setting: its names, its parser and its documentation."""

    name: str
    parse: Callable[[str, object], Any]
    default_text: str
    doc: str

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return ENV_PREFIX + self.name.upper()


def _fail(where: str, value: object, expected: str) -> ConfigError:
    return ConfigError(f"{where}: {expected}, got {value!r}")


def _parse_seconds(where: str, value: object) -> float:
    # float() also reads non-ASCII digits ("١٢"); a setting is plain ASCII.
    plain = isinstance(value, int | float) or (isinstance(value, str) and value.isascii())
    try:
        seconds = float(value) if plain else math.nan  # type: ignore[arg-type]
    except ValueError:
        seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds <= 0:
        raise _fail(where, value, "must be a positive number of seconds")
    return seconds


def _parse_positive_int(where: str, value: object) -> int:
    if isinstance(value, bool):
        raise _fail(where, value, "must be a positive whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value)
    else:
        raise _fail(where, value, "must be a positive whole number")
    if number < 1:
        raise _fail(where, value, "must be a positive whole number")
    return number


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(where: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _fail(where, value, "must be true or false (1/0, yes/no, on/off)")


def _split_list(where: str, value: object) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value]
    raise _fail(where, value, "must be a list of strings (comma-separated in the environment)")


def _parse_networks(where: str, value: object) -> tuple[IPNetwork, ...]:
    networks = []
    for item in _split_list(where, value):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise _fail(where, item, "must be IP addresses or CIDR networks") from None
    return tuple(networks)


def parse_backend_url(where: str, value: object) -> Backend:
    """Validate one backend base URL such as ``http://10.0.0.5:8080``."""
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, value, "a backend must be a URL such as http://127.0.0.1:9001")
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise _fail(where, text, "is not a valid URL (bad port or brackets?)") from None
    if parts.scheme not in ("http", "https"):
        raise _fail(where, text, f"unsupported scheme {parts.scheme!r}: use http or https")
    if not parts.hostname:
        raise _fail(where, text, "has no host")
    if not _HOSTNAME.fullmatch(parts.hostname) and not _is_ip(parts.hostname):
        raise _fail(where, text, f"host {parts.hostname!r} is not a valid host name")
    if parts.username is not None or parts.password is not None:
        raise _fail(where, text, "must not carry user info")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _fail(where, text, "must be scheme://host[:port] with no path, query or fragment")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    elif port == 0:
        raise _fail(where, text, "port must be between 1 and 65535")
    url = f"{parts.scheme}://{_authority(parts.hostname, port)}"
    return Backend(url=url, scheme=parts.scheme, host=parts.hostname, port=port)


_BACKEND_KEYS = frozenset({"url"})
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _parse_backends(where: str, value: object) -> tuple[Backend, ...]:
    if isinstance(value, str):
        return tuple(
            parse_backend_url(f"{where}[{i}]", item)
            for i, item in enumerate(_split_list(where, value))
        )
    if not isinstance(value, list):
        raise _fail(where, value, "must be a list of [[backends]] tables")
    backends = []
    for i, table in enumerate(value):
        here = f"{where}[{i}]"
        if isinstance(table, str):
            backends.append(parse_backend_url(here, table))
            continue
        if not isinstance(table, dict):
            raise _fail(here, table, "must be a table with a url key")
        unknown = sorted(set(table) - _BACKEND_KEYS)
        if unknown:
            known = ", ".join(sorted(_BACKEND_KEYS))
            raise ConfigError(f"{here}: unknown key {unknown[0]!r} (known keys: {known})")
        if "url" not in table:
            raise ConfigError(f"{here}: missing key 'url'")
        backends.append(parse_backend_url(f"{here}.url", table["url"]))
    return tuple(backends)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "backends",
        _parse_backends,
        "(none)",
        "Backend base URLs, ``http://host:port`` or ``https://host:port``. "
        "Comma-separated in the environment; ``[[backends]]`` tables with a ``url`` "
        "key in the file.",
    ),
    Setting(
        "connect_timeout",
        _parse_seconds,
        "5",
        "Seconds to wait for a backend to accept a connection before answering 504.",
    ),
    Setting(
        "read_timeout",
        _parse_seconds,
        "60",
        "Seconds a backend may stay silent (before its response, or between two reads "
        "of it) before the balancer answers 504 or aborts the response.",
    ),
    Setting(
        "client_timeout",
        _parse_seconds,
        "60",
        "Seconds a client may stay silent (send nothing at all) while sending its "
        "request body before the balancer answers 408 and closes the backend connection.",
    ),
    Setting(
        "trusted_proxies",
        _parse_networks,
        "(none)",
        "Addresses or CIDR networks of proxies in front of the balancer whose "
        "forwarding headers are kept (``X-Forwarded-For`` is extended with their "
        "address). From anyone else ``X-Forwarded-*``, ``Forwarded`` and ``X-Real-IP`` "
        "are replaced.",
    ),
    Setting(
        "preserve_host",
        _parse_bool,
        "true",
        "Forward the client's ``Host`` header. When false, send the backend's own "
        "``host:port`` instead (the client's host still goes in ``X-Forwarded-Host``).",
    ),
    Setting(
        "pool_size",
        _parse_positive_int,
        "64",
        "Idle keep-alive connections each worker keeps open to each backend.",
    ),
    Setting(
        "demo",
        _parse_bool,
        "false",
        "When no backends are configured, start three built-in demo backends that "
        "answer with their own name (``scripts/serve`` turns this on).",
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}
_BY_ENV = {setting.env: setting for setting in SETTINGS}


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as err:
        raise ConfigError(f"{CONFIG_FILE_ENV}: cannot read {path!r}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{CONFIG_FILE_ENV}: {path!r} is not valid TOML: {err}") from None


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
    settings = Settings(**values, sources=tuple(sources))
    if not settings.backends and not settings.demo:
        raise ConfigError(
            "no backends configured: set PREFORK_LB_BACKENDS=http://host:port,... or "
            "PREFORK_LB_CONFIG=/path/to/config.toml (or PREFORK_LB_DEMO=1 for demo backends)"
        )
    return settings

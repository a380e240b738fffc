"""Parsers for the values of settings: text (or TOML values) in, typed values out.

Each parser takes ``where`` (the setting's name as the user wrote it, for
the message) and the raw value, and returns the typed value or raises
``ConfigError`` naming both. ``config.SETTINGS`` pairs each setting with one.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import ssl

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A setting has a value the balancer cannot run with; the message names both."""


def fail(where: str, value: object, expected: str) -> ConfigError:
    return ConfigError(f"{where}: {expected}, got {value!r}")


def _to_seconds(value: object) -> float:
    # float() also reads non-ASCII digits ("١٢"); a setting is plain ASCII.
    plain = isinstance(value, int | float) or (isinstance(value, str) and value.isascii())
    if isinstance(value, bool) or not plain:
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except ValueError:
        return math.nan


def parse_seconds(where: str, value: object) -> float:
    seconds = _to_seconds(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise fail(where, value, "must be a positive number of seconds")
    return seconds


def parse_seconds_or_zero(where: str, value: object) -> float:
    seconds = _to_seconds(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise fail(where, value, "must be a number of seconds, 0 or more")
    return seconds


def _to_whole(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    return None


def parse_positive_int(where: str, value: object) -> int:
    number = _to_whole(value)
    if number is None or number < 1:
        raise fail(where, value, "must be a positive whole number")
    return number


def parse_count(where: str, value: object) -> int:
    number = _to_whole(value)
    if number is None or number < 0:
        raise fail(where, value, "must be a whole number, 0 or more")
    return number


def parse_percent(where: str, value: object) -> int:
    number = _to_whole(value)
    if number is None or not 0 <= number <= 100:
        raise fail(where, value, "must be a whole number from 0 to 100")
    return number


def parse_retry_statuses(where: str, value: object) -> tuple[int, ...]:
    """Response statuses (500 to 599) after which a request may be tried elsewhere."""
    items = value if isinstance(value, list) else split_list(where, value)
    statuses = []
    for item in items:
        number = _to_whole(item)
        if number is None or not 500 <= number <= 599:
            raise fail(where, value, "must be a list of statuses from 500 to 599, e.g. 502, 503")
        statuses.append(number)
    return tuple(sorted(set(statuses)))


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE = re.compile(r"([0-9]+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE | re.ASCII)


def parse_size(where: str, value: object) -> int:
    """A byte count, whole, with an optional binary unit: ``512``, ``64k``, ``10m``, ``1g``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise fail(where, value, "must be a size in bytes, 0 or more (as 512, 64k, 10m or 1g)")
    return int(match[1]) * _SIZE_UNITS[match[2].lower()]


def parse_weight(where: str, value: object) -> int:
    number = _to_whole(value)
    if number is None or not 1 <= number <= 1000:
        raise fail(where, value, "must be a whole number from 1 to 1000")
    return number


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(where: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise fail(where, value, "must be true or false (1/0, yes/no, on/off)")


def split_list(where: str, value: object) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value]
    raise fail(where, value, "must be a list of strings (comma-separated in the environment)")


def parse_networks(where: str, value: object) -> tuple[IPNetwork, ...]:
    networks = []
    for item in split_list(where, value):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise fail(where, item, "must be IP addresses or CIDR networks") from None
    return tuple(networks)


# An Upgrade protocol name (RFC 9110 section 7.8): a token, without a "/version".
_PROTOCOL = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_protocols(where: str, value: object) -> tuple[str, ...]:
    """Upgrade protocol names, lower case (they match case-insensitively), each once."""
    protocols: list[str] = []
    for item in split_list(where, value):
        if not _PROTOCOL.fullmatch(item):
            raise fail(where, item, "must be protocol names such as websocket")
        if item.lower() not in protocols:
            protocols.append(item.lower())
    return tuple(protocols)


POLICIES = ("round_robin", "least_conn", "hash")


def parse_policy(where: str, value: object) -> str:
    if isinstance(value, str) and value.strip() in POLICIES:
        return value.strip()
    raise fail(where, value, f"must be one of {', '.join(POLICIES)}")


_HASH_KEY = re.compile(r"ip|path|(?:header|cookie|query):[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_hash_key(where: str, value: object) -> str:
    """What ``policy = "hash"`` hashes on: ip, path, header:NAME, cookie:NAME or query:NAME."""
    if isinstance(value, str) and _HASH_KEY.fullmatch(value.strip()):
        return value.strip()
    raise fail(where, value, "must be ip, path, header:NAME, cookie:NAME or query:NAME")


def parse_balance_factor(where: str, value: object) -> float:
    """0 (off), or a factor of at least 1 over the average load."""
    number = _to_seconds(value)
    if number == 0 or 1 <= number <= 100:
        return number
    raise fail(where, value, "must be 0 (off) or a number from 1 to 100, such as 1.25")


_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_cookie_name(where: str, value: object) -> str:
    """A cookie name (an HTTP token), or empty for none."""
    if isinstance(value, str) and (not value.strip() or _COOKIE_NAME.fullmatch(value.strip())):
        return value.strip()
    raise fail(where, value, "must be a cookie name (letters, digits, !#$%&'*+-.^_`|~)")


def parse_secret(where: str, value: object) -> str:
    """A secret of at least 16 characters, or empty (one is made at start)."""
    if isinstance(value, str) and (not value or len(value) >= 16):
        return value
    # The value itself stays out of the message: it is a secret.
    raise ConfigError(f"{where}: must be at least 16 characters (or empty)")


# A request-target in origin form: no spaces or controls, and no "#", which
# HTTP does not allow in a target at all.
_HEALTH_PATH = re.compile(r"/[!-~]*")


def parse_health_path(where: str, value: object) -> str:
    path = value.strip() if isinstance(value, str) else ""
    if not _HEALTH_PATH.fullmatch(path) or "#" in path:
        raise fail(where, value, "must be a path starting with / (printable ASCII, no spaces or #)")
    return path


_STATUS_RANGE = re.compile(r"([0-9]{3})(?:\s*-\s*([0-9]{3}))?")


def parse_status_range(where: str, value: object) -> tuple[int, int]:
    expected = "must be a status or an inclusive range such as 200-399, within 100-599"
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, str) and (match := _STATUS_RANGE.fullmatch(value.strip())):
        low = int(match[1])
        high = int(match[2] or match[1])
    else:
        raise fail(where, value, expected)
    if not 100 <= low <= high <= 599:
        raise fail(where, value, expected)
    return low, high


def parse_admin_path(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise fail(where, value, 'must be a path such as /_prefork_lb, or "off"')
    text = value.strip()
    if text.lower() in ("", "off"):
        return ""
    path = text.rstrip("/")
    if not _HEALTH_PATH.fullmatch(path) or "?" in path or "#" in path:
        raise fail(where, value, 'must be a path such as /_prefork_lb (no "?" or "#"), or "off"')
    return path


def parse_probe_path(where: str, value: object) -> str:
    """The exact path of a probe endpoint (``ready_path``, ``live_path``); empty: off."""
    if not isinstance(value, str):
        raise fail(where, value, 'must be a path such as /_prefork_lb/ready, or "off"')
    text = value.strip()
    if text.lower() in ("", "off"):
        return ""
    if not _HEALTH_PATH.fullmatch(text) or "?" in text or "#" in text:
        raise fail(
            where, value, 'must be a path such as /_prefork_lb/ready (no "?" or "#"), or "off"'
        )
    return text


def parse_ca_bundle(where: str, value: object) -> str:
    """A readable PEM file of CA certificates, as an absolute path; empty: the system's."""
    if not isinstance(value, str):
        raise fail(where, value, "must be the path of a PEM file of CA certificates")
    path = value.strip()
    if not path:
        return ""
    path = os.path.abspath(path)
    try:
        # Loaded once here so that a missing, unreadable or malformed bundle
        # stops the master, not every TLS connection of every worker.
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as err:
        reason = f"not a PEM file of CA certificates ({err.reason or err})"
    except OSError as err:
        reason = (err.strerror or str(err)).lower()
    else:
        return path
    raise ConfigError(f"{where}: cannot load the CA bundle {path!r}: {reason}")


def parse_admin_token(where: str, value: object) -> str:
    """A bearer token of at least 16 printable characters, or empty (writes refused)."""
    if isinstance(value, str) and (not value or _TOKEN.fullmatch(value)):
        return value
    raise ConfigError(f"{where}: must be 16 or more printable ASCII characters without spaces")


_TOKEN = re.compile(r"[!-~]{16,}")


def parse_state_file(where: str, value: object) -> str:
    """The path of the runtime state file, made absolute; empty: none."""
    if not isinstance(value, str):
        raise fail(where, value, "must be a file path")
    path = value.strip()
    return os.path.abspath(path) if path else ""


_BACKEND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\[\]-]{0,63}")


def parse_backend_name(where: str, value: object) -> str:
    if isinstance(value, str) and _BACKEND_NAME.fullmatch(value.strip()):
        return value.strip()
    raise fail(where, value, "must be 1 to 64 letters, digits, '.', '_', ':', '-'")


_EXTENSION = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", re.ASCII)


def parse_extensions(where: str, value: object) -> tuple[str, ...]:
    names = split_list(where, value)
    for name in names:
        if not _EXTENSION.fullmatch(name):
            raise fail(where, name, "each extension must be module:attribute")
    if len(set(names)) != len(names):
        raise fail(where, value, "an extension is listed twice")
    return tuple(names)


def parse_extension_options(where: str, value: object) -> tuple[tuple[str, dict[str, object]], ...]:
    # In the environment: a JSON object of objects; in the file: TOML tables.
    if isinstance(value, str) and not value.strip():
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise fail(where, value, "must be a JSON object in the environment") from None
    if not isinstance(value, dict) or not all(
        isinstance(options, dict) for options in value.values()
    ):
        raise fail(where, value, 'must be tables named by extension ("module:attribute")')
    return tuple((str(name), dict(options)) for name, options in value.items())


def parse_scheme(where: str, value: object) -> str:
    """``http`` or ``https``."""
    if isinstance(value, str) and value.strip().lower() in ("http", "https"):
        return value.strip().lower()
    raise fail(where, value, "must be http or https")


def parse_dns_slots(where: str, value: object) -> int:
    """How many addresses one DNS source can hold: 1 to 1024."""
    number = _to_whole(value)
    if number is None or not 1 <= number <= 1024:
        raise fail(where, value, "must be a whole number from 1 to 1024")
    return number

"""Backends found through DNS, the pure part: names, answers, and the last good set.

What a user names (``dns = "name:port"``, ``dns_srv = "_http._tcp.name"``,
``dns_resolver = "host:port"``) is parsed here in the style of ``values.py``:
``(where, value)`` in, a typed value out, or ``ConfigError`` naming both.
What a resolver found becomes a ``Resolution``: addresses keyed by
``ip:port``, sorted, each once, and the smallest TTL among the records used.

Every rule of the "last good set" lives in ``follow`` (STYLE.md rule 2):

==============================  ============================  =====================
result                          the set                       log line
==============================  ============================  =====================
addresses, same as before       kept                          only on recovery
addresses, different            replaced                      "+new, -gone, ~changed"
no addresses (empty answer)     kept (the failure ``empty``)  first of its kind
``DnsFailure(reason)``          kept                          first of its kind
==============================  ============================  =====================

A failure never empties a set: a DNS hiccup must not become an empty pool.
The caller counts every failure in a metric; the log line comes once per
change, not once per interval. No I/O and no clock here: ``resolver.py``
asks the DNS, the caller decides when.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple, get_args

from prefork_lb.values import fail

__all__ = [
    "REASONS",
    "Address",
    "DnsFailure",
    "DnsSource",
    "DnsState",
    "Reason",
    "Resolution",
    "SrvRecord",
    "follow",
    "make_resolution",
    "next_delay",
    "parse_dns",
    "parse_dns_srv",
    "parse_resolver",
    "retry_delay",
    "srv_addresses",
]

Reason = Literal["nxdomain", "timeout", "empty", "servfail", "refused", "error"]
REASONS: tuple[Reason, ...] = get_args(Reason)

# SRV weights are 0..65535 (RFC 2782); a backend's weight is 1..1000 (values.parse_weight).
MAX_WEIGHT = 1000


@dataclass(frozen=True, slots=True)
class DnsSource:
    """Where a pool's addresses come from: A/AAAA records of ``name`` on ``port``, or SRV."""

    kind: Literal["a", "srv"]
    name: str
    port: int  # 0 for "srv": each record names its own

    @property
    def label(self) -> str:
        """What the user wrote, for logs, metrics and the status page."""
        if self.kind == "srv":
            return self.name
        return _authority(self.name, self.port)


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """One address found: a backend keyed by ``ip:port``."""

    ip: str  # normalised text form (ipaddress's)
    port: int
    weight: int = 1
    backup: bool = False

    @property
    def key(self) -> str:
        """``ip:port``, or ``[ip]:port`` for IPv6: the backend's identity."""
        return _authority(self.ip, self.port)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What one resolve found: its addresses (sorted, each key once) and their smallest TTL."""

    addresses: tuple[Address, ...]
    ttl: float


class DnsFailure(Exception):
    """A resolve that found nothing usable; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason: Reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason} ({self.detail})" if self.detail else self.reason


class SrvRecord(NamedTuple):
    """One SRV record's data (RFC 2782), the target's name without a trailing dot."""

    priority: int
    weight: int
    port: int
    target: str


# --- parsing what the user wrote ---------------------------------------------------------------

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)", re.ASCII)
_SERVICE_LABEL = re.compile(r"_[A-Za-z0-9-]{1,62}", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
_NOT_A_HOST = (
    "is not a hostname or an IP address (a hostname is labels of letters, digits, '-' and '_' "
    "of up to 63 characters, a non-ASCII one in its xn-- form)"
)


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_hostname(name: str) -> bool:
    """A DNS name of letters, digits, '-' and '_' (labels of 1 to 63), an optional final dot."""
    bare = name[:-1] if name.endswith(".") else name
    return 0 < len(bare) <= 253 and all(_LABEL.fullmatch(label) for label in bare.split("."))


def _is_host(host: str, *, bracketed: bool) -> bool:
    """A hostname or an IPv4 literal, or (and only within brackets) an IPv6 literal."""
    if bracketed or ":" in host:
        return bracketed and ":" in host and is_ip(host)
    # A name whose last label is all digits is a mistyped IPv4 address, not a hostname.
    last = host.rstrip(".").rsplit(".", 1)[-1]
    return is_ip(host) or (_is_hostname(host) and not last.isdigit())


def is_ip(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address literal."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _split_host_port(text: str) -> tuple[str, str | None]:
    """``host:port`` or ``[v6]:port`` into host and port text; a bare IPv6 literal has no port."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return "", None
        return host, rest[1:] if rest else None
    if text.count(":") > 1:  # an IPv6 literal without brackets cannot carry a port
        return text, None
    host, colon, port = text.rpartition(":")
    return (host, port) if colon else (text, None)


def _port(port: str | None) -> int | None:
    if port is None or not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        return None
    return int(port)


def parse_dns(where: str, value: object) -> DnsSource | None:
    """``name:port`` (A/AAAA records of a hostname, or an IP literal); empty: none."""
    text = value.strip() if isinstance(value, str) else None
    if text == "":
        return None
    expected = "must be name:port, such as backends.internal:8080 ([v6]:port for IPv6)"
    if text is None:
        raise fail(where, value, expected)
    host, port_text = _split_host_port(text)
    if port_text is None:
        raise fail(where, value, expected)
    port = _port(port_text)
    if port is None:
        raise fail(where, value, "the port must be a whole number from 1 to 65535")
    if not _is_host(host, bracketed=text.startswith("[")):
        raise fail(where, value, f"{host!r} {_NOT_A_HOST}")
    return DnsSource("a", host, port)


def parse_dns_srv(where: str, value: object) -> DnsSource | None:
    """``_service._proto.name`` (SRV records); empty: none."""
    text = value.strip() if isinstance(value, str) else None
    if text == "":
        return None
    labels = text.split(".") if text is not None else []
    if (
        text is None
        or len(labels) < 3
        or not all(_SERVICE_LABEL.fullmatch(label) for label in labels[:2])
        or not _is_hostname(".".join(labels[2:]))
    ):
        raise fail(where, value, "must be an SRV name _service._proto.name, such as _http._tcp.api")
    return DnsSource("srv", text, 0)


def parse_resolver(where: str, value: object) -> tuple[str, int] | None:
    """A DNS server as ``ip:port``, ``[v6]:port`` or a bare IP (port 53); empty: the system's."""
    text = value.strip() if isinstance(value, str) else None
    if text == "":
        return None
    expected = "must be an IP address with an optional port, such as 10.0.0.2:53 or [fd00::2]:53"
    if text is None:
        raise fail(where, value, expected)
    host, port_text = _split_host_port(text)
    port = 53 if port_text is None else _port(port_text)
    if port is None:
        raise fail(where, value, "the port must be a whole number from 1 to 65535")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        why = " (not a hostname: that would need DNS itself)" if _is_hostname(host) else ""
        raise fail(where, value, expected + why) from None
    return ip.compressed, port


# --- answers -----------------------------------------------------------------------------------


def _sort_key(address: Address) -> tuple[int, int, int, int, bool]:
    ip = ipaddress.ip_address(address.ip)
    return ip.version, int(ip), address.port, -address.weight, address.backup


def _preferred(address: Address) -> tuple[bool, int]:
    """Which of two addresses with one key stays: a primary over a backup, then the heavier."""
    return not address.backup, address.weight


def make_resolution(addresses: Iterable[Address], ttl: float) -> Resolution:
    """A ``Resolution``: IPs normalised, one address per key (the preferred), sorted by IP."""
    chosen: dict[str, Address] = {}
    for found in addresses:
        address = replace(found, ip=ipaddress.ip_address(found.ip).compressed)
        kept = chosen.get(address.key)
        if kept is None or _preferred(address) > _preferred(kept):
            chosen[address.key] = address
    return Resolution(tuple(sorted(chosen.values(), key=_sort_key)), ttl)


def srv_addresses(
    records: Iterable[SrvRecord | tuple[int, int, int, str]], targets: Mapping[str, Sequence[str]]
) -> tuple[Address, ...]:
    """Addresses from SRV records (priority, weight, port, target) and the IPs of each target.

    The lowest priority number found is the primary set; any higher number is
    a backup (used when no primary is usable). The SRV weight becomes the
    backend's weight clamped to 1..1000: a weight of 0 (RFC 2782: "very small
    chance of being selected") becomes 1, the smallest share a backend has
    here, since a weight of 0 would never be picked at all. A target of "."
    means "no service" and gives no address; ``targets`` is keyed by name in
    lower case without the final dot. Duplicate ``ip:port``: the primary,
    then the heaviest, stays.
    """
    usable = [SrvRecord(*record) for record in records if record[3].rstrip(".")]
    if not usable:
        return ()
    primary = min(record.priority for record in usable)
    found = [
        Address(ip, record.port, min(max(record.weight, 1), MAX_WEIGHT), record.priority > primary)
        for record in usable
        for ip in targets.get(record.target.rstrip(".").lower(), ())
    ]
    return make_resolution(found, 0).addresses


def next_delay(ttl: float, interval: float) -> float:
    """Seconds until the next resolve: the TTL, at least 1 s, at most ``interval``.

    The floor keeps a TTL of 0 from becoming a busy loop; an ``interval``
    below 1 s is the operator's own choice and wins.
    """
    return min(max(ttl, 1.0), interval)


def retry_delay(failures: int, interval: float) -> float:
    """Seconds until the next try after ``failures`` failed resolves in a row (1 or more).

    1 s, doubling with each failure, at most ``interval`` (HAProxy's resolvers
    retry sooner than they re-resolve a good answer); a success ends the run,
    and the TTL of its records counts again (``next_delay``). So a DNS server
    that comes back is asked again within seconds, whatever the last TTL was,
    and one that stays down is asked once per ``interval``.
    """
    return min(2.0 ** min(max(failures, 1) - 1, 32), interval)


# --- the last good set -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DnsState:
    """What one name resolves to as far as the balancer knows, and the failure it is in."""

    label: str
    addresses: tuple[Address, ...] = ()
    failing: Reason | None = None  # the failure last logged; None once a resolve succeeds


def _changes(before: tuple[Address, ...], after: tuple[Address, ...]) -> str:
    old = {address.key: address for address in before}
    new = {address.key: address for address in after}
    parts = [f"+{key}" for key in new if key not in old]
    parts += [f"-{key}" for key in old if key not in new]
    parts += [f"~{key}" for key in new if key in old and new[key] != old[key]]
    return ", ".join(parts)


def _count(addresses: tuple[Address, ...]) -> str:
    return f"{len(addresses)} address" + ("" if len(addresses) == 1 else "es")


def follow(previous: DnsState, result: Resolution | DnsFailure) -> tuple[DnsState, str | None]:
    """The state after a resolve, and the line to log if the situation changed (else None)."""
    if isinstance(result, Resolution) and not result.addresses:
        result = DnsFailure("empty", "no addresses in the answer")
    if isinstance(result, DnsFailure):
        if previous.failing == result.reason:
            return previous, None
        kept = (
            f"keeping the last {_count(previous.addresses)}"
            if previous.addresses
            else "no addresses yet"
        )
        return replace(previous, failing=result.reason), f"dns {previous.label}: {result}; {kept}"
    changes = _changes(previous.addresses, result.addresses)
    state = DnsState(previous.label, result.addresses)
    again = "resolves again, " if previous.failing else ""
    if changes:
        return state, f"dns {previous.label}: {again}{_count(result.addresses)} ({changes})"
    if again:
        return state, f"dns {previous.label}: {again}{_count(result.addresses)} (unchanged)"
    return state, None

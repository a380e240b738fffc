"""Header rewriting in both directions: pure functions over lists of (name, value).

Lists, not dicts: repeated fields stay separate lines in their order, which
matters for Set-Cookie and Cookie. Hop-by-hop fields (RFC 9110 section 7.6.1)
are dropped both ways, including every field the Connection header names;
gunicorn drops only some of them from responses. The balancer also decides
the upstream framing itself, so the client's Content-Length and
Transfer-Encoding never reach a backend as sent.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from prefork_lb.config import IPNetwork
from prefork_lb.errors import BadBackendResponse
from prefork_lb.request import ProxyRequest

Headers = list[tuple[str, str]]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
# Answered or decided by the balancer itself, never forwarded as the client sent them.
_REQUEST_DECIDED = frozenset({"expect", "content-length", "host"})
# Forwarding information a client could forge; kept only from trusted proxies.
FORWARDED_FIELDS = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
    }
)
VIA_PSEUDONYM = "prefork_lb"
REQUEST_ID = "X-Request-ID"
# A request id worth passing on: visible ASCII, short enough for a log line.
_REQUEST_ID = re.compile(r"[!-~]{1,200}")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Field values: visible ASCII, obs-text, space and tab; no CR, LF, NUL or other controls.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_DIGITS = re.compile(r"[0-9]+")
_canonical_cache: dict[str, str] = {}


def canonical_name(name: str) -> str:
    """Spell a field name the usual way: gunicorn hands them over upper-cased."""
    spelled = _canonical_cache.get(name)
    if spelled is None:
        spelled = "-".join(part.capitalize() for part in name.split("-"))
        if len(_canonical_cache) < 4096:
            _canonical_cache[name] = spelled
    return spelled


def connection_options(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The field names a Connection header lists (lower case): hop-by-hop for this hop only."""
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(option.strip().lower() for option in value.split(","))
    named.discard("")
    return frozenset(named)


def strip_hop_by_hop(headers: Iterable[tuple[str, str]]) -> Headers:
    """Drop hop-by-hop fields and every field the Connection header names."""
    headers = list(headers)
    dropped = HOP_BY_HOP | connection_options(headers)
    return [(name, value) for name, value in headers if name.lower() not in dropped]


def address_in(client_addr: str, networks: Iterable[IPNetwork]) -> bool:
    """Whether the client's address is in one of ``networks`` (a Unix socket peer never is).

    A server bound to ``[::]`` sees IPv4 clients as ``::ffff:a.b.c.d``; they
    are matched as the IPv4 address they are.
    """
    try:
        address = ipaddress.ip_address(client_addr)
    except ValueError:
        return False  # a Unix socket peer, or no address at all
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class AddressSet:
    """Configured networks, with the answer for each client address remembered."""

    _REMEMBERED = 10_000

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self._networks = tuple(networks)
        self._seen: dict[str, bool] = {}

    def __contains__(self, client_addr: object) -> bool:
        if not isinstance(client_addr, str):
            return False
        found = self._seen.get(client_addr)
        if found is None:
            found = address_in(client_addr, self._networks)
            if len(self._seen) < self._REMEMBERED:
                self._seen[client_addr] = found
        return found


def _values(headers: Headers, field: str) -> list[str]:
    return [value for name, value in headers if name.lower() == field]


def client_request_id(headers: Iterable[tuple[str, str]]) -> str | None:
    """The client's X-Request-ID, if it sent exactly one that is fit to pass on."""
    ids = [value for name, value in headers if name.lower() == "x-request-id"]
    if len(ids) == 1 and _REQUEST_ID.fullmatch(ids[0]):
        return ids[0]
    return None


def upstream_request_headers(
    request: ProxyRequest,
    *,
    trusted: bool,
    preserve_host: bool,
    backend_authority: str,
    request_id: str,
) -> Headers:
    """The header lines to send a backend for this request.

    From an untrusted client, forwarding fields are replaced; from a trusted
    proxy, X-Forwarded-For is extended and the others are kept. The backend
    gets exactly one X-Request-ID: ``request_id``.
    """
    received = strip_hop_by_hop(request.headers)
    client_host = request.target.authority
    if client_host is None:
        # From the lines as sent: a Connection header naming Host must not drop it.
        hosts = _values(request.headers, "host")
        client_host = hosts[0] if hosts else None
    dropped = _REQUEST_DECIDED if trusted else _REQUEST_DECIDED | FORWARDED_FIELDS
    kept = [(name, value) for name, value in received if name.lower() not in dropped]
    forwarded_for = [*_values(received, "x-forwarded-for"), request.client_addr]
    proto = _values(received, "x-forwarded-proto") if trusted else []
    forwarded_host = _values(received, "x-forwarded-host") if trusted else []
    via = [*_values(received, "via"), f"{request.version} {VIA_PSEUDONYM}"]

    out: Headers = []
    host = client_host if preserve_host and client_host else backend_authority
    out.append(("Host", host))
    for name, value in kept:
        if name.lower() not in _SET_BELOW:
            out.append((name, value))
    out.append(("X-Forwarded-For", ", ".join(forwarded_for if trusted else forwarded_for[-1:])))
    out.append(("X-Forwarded-Proto", proto[0] if proto else request.scheme))
    if forwarded_host or client_host:
        out.append(("X-Forwarded-Host", forwarded_host[0] if forwarded_host else str(client_host)))
    out.append(("Via", ", ".join(via)))
    out.append((REQUEST_ID, request_id))
    if request.content_length is not None and not request.chunked:
        out.append(("Content-Length", str(request.content_length)))
    return out


_SET_BELOW = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via", "x-request-id"}
)


def response_head(
    status: int, reason: str, headers: Iterable[tuple[str, str]], *, version: str, chunked: bool
) -> tuple[str, Headers]:
    """Check a backend's response head and rewrite it for the client.

    Raises BadBackendResponse for anything a client must not be handed: an
    interim (1xx) status as the final answer, control characters, invalid
    field names, conflicting Content-Length values, or Content-Length together
    with chunked Transfer-Encoding (a framing conflict, RFC 9112 section 6.3).
    """
    if not 200 <= status <= 599:
        raise BadBackendResponse(f"status {status} is not a final response status")
    if not _FIELD_VALUE.fullmatch(reason):
        raise BadBackendResponse(f"reason phrase {reason!r} has control characters")
    headers = list(headers)
    lengths: set[str] = set()
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise BadBackendResponse(f"invalid header name {name!r}")
        if not _FIELD_VALUE.fullmatch(value):
            raise BadBackendResponse(f"header {name!r} has control characters in its value")
        if name.lower() == "content-length":
            lengths.update(item.strip() for item in value.split(","))
    if lengths and (len(lengths) > 1 or not _DIGITS.fullmatch(next(iter(lengths)))):
        raise BadBackendResponse(f"invalid or conflicting Content-Length {sorted(lengths)}")
    codings = [
        token.strip().lower()
        for name, value in headers
        if name.lower() == "transfer-encoding"
        for token in value.split(",")
    ]
    if codings and codings != ["chunked"]:
        # http.client reads anything but plain "chunked" up to the close, framing and all.
        raise BadBackendResponse(f"unsupported Transfer-Encoding {', '.join(codings)!r}")
    if lengths and (chunked or codings):
        raise BadBackendResponse("both Content-Length and Transfer-Encoding: chunked")

    out = [
        (name, value)
        for name, value in strip_hop_by_hop(headers)
        if name.lower() not in ("content-length", "via")
    ]
    if lengths:
        out.append(("Content-Length", lengths.pop()))
    via = [*_values(headers, "via"), f"{version} {VIA_PSEUDONYM}"]
    out.append(("Via", ", ".join(via)))
    # RFC 9112 section 4: the space after the code stays even when the reason is empty.
    return f"{status} {reason}", out

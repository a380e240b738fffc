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

# A field name or method (RFC 9110 section 5.6.2 token).
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Field values: visible ASCII, obs-text, space and tab; no CR, LF, NUL or other controls.
FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
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


def upgrade_offer(request: ProxyRequest, protocols: Iterable[str]) -> str | None:
    """The ``Upgrade`` value to forward if the request asks to switch to one of ``protocols``.

    The request must say ``Connection: upgrade`` and carry no body, over
    HTTP/1.1; of the protocols its ``Upgrade`` lists (``name[/version]``,
    names matched case-insensitively), those in ``protocols`` are kept, as
    the client spelled them. None: the request is an ordinary one, and its
    Upgrade is stripped as hop-by-hop.
    """
    if request.version != "1.1" or request.has_body:
        return None
    if "upgrade" not in connection_options(request.headers):
        return None
    allowed = frozenset(protocols)
    offered = [
        token.strip()
        for value in _values(request.headers, "upgrade")
        for token in value.split(",")
        if token.strip().partition("/")[0].lower() in allowed
    ]
    return ", ".join(offered) if offered else None


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
    upgrade: str | None = None,
) -> Headers:
    """The header lines to send a backend for this request.

    From an untrusted client, forwarding fields are replaced; from a trusted
    proxy, X-Forwarded-For is extended and the others are kept. The backend
    gets exactly one X-Request-ID: ``request_id``. With ``upgrade`` (from
    ``upgrade_offer``) the request keeps ``Connection: upgrade`` and gets
    that ``Upgrade`` value; every other hop-by-hop field still goes.
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
    if upgrade is not None:
        out.append(("Connection", "upgrade"))
        out.append(("Upgrade", upgrade))
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
    headers = _checked_fields(reason, headers)
    lengths: set[str] = set()
    for name, value in headers:
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


def switching_head(
    reason: str, headers: Iterable[tuple[str, str]], *, version: str, offered: str
) -> tuple[str, Headers]:
    """Check a backend's ``101 Switching Protocols`` and rewrite it for the client.

    The backend must switch to one protocol of ``offered`` (the Upgrade value
    the request carried); anything else is a BadBackendResponse. Hop-by-hop
    fields go as in any response, but ``Connection: upgrade`` and the
    ``Upgrade`` the backend named are the point of this one, and stay.
    """
    headers = _checked_fields(reason, headers)
    chosen = _values(headers, "upgrade")
    asked = {token.strip().lower() for token in offered.split(",")}
    if len(chosen) != 1 or chosen[0].strip().lower() not in asked:
        raise BadBackendResponse(f"101 switching to {chosen} when {offered!r} was asked for")
    if "upgrade" not in connection_options(headers):
        raise BadBackendResponse("101 without Connection: upgrade")
    out = [
        (name, value)
        for name, value in strip_hop_by_hop(headers)
        if name.lower() not in ("content-length", "via")
    ]
    out.append(("Connection", "upgrade"))
    out.append(("Upgrade", chosen[0].strip()))
    out.append(("Via", ", ".join([*_values(headers, "via"), f"{version} {VIA_PSEUDONYM}"])))
    return f"101 {reason}", out


def _checked_fields(reason: str, headers: Iterable[tuple[str, str]]) -> Headers:
    """The head's fields, if a client may be handed them: no control characters, token names."""
    if not FIELD_VALUE.fullmatch(reason):
        raise BadBackendResponse(f"reason phrase {reason!r} has control characters")
    headers = list(headers)
    for name, value in headers:
        if not TOKEN.fullmatch(name):
            raise BadBackendResponse(f"invalid header name {name!r}")
        if not FIELD_VALUE.fullmatch(value):
            raise BadBackendResponse(f"header {name!r} has control characters in its value")
    return headers

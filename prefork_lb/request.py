"""What the client asked for, as a plain value, and the rules for its target.

Pure: ``wsgi.py`` reads the environ and builds a ``ProxyRequest``; the rules
here decide what request-target goes upstream. The target is forwarded byte
for byte (``RAW_URI``, never the percent-decoded ``PATH_INFO``), and only ever
to a configured backend: an absolute-form target loses its authority, which
becomes the Host the backend sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prefork_lb.errors import BadRequest, MethodNotAllowed, UnsupportedTransferCoding

_ABSOLUTE_FORM = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)
# RFC 9112 section 3.2: origin-form is absolute-path [ "?" query ], printable ASCII, no "#".
_FORWARDABLE = re.compile(r"[!-~]+")
# host [":" port], host a reg-name or a bracketed IPv6 literal (RFC 3986 section 3.2).
# The host may be empty (RFC 9112 section 3.2); IPv6 literals may carry a zone id.
# RFC 3986 allows an empty or out-of-range port; a backend that parses the port
# would choke on one, so a port here is 1 to 5 digits, at most 65535.
_AUTHORITY = re.compile(
    r"(?:\[[0-9A-Za-z:.%_~-]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::([0-9]{1,5}))?"
)
_MAX_PORT = 65535
# The largest length a signed 64-bit parser reads without overflowing (nginx's
# limit too): a longer one would be forwarded for a backend to misread.
MAX_CONTENT_LENGTH = 2**63 - 1
_MAX_LENGTH_DIGITS = len(str(MAX_CONTENT_LENGTH))


@dataclass(frozen=True, slots=True)
class Target:
    """The request-target to send upstream and the authority it named, if any."""

    path: str
    authority: str | None = None


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """One client request, as the balancer will forward it."""

    method: str
    target: Target
    headers: list[tuple[str, str]]
    client_addr: str
    scheme: str
    version: str
    content_length: int | None
    chunked: bool

    @property
    def has_body(self) -> bool:
        """Whether the request carries a body (a zero Content-Length carries none)."""
        return self.chunked or bool(self.content_length)


def upstream_target(method: str, raw_target: str) -> Target:
    """Decide the request-target to forward, or refuse the request."""
    if method == "CONNECT":
        raise MethodNotAllowed(f"CONNECT {raw_target!r} refused")
    if not _FORWARDABLE.fullmatch(raw_target) or "#" in raw_target:
        raise BadRequest(f"request-target {raw_target!r} has characters HTTP does not allow")
    if raw_target.startswith("/"):
        return Target(raw_target)
    if raw_target == "*":
        if method != "OPTIONS":
            raise BadRequest(f"{method} * is only meaningful for OPTIONS")
        return Target(raw_target)
    absolute = _ABSOLUTE_FORM.fullmatch(raw_target)
    if absolute is None:
        raise BadRequest(f"request-target {raw_target!r} is neither origin- nor absolute-form")
    scheme, authority, rest = absolute.groups()
    if scheme.lower() not in ("http", "https") or not authority:
        raise BadRequest(f"absolute-form target {raw_target!r} is not a plain http(s) URL")
    if not _is_authority(authority) or authority.startswith(":"):
        raise BadRequest(f"absolute-form target {raw_target!r} is not a plain http(s) URL")
    if not rest and method == "OPTIONS":
        # RFC 9112 section 3.2.4: OPTIONS on a URI without a path asks about the server.
        return Target("*", authority)
    if not rest.startswith("/"):
        rest = "/" + rest
    return Target(rest, authority)


def body_framing(
    transfer_encoding: str | None, content_length: str | None
) -> tuple[int | None, bool]:
    """How the client framed its body: (Content-Length or None, chunked).

    Gunicorn has already refused conflicting or malformed framing. A transfer
    coding other than plain chunked (``gzip, chunked``) would have to be
    decoded to be re-framed, so it is refused with 501 rather than passed on
    as if it were chunked. A Content-Length above ``MAX_CONTENT_LENGTH`` is a
    400: forwarded, it could overflow the backend's parser.
    """
    if transfer_encoding is not None:
        if transfer_encoding.strip().lower() != "chunked":
            raise UnsupportedTransferCoding(f"Transfer-Encoding {transfer_encoding!r}")
        return None, True
    if not content_length:
        return None, False
    # Measured before int(): Python refuses to convert more than 4300 digits.
    digits = content_length.lstrip("0") or "0"
    if len(digits) > _MAX_LENGTH_DIGITS or int(digits) > MAX_CONTENT_LENGTH:
        raise BadRequest(f"Content-Length of {len(content_length)} digits is too large to forward")
    return int(digits), False


def check_host(target: Target, headers: list[tuple[str, str]], version: str) -> None:
    """Refuse a missing (HTTP/1.1) or malformed Host (RFC 9112 section 3.2).

    With an absolute-form target the Host header is ignored (section 3.2.2).
    A port must be 1 to 5 digits, at most 65535: ``host:`` and ``host:99999`` are refused.
    """
    if target.authority is not None:
        return
    hosts = [value for name, value in headers if name.lower() == "host"]
    if not hosts:
        if version == "1.1":
            raise BadRequest("HTTP/1.1 request without a Host header")
        return
    if not _is_authority(hosts[0]):
        raise BadRequest(f"Host {hosts[0]!r} is not host[:port]")


def _is_authority(value: str) -> bool:
    """Whether ``value`` is host[:port] with a port, if any, that a socket can have."""
    match = _AUTHORITY.fullmatch(value)
    return match is not None and (match[1] is None or int(match[1]) <= _MAX_PORT)

"""Sticky sessions: the signed cookie that keeps a client on one backend. Pure.

The token names a backend opaquely: 8 bytes of BLAKE2b of its URL (so it
survives a restart, a reload and a reordering of the list, and says nothing
about the address), then 16 bytes of HMAC-SHA256 over the pool's name and
those 8, with ``sticky_secret``. A token that does not verify (forged, made
with another secret, for another pool) or that names no backend of the pool
(stale: the backend was removed) counts as no token at all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Sequence

_ID_BYTES = 8
_MAC_BYTES = 16


def backend_id(url: str) -> bytes:
    """The opaque, stable name of a backend in its tokens."""
    return hashlib.blake2b(url.encode(), digest_size=_ID_BYTES).digest()


def _mac(secret: bytes, pool: str, ident: bytes) -> bytes:
    message = pool.encode() + b"\0" + ident
    return hmac.new(secret, message, hashlib.sha256).digest()[:_MAC_BYTES]


def sign(secret: bytes, pool: str, url: str) -> str:
    """The token for backend ``url`` of ``pool``: URL-safe base64 without padding."""
    ident = backend_id(url)
    raw = ident + _mac(secret, pool, ident)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def verify(secret: bytes, pool: str, token: str) -> bytes | None:
    """The backend id a token names, if it is one this secret signed for this pool."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _ID_BYTES + _MAC_BYTES:
        return None
    ident, mac = raw[:_ID_BYTES], raw[_ID_BYTES:]
    return ident if hmac.compare_digest(mac, _mac(secret, pool, ident)) else None


class StickyCookie:
    """One pool's sticky cookie: which backend a request's cookie names, and the cookie to set."""

    def __init__(
        self, name: str, pool: str, secret: bytes, members: Iterable[tuple[int, str]]
    ) -> None:
        """``members`` are (backend index, URL) of every backend of the pool."""
        self.name = name
        self._pool = pool
        self._secret = secret
        listed = list(members)
        self._by_id = {backend_id(url): index for index, url in listed}
        self._tokens = {index: sign(secret, pool, url) for index, url in listed}

    def backend(self, token: str | None) -> int | None:
        """The backend index a valid token names; None for none, a forged or a stale one."""
        if not token:
            return None
        ident = verify(self._secret, self._pool, token)
        return None if ident is None else self._by_id.get(ident)

    def set_cookie(self, index: int, *, secure: bool) -> str:
        """The Set-Cookie value that sends this client back to backend ``index``."""
        value = f"{self.name}={self._tokens[index]}; Path=/; HttpOnly; SameSite=Lax"
        return value + "; Secure" if secure else value


def without_cookie(headers: Sequence[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    """The header lines with cookie ``name`` taken out of every Cookie header.

    Other cookies stay byte for byte, in order; a Cookie header left empty goes.
    """
    out = []
    for field, value in headers:
        if field.lower() != "cookie" or name not in value:
            out.append((field, value))
            continue
        kept = [pair for pair in value.split(";") if pair.strip().partition("=")[0].strip() != name]
        if any(pair.strip() for pair in kept):
            out.append((field, ";".join(kept).strip()))
    return out

"""What an extension sees: the request, the response and their headers (public, pure).

``Headers`` is an ordered, case-insensitive multi-map that keeps repeated
names. Anything an extension puts in it is checked: a name must be an HTTP
token, and a name or value with CR, LF, NUL (or another control character
but tab) raises ``ValueError``, so that no extension can split a header line
and open a smuggling hole. ``Request`` and ``Response`` hold the values the
phases may read and change; ``CompleteInfo`` is what ``on_complete`` learns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from prefork_lb.headers import FIELD_VALUE, TOKEN

if TYPE_CHECKING:
    from prefork_lb.config import Backend

__all__ = ["CompleteInfo", "Headers", "Request", "Response"]

# RFC 9112 section 3.2: origin-form, printable ASCII, no "#".
_ORIGIN_FORM = re.compile(r"/[!-\"$-~]*")


def check_header(name: object, value: object) -> tuple[str, str]:
    """``(name, value)`` if both may go in a header line; else ``ValueError``."""
    if not isinstance(name, str) or not TOKEN.fullmatch(name):
        raise ValueError(f"header name {name!r} is not an HTTP token")
    if not isinstance(value, str) or not FIELD_VALUE.fullmatch(value):
        raise ValueError(f"header {name} value {value!r} has a control character (CR, LF, NUL…)")
    return name, value


class Headers:
    """Header lines in order; names compare case-insensitively; repeated names are kept."""

    __slots__ = ("_lines",)

    def __init__(self, lines: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        """Headers from a dict or from ``(name, value)`` pairs, each checked."""
        pairs = lines.items() if isinstance(lines, Mapping) else (lines or ())
        self._lines = [check_header(name, value) for name, value in pairs]

    @classmethod
    def trusted(cls, lines: list[tuple[str, str]]) -> Headers:
        """Headers from lines the balancer has already checked (not copied, not re-checked)."""
        headers = cls.__new__(cls)
        headers._lines = lines
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        wanted = name.lower()
        for key, value in self._lines:
            if key.lower() == wanted:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        wanted = name.lower()
        return [value for key, value in self._lines if key.lower() == wanted]

    def add(self, name: str, value: str) -> None:
        """Append a line ``name: value`` (after any with the same name)."""
        self._lines.append(check_header(name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` with one ``name: value``, where the first was."""
        line = check_header(name, value)
        wanted = name.lower()
        lines, placed = [], False
        for key, old in self._lines:
            if key.lower() != wanted:
                lines.append((key, old))
            elif not placed:
                lines.append(line)
                placed = True
        if not placed:
            lines.append(line)
        self._lines = lines

    def remove(self, name: str) -> None:
        """Remove every line of ``name`` (none: nothing happens)."""
        wanted = name.lower()
        self._lines = [(key, value) for key, value in self._lines if key.lower() != wanted]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._lines))

    def __len__(self) -> int:
        return len(self._lines)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._lines == other._lines

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Headers({self._lines!r})"

    def lines(self) -> list[tuple[str, str]]:
        """The ``(name, value)`` lines as a new list."""
        return list(self._lines)


def header_lines(headers: Headers) -> list[tuple[str, str]]:
    """The list ``headers`` holds now (not a copy): for the balancer, not for extensions."""
    return headers._lines


class Request:
    """The client's request as the phases see it; ``headers``, ``target``, ``backend`` may change.

    ``target`` is the raw request-target as received (``/a%2Fb?x=1``);
    setting it to another origin-form target (``/path?query``) changes what
    goes upstream. ``backend``, set to a backend's ``name``, sends the request
    there while that backend is usable. ``state`` is the extension's own, for
    passing values from one phase to the next of this request.
    """

    __slots__ = ("_target", "backend", "client_addr", "headers", "id", "method", "scheme", "state")

    def __init__(
        self,
        *,
        method: str,
        target: str,
        headers: Headers,
        client_addr: str,
        scheme: str,
        id: str,
    ) -> None:
        self.method = method
        self._target = target
        self.headers = headers
        self.client_addr = client_addr
        self.scheme = scheme
        self.id = id
        self.state: dict[str, Any] = {}
        self.backend: str | None = None

    @property
    def target(self) -> str:
        """The request-target, raw (percent-encoding as the client sent it)."""
        return self._target

    @target.setter
    def target(self, value: str) -> None:
        if not isinstance(value, str) or not _ORIGIN_FORM.fullmatch(value):
            raise ValueError(f"target {value!r} must be /path[?query], printable ASCII, no '#'")
        self._target = value

    @property
    def path(self) -> str:
        """The target up to ``?`` (still percent-encoded)."""
        return self._target.partition("?")[0]

    @property
    def query(self) -> str:
        """The target after ``?`` (empty if none)."""
        return self._target.partition("?")[2]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._target} id={self.id}>"


class Response:
    """A response: from ``on_request`` an answer sent at once; in later phases the backend's.

    ``status`` is an int from 200 to 599; ``headers`` a dict or ``(name,
    value)`` pairs. The balancer frames the body itself: ``Content-Length``,
    ``Transfer-Encoding`` and hop-by-hop headers an extension sets are not
    sent.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        self.status = check_status(status)
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        if not isinstance(body, bytes):
            raise ValueError("a Response body must be bytes")
        self.body = body

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


def check_status(status: object) -> int:
    """``status`` if a response may have it (an int from 200 to 599); else ``ValueError``."""
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise ValueError(f"status {status!r} must be an int from 200 to 599")
    return status


def status_line(status: int) -> str:
    """``"404 Not Found"``: the status and its phrase (none for an unregistered status)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} "


@dataclass(frozen=True, slots=True)
class CompleteInfo:
    """How a request ended, for ``on_complete``.

    ``backend`` answered (or failed last); None when no backend was tried,
    as for an ``on_request`` answer. ``upstream_time`` is seconds from
    sending to the backend's response head (the last try), ``bytes_sent`` the
    body bytes that went to the client, ``error`` the failure's name (as the
    access log's ``prefork_lb.error``) or None.
    """

    backend: Backend | None
    upstream_time: float | None
    bytes_sent: int
    error: str | None
    tries: int = 0

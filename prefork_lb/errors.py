"""The balancer's failures, each carrying the status the client gets.

Library exceptions are mapped to these once, at the boundary where they are
raised (``upstream.py`` for urllib3, ``downstream.py`` for the request body). The
client sees the class's short ``public`` text; the log also gets ``detail``,
which may name a backend address but never goes to the client.
"""

from __future__ import annotations

import errno
from http import HTTPStatus


class LBError(Exception):
    """A request the balancer cannot complete; ``status`` is what the client is told."""

    status: HTTPStatus = HTTPStatus.BAD_GATEWAY
    public: str = "the balancer could not complete the request"
    # Seconds for a Retry-After header, if the client should come back later.
    retry_after: int | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def response(self) -> tuple[str, list[tuple[str, str]], bytes]:
        """The status line, headers and plain-text body that tell the client what happened."""
        body = f"{self.status.value} {self.status.phrase}: {self.public}\n".encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        if self.retry_after is not None:
            headers.append(("Retry-After", str(self.retry_after)))
        return f"{self.status.value} {self.status.phrase}", headers, body


class BadRequest(LBError):
    """The client's request cannot be forwarded as it is."""

    status = HTTPStatus.BAD_REQUEST
    public = "the request cannot be forwarded"


class IncompleteRequestBody(BadRequest):
    """The client sent less body than it announced, or a malformed chunked body."""

    public = "the request body ended before it was complete"


class ClientTimeout(LBError):
    """The client went silent in the middle of sending its request body."""

    status = HTTPStatus.REQUEST_TIMEOUT
    public = "the request body did not arrive in time"


class RequestTooLarge(LBError):
    """The request body is larger than ``max_body_size``."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    public = "the request body is larger than this balancer accepts"


class UnsupportedTransferCoding(LBError):
    """The request uses a transfer coding other than chunked (RFC 9112 section 6.1)."""

    status = HTTPStatus.NOT_IMPLEMENTED
    public = "only the chunked transfer coding is supported"


class MethodNotAllowed(LBError):
    """The method asks the balancer to be something it is not (CONNECT: a tunnel)."""

    status = HTTPStatus.METHOD_NOT_ALLOWED
    public = "this balancer does not open tunnels (CONNECT)"


class NoBackendAvailable(LBError):
    """No configured backend can take the request."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    public = "no backend is available"


class QueueFull(NoBackendAvailable):
    """Every backend of the pool is at its limit and its waiting room is full (or none)."""

    public = "every backend is busy and the queue is full"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class QueueTimeout(NoBackendAvailable):
    """The request waited ``queue_timeout`` seconds for a backend below its limit."""

    public = "every backend stayed busy for as long as the request could wait"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ClientLeftQueue(LBError):
    """The client hung up while its request waited for a backend (no one reads the answer)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    public = "the client left while waiting"


class NoRoute(LBError):
    """No route takes the request and there is no ``default`` pool."""

    status = HTTPStatus.NOT_FOUND
    public = "no route for this host and path"


class BackendError(LBError):
    """A try on one backend failed; another backend may be able to answer.

    ``request_sent`` is false only when the request cannot have reached the
    backend (the connection was never made), so that any method may go on to
    another backend. ``reason`` is a few words for the health log
    ("connection refused"). ``counts_as_failure`` says whether it is held
    against the backend's health and may be retried elsewhere: refusals,
    resets and timeouts are; a malformed answer is not (as nginx's default
    ``proxy_next_upstream error timeout``). ``backend`` is the failing
    backend's index in the settings, filled in by the step that chose it.
    """

    counts_as_failure = True

    def __init__(
        self,
        detail: str,
        *,
        reason: str = "",
        request_sent: bool = True,
        backend: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason or self.public
        self.request_sent = request_sent
        self.backend = backend


class BackendUnreachable(BackendError):
    """The backend refused or reset the connection, or closed it without answering."""

    status = HTTPStatus.BAD_GATEWAY
    public = "the backend could not be reached or closed the connection"


class BackendTimeout(BackendError):
    """The backend did not accept the connection, or did not answer, in time."""

    status = HTTPStatus.GATEWAY_TIMEOUT
    public = "the backend did not answer in time"


class BadBackendResponse(BackendError):
    """The backend answered with something that is not a valid HTTP response."""

    status = HTTPStatus.BAD_GATEWAY
    public = "the backend sent an invalid response"
    counts_as_failure = False


class ExtensionFailed(LBError):
    """An extension raised in one of its phases; ``extension`` and ``phase`` name where."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR
    public = "an extension of the balancer failed"

    def __init__(self, detail: str, *, extension: str = "", phase: str = "") -> None:
        super().__init__(detail)
        self.extension = extension
        self.phase = phase


class AbortResponse(ConnectionResetError):
    """Raised from a response body to drop the client connection mid-response.

    Once the status line is out, the only honest way to report an upstream
    failure is to cut the connection, so that a truncated body cannot pass for
    a complete one. Gunicorn closes the socket quietly (no traceback) only for
    ECONNRESET, EPIPE and ENOTCONN, hence the errno.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(errno.ECONNRESET, detail)


# The kinds of failure the metrics count, by class name: every LBError the
# balancer raises, and LBError itself for anything else.
ERROR_KINDS = (
    "BackendUnreachable",
    "BackendTimeout",
    "BadBackendResponse",
    "NoBackendAvailable",
    "BadRequest",
    "IncompleteRequestBody",
    "ClientTimeout",
    "RequestTooLarge",
    "UnsupportedTransferCoding",
    "MethodNotAllowed",
    "NoRoute",
    "QueueFull",
    "QueueTimeout",
    "ClientLeftQueue",
    "ExtensionFailed",
    "LBError",
)
_KIND_INDEX = {name: index for index, name in enumerate(ERROR_KINDS)}


def error_kind(err: LBError) -> int:
    """The index in ``ERROR_KINDS`` that counts this failure."""
    return _KIND_INDEX.get(type(err).__name__, len(ERROR_KINDS) - 1)

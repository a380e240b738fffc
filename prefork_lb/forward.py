"""Forwarding one request: backends tried in the policy's order until one answers.

``Forwarder.forward`` is the retry loop; ``_exchange`` is one try on one
backend: the request goes out with rewritten headers, and the backend's
response head comes back checked (``headers.response_head``). The result
is an ``Answer``: the head to relay and the response whose body is still
unread, with the backend counted as in flight until ``Answer.done()``.

A try that fails before an answer may go on to the next backend
(``scheduling.may_retry`` says when); the failure itself (a
``BackendError``, carrying the index of the backend that failed) is held
against that backend's health here, and counted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from urllib3.connection import HTTPConnection
from urllib3.response import BaseHTTPResponse

from prefork_lb.admission import AtCapacity
from prefork_lb.config import Backend, Settings
from prefork_lb.downstream import RequestBody
from prefork_lb.errors import BackendError, LBError, NoBackendAvailable
from prefork_lb.hashing import HashKey, cookie_value, key_hash, parse_hash_key, request_key
from prefork_lb.headers import (
    AddressSet,
    response_head,
    switching_head,
    upstream_request_headers,
)
from prefork_lb.record import RequestRecord, Stats
from prefork_lb.request import ProxyRequest
from prefork_lb.scheduling import HASH, may_retry
from prefork_lb.selector import Selector
from prefork_lb.sticky import StickyCookie, without_cookie
from prefork_lb.upstream import Upstream, release, switched_read_ahead
from prefork_lb.waiting_room import WaitingRoom

log = logging.getLogger("gunicorn.error").getChild("prefork_lb")


class InFlight:
    """One try's place in its backend's in-flight count, given back exactly once."""

    def __init__(self, selector: Selector, index: int, counted: bool = False) -> None:
        """``counted``: the selector counted it when it chose it (a pool with limits)."""
        self._selector = selector
        self._index = index
        self._ended = False
        if not counted:
            selector.started(index)

    def end(self) -> None:
        """The backend is done with this try (or it failed, or the client left)."""
        if not self._ended:
            self._ended = True
            self._selector.finished(self._index)


@dataclass(slots=True)
class Answer:
    """A backend's checked response head, its body still to be read."""

    index: int
    backend: Backend
    status: str
    headers: list[tuple[str, str]]
    response: BaseHTTPResponse
    in_flight: InFlight
    # The upgrade request's own connection (never pooled), closed by done().
    connection: HTTPConnection | None = None

    @property
    def switched(self) -> bool:
        """Whether the backend switched protocols (a checked 101): the answer is a tunnel."""
        return self.response.status == 101

    def read_ahead(self) -> bytes:
        """After a switch: the backend's bytes already read behind its 101 head, taken out."""
        return switched_read_ahead(self.response)

    def done(self) -> None:
        """The backend is done with the request: its in-flight place is given back (once).

        An upgrade request's connection is closed with it.
        """
        self.in_flight.end()
        if self.connection is not None:
            _close(self.response, self.connection)


class Forwarder:
    """Sends requests to the backends the selector picks, retrying where it is safe."""

    def __init__(
        self, settings: Settings, selector: Selector, upstream: Upstream, stats: Stats
    ) -> None:
        self._settings = settings
        self._selector = selector
        self._ejecting = settings.eject_consecutive_5xx > 0
        self._retry_statuses = frozenset(settings.retry_on_status)
        self._upstream = upstream
        if selector.follows_dns:
            # Connections to addresses DNS no longer gives are closed.
            selector.on_backends_changed = upstream.keep_only
        self._stats = stats
        self._trusted_proxies = AddressSet(settings.trusted_proxies)
        self._hash_keys: list[HashKey | None] = [
            parse_hash_key(pool.hash_key) if pool.policy == HASH else None
            for pool in selector.pools
        ]
        secret = settings.sticky_secret.encode()
        self._room: WaitingRoom | None = None
        if any(selector.limited):
            self._room = WaitingRoom(selector.admission, selector.slot, selector.pools)
            selector.on_release = self._room.wake
        self._sticky: list[StickyCookie | None] = [
            StickyCookie(
                pool.sticky_cookie,
                pool.name,
                secret,
                ((m.index, selector.backends[m.index].url) for m in pool.members),
            )
            if pool.sticky_cookie and secret
            else None
            for pool in selector.pools
        ]
        # Pools whose requests carry a hash key or a sticky cookie to read.
        self._affinity = [
            hash_key is not None or sticky is not None
            for hash_key, sticky in zip(self._hash_keys, self._sticky, strict=True)
        ]

    def forward(  # noqa: PLR0917 - the request path's steps pass what they have
        self,
        request: ProxyRequest,
        body: RequestBody | None,
        record: RequestRecord,
        upgrade: str | None = None,
        pool: int = 0,
        client: Any = None,
    ) -> Answer:
        """The first answer from a backend of ``pool``; raises the last failure if retries stop.

        With ``upgrade`` (``headers.upgrade_offer``) the request asks to switch
        protocols, on a fresh connection; a ``101`` for one of them is a
        switched answer (``Answer.switched``), any other a response as usual.
        ``client`` (the client's socket) is watched while the request waits
        for a backend below its limit.
        """
        tried: list[int] = []
        last_error: BackendError | None = None
        first_try = time.monotonic()
        key = prefer = sticky = None
        if self._affinity[pool]:
            hash_key = self._hash_keys[pool]
            if hash_key is not None:
                key = self._key(hash_key, request)
            sticky = self._sticky[pool]
            if sticky is not None:
                prefer = sticky.backend(cookie_value(request.headers, sticky.name))
                # The balancer's own cookie is not the backend's business.
                request = replace(request, headers=without_cookie(request.headers, sticky.name))
        limited = self._selector.limited[pool]
        while True:
            index = self._choose(request, frozenset(tried), last_error, pool, key, prefer, client)
            record.backend = self._selector.backends[index].url
            record.tries += 1
            try:
                answer = self._exchange(request, body, index, record, upgrade, limited)
            except BackendError as err:
                tried.append(index)
                self._stats.try_failed(index, err)
                retry = err.counts_as_failure and self._may_try_again(
                    request,
                    body,
                    tried,
                    first_try,
                    request_sent=err.request_sent or (body is not None and body.started),
                )
                if not retry:
                    raise
                self._stats.retried(index)
                record.retries += 1
                log.warning(
                    "%s %s: %s; trying another backend",
                    request.method,
                    request.target.path,
                    err.detail,
                )
                last_error = err
                continue
            if self._retry_statuses and answer.response.status in self._retry_statuses:
                tried.append(index)
                if self._may_retry_status(request, body, answer, tried, first_try, pool):
                    record.retries += 1
                    self._stats.retried(index)
                    continue
            if sticky is not None and index != prefer:
                secure = request.scheme == "https"
                answer.headers.append(("Set-Cookie", sticky.set_cookie(index, secure=secure)))
            return answer

    def _may_retry_status(  # noqa: PLR0917
        self,
        request: ProxyRequest,
        body: RequestBody | None,
        answer: Answer,
        tried: list[int],
        first_try: float,
        pool: int,
    ) -> bool:
        """Whether an answer with a ``retry_on_status`` status is discarded for another try.

        The same rules as a failed try that reached the backend. A discarded
        answer's connection is closed, never reused with its body half read;
        another backend must be left to try.
        """
        retry = self._may_try_again(request, body, tried, first_try, request_sent=True)
        if not retry or answer.switched or not self._selector.any_eligible(frozenset(tried), pool):
            return False
        log.warning(
            "%s %s: backend %s answered %d; trying another backend",
            request.method,
            request.target.path,
            answer.backend.url,
            answer.response.status,
        )
        release(answer.response, keep=False)
        answer.done()
        return True

    def _may_try_again(
        self,
        request: ProxyRequest,
        body: RequestBody | None,
        tried: list[int],
        first_try: float,
        *,
        request_sent: bool,
    ) -> bool:
        """``scheduling.may_retry`` with this request's method, body, tries and budget."""
        return may_retry(
            method=request.method,
            request_sent=request_sent,
            body_replayable=body is None or body.replayable,
            tries=len(tried),
            retries=self._settings.retries,
            elapsed=time.monotonic() - first_try,
            budget=self._settings.retry_timeout,
        )

    def _key(self, hash_key: HashKey, request: ProxyRequest) -> int | None:
        """The request's hash for a ``hash`` pool, None without its key."""
        client = request.client_addr
        if client in self._trusted_proxies:
            forwarded = [v for n, v in request.headers if n == "X-Forwarded-For"]
            if forwarded:
                # The address the last trusted proxy saw.
                client = forwarded[-1].rsplit(",", 1)[-1].strip() or client
        data = request_key(
            hash_key, client=client, target=request.target.path, headers=request.headers
        )
        return None if data is None else key_hash(data)

    def _choose(  # noqa: PLR0917
        self,
        request: ProxyRequest,
        tried: frozenset[int],
        last_error: BackendError | None,
        pool: int = 0,
        key: int | None = None,
        prefer: int | None = None,
        client: Any = None,
    ) -> int:
        """The backend for the next try of ``request`` (``Selector.choose`` or ``admit``).

        ``request`` is for subclasses (extensions may name a backend).
        """
        try:
            if self._room is None or not self._selector.limited[pool]:
                return self._selector.choose(tried, pool, key, prefer)
            try:
                return self._selector.admit(tried, pool, key, prefer)
            except AtCapacity:
                return self._room.wait(
                    pool,
                    lambda ticket: self._selector.admit(tried, pool, key, prefer, ticket),
                    client,
                )
        except NoBackendAvailable:
            if last_error is not None:
                # Every other backend is down or was tried: report the last failure.
                raise last_error from None
            raise

    def _exchange(  # noqa: PLR0917 - hot path: positional is cheaper
        self,
        request: ProxyRequest,
        body: RequestBody | None,
        index: int,
        record: RequestRecord,
        upgrade: str | None,
        counted: bool = False,
    ) -> Answer:
        """One try on backend ``index``: the request out, the response head back and checked.

        ``counted``: the backend was counted in flight when it was chosen.
        """
        backend = self._selector.backends[index]
        in_flight = InFlight(self._selector, index, counted)
        connection = None
        try:
            response, connection = self._send(request, body, index, record, upgrade)
            if upgrade is not None and response.status == 101:
                status, headers = _checked_switch(response, backend, upgrade)
            else:
                status, headers = _checked_head(response, backend)
        except BaseException as err:
            if connection is not None:
                _close(response, connection)
            if isinstance(err, BackendError):
                err.backend = index
                if err.counts_as_failure:
                    self._selector.request_failed(index, err.reason)
            in_flight.end()
            raise
        self._selector.request_succeeded(index)
        if self._ejecting:
            self._selector.answered(index, response.status)
        return Answer(index, backend, status, headers, response, in_flight, connection)

    def _send(
        self,
        request: ProxyRequest,
        body: RequestBody | None,
        index: int,
        record: RequestRecord,
        upgrade: str | None,
    ) -> tuple[BaseHTTPResponse, HTTPConnection | None]:
        """The request out to backend ``index``; the response back with its body unread.

        An upgrade request goes on a connection of its own, returned with the
        response; any other on a pooled one (None).
        """
        backend = self._selector.backends[index]
        headers = upstream_request_headers(
            request,
            trusted=request.client_addr in self._trusted_proxies,
            preserve_host=self._settings.preserve_host,
            backend_authority=backend.authority,
            request_id=record.request_id or "",
            upgrade=upgrade,
        )
        started = time.monotonic()
        connection = None
        if upgrade is None:
            response = self._upstream.send(
                backend, request.method, request.target.path, headers, body, chunked=request.chunked
            )
        else:
            response, connection = self._upstream.send_upgrade(
                backend, request.method, request.target.path, headers
            )
        record.upstream_time = time.monotonic() - started
        self._stats.upstream_latency(index, record.upstream_time)
        return response, connection


def _close(response: BaseHTTPResponse, connection: HTTPConnection) -> None:
    # The response's reader holds a reference to the socket: closed first,
    # or closing the connection would leave the socket open.
    response.close()
    connection.close()


def _checked_switch(
    response: BaseHTTPResponse, backend: Backend, offered: str
) -> tuple[str, list[tuple[str, str]]]:
    """The 101 head to relay; a switch to a protocol not asked for is a bad response."""
    try:
        return switching_head(
            response.reason or "",
            response.headers.items(),
            version="1.1" if response.version == 11 else "1.0",
            offered=offered,
        )
    except LBError as err:
        err.detail = f"backend {backend.url}: {err.detail}"
        raise


def _checked_head(
    response: BaseHTTPResponse, backend: Backend
) -> tuple[str, list[tuple[str, str]]]:
    """The status line and headers to relay; a head that cannot be relayed closes the response."""
    try:
        return response_head(
            response.status,
            response.reason or "",
            response.headers.items(),
            version="1.1" if response.version == 11 else "1.0",
            chunked=bool(getattr(response, "chunked", False)),
        )
    except LBError as err:
        release(response, keep=False)
        err.detail = f"backend {backend.url}: {err.detail}"
        raise

"""Extensions for the tests: each phase leaves a trace a test can read from outside.

``First`` and ``Second`` (tags A and B) are the same recorder. What they do
is steered by request headers, so that one balancer serves every case:

- ``X-Answer: A`` makes A's ``on_request`` answer 203 with body ``A``;
- ``X-Raise: A.on_response`` makes A raise in that phase;
- ``X-Backend: NAME`` sends the request to that backend;
- ``X-Smuggle: 1`` tries header lines with CR/LF/NUL and bad names; each
  refusal is counted in the ``X-Refused`` header sent upstream; then it
  sets ``Content-Length: 0`` and ``Transfer-Encoding: chunked``;
- ``X-Count: 1`` answers at once with the shared counter's value.

Each phase appends ``TAG.phase`` to ``request.state["trail"]``; the trail
goes upstream (``X-Trail-<TAG>``, at every try) and back to the client
(``X-Trail``); ``on_complete`` writes a JSON line to the ``log`` option's file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import prefork_lb
from prefork_lb import CompleteInfo, Request, Response
from prefork_lb.config import Backend

COUNTER = "tests.requests"
BAD_LINES = [
    ("X-Evil", "a\r\nInjected: 1"),
    ("X-Evil", "a\nb"),
    ("X-Evil", "a\x00b"),
    ("X-Evil\r\nInjected", "1"),
    ("X Evil", "1"),
    ("", "1"),
    ("X-Evil:", "1"),
]


class First:
    """Records every phase, steered by request headers (tag A)."""

    tag: ClassVar[str] = "A"
    shared_counters = (COUNTER,)

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._log = options.get("log")
        self._counter = prefork_lb.shared_counter(COUNTER)

    def _trace(self, request: Request, phase: str) -> None:
        if request.headers.get("X-Raise") == f"{self.tag}.{phase}":
            raise RuntimeError(f"{self.tag} raised in {phase} on purpose")
        request.state.setdefault("trail", []).append(f"{self.tag}.{phase}")

    def on_request(self, request: Request) -> Response | None:
        """Trace; answer, count, route or try smuggling as the headers ask."""
        self._trace(request, "on_request")
        if request.headers.get("X-Count"):
            return Response(200, {"Content-Type": "text/plain"}, b"%d" % self._counter.value)
        self._counter.add()
        if request.headers.get("X-Answer") == self.tag:
            return Response(203, [("X-Answered-By", self.tag)], self.tag.encode())
        backend = request.headers.get("X-Backend")
        if backend:
            request.backend = backend
        if request.headers.get("X-Smuggle"):
            refused = 0
            for name, value in BAD_LINES:
                for change in (request.headers.add, request.headers.set):
                    try:
                        change(name, value)
                    except ValueError:
                        refused += 1
            request.headers.set("X-Refused", str(refused))
            # Framing is the balancer's: these must not reach the backend.
            request.headers.set("Content-Length", "0")
            request.headers.set("Transfer-Encoding", "chunked")
        return None

    def on_upstream_request(self, request: Request, backend: Backend) -> None:
        """Trace; send the trail so far and the backend's name upstream."""
        self._trace(request, "on_upstream_request")
        trail = ",".join(request.state["trail"])
        request.headers.set(f"X-Trail-{self.tag}", trail)
        request.headers.set(f"X-Backend-Name-{self.tag}", backend.name)

    def on_response(self, request: Request, response: Response) -> None:
        """Trace; send the trail back to the client, and the worker's pid."""
        self._trace(request, "on_response")
        response.headers.set("X-Trail", ",".join(request.state["trail"]))
        response.headers.set("X-Worker", str(os.getpid()))
        status = request.headers.get("X-Status")
        if status:
            response.status = int(status)

    def on_complete(self, request: Request, response: Response, info: CompleteInfo) -> None:
        """Trace; write what ended how to the log file."""
        self._trace(request, "on_complete")
        if self._log is None:
            return
        line = {
            "tag": self.tag,
            "id": request.id,
            "target": request.target,
            "status": response.status,
            "backend": None if info.backend is None else info.backend.name,
            "upstream_time": info.upstream_time,
            "bytes_sent": info.bytes_sent,
            "error": info.error,
            "trail": request.state["trail"],
        }
        with open(self._log, "a") as out:
            out.write(json.dumps(line) + "\n")


class Second(First):
    """The same recorder with tag B, listed after ``First``."""

    tag = "B"


class Noop:
    """All four phases, doing nothing: the cost of an extension as such."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        pass

    def on_request(self, request: Request) -> None:
        """Nothing."""

    def on_upstream_request(self, request: Request, backend: Backend) -> None:
        """Nothing."""

    def on_response(self, request: Request, response: Response) -> None:
        """Nothing."""

    def on_complete(self, request: Request, response: Response, info: CompleteInfo) -> None:
        """Nothing."""


class Pid:
    """Tells the client which worker relayed the response (``X-Worker``)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        pass

    def on_response(self, request: Request, response: Response) -> None:
        """Add the worker's pid."""
        response.headers.set("X-Worker", str(os.getpid()))


class FailsToBuild:
    """Raises when a worker builds it."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        raise RuntimeError("no database at db.invalid")

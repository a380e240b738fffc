"""``python -m prefork_lb ctl``: drain, maint, ready, weights and status from a shell.

A client of the admin endpoint (``admin.py``), for deploy scripts::

    python -m prefork_lb ctl drain web-1
    python -m prefork_lb ctl wait-drained web-1 --timeout 120
    ... deploy web-1 ...
    python -m prefork_lb ctl ready web-1

``--url`` is the balancer's base address (default ``http://127.0.0.1:8000``);
ctl adds ``admin_path`` itself. The token and the admin path come from the
same settings as the balancer's (``PREFORK_LB_ADMIN_TOKEN``,
``PREFORK_LB_ADMIN_PATH``, or the file ``PREFORK_LB_CONFIG`` names) unless
``--token`` and ``--admin-path`` are given.

Exit codes: 0 done; 1 ``wait-drained`` timed out; 2 bad usage; 3 the
balancer cannot be reached (or is not one); 4 the token was refused or none
is configured; 5 no backend has that name; 6 the balancer refused the
change for another reason.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from prefork_lb.config import ConfigError, load_config

DEFAULT_URL = "http://127.0.0.1:8000"
DONE, TIMED_OUT, USAGE, UNREACHABLE, REFUSED, UNKNOWN, REJECTED = range(7)


class CtlError(Exception):
    """A failure to report on stderr, with the exit code it ends with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ctl command; return its exit code."""
    args = _parser().parse_args(argv)
    admin_path, token = _defaults()
    client = AdminClient(args.url, args.admin_path or admin_path, args.token or token)
    try:
        return _run(client, args)
    except CtlError as err:
        print(f"prefork_lb ctl: {err}", file=sys.stderr)
        return err.code


def _run(client: AdminClient, args: argparse.Namespace) -> int:
    if args.command == "status":
        print(status_table(client.backends()))
        return DONE
    if args.command in ("drain", "maint", "ready"):
        print(client.write(args.name, "state", {"state": args.command})["changed"])
        return DONE
    if args.command == "weight":
        print(client.write(args.name, "weight", {"weight": args.weight})["changed"])
        return DONE
    return wait_drained(client, args.name, args.timeout, args.interval)


def wait_drained(client: AdminClient, name: str, timeout: float, interval: float) -> int:
    """Poll until ``name`` has nothing in flight (requests and tunnels, every worker)."""
    deadline = time.monotonic() + timeout
    while True:
        backend = _find(client.backends(), name)
        busy = backend["in_flight"] + backend["tunnels_open"]
        if busy == 0:
            print(f"{name}: drained")
            return DONE
        if time.monotonic() >= deadline:
            print(f"{name}: still {busy} in flight after {timeout:g} s", file=sys.stderr)
            return TIMED_OUT
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def status_table(backends: list[dict[str, Any]]) -> str:
    """The ``status`` table: one line per backend."""
    head = ("NAME", "HEALTH", "ADMIN", "WEIGHT", "IN_FLIGHT", "TUNNELS", "URL")
    rows = [head] + [
        (
            b["name"],
            b["state"],
            b["admin_state"],
            str(b["weight"]),
            str(b["in_flight"]),
            str(b["tunnels_open"]),
            b["url"],
        )
        for b in backends
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


class AdminClient:
    """The admin endpoint of one balancer, over plain HTTP."""

    def __init__(self, url: str, admin_path: str, token: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SystemExit(f"prefork_lb ctl: --url must be http://host:port, got {url!r}")
        self._parts = parts
        self._url = url
        self._path = admin_path.rstrip("/")
        self._token = token

    def backends(self) -> list[dict[str, Any]]:
        """Every backend as ``GET <admin_path>/backends`` shows it."""
        status, document = self._request("GET", "/backends", None)
        if status != 200 or not isinstance(document.get("backends"), list):
            raise CtlError(UNREACHABLE, f"{self._url}: no admin endpoint answered ({status})")
        backends: list[dict[str, Any]] = document["backends"]
        return backends

    def write(self, name: str, what: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST one change; its answer, or a ``CtlError`` that says why not."""
        status, document = self._request("POST", f"/backends/{name}/{what}", body)
        if status == 200:
            return document
        message = document.get("error", f"status {status}")
        code = {401: REFUSED, 403: REFUSED, 404: UNKNOWN}.get(status, REJECTED)
        if status == 404 and "error" not in document:
            code = UNREACHABLE
        raise CtlError(code, message)

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any]]:
        connection_type = (
            http.client.HTTPSConnection
            if self._parts.scheme == "https"
            else http.client.HTTPConnection
        )
        connection = connection_type(self._parts.hostname or "", self._parts.port, timeout=10)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
        try:
            connection.request(method, self._path + path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except OSError as err:
            raise CtlError(UNREACHABLE, f"cannot reach {self._url}: {err}") from None
        except http.client.HTTPException as err:
            raise CtlError(UNREACHABLE, f"{self._url} did not answer HTTP: {err!r}") from None
        finally:
            connection.close()
        try:
            document = json.loads(raw)
        except ValueError:
            document = {}
        return response.status, document if isinstance(document, dict) else {}


def _find(backends: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for backend in backends:
        if backend.get("name") == name:
            return backend
    known = ", ".join(str(b.get("name")) for b in backends)
    raise CtlError(UNKNOWN, f"no backend named {name!r}; known: {known}")


def _defaults() -> tuple[str, str]:
    """The admin path and token of the balancer's own settings (environment, file)."""
    try:
        settings = load_config(os.environ)
    except (ConfigError, OSError):
        # Settings that would not start a balancer still name a token.
        return (
            os.environ.get("PREFORK_LB_ADMIN_PATH", "/_prefork_lb"),
            os.environ.get("PREFORK_LB_ADMIN_TOKEN", ""),
        )
    return settings.admin_path or "/_prefork_lb", settings.admin_token


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m prefork_lb ctl",
        description="Drain, maintain, re-weigh and inspect a running prefork_lb's backends.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"balancer address ({DEFAULT_URL})")
    parser.add_argument("--token", default="", help="admin token (PREFORK_LB_ADMIN_TOKEN)")
    parser.add_argument("--admin-path", default="", help="admin path (PREFORK_LB_ADMIN_PATH)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="print every backend's state")
    for state, text in (
        ("drain", "send no new request to NAME; those in flight finish"),
        ("maint", "drain NAME and stop its health checks"),
        ("ready", "give NAME back to its health checks"),
    ):
        commands.add_parser(state, help=text).add_argument("name")
    weight = commands.add_parser("weight", help="set NAME's weight (1 to 1000)")
    weight.add_argument("name")
    weight.add_argument("weight", type=int)
    wait = commands.add_parser("wait-drained", help="exit 0 once NAME has nothing in flight")
    wait.add_argument("name")
    wait.add_argument("--timeout", type=float, default=300.0, help="seconds (300); then exit 1")
    wait.add_argument("--interval", type=float, default=0.2, help=argparse.SUPPRESS)
    return parser


def main_entry() -> None:
    """The ``prefork-lb-ctl`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    main_entry()

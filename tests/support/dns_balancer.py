"""Helpers for balancers whose backends come from DNS: requests, /backends, metrics, settling."""

from __future__ import annotations

import http.client
import json
import re
from typing import Any

from tests.support.balancer import BalancerProcess
from tests.support.polling import wait_for


def fetch(port: int, path: str = "/", timeout: float = 20.0) -> tuple[int, str]:
    """GET ``path`` on a fresh connection: the status and the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace").strip()
    finally:
        conn.close()


def post_admin(lb: BalancerProcess, token: str, name: str, what: str, value: object) -> int:
    """POST ``{what: value}`` to backend ``name``'s ``what`` (state, weight): the status."""
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    try:
        conn.request(
            "POST",
            f"/_prefork_lb/backends/{name}/{what}",
            body=json.dumps({what: value}),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def backends_document(lb: BalancerProcess) -> dict[str, Any]:
    """The admin ``/backends`` document."""
    status, body = fetch(lb.port, "/_prefork_lb/backends")
    assert status == 200, body
    document: dict[str, Any] = json.loads(body)
    return document


def dns_backends(lb: BalancerProcess, state: str = "active", source: str = "") -> set[str]:
    """The URLs of the backends found through DNS (``source``, else any) in this ``dns_state``."""
    return {
        b["url"]
        for b in backends_document(lb)["backends"]
        if b["dns_state"] == state and source in ("", b["dns"])
    }


def settle(lb: BalancerProcess, urls: set[str], source: str, timeout: float = 10.0) -> None:
    """Wait until ``source`` has given exactly ``urls`` and none of its addresses drains."""
    wait_for(
        lambda: (
            dns_backends(lb, "active", source) == urls and not dns_backends(lb, "draining", source)
        ),
        f"the DNS backends to become {sorted(urls)}",
        timeout,
        context=lambda: json.dumps(backends_document(lb), indent=1),
    )


def metric(lb: BalancerProcess, name: str, labels: str) -> float:
    """One sample of the metrics page (0 if absent): ``name{labels}``."""
    status, text = fetch(lb.port, "/_prefork_lb/metrics")
    assert status == 200, text
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0

"""Sticky sessions through a real balancer: the cookie's life cycle, a backend going down,
a forged cookie, and the balancer's cookie kept from the backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import ScriptedBackend
from tests.support.client import Reply, fetch


@pytest.fixture
def three() -> Iterator[list[ScriptedBackend]]:
    """Three scripted backends s1..s3, each answering with its own name."""
    backends = [ScriptedBackend(f"s{i}").start() for i in range(1, 4)]
    yield backends
    for backend in backends:
        if backend.running:
            backend.stop()


def _get(port: int, cookie: str | None = None) -> Reply:
    reply = fetch(port, "/", headers={"Cookie": cookie} if cookie else {})
    assert reply.status == 200
    return reply


def _token(reply: Reply) -> str:
    (set_cookie,) = reply.header("Set-Cookie")
    assert set_cookie.endswith("; Path=/; HttpOnly; SameSite=Lax")
    return set_cookie.split(";")[0]  # "SRV=..."


def test_sticky_cookie_life_cycle(
    three: list[ScriptedBackend], start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """A new client gets a cookie, keeps its backend with it (in every worker), is moved
    (with a new cookie) when that backend goes down, and a forged cookie counts as none."""
    urls = ", ".join(f'"{b.url}"' for b in three)
    config = tmp_path / "lb.toml"
    config.write_text(f'sticky_cookie = "SRV"\nbackends = [{urls}]\n')
    lb = start_balancer([], workers=2, env={"PREFORK_LB_CONFIG": str(config)})

    first = _get(lb.port)
    cookie = _token(first)
    home = first.body.decode().strip()
    for _ in range(12):
        again = _get(lb.port, f"theirs=1; {cookie}; other=2")
        assert again.body.decode().strip() == home
        assert again.header("Set-Cookie") == []
    # The backend saw the client's other cookies, never the balancer's.
    owner = next(b for b in three if b.name == home)
    assert {tuple(r.header("Cookie")) for r in owner.requests[1:]} == {("theirs=1; other=2",)}

    forged = _get(lb.port, "SRV=" + cookie.split("=", 1)[1][::-1])
    assert _token(forged) != ""  # treated as no cookie: balanced, and a new one set

    owner.stop()
    moved = _get(lb.port, cookie)
    assert moved.body.decode().strip() != home
    new_cookie = _token(moved)
    assert new_cookie != cookie
    for _ in range(6):
        assert _get(lb.port, new_cookie).body == moved.body
    # Unset secret: one made by the master, the same in both workers (checked above).
    assert "sticky_secret" not in lb.log()

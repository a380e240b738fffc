"""policy = "hash" through real balancers: a key keeps its backend across workers and restarts;
bounded load sends a key elsewhere while its backend is busy."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.backend import RecordedRequest, Responder, ScriptedBackend, default_response
from tests.support.client import fetch


@pytest.fixture
def four_backends() -> Iterator[list[ScriptedBackend]]:
    """Four scripted backends h1..h4, each answering with its own name."""
    backends = [ScriptedBackend(f"h{i}").start() for i in range(1, 5)]
    yield backends
    for backend in backends:
        backend.stop()


def _config(path: Path, urls: list[str]) -> Path:
    listed = ", ".join(f'"{url}"' for url in urls)
    path.write_text(
        f"""
policy = "hash"
hash_key = "header:X-User"
backends = [{listed}]

[pools.unbounded]
policy = "hash"
hash_key = "header:X-User"
hash_balance_factor = 0
backends = [{listed}]

[[routes]]
path_prefix = "/unbounded"
pool = "unbounded"
"""
    )
    return path


def _who(port: int, user: str, target: str = "/") -> str:
    reply = fetch(port, target, headers={"X-User": user})
    assert reply.status == 200
    return reply.body.decode().strip()


def test_a_key_keeps_its_backend_across_workers_and_a_restart(
    four_backends: list[ScriptedBackend], start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """Every worker sends a key to one backend; a restarted balancer (backends listed in
    another order) sends it to the same one; requests without the key go round robin."""
    urls = [b.url for b in four_backends]
    users = [f"user-{n}" for n in range(40)]
    first = start_balancer(
        [], workers=4, env={"PREFORK_LB_CONFIG": str(_config(tmp_path / "a.toml", urls))}
    )
    with ThreadPoolExecutor(max_workers=20) as pool:
        # The pool without bounded load: 20 at once would rightly spill over otherwise.
        seen = list(pool.map(lambda u: (u, _who(first.port, u, "/unbounded")), users * 5))
    mapping: dict[str, set[str]] = {}
    for user, name in seen:
        mapping.setdefault(user, set()).add(name)
    assert all(len(names) == 1 for names in mapping.values()), mapping
    # Spread over the backends.
    assert len({next(iter(names)) for names in mapping.values()}) == 4
    keyless = Counter(fetch(first.port, "/").body.decode().strip() for _ in range(8))
    assert keyless == {"h1": 2, "h2": 2, "h3": 2, "h4": 2}
    first.stop()
    again = start_balancer(
        [], workers=2, env={"PREFORK_LB_CONFIG": str(_config(tmp_path / "b.toml", urls[::-1]))}
    )
    for user in users:
        assert {_who(again.port, user, "/unbounded")} == mapping[user]
        # One at a time, the bounded pool sends keys where the unbounded one does.
        assert {_who(again.port, user)} == mapping[user]


def test_a_key_moves_off_its_backend_only_while_it_is_overloaded(
    four_backends: list[ScriptedBackend], start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """With a slow backend, bounded load spreads one key's concurrent requests; with
    hash_balance_factor = 0 they all wait on the key's own backend."""
    urls = [b.url for b in four_backends]
    lb = start_balancer(
        [], workers=2, env={"PREFORK_LB_CONFIG": str(_config(tmp_path / "c.toml", urls))}
    )
    owner_name = _who(lb.port, "alice")
    owner = next(b for b in four_backends if b.name == owner_name)

    def slow(request: RecordedRequest, responder: Responder) -> None:
        time.sleep(0.8)
        default_response(request, responder)

    owner.route("/", slow)
    for target in ("/", "/unbounded"):
        with ThreadPoolExecutor(max_workers=12) as pool:
            names = Counter(pool.map(lambda _, t=target: _who(lb.port, "alice", t), range(12)))
        if target == "/":
            # Bound: ceil(1.25 * (load + 1) / 4) in flight on any backend; 12 at once: 4.
            assert names[owner_name] <= 4
            assert len(names) >= 3
        else:
            assert names == {owner_name: 12}

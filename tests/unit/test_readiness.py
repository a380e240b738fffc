"""The rule for "ready" and the probes' answers, without a socket."""

from __future__ import annotations

import math

import pytest

from prefork_lb.config import Member, Pool
from prefork_lb.health import BackendHealth
from prefork_lb.readiness import (
    LIVE,
    READY,
    has_usable_backend,
    is_usable,
    probe_answer,
    ready_pools,
)

NOW = 100.0


@pytest.mark.parametrize(
    ("row", "usable"),
    [
        pytest.param(BackendHealth(), True, id="up"),
        pytest.param(BackendHealth(up=False, retry_at=math.inf), False, id="down-active-checks"),
        pytest.param(BackendHealth(up=False, retry_at=NOW + 5), False, id="down-before-trial"),
        pytest.param(BackendHealth(up=False, retry_at=NOW - 1), True, id="down-due-a-trial"),
        pytest.param(BackendHealth(admin=1), False, id="drained"),
        pytest.param(BackendHealth(admin=2), False, id="maintenance"),
        pytest.param(BackendHealth(ejected_until=NOW + 1), False, id="ejected"),
        pytest.param(BackendHealth(ejected_until=NOW - 1), True, id="ejection-over"),
    ],
)
def test_a_backend_is_usable_on_its_own_merits(row: BackendHealth, usable: bool) -> None:
    """Up or due a trial, and not drained, in maintenance or ejected: usable for readiness."""
    assert is_usable(row, NOW) is usable


def test_one_usable_member_makes_the_pool_ready() -> None:
    """A pool is ready when any one of its members is usable, whatever the others are."""
    down = BackendHealth(up=False, retry_at=math.inf)
    rows = [down, BackendHealth(), down]
    assert has_usable_backend(rows, [Member(0), Member(1)], NOW)
    assert not has_usable_backend(rows, [Member(0), Member(2)], NOW)


def test_a_lone_backend_that_is_down_is_not_ready() -> None:
    """The lone-backend rule (always chosen) does not make an instance ready."""
    assert not has_usable_backend([BackendHealth(up=False, retry_at=math.inf)], [Member(0)], NOW)


@pytest.mark.parametrize(
    ("names", "looked_at"),
    [
        pytest.param(["default"], (0,), id="only-default"),
        pytest.param(["api", "default", "static"], (1,), id="default-among-others"),
        pytest.param(["api", "static"], (0, 1), id="no-default-every-pool"),
    ],
)
def test_readiness_looks_at_the_default_pool_else_every_pool(
    names: list[str], looked_at: tuple[int, ...]
) -> None:
    """The pool named default decides; without one, every pool does."""
    pools = [Pool(name, (Member(0),)) for name in names]
    assert ready_pools(pools) == looked_at


@pytest.mark.parametrize(
    ("method", "ok", "status", "body"),
    [
        pytest.param("GET", True, "200 OK", READY, id="get-ready"),
        pytest.param("GET", False, "503 Service Unavailable", b"not ready\n", id="get-not-ready"),
        pytest.param("HEAD", True, "200 OK", b"", id="head-ready"),
        pytest.param("HEAD", False, "503 Service Unavailable", b"", id="head-not-ready"),
    ],
)
def test_probe_answers_are_one_word_of_plain_text(
    method: str, ok: bool, status: str, body: bytes
) -> None:
    """GET gets the word, HEAD its length only; plain text that no cache keeps."""
    answer_status, headers, answer_body = probe_answer(method, ok, READY)
    assert (answer_status, answer_body) == (status, body)
    assert ("Cache-Control", "no-store") in headers
    assert ("Content-Type", "text/plain; charset=utf-8") in headers
    assert ("Content-Length", str(len(READY if ok else b"not ready\n"))) in headers


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_other_methods_get_405_with_allow(method: str) -> None:
    """A probe path answers any method but GET and HEAD with 405 naming those two."""
    status, headers, _ = probe_answer(method, True, LIVE)
    assert status == "405 Method Not Allowed"
    assert ("Allow", "GET, HEAD") in headers

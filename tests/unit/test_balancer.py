"""Round-robin selection: how a rotation position becomes a backend."""

from __future__ import annotations

import itertools
from collections import Counter
from http import HTTPStatus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.balancer import pick_backend
from prefork_lb.config import Backend
from prefork_lb.errors import NoBackendAvailable

# The shared counter is a file offset: it never goes below 0 or above 2**63 - 1.
MAX_POSITION = 2**63 - 1


def _backends(n: int) -> tuple[Backend, ...]:
    return tuple(
        Backend(url=f"http://10.0.0.{i}:80", scheme="http", host=f"10.0.0.{i}", port=80)
        for i in range(n)
    )


def test_no_backends() -> None:
    """With no backends there is nothing to pick: the balancer answers 503."""
    with pytest.raises(NoBackendAvailable) as caught:
        pick_backend((), 0)
    assert caught.value.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert caught.value.status.value == 503


@pytest.mark.parametrize(
    ("n", "position", "index"),
    [
        pytest.param(1, 0, 0, id="single-first"),
        pytest.param(1, 12345, 0, id="single-any"),
        pytest.param(3, 0, 0, id="first"),
        pytest.param(3, 2, 2, id="last"),
        pytest.param(3, 3, 0, id="wraps"),
        pytest.param(3, 7, 1, id="second-lap"),
        pytest.param(3, MAX_POSITION, MAX_POSITION % 3, id="largest-position"),
    ],
)
def test_pick_by_position(n: int, position: int, index: int) -> None:
    """Position p picks backend p mod n, in configured order."""
    backends = _backends(n)
    assert pick_backend(backends, position) is backends[index]


def test_picks_from_a_list() -> None:
    """Any sequence of backends works, a list as well as a tuple."""
    backends = list(_backends(2))
    assert [pick_backend(backends, p).url for p in range(4)] == [
        "http://10.0.0.0:80",
        "http://10.0.0.1:80",
        "http://10.0.0.0:80",
        "http://10.0.0.1:80",
    ]


@given(
    n=st.integers(min_value=1, max_value=20),
    k=st.integers(min_value=1, max_value=10),
    offset=st.integers(min_value=0, max_value=MAX_POSITION - 200),
)
def test_each_backend_exactly_k_times(n: int, k: int, offset: int) -> None:
    """Over n*k consecutive positions from any offset, each of n backends is picked k times."""
    backends = _backends(n)
    picks = Counter(pick_backend(backends, p).url for p in range(offset, offset + n * k))
    assert picks == {backend.url: k for backend in backends}


@given(
    n=st.integers(min_value=1, max_value=20),
    offset=st.integers(min_value=0, max_value=MAX_POSITION - 41),
)
def test_consecutive_positions_cycle_in_order(n: int, offset: int) -> None:
    """Each position picks the backend configured after the previous pick, wrapping around."""
    backends = _backends(n)
    indexes = [backends.index(pick_backend(backends, p)) for p in range(offset, offset + 2 * n + 1)]
    for before, after in itertools.pairwise(indexes):
        assert after == (before + 1) % n

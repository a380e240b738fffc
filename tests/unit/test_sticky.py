"""Sticky-cookie tokens: signed, opaque, bound to their pool; the balancer's cookie taken out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.sticky import StickyCookie, backend_id, sign, verify, without_cookie

SECRET = b"0123456789abcdef-secret"
URLS = ["http://10.0.0.1:80", "http://10.0.0.2:80", "http://10.0.0.3:80"]


def _cookie() -> StickyCookie:
    return StickyCookie("lb", "web", SECRET, enumerate(URLS))


def test_a_token_sends_the_client_back_to_its_backend() -> None:
    """The cookie set for a backend names that backend, and nothing about its address."""
    cookie = _cookie()
    for index in range(3):
        header = cookie.set_cookie(index, secure=False)
        name, _, rest = header.partition("=")
        token, _, attributes = rest.partition("; ")
        assert name == "lb"
        assert attributes == "Path=/; HttpOnly; SameSite=Lax"
        assert "10.0.0" not in token
        assert cookie.backend(token) == index
    assert cookie.set_cookie(0, secure=True).endswith("; SameSite=Lax; Secure")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="none"),
        pytest.param("", id="empty"),
        pytest.param("not base64 !!", id="garbage"),
        pytest.param("AAAA", id="short"),
        pytest.param(sign(b"another secret 16+", "web", URLS[0]), id="other-secret"),
        pytest.param(sign(SECRET, "api", URLS[0]), id="other-pool"),
        pytest.param(sign(SECRET, "web", "http://10.0.0.9:80"), id="stale-backend"),
    ],
)
def test_forged_or_stale_tokens_count_as_none(token: str | None) -> None:
    """A token this pool did not sign for one of its backends names no backend."""
    assert _cookie().backend(token) is None


@given(token_index=st.integers(0, 2), position=st.integers(0, 31), bit=st.integers(0, 5))
def test_any_changed_character_is_refused(token_index: int, position: int, bit: int) -> None:
    """Changing any one character of a valid token makes it invalid (or name nothing)."""
    token = sign(SECRET, "web", URLS[token_index])
    position %= len(token)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    changed = alphabet[(alphabet.index(token[position]) ^ (1 << bit)) % 64]
    forged = token[:position] + changed + token[position + 1 :]
    if forged != token:
        ident = verify(SECRET, "web", forged)
        # The last character carries padding bits only some of which count.
        assert ident is None or ident == backend_id(URLS[token_index])


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([("Cookie", "lb=x")], [], id="only-ours"),
        pytest.param([("Cookie", "a=1; lb=x; b=2")], [("Cookie", "a=1; b=2")], id="middle"),
        pytest.param([("Cookie", "lb=x;a=1")], [("Cookie", "a=1")], id="first"),
        pytest.param([("Cookie", "a=1"), ("Cookie", "lb=x")], [("Cookie", "a=1")], id="two-lines"),
        pytest.param([("Cookie", "lbx=1; xlb=2")], [("Cookie", "lbx=1; xlb=2")], id="lookalikes"),
        pytest.param([("X-Lb", "lb=1")], [("X-Lb", "lb=1")], id="other-header"),
    ],
)
def test_without_cookie(headers: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
    """The balancer's cookie goes; every other cookie stays as it was."""
    assert without_cookie(headers, "lb") == expected

"""A request head sent as one checked block is byte for byte the head urllib3 sends line by line."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.connection import HTTPConnection
from urllib3.util import SKIP_HEADER

from prefork_lb.backend_http import BackendHTTPConnectionPool, HeaderLines


class _Recorded(BackendHTTPConnectionPool.ConnectionCls):  # type: ignore[misc,name-defined]
    """The balancer's connection class, recording what it sends instead of connecting."""

    def __init__(self) -> None:
        super().__init__("backend.test", 80)
        self.sent: list[bytes] = []

    def send(self, data: Any) -> None:
        self.sent.append(bytes(data))


def _send(method: str, target: str, lines: list[tuple[str, str]], *, block: bool) -> Any:
    """What goes out: the connection's request, or urllib3's own line-by-line one."""
    conn = _Recorded()
    request = conn.request if block else lambda *a, **k: HTTPConnection.request(conn, *a, **k)
    try:
        request(method, target, None, HeaderLines(lines))
    except Exception as err:
        return ("error", type(err), str(err))
    return ("sent", conn.sent, conn._response_options)


_TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcXYZ", min_size=1, max_size=8)
_VALUE = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=300), max_size=12)
_FIXED = [("Host", "backend.test"), ("User-Agent", SKIP_HEADER), ("Accept-Encoding", SKIP_HEADER)]


@pytest.mark.parametrize(
    ("method", "lines"),
    [
        pytest.param("GET", [*_FIXED, ("X-A", "1"), ("X-A", "2")], id="get-repeated"),
        pytest.param("POST", [*_FIXED, ("Content-Length", "5")], id="post-length"),
        pytest.param("POST", _FIXED, id="post-no-length"),
        pytest.param("GET", [("Host", "h")], id="defaults-added"),
        pytest.param("GET", [*_FIXED, ("X-A", "a\r\n b")], id="folded-value"),
        pytest.param("GET", [*_FIXED, ("X-A", "a\nb")], id="bare-lf"),
        pytest.param("GET", [*_FIXED, ("X A", "b")], id="space-in-name"),
        pytest.param("GET", [*_FIXED, ("X-A", "\u0100")], id="not-latin-1"),
        pytest.param("GET", [*_FIXED, ("User-Agent", "ua")], id="own-user-agent"),
    ],
)
def test_block_matches_urllib3(method: str, lines: list[tuple[str, str]]) -> None:
    """The same bytes (or the same error) as urllib3's request, in one send."""
    sent = _send(method, "/p?q", lines, block=True)
    assert sent == _send(method, "/p?q", lines, block=False)
    if sent[0] == "sent":
        assert len(sent[1]) == 1


@settings(max_examples=500, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "DELETE", "POST", "PUT", "get", "X"]),
    target=st.text(alphabet="/?a%\x00 \x7f", min_size=1, max_size=6),
    extra=st.lists(st.tuples(_TOKEN, _VALUE), max_size=4),
)
def test_block_matches_urllib3_for_any_lines(
    method: str, target: str, extra: list[tuple[str, str]]
) -> None:
    """For any method, target and header lines: urllib3's bytes, or urllib3's error."""
    lines = [*_FIXED, *extra]
    assert _send(method, target, lines, block=True) == _send(method, target, lines, block=False)


@pytest.mark.parametrize(
    ("method", "lines", "as_block"),
    [
        pytest.param("GET", [*_FIXED, ("X-A", "1")], True, id="get"),
        pytest.param("POST", [*_FIXED, ("Content-Length", "5")], True, id="post-length"),
        pytest.param("POST", _FIXED, False, id="post-no-length"),
        pytest.param("GET", [("Host", "h")], False, id="defaults-added"),
        pytest.param("GET", [*_FIXED, ("X-A", "a\r\n b")], False, id="folded-value"),
    ],
)
def test_which_heads_go_as_one_block(
    method: str, lines: list[tuple[str, str]], as_block: bool
) -> None:
    """Plain heads go as one block; anything urllib3 would add to or frame goes line by line."""
    assert (HeaderLines(lines).field_block(method) is not None) is as_block

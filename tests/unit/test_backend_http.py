"""parse_head gives exactly the message http.client.parse_headers gives, for any head."""

from __future__ import annotations

import http.client
import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefork_lb.backend_http import parse_head


def _state(message: Any) -> dict[str, Any]:
    """Everything a message holds: header lines, payload, defects (by type and text), policy."""
    state = dict(message.__dict__)
    state["defects"] = [(type(d), str(d)) for d in message.defects]
    payload = state.get("_payload")
    if isinstance(payload, list):
        state["_payload"] = [_state(part) for part in payload]
    return state


def _both(head: bytes) -> tuple[Any, Any]:
    def run(parse: Any) -> Any:
        fp = io.BufferedReader(io.BytesIO(head))  # type: ignore[arg-type]
        try:
            if parse is parse_head:
                return ("ok", _state(parse_head(http.client._read_headers(fp))))
            return ("ok", _state(parse(fp)))
        except Exception as err:
            return ("error", type(err), str(err))

    return run(http.client.parse_headers), run(parse_head)


@pytest.mark.parametrize(
    "head",
    [
        b"Server: nginx\r\nContent-Length: 10\r\n\r\n",
        b"\r\n",
        b"A:b\r\n\r\n",
        b"A:  b  \r\n\r\n",
        b"A:\r\n\r\n",
        b"A: b\r\n folded\r\n\r\n",
        b"A: b\r\nbad line\r\nC: d\r\n\r\n",
        b"A: b\rc\r\n\r\n",
        b"A: b\x85c\r\n\r\n",
        b"A: \xe9t\xe9\r\n\r\n",
        b"A b: c\r\n\r\n",
        b"From x\r\nA: b\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n",
        b"Content-Type: message/rfc822\r\n\r\n",
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
        b"A: " + bytes(range(32, 256)) + b"\r\n\r\n",
    ],
)
def test_parse_head_matches_http_client(head: bytes) -> None:
    """Plain heads take the fast path; folded, odd or multipart ones the email parser."""
    expected, got = _both(head)
    assert got == expected


_PIECES = st.sampled_from(
    [b"A", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"x", b"\x85", b"-", b"\xe9", b"From "]
)


@settings(max_examples=2000, deadline=None)
@given(
    body=st.lists(_PIECES, max_size=14).map(b"".join),
    end=st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n"]),
)
def test_parse_head_matches_http_client_for_any_head(body: bytes, end: bytes) -> None:
    """Any mix of names, colons, whitespace, bare CR/LF and latin-1: the same message."""
    expected, got = _both(body + end)
    assert got == expected

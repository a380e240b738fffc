"""The public values extensions see: the header multi-map, the request and the response."""

from __future__ import annotations

import pytest

from prefork_lb import Headers, Request, Response

BAD_LINES = [
    pytest.param("X-A", "a\r\nInjected: 1", id="crlf-in-value"),
    pytest.param("X-A", "a\rb", id="cr-in-value"),
    pytest.param("X-A", "a\nb", id="lf-in-value"),
    pytest.param("X-A", "a\x00b", id="nul-in-value"),
    pytest.param("X-A", "a\x7fb", id="del-in-value"),
    pytest.param("X-A", "caf\u00e9\u20ac", id="beyond-latin-1"),
    pytest.param("X-A\r\nB", "1", id="crlf-in-name"),
    pytest.param("X-A\x00", "1", id="nul-in-name"),
    pytest.param("X A", "1", id="space-in-name"),
    pytest.param("X-A:", "1", id="colon-in-name"),
    pytest.param("", "1", id="empty-name"),
]


def sample() -> Headers:
    """Three lines, one name repeated in two spellings."""
    return Headers([("Accept", "a"), ("Set-Cookie", "x=1"), ("set-cookie", "y=2")])


def test_get_is_case_insensitive_and_gives_the_first_value() -> None:
    """get() finds a name in any case, gives its first value, or the default."""
    headers = sample()
    assert headers.get("SET-COOKIE") == "x=1"
    assert headers.get("missing") is None
    assert headers.get("missing", "d") == "d"


def test_get_all_keeps_repeated_names_in_order() -> None:
    """get_all() gives every value of a name, in order."""
    assert sample().get_all("Set-Cookie") == ["x=1", "y=2"]
    assert sample().get_all("nope") == []


def test_add_appends_and_keeps_the_others() -> None:
    """add() appends a line after the existing ones of the same name."""
    headers = sample()
    headers.add("Set-Cookie", "z=3")
    assert headers.get_all("set-cookie") == ["x=1", "y=2", "z=3"]
    assert len(headers) == 4


def test_set_replaces_every_line_of_the_name_where_the_first_was() -> None:
    """set() leaves one line of the name, at the place of the first, and the rest in order."""
    headers = Headers([("A", "1"), ("B", "2"), ("a", "3"), ("C", "4")])
    headers.set("a", "9")
    assert list(headers) == [("a", "9"), ("B", "2"), ("C", "4")]
    headers.set("D", "5")
    assert list(headers)[-1] == ("D", "5")


def test_remove_drops_every_line_of_the_name() -> None:
    """remove() drops every line of a name in any case; a missing name is no error."""
    headers = sample()
    headers.remove("SET-cookie")
    headers.remove("nothing")
    assert list(headers) == [("Accept", "a")]
    assert "accept" in headers
    assert "set-cookie" not in headers


def test_a_dict_makes_headers_too() -> None:
    """Headers accept a dict as well as pairs."""
    assert list(Headers({"A": "1", "B": "2"})) == [("A", "1"), ("B", "2")]


@pytest.mark.parametrize(("name", "value"), BAD_LINES)
def test_a_line_that_could_split_the_head_is_refused(name: str, value: str) -> None:
    """A name that is not a token, or a value with CR, LF, NUL or a control, raises ValueError."""
    headers = sample()
    for change in (headers.add, headers.set):
        with pytest.raises(ValueError, match="header"):
            change(name, value)
    with pytest.raises(ValueError, match="header"):
        Headers([(name, value)])
    with pytest.raises(ValueError, match="header"):
        Response(200, [(name, value)])
    assert list(headers) == list(sample())


def test_a_tab_and_latin_1_are_allowed_in_values() -> None:
    """Tab, visible ASCII and obs-text (latin-1) are valid in a header value."""
    headers = Headers()
    headers.add("X-A", "a\tb caf\u00e9")
    assert headers.get("x-a") == "a\tb caf\u00e9"


def request(target: str = "/a%2Fb?x=1&y") -> Request:
    """A request as the phases would get it."""
    return Request(
        method="GET",
        target=target,
        headers=Headers(),
        client_addr="127.0.0.1",
        scheme="http",
        id="r1",
    )


def test_request_path_and_query_split_the_raw_target() -> None:
    """path and query are the raw target split at the first ?, still percent-encoded."""
    req = request()
    assert (req.path, req.query) == ("/a%2Fb", "x=1&y")
    assert request("/plain").query == ""


@pytest.mark.parametrize(
    "target",
    ["a/b", "/a b", "/a\r\nb", "/a#frag", "http://elsewhere/", "", "/caf\u00e9"],
)
def test_request_target_must_stay_origin_form(target: str) -> None:
    """Setting a target that is not /path[?query] in printable ASCII raises ValueError."""
    req = request()
    with pytest.raises(ValueError, match="target"):
        req.target = target
    assert req.target == "/a%2Fb?x=1&y"


def test_request_target_may_change() -> None:
    """A valid origin-form target replaces the old one."""
    req = request()
    req.target = "/v2/a?z"
    assert (req.path, req.query) == ("/v2/a", "z")


@pytest.mark.parametrize("status", [199, 600, 0, "200", True, 200.0])
def test_a_response_status_must_be_an_int_from_200_to_599(status: object) -> None:
    """A Response with a status that is not an int from 200 to 599 raises ValueError."""
    with pytest.raises(ValueError, match="status"):
        Response(status)  # type: ignore[arg-type]


def test_a_response_body_must_be_bytes() -> None:
    """A Response body that is not bytes raises ValueError."""
    with pytest.raises(ValueError, match="bytes"):
        Response(200, body="text")  # type: ignore[arg-type]

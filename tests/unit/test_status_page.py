"""The status page renderer: a ``/backends`` document in, one readable HTML page out."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest

from prefork_lb.status_page import (
    BackendTraffic,
    human_duration,
    mean_latency,
    render_status_page,
    short_time,
)

A, B, C = "http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:8080"


def _backend(url: str, **changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "url": url,
        "state": "up",
        "usable": True,
        "since": "2026-11-23T10:00:00.000+00:00",
        "seconds_in_state": 185.2,
        "reason": "up since the balancer started",
        "failed_requests": 0,
        "consecutive_failures": 0,
        "consecutive_successes": 0,
        "in_flight": 0,
        "tunnels_open": 0,
        "weight": 1,
        "backup": False,
        "health_check": True,
    }
    entry.update(changes)
    return entry


def _document(*backends: dict[str, Any]) -> dict[str, Any]:
    return {
        "policy": "round_robin",
        "fail_open": False,
        "pid": 4242,
        "time": "2026-11-23T10:03:05.200+00:00",
        "backends": list(backends),
    }


class _Page(HTMLParser):
    """Reads the page back: its title, text by element id, and each table row's cells by class."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.title = ""
        self.by_id: dict[str, str] = {}
        self.rows: list[dict[str, str]] = []
        self.row_attrs: list[dict[str, str]] = []
        self.tags: list[str] = []
        self._open: list[tuple[str, str | None, str | None]] = []  # tag, id, class
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        named = dict(attrs)
        if tag in ("meta", "br"):
            return
        if tag == "tr" and "data-url" in named:
            self.rows.append({})
            self.row_attrs.append({k: v or "" for k, v in named.items()})
        cls = named.get("class")
        self._open.append((tag, named.get("id"), cls.split()[-1] if cls else None))

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("meta", "br"):
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for tag, element_id, cls in self._open:
            if tag == "title":
                self.title += data
            if element_id is not None:
                self.by_id[element_id] = self.by_id.get(element_id, "") + data
            if tag == "td" and cls is not None and self.rows:
                self.rows[-1][cls] = self.rows[-1].get(cls, "") + data


def _render(*backends: dict[str, Any], traffic: dict[str, BackendTraffic] | None = None) -> _Page:
    return _Page(render_status_page(_document(*backends), traffic))


def test_each_backend_is_one_row_with_its_state_in_words() -> None:
    """Each backend gets one row; its state is spelled UP or DOWN (not colour alone)."""
    page = _render(
        _backend(A, in_flight=2, weight=5, tunnels_open=1),
        _backend(B, state="down", usable=False, reason="3 failed requests", failed_requests=3),
        _backend(C, backup=True, health_check=False),
    )
    assert [row["url"] for row in page.rows] == [A, B, C]
    assert [row["state"].split()[0] for row in page.rows] == ["UP", "DOWN", "UP"]
    assert [attrs["data-state"] for attrs in page.row_attrs] == ["up", "down", "up"]
    assert page.rows[1]["reason"] == "3 failed requests"
    assert page.rows[1]["failed"] == "3"
    assert "backup" in page.rows[2]["state"]
    assert "backup" not in page.rows[0]["state"]
    assert [row["in-flight"] for row in page.rows] == ["2", "0", "0"]
    assert [row["tunnels"] for row in page.rows] == ["1", "0", "0"]
    assert [row["weight"] for row in page.rows] == ["5", "1", "1"]
    assert [row["health-check"] for row in page.rows] == ["on", "on", "off"]
    assert page.rows[0]["since"] == "3 minsince 2026-11-23 10:00:00 UTC"


def test_down_backend_on_trial_says_so() -> None:
    """A down backend that may take one trial request is marked "on trial"."""
    page = _render(_backend(A, state="down", usable=True))
    assert page.rows[0]["state"].startswith("DOWN")
    assert "on trial" in page.rows[0]["state"]


def test_title_and_heading_name_the_policy_time_and_summary() -> None:
    """The title carries the summary; the page names the policy and the document's time."""
    page = _render(_backend(A), _backend(B), _backend(C, state="down"))
    assert page.title == "prefork_lb: 3 backends: 2 up, 1 down"
    assert page.by_id["summary"] == "3 backends: 2 up, 1 down"
    assert page.by_id["policy"] == "round_robin"
    assert page.by_id["time"] == "2026-11-23T10:03:05.200+00:00"


@pytest.mark.parametrize(
    ("states", "summary"),
    [
        pytest.param([], "0 backends: 0 up, 0 down", id="none"),
        pytest.param(["up"], "1 backend: 1 up, 0 down", id="one-up"),
        pytest.param(["down", "down"], "2 backends: 0 up, 2 down", id="all-down"),
        pytest.param(["up", "down", "up"], "3 backends: 2 up, 1 down", id="mixed"),
    ],
)
def test_summary_counts_up_and_down(states: list[str], summary: str) -> None:
    """The summary line counts the backends that are up and down."""
    backends = [_backend(f"http://h{i}", state=state) for i, state in enumerate(states)]
    assert _render(*backends).by_id["summary"] == summary


def test_markup_in_a_reason_or_url_shows_as_text() -> None:
    """A reason or URL holding markup is escaped: it shows as text and adds no element."""
    evil = '<script>alert("x")</script>'
    url = 'http://h:1/"><img src=x>'
    text = render_status_page(_document(_backend(url, state="down", reason=evil)), None)
    assert "<script>" not in text
    assert "<img" not in text
    page = _Page(text)
    assert "script" not in page.tags
    assert "img" not in page.tags
    assert page.rows[0]["reason"] == evil
    assert page.rows[0]["url"] == url
    assert page.row_attrs[0]["data-url"] == url


def test_traffic_columns_say_na_without_counters() -> None:
    """With no traffic figures at all, requests, errors and latency say "n/a"."""
    row = _render(_backend(A)).rows[0]
    assert (row["requests"], row["errors"], row["latency"]) == ("n/a", "n/a", "n/a")


def test_traffic_columns_show_the_figures_given() -> None:
    """Requests and errors are shown as given; mean latency is sum / count."""
    traffic = {
        A: BackendTraffic(requests=40, errors=3, latency_sum=1.0, latency_count=40),
        B: BackendTraffic(requests=0, errors=0, latency_sum=0.0, latency_count=0),
    }
    page = _render(_backend(A), _backend(B), _backend(C), traffic=traffic)
    cells = [(row["requests"], row["errors"], row["latency"]) for row in page.rows]
    assert cells == [("40", "3", "25.0 ms"), ("0", "0", "\u2014"), ("0", "0", "\u2014")]


@pytest.mark.parametrize(
    ("latency_sum", "count", "shown"),
    [
        pytest.param(0.0, 0, "\u2014", id="nothing-observed"),
        pytest.param(0.0123, 1, "12.3 ms", id="milliseconds"),
        pytest.param(3.0, 2, "1.50 s", id="seconds"),
    ],
)
def test_mean_latency(latency_sum: float, count: int, shown: str) -> None:
    """Mean latency is shown in ms below a second, in s above, and as a dash with no samples."""
    assert mean_latency(BackendTraffic(count, 0, latency_sum, count)) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        pytest.param(0.4, "0 s", id="under-a-second"),
        pytest.param(59.9, "59 s", id="seconds"),
        pytest.param(185, "3 min", id="minutes"),
        pytest.param(2 * 3600 + 5 * 60, "2 h 5 min", id="hours"),
        pytest.param(4 * 86400 + 3600, "4 d 1 h", id="days"),
        pytest.param(-1, "0 s", id="clock-skew"),
    ],
)
def test_human_duration(seconds: float, shown: str) -> None:
    """Time in state reads as a person would say it."""
    assert human_duration(seconds) == shown


@pytest.mark.parametrize(
    ("iso", "shown"),
    [
        pytest.param("2026-11-23T10:00:00.250+00:00", "2026-11-23 10:00:00 UTC", id="utc"),
        pytest.param("2026-11-23T10:00:00+02:00", "2026-11-23T10:00:00+02:00", id="offset"),
        pytest.param("soon", "soon", id="not-a-time"),
    ],
)
def test_short_time(iso: str, shown: str) -> None:
    """A UTC time is shown to the second; anything else exactly as the document has it."""
    assert short_time(iso) == shown


def test_page_is_self_contained_and_refreshes() -> None:
    """The page loads nothing from elsewhere and refreshes itself every few seconds."""
    text = render_status_page(_document(_backend(A)), None, json_href="/_prefork_lb/backends")
    assert text.startswith("<!DOCTYPE html>")
    assert '<meta http-equiv="refresh" content="5">' in text
    # An inline icon: a browser asking for /favicon.ico would be proxied to a backend.
    assert '<link rel="icon" href="data:,">' in text
    assert "<script" not in text
    assert "src=" not in text
    assert "http://" not in text.replace(A, "")
    assert 'href="/_prefork_lb/backends"' in text


@pytest.mark.parametrize("held", ["drain", "maint"])
def test_drain_and_maint_show_as_badges(held: str) -> None:
    """A backend an operator drained or put in maintenance shows DRAIN or MAINT."""
    backend = _backend("http://10.0.0.1:80", admin_state=held)
    page = render_status_page(_document(backend), None, json_href="/x")
    assert f'<span class="badge {held}">{held.upper()}</span>' in page

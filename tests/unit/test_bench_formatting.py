"""Figures as a person reads them in the load test's table and progress lines."""

from __future__ import annotations

import pytest

from scripts.bench.formatting import (
    format_added_ms,
    format_errors,
    format_mib,
    format_ms,
    format_ratio,
    format_us,
    plural,
    summary_line,
    upstream_version,
)
from scripts.bench.wrk import WrkResult


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        pytest.param(0.123, "0.12 ms", id="below-1"),
        pytest.param(1.94, "1.9 ms", id="below-10"),
        pytest.param(15.4, "15 ms", id="below-1000"),
        pytest.param(1950.2, "1,950 ms", id="thousands"),
    ],
)
def test_format_ms(ms: float, text: str) -> None:
    """Milliseconds keep about two significant digits, with thousands separated."""
    assert format_ms(ms) == text


@pytest.mark.parametrize(
    ("us", "text"),
    [
        pytest.param(None, "-", id="none"),
        pytest.param(9.84, "9.8 µs", id="below-10"),
        pytest.param(12.4, "12 µs", id="tens"),
        pytest.param(474.4, "474 µs", id="hundreds"),
        pytest.param(1203.0, "1,203 µs", id="thousands"),
    ],
)
def test_format_us(us: float | None, text: str) -> None:
    """CPU microseconds keep a decimal only below 10, and a missing figure is a dash."""
    assert format_us(us) == text


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        pytest.param(0.374, "+0.37 ms", id="slower"),
        pytest.param(-0.02, "-0.02 ms", id="faster"),
        pytest.param(0.0, "+0.00 ms", id="same"),
    ],
)
def test_format_added_ms(ms: float, text: str) -> None:
    """A latency difference always carries its sign."""
    assert format_added_ms(ms) == text


@pytest.mark.parametrize(
    ("ratio", "text"),
    [
        pytest.param(None, "-", id="none"),
        pytest.param(2.634, "2.63x", id="above-1"),
        pytest.param(1.0, "1.00x", id="one"),
        pytest.param(0.0871, "0.087x", id="below-1"),
        pytest.param(0.06, "0.060x", id="trailing-zero-kept"),
        pytest.param(0.00451, "0.0045x", id="far-below-1"),
    ],
)
def test_format_ratio(ratio: float | None, text: str) -> None:
    """Ratios below 1 keep two significant digits, trailing zero included."""
    assert format_ratio(ratio) == text


@pytest.mark.parametrize(
    ("kib", "text"),
    [
        pytest.param(71987, "70.3 MiB", id="kib"),
        pytest.param(None, "-", id="none"),
        pytest.param("71987", "-", id="not-a-number"),
    ],
)
def test_format_mib(kib: object, text: str) -> None:
    """KiB figures read as MiB; anything else is a dash."""
    assert format_mib(kib) == text


@pytest.mark.parametrize(
    ("errors", "text"),
    [
        pytest.param({"connect": 0, "status": 0}, "none", id="none"),
        pytest.param(
            {"timeout": 1200, "read": 34, "write": 0}, "1,200 timeout, 34 read", id="some"
        ),
        pytest.param({"status": 2351}, "2,351 HTTP 4xx/5xx", id="statuses-named"),
    ],
)
def test_format_errors(errors: dict[str, int], text: str) -> None:
    """Only the kinds that happened are listed, statuses under a name a person knows."""
    assert format_errors(errors) == text


@pytest.mark.parametrize(
    ("count", "noun", "text"),
    [
        pytest.param(1, "worker", "1 worker", id="one"),
        pytest.param(2, "worker", "2 workers", id="many"),
        pytest.param(2, "worker process", "2 worker processes", id="many-ending-in-s"),
    ],
)
def test_plural(count: int, noun: str, text: str) -> None:
    """Nouns take -s, or -es after an s, for any count but one."""
    assert plural(count, noun) == text


@pytest.mark.parametrize(
    ("version", "text"),
    [
        pytest.param("2.6.12-1+deb12u4", "2.6.12", id="debian-suffix"),
        pytest.param("1.22.1", "1.22.1", id="plain"),
        pytest.param(None, "-", id="not-installed"),
    ],
)
def test_upstream_version(version: object, text: str) -> None:
    """A distribution's suffix is dropped from a tool's version."""
    assert upstream_version(version) == text


RESULT = WrkResult(
    requests=3655,
    duration_s=2.1,
    bytes_read=1_050_000_000,
    p50_ms=4.04,
    p99_ms=1139.4,
    max_ms=1598.5,
    errors={"connect": 0, "read": 3, "status": 0},
)


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        pytest.param(
            {}, "1,740 req/s, p50 4.0 ms, p99 1,139 ms, 3 errors (3 read)", id="small-responses"
        ),
        pytest.param({"bulk": True}, "500 MB/s (3,655 bodies), 3 errors (3 read)", id="bulk"),
        pytest.param(
            {"latency": True},
            "p50 4.0 ms, p99 1,139 ms (1,740 req/s), 3 errors (3 read)",
            id="latency",
        ),
    ],
)
def test_summary_line(kind: dict[str, bool], text: str) -> None:
    """Each kind of run leads its progress line with the figure that run is for."""
    assert summary_line(RESULT, **kind) == text

"""Reading wrk's output: the line done.lua prints, captured from real runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.bench.wrk import (
    DONE_SCRIPT,
    MARKER,
    WrkResult,
    parse_wrk_output,
    read_wrk_result,
    why_no_result,
)
from tests.support.bench_run import SAMPLES

NO_ERRORS = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0}


def _sample(name: str) -> str:
    return (SAMPLES / name).read_text()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(
            "run/prefork_lb.wrk",
            WrkResult(
                requests=2777,
                duration_s=2.010848,
                bytes_read=486140,
                p50_ms=35.116,
                p99_ms=543.347,
                max_ms=691.228,
                errors=NO_ERRORS,
            ),
            id="prefork_lb-50-connections",
        ),
        pytest.param(
            "run/prefork_lb.bulk.wrk",
            WrkResult(
                requests=21,
                duration_s=2.035427,
                bytes_read=1082323022,
                p50_ms=93.574,
                p99_ms=132.338,
                max_ms=132.338,
                errors=NO_ERRORS,
            ),
            id="bulk-50MB-bodies",
        ),
        pytest.param(
            "wrk/status-404.txt",
            WrkResult(
                requests=2351,
                duration_s=1.099666,
                bytes_read=1222520,
                p50_ms=0.746,
                p99_ms=6.112,
                max_ms=8.493,
                errors=NO_ERRORS | {"status": 2351},
            ),
            id="every-answer-404",
        ),
        pytest.param(
            "wrk/no-answer.txt",
            WrkResult(
                requests=0,
                duration_s=2.005571,
                bytes_read=0,
                p50_ms=0.0,
                p99_ms=0.0,
                max_ms=0.0,
                errors=NO_ERRORS,
            ),
            id="server-never-answers",
        ),
        pytest.param("wrk/refused.txt", None, id="connection-refused"),
        pytest.param("wrk/empty.txt", None, id="no-output"),
    ],
)
def test_parse_wrk_output(name: str, expected: WrkResult | None) -> None:
    """The exact counts and latencies come from the marker line; without it there is no result."""
    assert parse_wrk_output(_sample(name)) == expected


@pytest.mark.parametrize(
    ("name", "requests_per_s", "mb_per_s", "error_count"),
    [
        pytest.param("run/prefork_lb.wrk", 1381.0, 0.24176, 0, id="small-responses"),
        pytest.param("run/prefork_lb.bulk.wrk", 10.317, 531.74, 0, id="bulk"),
        pytest.param("wrk/status-404.txt", 2137.9, 1.112, 2351, id="status-errors"),
        pytest.param("wrk/no-answer.txt", 0.0, 0.0, 0, id="nothing-completed"),
    ],
)
def test_derived_rates(name: str, requests_per_s: float, mb_per_s: float, error_count: int) -> None:
    """Rates are counts over wrk's own duration; errors add up every kind, statuses included."""
    result = parse_wrk_output(_sample(name))
    assert result is not None
    assert result.requests_per_s == pytest.approx(requests_per_s, rel=1e-3)
    assert result.mb_per_s == pytest.approx(mb_per_s, rel=1e-3)
    assert result.error_count == error_count


def test_zero_duration_gives_zero_rates() -> None:
    """A run that took no time reports rates of 0 rather than dividing by zero."""
    result = WrkResult(5, 0.0, 100, 1.0, 2.0, 3.0, {})
    assert (result.requests_per_s, result.mb_per_s) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(
            "wrk/refused.txt",
            "wrk gave no result: unable to connect to 127.0.0.1:1 Connection refused",
            id="refused",
        ),
        pytest.param("wrk/empty.txt", "wrk gave no result: no output", id="empty"),
    ],
)
def test_why_no_result(name: str, expected: str) -> None:
    """A failed run is explained by wrk's last line of output."""
    assert why_no_result(_sample(name)) == expected


def test_read_wrk_result_of_a_missing_file(tmp_path: Path) -> None:
    """A run whose output file was never written has no result."""
    assert read_wrk_result(tmp_path / "missing.wrk") is None


def test_done_script_prints_the_marker() -> None:
    """The Lua script wrk runs prints the very marker the parser looks for."""
    assert f"'{MARKER}{{" in DONE_SCRIPT.read_text()

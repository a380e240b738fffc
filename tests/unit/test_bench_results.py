"""A finished run's directory and the figures derived from it (a captured --quick run)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scripts.bench.results import (
    CPU_TARGETS,
    TARGETS,
    cpu_us_per_request,
    load_results,
    ratio,
    rounded,
)
from tests.support.bench_run import RUN


def _sample(ticks: int, pids: list[int] | None = None, rate: int = 100) -> dict[str, object]:
    return {"pids": [100, 101] if pids is None else pids, "ticks": ticks, "ticks_per_s": rate}


@pytest.mark.parametrize(
    ("before", "after", "requests", "expected"),
    [
        pytest.param(_sample(47), _sample(197), 2777, 540.15, id="prefork_lb-captured"),
        pytest.param(_sample(0), _sample(87), 50202, 17.33, id="nginx-captured"),
        pytest.param(_sample(5, rate=1000), _sample(6, rate=1000), 1, 1000.0, id="other-clock"),
        pytest.param(_sample(5), _sample(5), 10, 0.0, id="idle"),
        pytest.param(None, _sample(87), 10, None, id="no-sample-before"),
        pytest.param(_sample(0), None, 10, None, id="no-sample-after"),
        pytest.param(_sample(0), _sample(87), 0, None, id="no-requests"),
        pytest.param(_sample(0), _sample(87, rate=1000), 10, None, id="clocks-differ"),
        pytest.param(_sample(90), _sample(87), 10, None, id="time-went-backwards"),
        pytest.param(_sample(0), _sample(0, pids=[]), 10, None, id="server-gone"),
        pytest.param({"ticks": "0"}, _sample(87), 10, None, id="malformed"),
    ],
)
def test_cpu_us_per_request(
    before: dict[str, object] | None,
    after: dict[str, object] | None,
    requests: int,
    expected: float | None,
) -> None:
    """CPU per request is the tick difference over the requests; any doubt gives None."""
    result = cpu_us_per_request(before, after, requests)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize(
    ("value", "reference", "expected"),
    [
        pytest.param(1381.0, 24989.0, 0.05526, id="both"),
        pytest.param(None, 24989.0, None, id="no-value"),
        pytest.param(1381.0, None, None, id="no-reference"),
        pytest.param(1381.0, 0.0, None, id="zero-reference"),
    ],
)
def test_ratio(value: float | None, reference: float | None, expected: float | None) -> None:
    """A ratio needs both figures and a reference other than zero."""
    assert rounded(ratio(value, reference), 5) == expected


def test_load_results_reads_every_file() -> None:
    """Every target of the captured run has its runs, and the balancers their CPU figures."""
    run = load_results(RUN)
    assert all(run.small[key] is not None for key in TARGETS)
    assert all(result is not None for result in run.bulk.values())
    assert all(result is not None for result in run.latency.values())
    assert run.why_missing == dict.fromkeys(TARGETS, "no result")
    assert run.memory_after == {
        "workers": 2,
        "pids": [16810, 16811],
        "rss_kib": 70852,
        "peak_kib": 70852,
    }
    figures = {key: rounded(run.cpu_us_per_request(key), 1) for key in CPU_TARGETS}
    assert figures == {
        "prefork_lb": 540.2,
        "nginx": 17.3,
        "haproxy": 18.0,
        "wsgiproxy2": 594.8,
        "proxypy": 420.1,
        "snippet": 1707.8,
    }
    assert run.cpu_us_per_request("direct") is None


def test_load_results_of_a_skipped_target(tmp_path: Path) -> None:
    """A skipped target has no figures, and the reason loadtest.sh wrote for it."""
    shutil.copytree(RUN, tmp_path, dirs_exist_ok=True)
    for path in tmp_path.glob("haproxy.*"):
        path.unlink()
    (tmp_path / "haproxy.status").write_text("skipped: haproxy is not installed\n")
    run = load_results(tmp_path)
    assert run.small["haproxy"] is None
    assert run.bulk["haproxy"] is None
    assert run.why_missing["haproxy"] == "skipped: haproxy is not installed"
    assert run.cpu_us_per_request("haproxy") is None
    assert run.bulk_mb_per_s("haproxy") is None
    assert run.added_ms("haproxy") is None


def test_derived_figures_of_the_captured_run() -> None:
    """Rates, and what a balancer adds at one connection, come from the captured wrk results."""
    run = load_results(RUN)
    assert rounded(run.requests_per_s("prefork_lb"), 1) == 1381.0
    assert rounded(run.bulk_mb_per_s("nginx"), 1) == 443.9
    assert run.added_ms("prefork_lb") == pytest.approx((0.448, 2.62))
    assert run.added_ms("snippet") is None

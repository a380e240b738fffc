"""The table printed at the end of a load test, rendered from a captured --quick run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scripts.bench.results import load_results
from scripts.bench.table import aligned, cpu_line, peers_line, render_table
from tests.support.bench_run import MACHINE, RUN, SETTINGS, WRK


@pytest.mark.parametrize(
    ("rows", "lines"),
    [
        pytest.param(
            [("target", "req/s", "vs nginx"), ("prefork_lb", "1,381", "0.055x")],
            ["target       req/s   vs nginx", "prefork_lb   1,381   0.055x"],
            id="figures-right-aligned",
        ),
        pytest.param(
            [("target", "req/s", "vs nginx"), ("haproxy", "-", "skipped: not installed")],
            ["target    req/s   vs nginx", "haproxy       -   skipped: not installed"],
            id="last-column-as-is",
        ),
    ],
)
def test_aligned(rows: list[tuple[str, ...]], lines: list[str]) -> None:
    """Labels are left-aligned, figures right-aligned, and the last column is left as it is."""
    assert aligned(rows) == lines


def test_table_of_the_captured_run() -> None:
    """The captured run's table names the commit, and shows each target's CPU per request."""
    lines = render_table(load_results(RUN), SETTINGS, MACHINE, "4521dc379d24").splitlines()
    assert lines[0].startswith("prefork_lb load test (git 4521dc379d24, --quick): 2 workers")
    assert lines[2] == (
        "machine: 2 cores, Linux 6.18.44, Python 3.11.7, nginx 1.22.1, haproxy 2.6.12, wrk 4.1.0"
    )
    assert lines[4:12] == [
        "target            req/s       p50      p99   errors    CPU/req   vs nginx",
        "backend direct   61,623   0.46 ms    11 ms        0          -   2.47x",
        "prefork_lb        1,381     35 ms   543 ms        0     540 µs   0.055x",
        "nginx            24,989    1.7 ms    11 ms        0      17 µs   1.00x",
        "haproxy          22,627    1.7 ms    10 ms        0      18 µs   0.91x",
        "WSGIProxy2        2,300     18 ms    72 ms        0     595 µs   0.092x",
        "proxy.py          2,721     18 ms   115 ms        0     420 µs   0.11x",
        "flask snippet       521     96 ms   133 ms        0   1,708 µs   0.021x",
    ]
    assert lines[-3:] == [
        "prefork_lb CPU per request: 540 µs, 31.17x nginx's 17 µs "
        "(user+system time of master and workers during the run, from /proc)",
        "prefork_lb serves 0.60x WSGIProxy2's, 0.51x proxy.py's req/s "
        "(goal: 2x every Python peer: not met)",
        "prefork_lb serves 2.65x the flask snippet's req/s",
    ]


def test_skipped_and_failed_targets(tmp_path: Path) -> None:
    """A target without a run shows why; one with errors gets a note under the table."""
    shutil.copytree(RUN, tmp_path, dirs_exist_ok=True)
    for path in tmp_path.glob("nginx.*"):
        path.unlink()
    (tmp_path / "nginx.status").write_text("skipped: nginx is not installed\n")
    shutil.copy(WRK / "status-404.txt", tmp_path / "snippet.wrk")
    table = render_table(load_results(tmp_path), SETTINGS, MACHINE, None)
    assert "prefork_lb load test (git unknown, --quick)" in table
    nginx_row = (
        "nginx                 -         -        -        -         -   skipped: nginx is not"
    )
    assert f"\n{nginx_row} installed\n" in table
    assert "prefork_lb CPU per request: 540 µs (user+system time" in table
    assert table.endswith("\n\nflask snippet errors: 2,351 HTTP 4xx/5xx")


def test_peers_line_without_peers(tmp_path: Path) -> None:
    """Without runs of the Python peers there is no line comparing with them."""
    shutil.copytree(RUN, tmp_path, dirs_exist_ok=True)
    for path in [*tmp_path.glob("wsgiproxy2.*"), *tmp_path.glob("proxypy.*")]:
        path.unlink()
    run = load_results(tmp_path)
    assert peers_line(run) is None
    assert "Python peer" not in render_table(run, SETTINGS, MACHINE, None)


def test_peers_goal_met(tmp_path: Path) -> None:
    """The peers' line says the goal is met only when prefork_lb serves 2x each peer."""
    shutil.copytree(RUN, tmp_path, dirs_exist_ok=True)
    shutil.copy(tmp_path / "wsgiproxy2.wrk", tmp_path / "prefork_lb.wrk")  # 2,300 req/s
    (tmp_path / "proxypy.wrk").unlink()
    shutil.copy(tmp_path / "snippet.wrk", tmp_path / "wsgiproxy2.wrk")  # 521 req/s
    assert peers_line(load_results(tmp_path)) == (
        "prefork_lb serves 4.41x WSGIProxy2's req/s (goal: 2x every Python peer: met)"
    )


def test_no_cpu_line_without_prefork_lb_samples(tmp_path: Path) -> None:
    """Without CPU samples for prefork_lb there is no CPU line rather than a wrong one."""
    shutil.copytree(RUN, tmp_path, dirs_exist_ok=True)
    (tmp_path / "prefork_lb.cpu-after.json").unlink()
    run = load_results(tmp_path)
    assert cpu_line(run) is None
    assert "CPU per request" not in render_table(run, SETTINGS, MACHINE, None)

"""Instructions per request: callgrind's totals, gunicorn's worker pid, the arithmetic, the table.

The samples in bench_samples/callgrind are real: the header and last lines of
a gunicorn worker's callgrind file (its 2.8 MB of cost lines cut), the same of
``valgrind --tool=callgrind --collect-systime=nsec /bin/true``, and the
gunicorn error log of that worker's run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.bench.callgrind import parse_total_instructions, worker_pid
from scripts.bench.instructions import (
    RevisionFigures,
    Run,
    comparison_json,
    per_request,
    render_comparison,
    summarize,
)

SAMPLES = Path(__file__).parent / "bench_samples" / "callgrind"


@pytest.mark.parametrize(
    ("text", "instructions"),
    [
        pytest.param(
            (SAMPLES / "worker.head-and-totals").read_text(), 1_821_418_239, id="worker-totals"
        ),
        pytest.param(
            (SAMPLES / "true-systime.head-and-totals").read_text(),
            126_637,
            id="ir-among-other-events",
        ),
        pytest.param(
            "events: Ir\nsummary: 1821416787\n\nfn=(1) main\n0 5\n",
            1_821_416_787,
            id="summary-without-totals",
        ),
        pytest.param(
            "events: sysCount Ir\nsummary: 58 126637\ntotals: 57 126640\n",
            126_640,
            id="ir-not-first-column",
        ),
    ],
)
def test_parse_total_instructions(text: str, instructions: int) -> None:
    """The Ir total is read from ``totals:``, else ``summary:``, in the column ``events:`` names."""
    assert parse_total_instructions(text) == instructions


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty-file"),
        pytest.param("# callgrind format\nversion: 1\nevents: Ir\n", id="cut-before-summary"),
        pytest.param("events: sysCount\ntotals: 57\n", id="no-ir-counted"),
    ],
)
def test_parse_total_instructions_refuses(text: str) -> None:
    """A file without an Ir total is an error, not a zero."""
    with pytest.raises(ValueError, match=r"totals|Ir"):
        parse_total_instructions(text)


@pytest.mark.parametrize(
    ("text", "pid"),
    [
        pytest.param((SAMPLES / "gunicorn-error.log").read_text(), 7680, id="real-log"),
        pytest.param("[INFO] Starting gunicorn 27.0.1\n", None, id="not-booted-yet"),
    ],
)
def test_worker_pid(text: str, pid: int | None) -> None:
    """The worker's pid comes from gunicorn's 'Booting worker with pid' line, once there is one."""
    assert worker_pid(text) == pid


def test_worker_pid_refuses_a_second_worker() -> None:
    """A replaced worker would count half a run, so two booted workers are an error."""
    log = "Booting worker with pid: 10\nBooting worker with pid: 11\n"
    with pytest.raises(ValueError, match="2 workers"):
        worker_pid(log)


@pytest.mark.parametrize(
    ("small_ir", "large_ir", "small", "large", "expected"),
    [
        pytest.param(1_000_000, 3_000_000, 100, 600, 4_000.0, id="difference-over-500"),
        pytest.param(1_000_000, 1_000_250, 100, 104, 62.5, id="fractions-kept"),
        pytest.param(5_000, 4_000, 1, 2, -1_000.0, id="negative-is-reported-not-hidden"),
    ],
)
def test_per_request(small_ir: int, large_ir: int, small: int, large: int, expected: float) -> None:
    """One request costs the runs' Ir difference divided by their request difference."""
    assert per_request(small_ir, large_ir, small, large) == expected


def test_per_request_needs_a_larger_run() -> None:
    """The large run must send more requests than the small one."""
    with pytest.raises(ValueError, match="more requests"):
        per_request(1, 2, 600, 600)


RUNS = [
    Run("old", 1, 100, 100_000_000),
    Run("old", 1, 600, 600_000_000),  # 1,000,000 per request
    Run("new", 1, 100, 90_000_000),
    Run("new", 1, 600, 540_000_000),  # 900,000
    Run("old", 2, 100, 100_000_000),
    Run("old", 2, 600, 601_000_000),  # 1,002,000
    Run("new", 2, 100, 90_000_000),
    Run("new", 2, 600, 540_500_000),  # 901,000
]


def test_summarize() -> None:
    """Each revision gets its per-repetition figures, their mean, spread and change vs the first."""
    old, new = summarize(RUNS, ["old", "new"], 100, 600)
    assert old == RevisionFigures(
        "old", (1_000_000.0, 1_002_000.0), 1_001_000.0, pytest.approx(2_000 / 1_001_000 * 100), 0.0
    )
    assert new.per_rep == (900_000.0, 901_000.0)
    assert new.mean == 900_500.0
    assert new.spread_pct == pytest.approx(1_000 / 900_500 * 100)
    assert new.vs_first_pct == pytest.approx((900_500 / 1_001_000 - 1) * 100)


def test_summarize_misses_no_run() -> None:
    """A revision without both runs of a repetition is an error, not a silent gap."""
    with pytest.raises(KeyError):
        summarize(RUNS[:-1], ["old", "new"], 100, 600)


@pytest.mark.parametrize(
    ("labels", "lines"),
    [
        pytest.param(
            ["old", "new"],
            [
                "revision       rep 1       rep 2        mean   spread   vs old",
                "old        1,000,000   1,002,000   1,001,000   0.200%   -",
                "new          900,000     901,000     900,500   0.111%   -10.04%",
            ],
            id="two-revisions",
        ),
        pytest.param(
            ["new", "old"],
            [
                "revision       rep 1       rep 2        mean   spread   vs new",
                "new          900,000     901,000     900,500   0.111%   -",
                "old        1,000,000   1,002,000   1,001,000   0.200%   +11.16%",
            ],
            id="first-is-the-reference",
        ),
    ],
)
def test_render_comparison(labels: list[str], lines: list[str]) -> None:
    """The table names the formula, has a row per revision in order, and ends with the command."""
    figures = summarize(RUNS, labels, 100, 600)
    text = render_comparison(figures, 100, 600, "scripts/compare-commits.sh old new")
    assert text.splitlines() == [
        "instructions per request: (Ir600 - Ir100) / 500, user space of the one gunicorn worker"
        " under callgrind (no kernel time)",
        "",
        *lines,
        "",
        "command: scripts/compare-commits.sh old new",
    ]


def test_comparison_json() -> None:
    """The JSON keeps every run's raw count next to the figures derived from them."""
    figures = summarize(RUNS, ["old", "new"], 100, 600)
    data = comparison_json(figures, RUNS, 100, 600)
    assert data["formula"] == "(Ir600 - Ir100) / 500"
    assert data["instructions_per_request"] == {
        "old": {
            "per_rep": [1_000_000.0, 1_002_000.0],
            "mean": 1_001_000.0,
            "spread_pct": figures[0].spread_pct,
            "vs_first_pct": 0.0,
        },
        "new": {
            "per_rep": [900_000.0, 901_000.0],
            "mean": 900_500.0,
            "spread_pct": figures[1].spread_pct,
            "vs_first_pct": figures[1].vs_first_pct,
        },
    }
    assert data["runs"][1] == {
        "label": "old",
        "rep": 1,
        "requests": 600,
        "instructions": 600_000_000,
    }

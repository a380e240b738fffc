"""Instructions per request from callgrind totals, and the comparison table of revisions.

Each repetition of a revision is two runs of one worker under callgrind, one
with ``small`` requests and one with ``large``; start-up and shutdown cost
the same in both, so ``(Ir[large] - Ir[small]) / (large - small)`` is what
one more request costs. No I/O here: values in, figures and text out.
"""

from __future__ import annotations

from dataclasses import dataclass

from scripts.bench.table import aligned


@dataclass(frozen=True, slots=True)
class Run:
    """One gunicorn under callgrind: a revision, a repetition, its requests, its worker's Ir."""

    label: str
    rep: int
    requests: int
    instructions: int


@dataclass(frozen=True, slots=True)
class RevisionFigures:
    """Instructions per request of one revision: per repetition, their mean and spread."""

    label: str
    per_rep: tuple[float, ...]
    mean: float
    spread_pct: float  # (max - min) / mean, in percent
    vs_first_pct: float  # (mean / first revision's mean - 1), in percent


def per_request(small_ir: int, large_ir: int, small: int, large: int) -> float:
    """What one request costs: the Ir difference of the two runs over their request difference."""
    if large <= small:
        raise ValueError(f"the large run must send more requests ({large} <= {small})")
    return (large_ir - small_ir) / (large - small)


def summarize(runs: list[Run], labels: list[str], small: int, large: int) -> list[RevisionFigures]:
    """The figures of each revision, in the order of ``labels``; KeyError if a run is missing."""
    by_key = {(run.label, run.rep, run.requests): run.instructions for run in runs}
    reps = sorted({run.rep for run in runs})
    figures: list[RevisionFigures] = []
    for label in labels:
        values = tuple(
            per_request(by_key[(label, rep, small)], by_key[(label, rep, large)], small, large)
            for rep in reps
        )
        mean = sum(values) / len(values)
        first = figures[0].mean if figures else mean
        figures.append(
            RevisionFigures(
                label=label,
                per_rep=values,
                mean=mean,
                spread_pct=(max(values) - min(values)) / mean * 100,
                vs_first_pct=(mean / first - 1) * 100,
            )
        )
    return figures


def render_comparison(figures: list[RevisionFigures], small: int, large: int, command: str) -> str:
    """The table a person reads: one row per revision, each repetition, mean, spread, change."""
    first = figures[0].label
    header = ("revision", *(f"rep {i}" for i in range(1, len(figures[0].per_rep) + 1)))
    rows = [(*header, "mean", "spread", f"vs {first}")]
    for index, revision in enumerate(figures):
        rows.append(
            (
                revision.label,
                *(f"{value:,.0f}" for value in revision.per_rep),
                f"{revision.mean:,.0f}",
                f"{revision.spread_pct:.3f}%",
                "-" if index == 0 else f"{revision.vs_first_pct:+.2f}%",
            )
        )
    return "\n".join(
        [
            f"instructions per request: (Ir{large} - Ir{small}) / {large - small}, "
            "user space of the one gunicorn worker under callgrind (no kernel time)",
            "",
            *aligned(rows),
            "",
            f"command: {command}",
        ]
    )


def comparison_json(
    figures: list[RevisionFigures], runs: list[Run], small: int, large: int
) -> dict[str, object]:
    """The figures and every run's raw count, for .loadtest/compare.json."""
    return {
        "instructions_per_request": {
            revision.label: {
                "per_rep": list(revision.per_rep),
                "mean": revision.mean,
                "spread_pct": revision.spread_pct,
                "vs_first_pct": revision.vs_first_pct,
            }
            for revision in figures
        },
        "formula": f"(Ir{large} - Ir{small}) / {large - small}",
        "runs": [
            {
                "label": run.label,
                "rep": run.rep,
                "requests": run.requests,
                "instructions": run.instructions,
            }
            for run in runs
        ],
    }

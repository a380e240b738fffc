"""The load test's figures as JSON, rendered from a captured --quick run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from scripts.bench.json_report import SCHEMA, Provenance, render_figures
from scripts.bench.results import TARGETS, load_results
from tests.support.bench_run import MACHINE, RUN, SETTINGS

PROVENANCE = Provenance(
    started_at="2026-12-05T21:19:35+00:00",
    finished_at="2026-12-05T21:20:12+00:00",
    command="scripts/loadtest.sh --quick",
    machine=MACHINE,
    versions={"prefork_lb_git": "4521dc379d24", "gunicorn": "27.0.1"},
    environment={"PREFORK_LB_WORKER_CONNECTIONS": "1000"},
)


def _figures(results: Path = RUN) -> dict[str, Any]:
    """The document as a reader of last.json sees it: through json.dumps and back."""
    document: dict[str, Any] = json.loads(
        json.dumps(render_figures(load_results(results), SETTINGS, PROVENANCE))
    )
    return document


def test_document_says_how_and_where() -> None:
    """The document carries its schema, the command, settings, machine and versions as given."""
    figures = _figures()
    assert figures["schema"] == SCHEMA
    assert figures["command"] == "scripts/loadtest.sh --quick"
    assert figures["machine"] == MACHINE
    assert figures["versions"]["prefork_lb_git"] == "4521dc379d24"
    assert figures["settings"]["quick"] is True
    assert figures["settings"]["wrk_command"] == "wrk -t2 -c50 -d2s --latency URL"
    assert figures["settings"]["prefork_lb_environment"] == PROVENANCE.environment
    assert [target["key"] for target in figures["targets"]] == list(TARGETS)


@pytest.mark.parametrize(
    ("key", "cpu_us", "vs_nginx"),
    [
        pytest.param("direct", None, 2.466, id="direct-not-sampled"),
        pytest.param("prefork_lb", 540.2, 0.0553, id="prefork_lb"),
        pytest.param("nginx", 17.3, 1.0, id="nginx"),
        pytest.param("snippet", 1707.8, 0.0209, id="snippet"),
    ],
)
def test_target_figures(key: str, cpu_us: float | None, vs_nginx: float) -> None:
    """Each target has its CPU per request (when sampled) and its rate against nginx's."""
    target = next(t for t in _figures()["targets"] if t["key"] == key)
    assert target["status"] == "ok"
    assert target["cpu_us_per_request"] == cpu_us
    assert target["vs_nginx"] == pytest.approx(vs_nginx, abs=1e-4)


def test_ratios_and_latency() -> None:
    """The ratios to compare commits by, and what prefork_lb adds at one connection."""
    figures = _figures()
    assert figures["ratios"] == {
        "prefork_lb_vs_nginx": 0.0553,
        "prefork_lb_vs_snippet": 2.6485,
        "prefork_lb_vs_wsgiproxy2": 0.6004,
        "prefork_lb_vs_proxypy": 0.5075,
        "prefork_lb_bulk_vs_nginx": 1.1979,
        "prefork_lb_cpu_vs_nginx": 31.17,
    }
    assert figures["latency_1conn"]["prefork_lb_added_p50_ms"] == 0.448
    assert figures["latency_1conn"]["prefork_lb"]["added_p99_ms"] == 2.62
    assert figures["prefork_lb_workers_memory"]["after_bulk"]["rss_kib"] == 70852


def test_skipped_target(tmp_path: Path) -> None:
    """A skipped nginx leaves its reason and no ratios to nginx, not zeros."""
    shutil.copytree(RUN, tmp_path, dirs_exist_ok=True)
    for path in tmp_path.glob("nginx.*"):
        path.unlink()
    (tmp_path / "nginx.status").write_text("skipped: nginx is not installed\n")
    figures = _figures(tmp_path)
    nginx = next(t for t in figures["targets"] if t["key"] == "nginx")
    assert nginx == {"key": "nginx", "label": "nginx", "status": "skipped: nginx is not installed"}
    assert figures["ratios"]["prefork_lb_cpu_vs_nginx"] is None
    assert figures["ratios"]["prefork_lb_vs_nginx"] is None
    assert figures["latency_1conn"]["nginx"] == {"status": "skipped: nginx is not installed"}

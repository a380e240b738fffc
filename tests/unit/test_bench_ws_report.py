"""The load test's WebSocket figures: rates from the driver's counts, ratios to nginx, the table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts.bench.ws_report import WebSocketRates, figures, load_rates, rates, render


def _result(bulk_bytes: int, echoes: int, seconds: float = 2.0) -> dict[str, Any]:
    return {
        "bulk_bytes": bulk_bytes,
        "bulk_seconds": seconds,
        "echo_round_trips": echoes,
        "echo_seconds": seconds,
        "echo_connections": 10,
    }


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        pytest.param(_result(600_000_000, 10_000), WebSocketRates(300.0, 5000.0), id="rates"),
        pytest.param(_result(0, 0), WebSocketRates(0.0, 0.0), id="nothing-moved"),
        pytest.param(_result(1, 1, seconds=0.0), None, id="no-time"),
        pytest.param({"bulk_bytes": 1}, None, id="missing"),
        pytest.param({**_result(1, 1), "echo_round_trips": "many"}, None, id="not-a-number"),
    ],
)
def test_rates(result: dict[str, Any], expected: WebSocketRates | None) -> None:
    """Bulk is MB/s (10^6 bytes) and echo round trips per second; a bad result has none."""
    assert rates(result) == expected


def test_results_are_loaded_per_target_and_bad_files_left_out(tmp_path: Path) -> None:
    """Each target's ws-<key>.json is read; a missing or broken file leaves that target out."""
    (tmp_path / "ws-direct.json").write_text(json.dumps(_result(800_000_000, 12_000)))
    (tmp_path / "ws-prefork_lb.json").write_text(json.dumps(_result(500_000_000, 6_000)))
    (tmp_path / "ws-nginx.json").write_text("{not json")
    assert load_rates(tmp_path) == {
        "direct": WebSocketRates(400.0, 6000.0),
        "prefork_lb": WebSocketRates(250.0, 3000.0),
    }


def test_figures_and_table_give_ratios_to_nginx() -> None:
    """prefork_lb's bulk and echo are shown as ratios to nginx's, with the bulk goal's verdict."""
    found = {
        "direct": WebSocketRates(400.0, 6000.0),
        "prefork_lb": WebSocketRates(270.0, 2000.0),
        "nginx": WebSocketRates(300.0, 4000.0),
    }
    shown = figures(found)
    assert shown["prefork_lb_vs_nginx"]["bulk"] == pytest.approx(0.9)
    assert shown["prefork_lb_vs_nginx"]["echo"] == pytest.approx(0.5)
    assert shown["targets"]["nginx"] == {"bulk_mb_s": 300.0, "echo_round_trips_s": 4000}
    table = render(found).splitlines()
    assert table[2].split() == ["prefork_lb", "270", "0.90x", "2,000", "0.50x"]
    assert table[-1] == "goal: prefork_lb bulk >= 0.9x nginx: met"


def test_a_missing_target_shows_and_has_no_ratio() -> None:
    """Without nginx there are no ratios and no verdict; the row says there is no result."""
    found = {"prefork_lb": WebSocketRates(270.0, 2000.0)}
    assert figures(found)["prefork_lb_vs_nginx"]["bulk"] is None
    table = render(found)
    assert "nginx" in table
    assert "(no result)" in table
    assert "goal" not in table

"""The WebSocket phase's figures: rates from the driver's counts, ratios, and a small table.

Pure: it takes what ``ws_driver.drive`` saved per target (``ws-<key>.json``
in the run's output directory) and returns figures and text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.bench.formatting import format_ratio

# Targets in the order of the table; the keys of their result files.
TARGETS = (("direct", "backend direct"), ("prefork_lb", "prefork_lb"), ("nginx", "nginx"))
# The goal for bulk relay through prefork_lb, as a share of nginx's.
BULK_GOAL = 0.9


@dataclass(frozen=True, slots=True)
class WebSocketRates:
    """One target's rates: bulk relay MB/s (10^6 bytes) and echo round trips per second."""

    bulk_mb_s: float
    echo_per_s: float


def rates(result: dict[str, Any]) -> WebSocketRates | None:
    """The rates in one driver result; None if a figure is missing or a time is not positive."""
    try:
        bulk = float(result["bulk_bytes"]) / float(result["bulk_seconds"]) / 1e6
        echo = float(result["echo_round_trips"]) / float(result["echo_seconds"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if bulk < 0 or echo < 0:
        return None
    return WebSocketRates(bulk, echo)


def load_rates(results: Path) -> dict[str, WebSocketRates]:
    """Every target's rates found in ``results``; a target without a good file is left out."""
    found = {}
    for key, _ in TARGETS:
        path = results / f"ws-{key}.json"
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        parsed = rates(result) if isinstance(result, dict) else None
        if parsed is not None:
            found[key] = parsed
    return found


def ratio(found: dict[str, WebSocketRates], key: str, base: str, field: str) -> float | None:
    """``key``'s figure ``field`` over ``base``'s, or None when either is missing or zero."""
    if key not in found or base not in found:
        return None
    under = getattr(found[base], field)
    return getattr(found[key], field) / under if under else None


def figures(found: dict[str, WebSocketRates]) -> dict[str, Any]:
    """The phase's figures as JSON: rates per target, and prefork_lb's ratios to nginx's."""
    return {
        "targets": {
            key: {"bulk_mb_s": round(r.bulk_mb_s, 1), "echo_round_trips_s": round(r.echo_per_s)}
            for key, r in found.items()
        },
        "prefork_lb_vs_nginx": {
            "bulk": ratio(found, "prefork_lb", "nginx", "bulk_mb_s"),
            "echo": ratio(found, "prefork_lb", "nginx", "echo_per_s"),
            "bulk_goal": BULK_GOAL,
        },
    }


def render(found: dict[str, WebSocketRates]) -> str:
    """The phase's table, with prefork_lb's ratios to nginx's and whether bulk met its goal."""
    lines = [
        f"{'WebSocket':<16} {'bulk MB/s':>10} {'x nginx':>8} {'echo rt/s':>10} {'x nginx':>8}",
    ]
    for key, label in TARGETS:
        if key not in found:
            lines.append(f"{label:<16} {'(no result)':>10}")
            continue
        r = found[key]
        bulk = format_ratio(ratio(found, key, "nginx", "bulk_mb_s"))
        echo = format_ratio(ratio(found, key, "nginx", "echo_per_s"))
        lines.append(
            f"{label:<16} {r.bulk_mb_s:>10,.0f} {bulk:>8} {r.echo_per_s:>10,.0f} {echo:>8}"
        )
    bulk_ratio = ratio(found, "prefork_lb", "nginx", "bulk_mb_s")
    if bulk_ratio is not None:
        verdict = "met" if bulk_ratio >= BULK_GOAL else "NOT met"
        lines.append(f"goal: prefork_lb bulk >= {BULK_GOAL}x nginx: {verdict}")
    return "\n".join(lines)

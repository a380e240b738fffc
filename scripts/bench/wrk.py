"""One wrk run's figures, read from the line scripts/bench/done.lua makes wrk print."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The line done.lua's done() prints; everything else in wrk's output is for people.
MARKER = "LOADTEST_RESULT "
# wrk's Lua script, next to the code that reads what it prints.
DONE_SCRIPT = Path(__file__).with_name("done.lua")
MB = 1_000_000


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured (latencies in milliseconds, errors by kind)."""

    requests: int
    duration_s: float
    bytes_read: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def requests_per_s(self) -> float:
        """Completed requests per second, as wrk counts them; 0 for a run of no time."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def mb_per_s(self) -> float:
        """Response bytes (headers and bodies) per second, in MB of 10^6 bytes."""
        return self.bytes_read / MB / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        """Socket errors (connect, read, write, timeout) plus statuses of 400 and up."""
        return sum(self.errors.values())


def parse_wrk_output(text: str) -> WrkResult | None:
    """The result done.lua printed in wrk's output, or None if wrk did not get that far."""
    for line in text.splitlines():
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER) :])
            return WrkResult(
                requests=int(raw["requests"]),
                duration_s=raw["duration_us"] / 1e6,
                bytes_read=int(raw["bytes"]),
                p50_ms=raw["p50_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
                errors={kind: int(count) for kind, count in raw["errors"].items()},
            )
    return None


def why_no_result(text: str) -> str:
    """Why a run gave no result, for a person: wrk's last line of output, or 'no output'."""
    last_line = text.strip().splitlines()[-1:] or ["no output"]
    return f"wrk gave no result: {last_line[0]}"


def read_wrk_output(path: Path) -> str:
    """A saved wrk output file's text; empty if the file is missing."""
    return path.read_text(errors="replace") if path.is_file() else ""


def read_wrk_result(path: Path) -> WrkResult | None:
    """Parse a saved wrk output file; None if it is missing or has no result."""
    return parse_wrk_output(read_wrk_output(path))

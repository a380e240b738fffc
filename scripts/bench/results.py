"""A finished run: what loadtest.sh left in its results directory, and figures derived from it.

The directory holds, per target KEY: ``KEY.wrk`` (small responses),
``KEY.bulk.wrk``, ``KEY.latency.wrk``, ``KEY.status`` (why a target has no
result), ``KEY.cpu-before.json`` and ``KEY.cpu-after.json`` (samples of the
server's CPU time around its small-response run); and the prefork_lb workers'
memory, ``rss-before.json`` and ``rss-after.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from scripts.bench.wrk import WrkResult, read_wrk_result

# Table order and labels; the keys are the result file names loadtest.sh writes.
TARGETS = {
    "direct": "backend direct",
    "prefork_lb": "prefork_lb",
    "nginx": "nginx",
    "haproxy": "haproxy",
    "wsgiproxy2": "WSGIProxy2",
    "proxypy": "proxy.py",
    "snippet": "flask snippet",
}
# prefork_lb's Python peers (issue 17: it should serve 2x the req/s of each).
PEER_TARGETS = ("wsgiproxy2", "proxypy")
PEERS_GOAL = 2.0
BULK_TARGETS = ("direct", "prefork_lb", "nginx", "haproxy")
# Driven at one connection after the throughput runs (files KEY.latency.wrk).
LATENCY_TARGETS = BULK_TARGETS
# The balancers whose CPU time loadtest.sh samples around the small-response run.
CPU_TARGETS = ("prefork_lb", "nginx", "haproxy", "wsgiproxy2", "proxypy", "snippet")
# prefork_lb again, measured right after the plain run, in front of the same
# backends: with a route table, and with policy = "hash" (issue 13: the cost
# of each against plain round robin, within ROUTING_GOAL).
ROUTING_TARGETS = {
    "prefork_lb_routed": "prefork_lb routed",
    "prefork_lb_hash": "prefork_lb hash",
}
ROUTING_GOAL = 0.05
# Issue 5's goal: at one connection, the p50 prefork_lb adds over the backend directly.
ADDED_P50_GOAL_MS = 0.3


@dataclass(frozen=True, slots=True)
class Settings:
    """How the run was made, as loadtest.sh passes it."""

    workers: int
    duration_s: int
    connections: int
    wrk_threads: int
    warmup_s: int
    bulk_bytes: int
    bulk_duration_s: int
    latency_duration_s: int
    backends: str
    backends_label: str
    quick: bool


def cpu_us_per_request(
    before: dict[str, object] | None, after: dict[str, object] | None, requests: int
) -> float | None:
    """CPU microseconds per request between two ``procfs.cpu_sample`` results.

    None when a sample is missing or empty (the server was gone), no request
    completed, the samples are not of one clock, or the time went backwards (a
    process of the server exited in between, taking its time with it).
    """
    if before is None or after is None or requests <= 0:
        return None
    if not (before.get("pids") and after.get("pids")):
        return None
    ticks_before, ticks_after = before.get("ticks"), after.get("ticks")
    rate = after.get("ticks_per_s")
    if not (
        isinstance(ticks_before, int)
        and isinstance(ticks_after, int)
        and isinstance(rate, int)
        and rate > 0
        and rate == before.get("ticks_per_s")
        and ticks_after >= ticks_before
    ):
        return None
    return (ticks_after - ticks_before) / rate * 1e6 / requests


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference; None when either is missing or the reference is 0."""
    return value / reference if value is not None and reference else None


def rounded(value: float | None, digits: int = 4) -> float | None:
    """``round`` that lets None through."""
    return round(value, digits) if value is not None else None


@dataclass(frozen=True, slots=True)
class RunResults:
    """Everything loadtest.sh left in the results directory."""

    small: dict[str, WrkResult | None]
    bulk: dict[str, WrkResult | None]
    latency: dict[str, WrkResult | None]
    why_missing: dict[str, str]
    memory_before: dict[str, object] | None
    memory_after: dict[str, object] | None
    cpu_before: dict[str, dict[str, object] | None]
    cpu_after: dict[str, dict[str, object] | None]

    def requests_per_s(self, key: str) -> float | None:
        """A target's small-response rate, None without a run (or with nothing completed)."""
        result = self.small.get(key)
        return result.requests_per_s if result and result.requests else None

    def bulk_mb_per_s(self, key: str) -> float | None:
        """A target's bulk rate, None without a run."""
        result = self.bulk.get(key)
        return result.mb_per_s if result and result.requests else None

    def cpu_us_per_request(self, key: str) -> float | None:
        """The CPU a target's processes spent per small response, None without samples."""
        result = self.small.get(key)
        if result is None:
            return None
        return cpu_us_per_request(
            self.cpu_before.get(key), self.cpu_after.get(key), result.requests
        )

    def routing_cost(self) -> dict[str, float | None]:
        """Per ``ROUTING_TARGETS`` key: its CPU per request over plain prefork_lb's, minus 1."""
        plain = self.cpu_us_per_request("prefork_lb")
        costs = {}
        for key in ROUTING_TARGETS:
            share = ratio(self.cpu_us_per_request(key), plain)
            costs[key] = None if share is None else share - 1
        return costs

    def added_ms(self, key: str) -> tuple[float, float] | None:
        """The p50 and p99 a balancer adds over the backend directly at one connection."""
        result, direct = self.latency.get(key), self.latency.get("direct")
        if not (result and result.requests and direct and direct.requests):
            return None
        return result.p50_ms - direct.p50_ms, result.p99_ms - direct.p99_ms


def _read_json(path: Path) -> dict[str, object] | None:
    """A JSON object saved by a helper command; None if the file is missing."""
    if not path.is_file():
        return None
    data: dict[str, object] = json.loads(path.read_text())
    return data


def load_results(results: Path) -> RunResults:
    """Read the wrk outputs, the skip/failure notes, the memory and the CPU samples."""
    why_missing = {}
    for key in TARGETS:
        status = results / f"{key}.status"
        why_missing[key] = status.read_text().strip() if status.is_file() else "no result"
    return RunResults(
        small={
            key: read_wrk_result(results / f"{key}.wrk") for key in (*TARGETS, *ROUTING_TARGETS)
        },
        bulk={key: read_wrk_result(results / f"{key}.bulk.wrk") for key in BULK_TARGETS},
        latency={key: read_wrk_result(results / f"{key}.latency.wrk") for key in LATENCY_TARGETS},
        why_missing=why_missing,
        memory_before=_read_json(results / "rss-before.json"),
        memory_after=_read_json(results / "rss-after.json"),
        cpu_before={
            key: _read_json(results / f"{key}.cpu-before.json")
            for key in (*CPU_TARGETS, *ROUTING_TARGETS)
        },
        cpu_after={
            key: _read_json(results / f"{key}.cpu-after.json")
            for key in (*CPU_TARGETS, *ROUTING_TARGETS)
        },
    )

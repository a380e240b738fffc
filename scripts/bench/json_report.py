"""The figures for machines (.loadtest/last.json): the table's figures, how and where made."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from scripts.bench.results import (
    ADDED_P50_GOAL_MS,
    LATENCY_TARGETS,
    TARGETS,
    RunResults,
    Settings,
    ratio,
    rounded,
)

SCHEMA = 1


@dataclass(frozen=True, slots=True)
class Provenance:
    """How and on what the run was made: everything the JSON holds besides the figures."""

    started_at: str
    finished_at: str
    command: str
    machine: dict[str, object]
    versions: dict[str, str | None]
    # Other PREFORK_LB_* settings the user had set, which apply to the run.
    environment: dict[str, str]


def _target_figures(run: RunResults, key: str) -> dict[str, object]:
    """One target's entry: small-response figures (or why there are none), then bulk."""
    entry: dict[str, object] = {"key": key, "label": TARGETS[key]}
    result = run.small[key]
    if result is None:
        entry["status"] = run.why_missing[key]
    else:
        entry |= {
            "status": "ok",
            "requests_per_s": round(result.requests_per_s, 1),
            "p50_ms": round(result.p50_ms, 3),
            "p99_ms": round(result.p99_ms, 3),
            "max_ms": round(result.max_ms, 3),
            "requests": result.requests,
            "duration_s": round(result.duration_s, 3),
            "errors": result.errors | {"total": result.error_count},
            "cpu_us_per_request": rounded(run.cpu_us_per_request(key), 1),
            "vs_nginx": rounded(ratio(result.requests_per_s, run.requests_per_s("nginx"))),
        }
    bulk = run.bulk.get(key)
    if bulk is not None:
        entry["bulk"] = {
            "mb_per_s": round(bulk.mb_per_s, 1),
            "bodies": bulk.requests,
            "duration_s": round(bulk.duration_s, 3),
            "errors": bulk.errors | {"total": bulk.error_count},
            "vs_nginx": rounded(ratio(bulk.mb_per_s, run.bulk_mb_per_s("nginx"))),
        }
    return entry


def _latency_figures(run: RunResults, settings: Settings) -> dict[str, object]:
    """The 1-connection figures: each target, and what prefork_lb adds over the backend."""
    figures: dict[str, object] = {
        "method": f"wrk -t1 -c1 -d{settings.latency_duration_s}s --latency URL, "
        "after the throughput runs",
    }
    for key in LATENCY_TARGETS:
        result = run.latency[key]
        if result is None or not result.requests:
            figures[key] = {"status": run.why_missing[key]}
            continue
        entry: dict[str, object] = {
            "status": "ok",
            "p50_ms": round(result.p50_ms, 3),
            "p99_ms": round(result.p99_ms, 3),
            "max_ms": round(result.max_ms, 3),
            "requests_per_s": round(result.requests_per_s, 1),
            "requests": result.requests,
            "errors": result.errors | {"total": result.error_count},
        }
        difference = run.added_ms(key)
        if key != "direct" and difference is not None:
            entry |= {
                "added_p50_ms": round(difference[0], 3),
                "added_p99_ms": round(difference[1], 3),
            }
        figures[key] = entry
    added = run.added_ms("prefork_lb")
    figures |= {
        "prefork_lb_added_p50_ms": round(added[0], 3) if added else None,
        "prefork_lb_added_p50_goal_ms": ADDED_P50_GOAL_MS,
    }
    return figures


def render_figures(
    run: RunResults, settings: Settings, provenance: Provenance
) -> dict[str, object]:
    """The whole JSON document, ready for ``json.dumps``; the same figures as the table."""
    prefork_rps = run.requests_per_s("prefork_lb")
    return {
        "schema": SCHEMA,
        "started_at": provenance.started_at,
        "finished_at": provenance.finished_at,
        "command": provenance.command,
        "settings": asdict(settings)
        | {
            "wrk_command": f"wrk -t{settings.wrk_threads} -c{settings.connections} "
            f"-d{settings.duration_s}s --latency URL",
            "bulk_method": f"wrk -t1 -c1 -d{settings.bulk_duration_s}s URL/bulk: "
            "bytes read / duration, MB = 10^6 bytes",
            "errors": "wrk socket errors (connect, read, write, timeout after 2 s) "
            "plus responses with status 400 or higher",
            "cpu_method": "user+system clock ticks of the target's process tree (/proc/PID/stat) "
            "before and after its small-response run, per completed request",
            "prefork_lb_environment": provenance.environment,
        },
        "machine": provenance.machine,
        "versions": provenance.versions,
        "targets": [_target_figures(run, key) for key in TARGETS],
        "latency_1conn": _latency_figures(run, settings),
        "routing_cost_vs_round_robin": {
            key: {
                "cpu_us_per_request": rounded(run.cpu_us_per_request(key), 1),
                "requests_per_s": rounded(run.requests_per_s(key), 1),
                "extra_cpu": rounded(cost),
            }
            for key, cost in run.routing_cost().items()
        },
        "prefork_lb_workers_memory": {
            "before_bulk": run.memory_before,
            "after_bulk": run.memory_after,
        },
        "ratios": {
            "prefork_lb_vs_nginx": rounded(ratio(prefork_rps, run.requests_per_s("nginx"))),
            "prefork_lb_vs_snippet": rounded(ratio(prefork_rps, run.requests_per_s("snippet"))),
            "prefork_lb_vs_wsgiproxy2": rounded(
                ratio(prefork_rps, run.requests_per_s("wsgiproxy2"))
            ),
            "prefork_lb_vs_proxypy": rounded(ratio(prefork_rps, run.requests_per_s("proxypy"))),
            "prefork_lb_bulk_vs_nginx": rounded(
                ratio(run.bulk_mb_per_s("prefork_lb"), run.bulk_mb_per_s("nginx"))
            ),
            "prefork_lb_cpu_vs_nginx": rounded(
                ratio(run.cpu_us_per_request("prefork_lb"), run.cpu_us_per_request("nginx")), 2
            ),
        },
    }

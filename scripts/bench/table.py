"""The table a person reads at the end of a run: one row per target, then the other blocks."""

from __future__ import annotations

from scripts.bench.formatting import (
    format_added_ms,
    format_errors,
    format_mib,
    format_ms,
    format_ratio,
    format_us,
    plural,
    upstream_version,
)
from scripts.bench.results import (
    ADDED_P50_GOAL_MS,
    BULK_TARGETS,
    LATENCY_TARGETS,
    PEER_TARGETS,
    PEERS_GOAL,
    ROUTING_GOAL,
    ROUTING_TARGETS,
    TARGETS,
    RunResults,
    Settings,
    ratio,
)
from scripts.bench.wrk import MB


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as text columns: the first left-aligned, figures right-aligned, the last as is."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(widths[i]) for i, cell in enumerate(row[1:-1], start=1)]
        cells.append(row[-1])
        lines.append("   ".join(cells).rstrip())
    return lines


def _header(settings: Settings, machine: dict[str, object], revision: str | None) -> list[str]:
    """What was run, where, at which commit."""
    warmup = f" after a {settings.warmup_s} s warm-up" if settings.warmup_s else ""
    quick = ", --quick" if settings.quick else ""
    return [
        f"prefork_lb load test (git {revision or 'unknown'}{quick}): "
        f"{plural(settings.workers, 'worker')} "
        f"(nginx: {plural(settings.workers, 'worker process')}, "
        f"haproxy: {plural(settings.workers, 'thread')}), "
        f"{plural(settings.connections, 'connection')}, {settings.duration_s} s per target{warmup}",
        f"load: wrk -t{settings.wrk_threads} -c{settings.connections} "
        f"-d{settings.duration_s}s; backends: {settings.backends_label}",
        f"machine: {machine['nproc']} cores, Linux {machine['kernel']}, "
        f"Python {machine['python']}, nginx {upstream_version(machine['nginx'])}, "
        f"haproxy {upstream_version(machine['haproxy'])}, "
        f"wrk {upstream_version(machine['wrk'])}",
        "",
    ]


def _target_rows(run: RunResults, notes: list[str]) -> list[tuple[str, ...]]:
    """The small-response table: rate, latency, errors, CPU per request, ratio to nginx."""
    nginx_rps = run.requests_per_s("nginx")
    rows: list[tuple[str, ...]] = [
        ("target", "req/s", "p50", "p99", "errors", "CPU/req", "vs nginx")
    ]
    for key, label in TARGETS.items():
        result = run.small[key]
        if result is None:
            rows.append((label, "-", "-", "-", "-", "-", run.why_missing[key]))
            continue
        rows.append(
            (
                label,
                f"{result.requests_per_s:,.0f}",
                format_ms(result.p50_ms),
                format_ms(result.p99_ms),
                f"{result.error_count:,}",
                format_us(run.cpu_us_per_request(key)),
                format_ratio(ratio(result.requests_per_s, nginx_rps)),
            )
        )
        if result.error_count:
            notes.append(f"{label} errors: {format_errors(result.errors)}")
    return rows


def _bulk_lines(
    run: RunResults, settings: Settings, label_width: int, notes: list[str]
) -> list[str]:
    """The bulk block: MB/s per target and the prefork_lb workers' memory around it."""
    indent = " " * label_width
    nginx_mbps = run.bulk_mb_per_s("nginx")
    figures = []
    for key in BULK_TARGETS:
        mbps = run.bulk_mb_per_s(key)
        figure = f"{mbps:,.0f}" if mbps is not None else "-"
        if key == "prefork_lb" and mbps is not None and nginx_mbps:
            figure += f" ({format_ratio(mbps / nginx_mbps)} nginx)"
        figures.append(f"{TARGETS[key].removeprefix('backend ')} {figure}")
        result = run.bulk[key]
        if result is not None and result.error_count:
            notes.append(f"{TARGETS[key]} bulk errors: {format_errors(result.errors)}")
    before = (run.memory_before or {}).get("rss_kib")
    after = run.memory_after or {}
    prefork_bulk = run.bulk["prefork_lb"]
    streamed = f", {prefork_bulk.bytes_read / 1e9:.1f} GB streamed" if prefork_bulk else ""
    return [
        f"{f'bulk {settings.bulk_bytes // MB} MB'.ljust(label_width)}MB/s: {', '.join(figures)}",
        f"{indent}prefork_lb workers RSS before/after: {format_mib(before)} / "
        f"{format_mib(after.get('rss_kib'))} (peak {format_mib(after.get('peak_kib'))}"
        f"{streamed})",
        f"{indent}(wrk -t1 -c1 -d{settings.bulk_duration_s}s on /bulk: bytes read / time, "
        "MB = 10^6 bytes)",
    ]


def _latency_lines(
    run: RunResults, settings: Settings, label_width: int, notes: list[str]
) -> list[str]:
    """The 1-connection block: p50 / p99 per target, then what each balancer adds."""
    indent = " " * label_width
    figures, added = [], []
    for key in LATENCY_TARGETS:
        name = TARGETS[key].removeprefix("backend ")
        result = run.latency[key]
        if result is None or not result.requests:
            figures.append(f"{name} -")
            continue
        figures.append(
            f"{name} {format_ms(result.p50_ms).removesuffix(' ms')} / {format_ms(result.p99_ms)}"
        )
        if result.error_count:
            notes.append(f"{TARGETS[key]} 1-connection errors: {format_errors(result.errors)}")
        difference = run.added_ms(key)
        if key != "direct" and difference is not None:
            goal = f" (goal: {ADDED_P50_GOAL_MS} ms or less)" if key == "prefork_lb" else ""
            added.append(f"{name} {format_added_ms(difference[0])}{goal}")
    lines = [f"{'latency, 1 conn'.ljust(label_width)}p50 / p99: {', '.join(figures)}"]
    if added:
        lines.append(f"{indent}p50 added over direct: {', '.join(added)}")
    lines.append(
        f"{indent}(wrk -t1 -c1 -d{settings.latency_duration_s}s --latency: one request at a time, "
        "after the runs above)"
    )
    return lines


def cpu_line(run: RunResults) -> str | None:
    """The figure to compare between commits: prefork_lb's CPU per request, and nginx's.

    None when prefork_lb has no CPU figure.
    """
    prefork_us, nginx_us = run.cpu_us_per_request("prefork_lb"), run.cpu_us_per_request("nginx")
    if prefork_us is None:
        return None
    line = f"prefork_lb CPU per request: {format_us(prefork_us)}"
    if nginx_us:
        line += f", {format_ratio(prefork_us / nginx_us)} nginx's {format_us(nginx_us)}"
    return line + " (user+system time of master and workers during the run, from /proc)"


def peers_line(run: RunResults) -> str | None:
    """prefork_lb's req/s over each Python peer's, and whether each meets the goal.

    None when prefork_lb or every peer has no figure.
    """
    prefork_rps = run.requests_per_s("prefork_lb")
    figures, met = [], []
    for key in PEER_TARGETS:
        times = ratio(prefork_rps, run.requests_per_s(key))
        if times is not None:
            figures.append(f"{format_ratio(times)} {TARGETS[key]}'s")
            met.append(times >= PEERS_GOAL)
    if not figures:
        return None
    verdict = "met" if all(met) else "not met"
    return (
        f"prefork_lb serves {', '.join(figures)} req/s "
        f"(goal: {PEERS_GOAL:g}x every Python peer: {verdict})"
    )


def routing_line(run: RunResults) -> str | None:
    """Issue 13's figure: routing's and hashing's CPU per request against plain round robin."""
    costs = run.routing_cost()
    parts = [
        f"{ROUTING_TARGETS[key].removeprefix('prefork_lb ')} "
        f"{format_us(run.cpu_us_per_request(key))} ({cost:+.1%})"
        for key, cost in costs.items()
        if cost is not None
    ]
    if not parts:
        return None
    return (
        f"prefork_lb CPU per request against round robin: {', '.join(parts)} "
        f"(goal: within {ROUTING_GOAL:.0%})"
    )


def render_table(
    run: RunResults, settings: Settings, machine: dict[str, object], revision: str | None
) -> str:
    """The whole table: header, one row per target, bulk, latency, CPU, then any notes."""
    notes: list[str] = []
    rows = _target_rows(run, notes)
    lines = _header(settings, machine, revision) + aligned(rows)
    # The blocks' figures start where the table's second column does.
    label_width = max(len(row[0]) for row in rows) + 3
    lines += _bulk_lines(run, settings, label_width, notes)
    lines += _latency_lines(run, settings, label_width, notes)
    lines.append("")
    cpu = cpu_line(run)
    if cpu is not None:
        lines.append(cpu)
    peers = peers_line(run)
    if peers is not None:
        lines.append(peers)
    routing = routing_line(run)
    if routing is not None:
        lines.append(routing)
    vs_snippet = ratio(run.requests_per_s("prefork_lb"), run.requests_per_s("snippet"))
    if vs_snippet is not None:
        lines.append(f"prefork_lb serves {format_ratio(vs_snippet)} the flask snippet's req/s")
    if lines[-1] == "":
        lines.pop()
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)

"""The Python half of scripts/loadtest.sh: ports, readiness, wrk results, memory, the report.

scripts/loadtest.sh starts and stops every process; this file does what reads
better in Python than in bash. Standard library only: it runs with the
project's .venv python, and its ``backend`` command is the fallback backend
server when nginx is not installed.

Commands (all used by scripts/loadtest.sh, none meant to be typed by hand):

  ports COUNT                       COUNT distinct free TCP ports on 127.0.0.1
  wait-ready URL PID SECONDS        until URL answers 200, or PID exits, or time is up
  summary WRK_OUTPUT [--bulk | --latency]
                                    one progress line from a wrk run
  rss MASTER_PID SAVE_AS            sum of the resident memory of MASTER_PID's children
  backend PORT NAME BULK_FILE       a small HTTP/1.1 keep-alive server (no nginx)
  report RESULTS_DIR ...            the table on stdout and the figures as JSON
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# The line our wrk Lua script's done() prints (see write_wrk_script in loadtest.sh).
_WRK_MARKER = "LOADTEST_RESULT "
MB = 1_000_000
# wrk's error kinds, as a person reads them ("status" counts responses >= 400).
_ERROR_NAMES = {"status": "HTTP 4xx/5xx"}

# Table order and labels; the keys are the result file names loadtest.sh writes.
TARGETS = {
    "direct": "backend direct",
    "prefork_lb": "prefork_lb",
    "nginx": "nginx",
    "haproxy": "haproxy",
    "snippet": "flask snippet",
}
BULK_TARGETS = ("direct", "prefork_lb", "nginx", "haproxy")
# Driven at one connection after the throughput runs (files KEY.latency.wrk).
LATENCY_TARGETS = BULK_TARGETS
# Issue 5's goal: at one connection, the p50 prefork_lb adds over the backend directly.
ADDED_P50_GOAL_MS = 0.3


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
        """Completed requests per second, as wrk counts them."""
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
    """The result our Lua ``done()`` printed, or None if wrk did not get that far."""
    for line in text.splitlines():
        if line.startswith(_WRK_MARKER):
            raw = json.loads(line[len(_WRK_MARKER) :])
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


def read_wrk_result(path: Path) -> WrkResult | None:
    """Parse a saved wrk output file; None if it is missing or has no result."""
    if not path.is_file():
        return None
    return parse_wrk_output(path.read_text(errors="replace"))


# ---- formatting ---------------------------------------------------------------


def format_ms(ms: float) -> str:
    """Milliseconds to about two digits: 0.12 ms, 1.9 ms, 15 ms, 1,950 ms."""
    if ms < 1:
        return f"{ms:.2f} ms"
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:,.0f} ms"


def plural(count: int, noun: str) -> str:
    """'1 worker', '2 workers', '2 worker processes'."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith("s") else f"{count} {noun}s"


def format_ratio(ratio: float | None) -> str:
    """2.63x, 1.00x, 0.087x, 0.060x, 0.0045x: two significant digits below 1."""
    if ratio is None:
        return "-"
    if ratio >= 1:
        return f"{ratio:.2f}x"
    return f"{ratio:#.2g}x"


def format_errors(errors: dict[str, int]) -> str:
    """The non-zero error kinds, as in '1,200 timeout, 34 read'."""
    kinds = [f"{count:,} {_ERROR_NAMES.get(kind, kind)}" for kind, count in errors.items() if count]
    return ", ".join(kinds) if kinds else "none"


def format_added_ms(ms: float) -> str:
    """A latency difference with its sign: +0.37 ms, -0.02 ms."""
    return f"{'-' if ms < 0 else '+'}{format_ms(abs(ms))}"


def summary_line(result: WrkResult, *, bulk: bool, latency: bool = False) -> str:
    """The progress line printed after one run."""
    errors = f"{result.error_count:,} errors"
    if result.error_count:
        errors += f" ({format_errors(result.errors)})"
    if bulk:
        return f"{result.mb_per_s:,.0f} MB/s ({result.requests:,} bodies), {errors}"
    if latency:
        return (
            f"p50 {format_ms(result.p50_ms)}, p99 {format_ms(result.p99_ms)} "
            f"({result.requests_per_s:,.0f} req/s), {errors}"
        )
    return (
        f"{result.requests_per_s:,.0f} req/s, p50 {format_ms(result.p50_ms)}, "
        f"p99 {format_ms(result.p99_ms)}, {errors}"
    )


# ---- small commands -------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Distinct ports the kernel considers free now (held open together, so all differ)."""
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    ports = [sock.getsockname()[1] for sock in listeners]
    for sock in listeners:
        sock.close()
    return ports


def _process_running(pid: int) -> bool:
    """True while PID exists and is not a zombie (an exited child not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat[stat.rindex(")") + 2] != "Z"


def wait_ready(url: str, pid: int, timeout_s: float) -> str | None:
    """Wait until ``GET url`` answers 200; None when it does, else why it never did."""
    match = re.fullmatch(r"http://([^/:]+):(\d+)(/.*)?", url)
    if match is None:
        return f"not an http://host:port URL: {url}"
    host, port, path = match.group(1), int(match.group(2)), match.group(3) or "/"
    deadline = time.monotonic() + timeout_s
    last_problem = "no answer"
    while time.monotonic() < deadline:
        if not _process_running(pid):
            return "the process exited"
        # http.client, not urllib: urllib would honour an http_proxy setting.
        conn = http.client.HTTPConnection(host, port, timeout=2)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return None
            last_problem = f"it answered {response.status}"
        except (OSError, http.client.HTTPException) as err:
            last_problem = f"{type(err).__name__}: {err}"
        finally:
            conn.close()
        time.sleep(0.1)
    return f"no 200 within {timeout_s:g} s ({last_problem})"


def _status_kib(pid: int, field: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/PID/status; 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(parent: int) -> list[int]:
    """PIDs whose parent is ``parent`` (gunicorn's workers, for its master)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the ")" that ends the command name: state, ppid, ...
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
            found.append(int(entry.name))
    return sorted(found)


def workers_memory(master: int) -> dict[str, object]:
    """Summed resident memory (now, and the peak so far) of the master's children, in KiB."""
    workers = _children(master)
    return {
        "workers": len(workers),
        "pids": workers,
        "rss_kib": sum(_status_kib(pid, "VmRSS") for pid in workers),
        "peak_kib": sum(_status_kib(pid, "VmHWM") for pid in workers),
    }


# ---- fallback backend -------------------------------------------------------------


class _BackendHandler(BaseHTTPRequestHandler):
    """Answers ``backend-N`` to everything, and the bulk file at /bulk."""

    protocol_version = "HTTP/1.1"  # keep-alive, as nginx would
    # Headers and body go out in two writes: without TCP_NODELAY the second waits
    # for the client's delayed ACK, 40 ms a response.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        """Send the bulk file for /bulk, the backend's name otherwise."""
        bulk: Path = getattr(self.server, "bulk_file")  # noqa: B009 - set in serve_backend
        if self.path == "/bulk":
            with bulk.open("rb") as body:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(bulk.stat().st_size))
                self.end_headers()
                self.connection.sendfile(body)
            return
        name: str = getattr(self.server, "backend_name")  # noqa: B009 - set in serve_backend
        answer = f"{name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: logging every request would slow it down further."""


def serve_backend(port: int, name: str, bulk_file: Path) -> None:
    """Serve on 127.0.0.1:port until killed."""

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        # The default backlog of 5 turns a burst of connects into SYN retries.
        request_queue_size = 1024

    server = Server(("127.0.0.1", port), _BackendHandler)
    server.backend_name = name  # type: ignore[attr-defined]
    server.bulk_file = bulk_file  # type: ignore[attr-defined]
    server.serve_forever()


# ---- the report ---------------------------------------------------------------------


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
    quick: bool


def _tool_version(command: Sequence[str], pattern: str) -> str | None:
    """The version a tool prints about itself, or None when it is not installed."""
    if not command[0]:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(1) if match else None


def _git_revision() -> str | None:
    """The commit the work tree is at, with '-dirty' when it has changes."""
    if shutil.which("git") is None:
        return None
    rev = _tool_version(["git", "describe", "--always", "--dirty", "--abbrev=12"], r"(\S+)")
    return rev


def _package_versions(python: str, names: Sequence[str]) -> dict[str, str | None]:
    """Versions of installed distributions, read by the given interpreter."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try: return m.version(n)\n"
        "    except m.PackageNotFoundError: return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    if not python or not Path(python).exists():
        return dict.fromkeys(names)
    done = subprocess.run(
        [python, "-c", code, *names], capture_output=True, text=True, timeout=30, check=False
    )
    try:
        versions: dict[str, str | None] = json.loads(done.stdout)
    except json.JSONDecodeError:
        return dict.fromkeys(names)
    return versions


def machine_info(args: argparse.Namespace) -> dict[str, object]:
    """What the figures depend on besides the code: cores, kernel, tool versions."""
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": _tool_version([args.nginx, "-v"], r"nginx/(\S+)"),
        "haproxy": _tool_version([args.haproxy, "-v"], r"version (\S+)"),
        "wrk": _tool_version([args.wrk, "-v"], r"wrk (?:debian/)?(\S+)"),
    }


@dataclass(frozen=True, slots=True)
class RunResults:
    """Everything loadtest.sh left in the results directory."""

    small: dict[str, WrkResult | None]
    bulk: dict[str, WrkResult | None]
    latency: dict[str, WrkResult | None]
    why_missing: dict[str, str]
    memory_before: dict[str, object] | None
    memory_after: dict[str, object] | None

    def requests_per_s(self, key: str) -> float | None:
        """A target's small-response rate, None without a run (or with nothing completed)."""
        result = self.small.get(key)
        return result.requests_per_s if result and result.requests else None

    def bulk_mb_per_s(self, key: str) -> float | None:
        """A target's bulk rate, None without a run."""
        result = self.bulk.get(key)
        return result.mb_per_s if result and result.requests else None

    def added_ms(self, key: str) -> tuple[float, float] | None:
        """The p50 and p99 a balancer adds over the backend directly at one connection."""
        result, direct = self.latency.get(key), self.latency.get("direct")
        if not (result and result.requests and direct and direct.requests):
            return None
        return result.p50_ms - direct.p50_ms, result.p99_ms - direct.p99_ms


def _read_json(path: Path) -> dict[str, object] | None:
    if not path.is_file():
        return None
    data: dict[str, object] = json.loads(path.read_text())
    return data


def load_results(results: Path) -> RunResults:
    """Read the wrk outputs, the skip/failure notes and the memory figures."""
    why_missing = {}
    for key in TARGETS:
        status = results / f"{key}.status"
        why_missing[key] = status.read_text().strip() if status.is_file() else "no result"
    return RunResults(
        small={key: read_wrk_result(results / f"{key}.wrk") for key in TARGETS},
        bulk={key: read_wrk_result(results / f"{key}.bulk.wrk") for key in BULK_TARGETS},
        latency={key: read_wrk_result(results / f"{key}.latency.wrk") for key in LATENCY_TARGETS},
        why_missing=why_missing,
        memory_before=_read_json(results / "rss-before.json"),
        memory_after=_read_json(results / "rss-after.json"),
    )


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return round(value, digits) if value is not None else None


def _mib(kib: object) -> str:
    return f"{kib / 1024:.1f} MiB" if isinstance(kib, int) else "-"


def _upstream_version(version: object) -> str:
    """'2.6.12' for '2.6.12-1+deb12u4': the table has no room for a distribution's suffix."""
    return str(version).split("-")[0] if version else "-"


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as text columns: the first left-aligned, figures right-aligned, the last as is."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(widths[i]) for i, cell in enumerate(row[1:-1], start=1)]
        cells.append(row[-1])
        lines.append("   ".join(cells).rstrip())
    return lines


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


def render_table(
    run: RunResults, settings: Settings, machine: dict[str, object], backends_label: str
) -> str:
    """The table a person reads: one row per target, the bulk row, then any notes."""
    warmup = f" after a {settings.warmup_s} s warm-up" if settings.warmup_s else ""
    lines = [
        f"prefork_lb load test: {plural(settings.workers, 'worker')} "
        f"(nginx: {plural(settings.workers, 'worker process')}, "
        f"haproxy: {plural(settings.workers, 'thread')}), "
        f"{plural(settings.connections, 'connection')}, {settings.duration_s} s per target{warmup}",
        f"load: wrk -t{settings.wrk_threads} -c{settings.connections} "
        f"-d{settings.duration_s}s; backends: {backends_label}",
        f"machine: {machine['nproc']} cores, Linux {machine['kernel']}, "
        f"Python {machine['python']}, nginx {_upstream_version(machine['nginx'])}, "
        f"haproxy {_upstream_version(machine['haproxy'])}, "
        f"wrk {_upstream_version(machine['wrk'])}",
        "",
    ]
    nginx_rps = run.requests_per_s("nginx")
    rows: list[tuple[str, ...]] = [("target", "req/s", "p50", "p99", "errors", "vs nginx")]
    notes = []
    for key, label in TARGETS.items():
        result = run.small[key]
        if result is None:
            rows.append((label, "-", "-", "-", "-", run.why_missing[key]))
            continue
        rows.append(
            (
                label,
                f"{result.requests_per_s:,.0f}",
                format_ms(result.p50_ms),
                format_ms(result.p99_ms),
                f"{result.error_count:,}",
                format_ratio(_ratio(result.requests_per_s, nginx_rps)),
            )
        )
        if result.error_count:
            notes.append(f"{label} errors: {format_errors(result.errors)}")
    lines += _aligned(rows)

    # The bulk row's figures start where the table's second column does.
    label_width = max(len(row[0]) for row in rows) + 3
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
    lines += [
        f"{f'bulk {settings.bulk_bytes // MB} MB'.ljust(label_width)}MB/s: {', '.join(figures)}",
        f"{indent}prefork_lb workers RSS before/after: {_mib(before)} / "
        f"{_mib(after.get('rss_kib'))} (peak {_mib(after.get('peak_kib'))}{streamed})",
        f"{indent}(wrk -t1 -c1 -d{settings.bulk_duration_s}s on /bulk: bytes read / time, "
        "MB = 10^6 bytes)",
    ]
    lines += _latency_lines(run, settings, label_width, notes)
    vs_snippet = _ratio(run.requests_per_s("prefork_lb"), run.requests_per_s("snippet"))
    if vs_snippet is not None:
        lines += ["", f"prefork_lb serves {format_ratio(vs_snippet)} the flask snippet's req/s"]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _target_figures(run: RunResults, key: str) -> dict[str, object]:
    """One target's entry in the JSON."""
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
            "vs_nginx": _round(_ratio(result.requests_per_s, run.requests_per_s("nginx"))),
        }
    bulk = run.bulk.get(key)
    if bulk is not None:
        entry["bulk"] = {
            "mb_per_s": round(bulk.mb_per_s, 1),
            "bodies": bulk.requests,
            "duration_s": round(bulk.duration_s, 3),
            "errors": bulk.errors | {"total": bulk.error_count},
            "vs_nginx": _round(_ratio(bulk.mb_per_s, run.bulk_mb_per_s("nginx"))),
        }
    return entry


def _latency_figures(run: RunResults, settings: Settings) -> dict[str, object]:
    """The 1-connection figures in the JSON: each target, and what prefork_lb adds."""
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
    run: RunResults, settings: Settings, machine: dict[str, object], args: argparse.Namespace
) -> dict[str, object]:
    """The same figures for machines, with how they were made and on what."""
    prefork_rps = run.requests_per_s("prefork_lb")
    return {
        "schema": 1,
        "started_at": datetime.fromtimestamp(args.started, UTC).isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": args.command.strip(),
        "settings": asdict(settings)
        | {
            "backends_label": args.backends_label,
            "wrk_command": f"wrk -t{settings.wrk_threads} -c{settings.connections} "
            f"-d{settings.duration_s}s --latency URL",
            "bulk_method": f"wrk -t1 -c1 -d{settings.bulk_duration_s}s URL/bulk: "
            "bytes read / duration, MB = 10^6 bytes",
            "errors": "wrk socket errors (connect, read, write, timeout after 2 s) "
            "plus responses with status 400 or higher",
            # Other prefork_lb settings the user had set apply to the run.
            "prefork_lb_environment": {
                name: value
                for name, value in sorted(os.environ.items())
                if name.startswith("PREFORK_LB_") and name != "PREFORK_LB_BACKENDS"
            },
        },
        "machine": machine,
        "versions": {
            "prefork_lb_git": _git_revision(),
            **_package_versions(sys.executable, ["prefork_lb", "gunicorn", "gevent", "urllib3"]),
            **_package_versions(args.snippet_python, ["flask", "werkzeug", "requests"]),
        },
        "targets": [_target_figures(run, key) for key in TARGETS],
        "latency_1conn": _latency_figures(run, settings),
        "prefork_lb_workers_memory": {
            "before_bulk": run.memory_before,
            "after_bulk": run.memory_after,
        },
        "ratios": {
            "prefork_lb_vs_nginx": _round(_ratio(prefork_rps, run.requests_per_s("nginx"))),
            "prefork_lb_vs_snippet": _round(_ratio(prefork_rps, run.requests_per_s("snippet"))),
            "prefork_lb_bulk_vs_nginx": _round(
                _ratio(run.bulk_mb_per_s("prefork_lb"), run.bulk_mb_per_s("nginx"))
            ),
        },
    }


def build_report(args: argparse.Namespace) -> tuple[str, dict[str, object]]:
    """The table for people and the same figures as a JSON-ready dict."""
    settings = Settings(
        workers=args.workers,
        duration_s=args.duration,
        connections=args.connections,
        wrk_threads=args.threads,
        warmup_s=args.warmup,
        bulk_bytes=args.bulk_bytes,
        bulk_duration_s=args.bulk_duration,
        latency_duration_s=args.latency_duration,
        backends=args.backends,
        quick=args.quick,
    )
    run = load_results(Path(args.results))
    machine = machine_info(args)
    return (
        render_table(run, settings, machine, args.backends_label),
        render_figures(run, settings, machine, args),
    )


# ---- command line -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command_name", required=True)

    ports = commands.add_parser("ports")
    ports.add_argument("count", type=int)

    ready = commands.add_parser("wait-ready")
    ready.add_argument("url")
    ready.add_argument("pid", type=int)
    ready.add_argument("seconds", type=float)

    summary = commands.add_parser("summary")
    summary.add_argument("wrk_output", type=Path)
    kind = summary.add_mutually_exclusive_group()
    kind.add_argument("--bulk", action="store_true")
    kind.add_argument("--latency", action="store_true")

    rss = commands.add_parser("rss")
    rss.add_argument("master", type=int)
    rss.add_argument("save_as", type=Path)

    backend = commands.add_parser("backend")
    backend.add_argument("port", type=int)
    backend.add_argument("name")
    backend.add_argument("bulk_file", type=Path)

    report = commands.add_parser("report")
    report.add_argument("results")
    report.add_argument("--json", required=True, type=Path)
    report.add_argument("--workers", type=int, required=True)
    report.add_argument("--duration", type=int, required=True)
    report.add_argument("--connections", type=int, required=True)
    report.add_argument("--threads", type=int, required=True)
    report.add_argument("--warmup", type=int, required=True)
    report.add_argument("--bulk-bytes", type=int, required=True)
    report.add_argument("--bulk-duration", type=int, required=True)
    report.add_argument("--latency-duration", type=int, required=True)
    report.add_argument("--backends", required=True, choices=["nginx", "python"])
    report.add_argument("--backends-label", required=True)
    report.add_argument("--quick", action="store_true")
    report.add_argument("--nginx", default="")
    report.add_argument("--haproxy", default="")
    report.add_argument("--wrk", default="")
    report.add_argument("--snippet-python", default="")
    report.add_argument("--command", default="")
    report.add_argument("--started", type=float, default=time.time())
    return parser


def main(argv: list[str]) -> int:
    """Run one command; the exit status tells loadtest.sh whether it worked."""
    args = _parser().parse_args(argv)
    match args.command_name:
        case "ports":
            print(" ".join(str(port) for port in free_ports(args.count)))
        case "wait-ready":
            problem = wait_ready(args.url, args.pid, args.seconds)
            if problem is not None:
                print(problem, file=sys.stderr)
                return 1
        case "summary":
            result = read_wrk_result(args.wrk_output)
            if result is None:
                text = (
                    args.wrk_output.read_text(errors="replace") if args.wrk_output.is_file() else ""
                )
                last_line = text.strip().splitlines()[-1:] or ["no output"]
                print(f"wrk gave no result: {last_line[0]}", file=sys.stderr)
                return 1
            print(summary_line(result, bulk=args.bulk, latency=args.latency))
        case "rss":
            memory = workers_memory(args.master)
            args.save_as.write_text(json.dumps(memory) + "\n")
            print(f"{_mib(memory['rss_kib'])} in {memory['workers']} workers")
        case "backend":
            serve_backend(args.port, args.name, args.bulk_file)
        case "report":
            table, figures = build_report(args)
            print(table)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        # Ctrl-C: loadtest.sh prints what happens next; a traceback would only add noise.
        sys.exit(130)

"""The commands scripts/loadtest.sh runs (``python -m scripts.bench COMMAND``), none typed by hand.

ports COUNT                       COUNT distinct free TCP ports on 127.0.0.1
wait-ready URL PID SECONDS        until URL answers 200, or PID exits, or time is up
summary WRK_OUTPUT [--bulk | --latency]
                                  one progress line from a wrk run
rss MASTER_PID SAVE_AS            sum of the resident memory of MASTER_PID's children
cpu PID SAVE_AS                   CPU time so far of PID and its descendants
backend PORT NAME BULK_FILE [--host ADDRESS]
                                  a small HTTP/1.1 keep-alive server (no nginx)
ws-backend PORT                   the WebSocket phase's backend (echo and bulk)
ws-drive WS_URL SECONDS SAVE_AS [--connections N]
                                  bulk relay and echo round trips against one target
ws-report RESULTS_DIR --json FILE the WebSocket table; its figures added to FILE
report RESULTS_DIR ...            the table on stdout and the figures as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from scripts.bench.backend import serve_backend
from scripts.bench.formatting import format_mib, summary_line
from scripts.bench.json_report import Provenance, render_figures
from scripts.bench.machine import git_revision, machine_info, package_versions
from scripts.bench.procfs import cpu_sample, workers_memory
from scripts.bench.readiness import free_ports, wait_ready
from scripts.bench.results import Settings, load_results
from scripts.bench.table import render_table
from scripts.bench.wrk import parse_wrk_output, read_wrk_output, why_no_result
from scripts.bench.ws_report import figures as ws_figures
from scripts.bench.ws_report import load_rates, rates
from scripts.bench.ws_report import render as render_ws


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench", description="The Python half of scripts/loadtest.sh."
    )
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

    for name, pid in (("rss", "master"), ("cpu", "pid")):
        sample = commands.add_parser(name)
        sample.add_argument(pid, type=int)
        sample.add_argument("save_as", type=Path)

    backend = commands.add_parser("backend")
    backend.add_argument("port", type=int)
    backend.add_argument("name")
    backend.add_argument("bulk_file", type=Path)
    backend.add_argument("--host", default="127.0.0.1")

    ws_backend = commands.add_parser("ws-backend")
    ws_backend.add_argument("port", type=int)

    ws_drive = commands.add_parser("ws-drive")
    ws_drive.add_argument("url")
    ws_drive.add_argument("seconds", type=float)
    ws_drive.add_argument("save_as", type=Path)
    ws_drive.add_argument("--connections", type=int, default=10)

    ws_report = commands.add_parser("ws-report")
    ws_report.add_argument("results", type=Path)
    ws_report.add_argument("--json", required=True, type=Path)

    report = commands.add_parser("report")
    report.add_argument("results", type=Path)
    report.add_argument("--json", required=True, type=Path)
    for number in (
        "workers",
        "duration",
        "connections",
        "threads",
        "warmup",
        "bulk-bytes",
        "bulk-duration",
        "latency-duration",
    ):
        report.add_argument(f"--{number}", type=int, required=True)
    report.add_argument("--backends", required=True, choices=["nginx", "python"])
    report.add_argument("--backends-label", required=True)
    report.add_argument("--quick", action="store_true")
    for path in ("nginx", "haproxy", "wrk", "snippet-python", "peers-python", "command"):
        report.add_argument(f"--{path}", default="")
    report.add_argument("--started", type=float, default=time.time())
    return parser


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def report(args: argparse.Namespace) -> None:
    """Print the table and write the JSON for the run in ``args.results``."""
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
        backends_label=args.backends_label,
        quick=args.quick,
    )
    run = load_results(args.results)
    revision = git_revision()
    provenance = Provenance(
        started_at=_iso(args.started),
        finished_at=_iso(time.time()),
        command=args.command.strip(),
        machine=machine_info(args.nginx, args.haproxy, args.wrk),
        versions={
            "prefork_lb_git": revision,
            **package_versions(sys.executable, ["prefork_lb", "gunicorn", "gevent", "urllib3"]),
            **package_versions(args.snippet_python, ["flask", "werkzeug", "requests"]),
            **{
                f"peer {name}": version
                for name, version in package_versions(
                    args.peers_python, ["WSGIProxy2", "proxy.py"]
                ).items()
            },
        },
        environment={
            name: value
            for name, value in sorted(os.environ.items())
            if name.startswith("PREFORK_LB_") and name != "PREFORK_LB_BACKENDS"
        },
    )
    print(render_table(run, settings, provenance.machine, revision))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(render_figures(run, settings, provenance), indent=2) + "\n")


def websocket_command(args: argparse.Namespace) -> None:
    """The WebSocket phase's commands (``websockets`` is imported only for them)."""
    if args.command_name == "ws-backend":
        from scripts.bench.ws_backend import serve_ws_backend  # noqa: PLC0415

        serve_ws_backend(args.port)
    elif args.command_name == "ws-drive":
        from scripts.bench.ws_driver import drive  # noqa: PLC0415

        result = drive(args.url, args.seconds, args.connections)
        args.save_as.write_text(json.dumps(result) + "\n")
        found = rates(result)
        if found is not None:
            print(f"bulk {found.bulk_mb_s:,.0f} MB/s, echo {found.echo_per_s:,.0f} round trips/s")
    else:
        ws_report(args)


def ws_report(args: argparse.Namespace) -> None:
    """Print the WebSocket table and add its figures to the run's JSON (if written)."""
    found = load_rates(args.results)
    print(render_ws(found))
    try:
        document = json.loads(args.json.read_text())
    except (OSError, ValueError):
        return
    document["websocket"] = ws_figures(found)
    args.json.write_text(json.dumps(document, indent=2) + "\n")


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
            text = read_wrk_output(args.wrk_output)
            result = parse_wrk_output(text)
            if result is None:
                print(why_no_result(text), file=sys.stderr)
                return 1
            print(summary_line(result, bulk=args.bulk, latency=args.latency))
        case "rss":
            memory = workers_memory(args.master)
            args.save_as.write_text(json.dumps(memory) + "\n")
            print(f"{format_mib(memory['rss_kib'])} in {memory['workers']} workers")
        case "cpu":
            args.save_as.write_text(json.dumps(cpu_sample(args.pid)) + "\n")
        case "backend":
            serve_backend(args.port, args.name, args.bulk_file, args.host)
        case "ws-backend" | "ws-drive" | "ws-report":
            websocket_command(args)
        case "report":
            report(args)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        # Ctrl-C: loadtest.sh prints what happens next; a traceback would only add noise.
        sys.exit(130)

"""A captured ``scripts/loadtest.sh --quick`` run: where its files are, how it was made."""

from __future__ import annotations

from pathlib import Path

from scripts.bench.results import Settings

SAMPLES = Path(__file__).resolve().parents[1] / "unit" / "bench_samples"
# The results directory the run left (wrk outputs, CPU and memory samples; logs left out).
RUN = SAMPLES / "run"
# wrk outputs captured on their own: a refused connection, 404s, a server that never answers.
WRK = SAMPLES / "wrk"

SETTINGS = Settings(
    workers=2,
    duration_s=2,
    connections=50,
    wrk_threads=2,
    warmup_s=0,
    bulk_bytes=50_000_000,
    bulk_duration_s=2,
    latency_duration_s=3,
    backends="nginx",
    backends_label="3 nginx servers (one nginx, 1 worker process)",
    quick=True,
)
MACHINE: dict[str, object] = {
    "nproc": 2,
    "kernel": "6.18.44",
    "python": "3.11.7",
    "nginx": "1.22.1",
    "haproxy": "2.6.12-1+deb12u4",
    "wrk": "4.1.0",
}

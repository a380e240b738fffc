"""Figures as a person reads them: about two significant digits, units, signs."""

from __future__ import annotations

from scripts.bench.wrk import WrkResult

# wrk's error kinds, as a person reads them ("status" counts responses >= 400).
_ERROR_NAMES = {"status": "HTTP 4xx/5xx"}


def format_ms(ms: float) -> str:
    """Milliseconds to about two digits: 0.12 ms, 1.9 ms, 15 ms, 1,950 ms."""
    if ms < 1:
        return f"{ms:.2f} ms"
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:,.0f} ms"


def format_us(us: float | None) -> str:
    """Microseconds to about two digits: 9.8 µs, 12 µs, 474 µs, 1,200 µs; '-' for None."""
    if us is None:
        return "-"
    return f"{us:.1f} µs" if us < 10 else f"{us:,.0f} µs"


def format_added_ms(ms: float) -> str:
    """A latency difference with its sign: +0.37 ms, -0.02 ms."""
    return f"{'-' if ms < 0 else '+'}{format_ms(abs(ms))}"


def format_ratio(ratio: float | None) -> str:
    """2.63x, 1.00x, 0.087x, 0.060x, 0.0045x: two significant digits below 1; '-' for None."""
    if ratio is None:
        return "-"
    if ratio >= 1:
        return f"{ratio:.2f}x"
    return f"{ratio:#.2g}x"


def format_mib(kib: object) -> str:
    """KiB as '70.3 MiB'; '-' for anything that is not a whole number of KiB."""
    return f"{kib / 1024:.1f} MiB" if isinstance(kib, int) else "-"


def format_errors(errors: dict[str, int]) -> str:
    """The non-zero error kinds, as in '1,200 timeout, 34 read'; 'none' if there are none."""
    kinds = [f"{count:,} {_ERROR_NAMES.get(kind, kind)}" for kind, count in errors.items() if count]
    return ", ".join(kinds) if kinds else "none"


def plural(count: int, noun: str) -> str:
    """'1 worker', '2 workers', '2 worker processes'."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith("s") else f"{count} {noun}s"


def upstream_version(version: object) -> str:
    """'2.6.12' for '2.6.12-1+deb12u4' (no room for a distribution's suffix); '-' for none."""
    return str(version).split("-")[0] if version else "-"


def summary_line(result: WrkResult, *, bulk: bool = False, latency: bool = False) -> str:
    """The progress line printed after one run: rates, latencies, errors."""
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

"""The admin status page: the ``/backends`` document as one HTML page a person can read.

A pure renderer, no I/O: it takes the document ``admin.backends_document``
builds (and, when there is one, per-backend traffic) and returns a
self-contained HTML5 page: inline CSS, no script, nothing fetched from
elsewhere, so it works on a host with no way out. Every value from the
document passes through ``html.escape``: a backend's reason can hold text a
backend sent, and must show as text, never as markup.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

REFRESH_SECONDS = 5
NOT_AVAILABLE = "n/a"
NO_REQUESTS = "\u2014"  # an em dash: there is nothing to take a mean of

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1a1a1a; background: #fff; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
p { margin: .3em 0; }
.meta { color: #555; }
.summary { font-size: 1.1em; font-weight: 600; margin: .8em 0; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ccc; padding: .35em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.down td { background: #fdecea; }
.badge { display: inline-block; padding: 0 .5em; border-radius: .3em; font-weight: 700; }
.badge.up { background: #1e7d32; color: #fff; }
.badge.down { background: #b71c1c; color: #fff; }
.badge.drain, .badge.maint { background: #ef6c00; color: #fff; }
.badge.backup { background: #e0e0e0; color: #333; font-weight: 400; }
.note { color: #555; font-size: .9em; }
td.since .note { white-space: nowrap; }
"""


@dataclass(frozen=True, slots=True)
class BackendTraffic:
    """What the balancer has sent one backend so far, summed over every worker."""

    requests: int
    errors: int
    latency_sum: float  # seconds, over ``latency_count`` observed responses
    latency_count: int


def render_status_page(
    document: Mapping[str, Any],
    traffic: Mapping[str, BackendTraffic] | None = None,
    *,
    json_href: str | None = None,
) -> str:
    """The whole page for one ``/backends`` document.

    ``traffic`` is keyed by backend URL; when it is None (no counters to
    read) the traffic columns say "n/a". ``json_href``, when given, is
    linked as the machine-readable version of the page.
    """
    backends: Sequence[Mapping[str, Any]] = document["backends"]
    up = sum(1 for backend in backends if backend["state"] == "up")
    summary = summarize(len(backends), up)
    link = f' · <a href="{_e(json_href)}">the same as JSON</a>' if json_href is not None else ""
    rows = "\n".join(_row(backend, traffic) for backend in backends)
    traffic_note = "" if traffic is not None else "; they say n/a while no counters are kept"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<link rel="icon" href="data:,"><!-- no /favicon.ico: it would go to a backend -->
<title>prefork_lb: {_e(summary)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>prefork_lb status</h1>
<p class="meta">Policy <strong id="policy">{_e(document["policy"])}</strong>
 · fail open: {"yes" if document.get("fail_open") else "no"}
 · answered by worker {_e(document.get("pid", "?"))}
 at <time id="time">{_e(document["time"])}</time>
 · refreshes every {REFRESH_SECONDS} s{link}</p>
<p class="summary" id="summary">{_e(summary)}</p>
<table id="backends">
<thead>
<tr><th scope="col">Backend</th><th scope="col">State</th><th scope="col">Since</th>
<th scope="col">Why</th><th scope="col">Weight</th><th scope="col">In flight</th>
<th scope="col">Tunnels<br><span class="note">(open)</span></th>
<th scope="col">Failed requests<br><span class="note">(in window)</span></th>
<th scope="col">Health checks</th><th scope="col">Requests</th><th scope="col">Errors</th>
<th scope="col">Mean latency<br><span class="note">(upstream)</span></th></tr>
</thead>
<tbody>
{rows}
</tbody>
</table>
<p class="note">In flight, open tunnels (WebSocket; also in flight) and failed requests
are live, summed over every worker.
Traffic columns count since the balancer started{traffic_note}.</p>
{_pools(document)}
</body>
</html>
"""


def _pools(document: Mapping[str, Any]) -> str:
    """The pools' waiting rooms and the balancer's own 503s by reason."""
    rows = "\n".join(
        f'<tr><th scope="row">{_e(pool["name"])}</th><td>{_e(pool["policy"])}</td>'
        f'<td class="num waiting">{_e(pool["waiting"])}</td>'
        f'<td class="num">{_e(pool["max_queue"])}</td>'
        f'<td class="num">{_e(pool["queue_timeout"])} s</td></tr>'
        for pool in document.get("pools", [])
    )
    unavailable = document.get("unavailable", {})
    reasons = ", ".join(f"{_e(name)}: {_e(count)}" for name, count in unavailable.items())
    return f"""<h2>Pools</h2>
<table id="pools">
<thead>
<tr><th scope="col">Pool</th><th scope="col">Policy</th><th scope="col">Waiting</th>
<th scope="col">Max queue</th><th scope="col">Queue timeout</th></tr>
</thead>
<tbody>
{rows}
</tbody>
</table>
<p class="note" id="unavailable">503s answered by the balancer, by reason:
{reasons or "none"}.</p>"""


def summarize(total: int, up: int) -> str:
    """The one-line summary, e.g. "3 backends: 2 up, 1 down"."""
    noun = "backend" if total == 1 else "backends"
    return f"{total} {noun}: {up} up, {total - up} down"


def human_duration(seconds: float) -> str:
    """A duration as a person says it: "12 s", "3 min", "2 h 5 min", "4 d 1 h"."""
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def short_time(iso: str) -> str:
    """An ISO 8601 UTC time as "2026-11-23 10:00:00 UTC"; anything else unchanged."""
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.utcoffset() != timedelta(0):
        return iso
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def mean_latency(traffic: BackendTraffic) -> str:
    """The mean upstream latency, in ms below a second; an em dash with nothing observed."""
    if traffic.latency_count <= 0:
        return NO_REQUESTS
    mean = traffic.latency_sum / traffic.latency_count
    return f"{mean * 1000:.1f} ms" if mean < 1 else f"{mean:.2f} s"


def _row(backend: Mapping[str, Any], traffic: Mapping[str, BackendTraffic] | None) -> str:
    url = str(backend["url"])
    up = backend["state"] == "up"
    state = '<span class="badge up">UP</span>' if up else '<span class="badge down">DOWN</span>'
    if not up and backend.get("usable"):
        state += ' <span class="note">on trial</span>'
    held = backend.get("admin_state", "ready")
    if held in ("drain", "maint"):
        # An operator's choice: no new requests, whatever the health says.
        state += f' <span class="badge {held}">{held.upper()}</span>'
    if backend.get("ejected"):
        left = human_duration(float(backend.get("ejected_for", 0.0)))
        state += (
            f' <span class="badge maint">EJECTED</span> <span class="note">'
            f"{_e(left)} left, {backend.get('ejections', 0)} 5xx ejections</span>"
        )
    if backend.get("backup"):
        state += ' <span class="badge backup">backup</span>'
    seen = traffic.get(url) if traffic is not None else None
    if traffic is None:
        requests = errors = latency = NOT_AVAILABLE
    elif seen is None:
        requests, errors, latency = "0", "0", NO_REQUESTS
    else:
        requests, errors, latency = str(seen.requests), str(seen.errors), mean_latency(seen)
    found = backend.get("dns")
    dns = f'<br><span class="note dns">dns {_e(found)}</span>' if found else ""
    cells = [
        f'<td class="url">{_e(url)}{dns}</td>',
        f'<td class="state">{state}</td>',
        f'<td class="since"><span class="for">{_e(human_duration(backend["seconds_in_state"]))}'
        f'</span><br><span class="note">since <time datetime="{_e(backend["since"])}">'
        f"{_e(short_time(backend['since']))}</time></span></td>",
        f'<td class="reason">{_e(backend["reason"])}</td>',
        f'<td class="num weight">{_e(backend["weight"])}</td>',
        f'<td class="num in-flight">{_e(backend["in_flight"])}</td>',
        f'<td class="num tunnels">{_e(backend["tunnels_open"])}</td>',
        f'<td class="num failed">{_e(backend["failed_requests"])}</td>',
        f'<td class="health-check">{"on" if backend.get("health_check") else "off"}</td>',
        f'<td class="num requests">{_e(requests)}</td>',
        f'<td class="num errors">{_e(errors)}</td>',
        f'<td class="num latency">{_e(latency)}</td>',
    ]
    row_class = "up" if up else "down"
    return (
        f'<tr class="{row_class}" data-url="{_e(url)}" data-state="{row_class}">'
        + "".join(cells)
        + "</tr>"
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)

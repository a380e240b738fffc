"""Settings of failure and health, each declared once: passive and active
checks, retries, outlier ejection, fail-open and slow start.

A part of ``settings_table.SETTINGS``, in the order the README's table gives.
"""

from __future__ import annotations

from prefork_lb.setting import Setting
from prefork_lb.values import (
    parse_bool,
    parse_count,
    parse_health_path,
    parse_percent,
    parse_positive_int,
    parse_retry_statuses,
    parse_seconds,
    parse_seconds_or_zero,
    parse_status_range,
)

HEALTH: tuple[Setting, ...] = (
    Setting(
        "max_fails",
        parse_count,
        1,
        "Failed requests (the backend refused or reset the connection, or timed out; "
        "an invalid answer does not count) within ``fail_timeout`` seconds that mark a "
        "backend down, "
        "as nginx's passive checks do; 0: failed requests never mark it down "
        "(per backend too).",
    ),
    Setting(
        "fail_timeout",
        parse_seconds,
        10.0,
        "Seconds over which ``max_fails`` failed requests are counted, and how long a "
        "backend they marked down rests before requests may try it again (without "
        "active health checks; with them, only passed checks bring it back) "
        "(per backend too).",
    ),
    Setting(
        "health_check",
        parse_bool,
        False,
        "Check backends actively: a ``GET`` of ``health_path`` on a fresh connection "
        "every ``health_interval`` seconds, made by one worker for all of them; "
        "``health_fall`` failures in a row mark a backend down, ``health_rise`` "
        "passes bring it back (per backend too).",
    ),
    Setting(
        "health_path",
        parse_health_path,
        "/",
        "The path (and query) a health check requests: starts with ``/``, printable "
        "ASCII without spaces or ``#`` (per backend too).",
    ),
    Setting(
        "health_interval",
        parse_seconds,
        2.0,
        "Seconds between two health checks of a backend (per backend too).",
    ),
    Setting(
        "health_timeout",
        parse_seconds,
        1.0,
        "Seconds a health check may take before it counts as failed (per backend too).",
    ),
    Setting(
        "health_status",
        parse_status_range,
        (200, 399),
        "The statuses that pass a health check: an inclusive range such as "
        "``200-399``, or one status such as ``204``, within 100 to 599 "
        "(per backend too).",
        wording="200-399",
    ),
    Setting(
        "health_rise",
        parse_positive_int,
        2,
        "Passed health checks in a row that bring a down backend back up (per backend too).",
    ),
    Setting(
        "health_fall",
        parse_positive_int,
        3,
        "Failed health checks in a row that mark an up backend down (per backend too).",
    ),
    Setting(
        "retries",
        parse_count,
        2,
        "How many other backends a failed request may be tried on: always when the "
        "request never reached the backend, otherwise only for an idempotent method "
        "whose body the balancer still holds (POST and PATCH are never sent twice). "
        "0: never retry.",
    ),
    Setting(
        "retry_timeout",
        parse_seconds,
        90.0,
        "Seconds since a request's first try after which no further try starts. Keep "
        "it above ``connect_timeout`` + ``read_timeout``, or a timed-out try is never "
        "retried (the balancer warns at start when it is not).",
    ),
    Setting(
        "retry_on_status",
        parse_retry_statuses,
        (),
        "Statuses (500 to 599, e.g. ``502, 503, 504``) after which a request that may "
        "be repeated (the rules of ``retries``: idempotent, its body still held) is "
        "tried on another backend, within ``retries`` and ``retry_timeout``; the "
        "discarded answer's connection is closed. When tries run out the last answer "
        "is sent. Empty: answers are never retried.",
    ),
    Setting(
        "eject_consecutive_5xx",
        parse_count,
        0,
        "Outlier ejection: a backend that answers this many 502, 503 or 504 in a row "
        "(counted over all workers) is taken out of rotation for ``eject_time`` seconds "
        "times the number of times it has been ejected, at most ``eject_max_time``; "
        "with active health checks, ``health_rise`` passed checks end it early. 0: off.",
    ),
    Setting(
        "eject_on_500",
        parse_bool,
        False,
        "Count 500 answers towards ``eject_consecutive_5xx`` as well.",
    ),
    Setting(
        "eject_time",
        parse_seconds,
        30.0,
        "Seconds of a backend's first ejection; each further one lasts that much longer.",
    ),
    Setting(
        "eject_max_time",
        parse_seconds,
        300.0,
        "The longest an ejection lasts, in seconds.",
    ),
    Setting(
        "eject_max_percent",
        parse_percent,
        50,
        "At most this percentage of a pool's backends is ejected at once; a backend "
        "that would go beyond it stays in.",
    ),
    Setting(
        "fail_open",
        parse_bool,
        False,
        "When no backend is usable (every primary and every backup is down), send "
        "requests to all the primaries anyway, as Envoy's panic mode does, instead of "
        "answering 503.",
    ),
    Setting(
        "slow_start",
        parse_seconds_or_zero,
        0.0,
        "Seconds over which a backend that comes back up has its share of requests "
        "ramped up from little to its full weight; 0: at once.",
    ),
)

"""Every setting, declared once: its name, parser, default and documentation.

The environment variable, the TOML key, the README's settings table (checked
against this by tests/integration/test_readme.py) and the defaults of the
dataclasses in ``settings_types.py`` all come from ``SETTINGS``. The settings of
each topic are declared in a module of their own (``settings_forwarding``,
``settings_health``, ``settings_control``, ``settings_dns``); the backends, pools,
routes and extensions are declared here, with the tables of what a backend and a
pool may set for themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefork_lb.backend_tables import BackendSpec, PoolSpec, parse_backends, parse_pools
from prefork_lb.route_tables import parse_routes
from prefork_lb.setting import Setting
from prefork_lb.settings_control import CONTROL
from prefork_lb.settings_dns import DNS
from prefork_lb.settings_forwarding import FORWARDING
from prefork_lb.settings_health import HEALTH
from prefork_lb.values import (
    parse_backend_name,
    parse_bool,
    parse_extension_options,
    parse_extensions,
    parse_weight,
)


def _backends(where: str, value: object) -> tuple[BackendSpec, ...]:
    return parse_backends(where, value, BACKEND_OPTIONS)


def _pools(where: str, value: object) -> tuple[PoolSpec, ...]:
    return parse_pools(where, value, POOL_OPTION_PARSERS, BACKEND_OPTIONS)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "backends",
        _backends,
        (),
        "Backend base URLs, ``http://host:port`` or ``https://host:port``, each listed "
        "once. A backend may have options: ``weight`` (1 to 1000, default 1: its share "
        "of requests relative to the others), ``backup`` (used only while no other "
        "backend is usable; at least one backend must not be a backup), ``name`` (how "
        "extensions name it, default its ``host:port``) and any setting "
        "marked (per backend too), which then holds for that backend instead of the "
        "global value. In the environment: comma-separated items, each a URL followed by "
        "space-separated ``key=value`` options or the word ``backup``, as in "
        "``http://10.0.0.5:8080 weight=5, http://10.0.0.6:8080, http://10.0.0.9:8080 "
        "backup``. In the file: ``[[backends]]`` tables with a ``url`` key and the "
        "options as further keys (``weight = 5``, ``backup = true``, "
        '``health_path = "/healthz"``), or plain URL strings.',
    ),
    *FORWARDING,
    *HEALTH,
    *CONTROL,
    *DNS,
    Setting(
        "pools",
        _pools,
        (),
        "File only: named sets of backends, ``[pools.NAME]`` tables each with its "
        "``[[pools.NAME.backends]]`` (the same per-backend options as ``backends``) and "
        "any setting marked (per pool too), which then holds for that pool instead of "
        "the global value, and any marked (per backend too), which then holds for the "
        "pool's backends. The top-level ``backends`` are the pool ``default``. A "
        "backend URL listed in two pools is one backend (one health state, one "
        "in-flight count); its weight and backup are per pool.",
    ),
    Setting(
        "routes",
        parse_routes,
        (),
        "File only: ``[[routes]]`` tables choosing a pool by ``host`` (exact, or "
        "``*.example.com`` for any subdomain), ``path_prefix`` (whole segments of the "
        "raw path), ``methods`` (a list) and ``pool``; ``strip_prefix = true`` removes "
        "the prefix from the path sent upstream. See Routing for the precedence. A "
        "request no route takes goes to the ``default`` pool, or gets 404 without one.",
    ),
    Setting(
        "extensions",
        parse_extensions,
        (),
        "Extensions to run on every request, in this order: ``module:attribute`` names "
        "of classes (or callables) that each worker calls once with the extension's "
        "options (see Extensions). In the file a list, in the environment "
        "comma-separated. A name that does not import stops the start.",
    ),
    Setting(
        "extension_options",
        parse_extension_options,
        (),
        "Each extension's options: in the file a table "
        '``[extension_options."module:attribute"]`` per extension, in the environment '
        "a JSON object of objects. An extension without a table gets an empty dict.",
    ),
)

# Options a backend may set for itself: its own two, and the global settings
# it may override, with the same parsers (so the same rules and messages).
OVERRIDABLE = (
    "max_conns",
    "max_fails",
    "fail_timeout",
    "health_check",
    "health_path",
    "health_interval",
    "health_timeout",
    "health_status",
    "health_rise",
    "health_fall",
)

# Settings a [pools.NAME] table may set for itself (and for its backends).
POOL_OPTIONS = (
    "policy",
    "hash_key",
    "hash_balance_factor",
    "sticky_cookie",
    "queue_timeout",
    "max_queue",
    "dns",
    "dns_srv",
    "dns_scheme",
    "dns_slots",
    *OVERRIDABLE,
)

BY_NAME = {setting.name: setting for setting in SETTINGS}
BY_ENV = {setting.env: setting for setting in SETTINGS}
BACKEND_OPTIONS: dict[str, Callable[[str, object], Any]] = {
    "weight": parse_weight,
    "backup": parse_bool,
    "name": parse_backend_name,
    **{name: BY_NAME[name].parse for name in OVERRIDABLE},
}
POOL_OPTION_PARSERS = {name: BY_NAME[name].parse for name in POOL_OPTIONS}


# The dataclasses' defaults are the declared ones: a backend without options
# of its own has what it would inherit from the default settings.
DEFAULT = {setting.name: setting.default for setting in SETTINGS}

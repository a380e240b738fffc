"""Gunicorn server hooks: where the master prepares what every worker shares.

``gunicorn.conf.py`` points gunicorn at these. ``on_starting`` runs in the
master before it binds or forks: it reads and validates the settings (a bad
value stops the master with one readable line), starts the demo backends when
asked to, and installs the shared state that the workers inherit.
``on_reload`` runs in the master on HUP, before gunicorn forks the new
workers: it reads the settings again (the file named by PREFORK_LB_CONFIG; the
environment is the one the master started with) and installs them for the
new workers, or keeps the running ones if the new ones are not valid.

This module is imported by the master, so it must not import urllib3 (it
would be imported before gevent patches the workers).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import fields, replace
from typing import Any

from prefork_lb import shared
from prefork_lb.config import (
    CONFIG_FILE_ENV,
    ConfigError,
    Settings,
    doubtful_settings,
    effective_pools,
    inherit_settings,
    load_config,
)
from prefork_lb.demo import DemoBackends, start_demo_backends
from prefork_lb.dns_publish import DnsStartError, resolve_at_start, running_addresses
from prefork_lb.extension_loader import ExtensionStartError, check_in_child
from prefork_lb.selector import hash_rings
from prefork_lb.state_file import load_state

_demo: DemoBackends | None = None


def on_starting(server: Any) -> None:
    """Validate the settings and create the shared state, before binding and forking."""
    try:
        settings = load_config(os.environ)
    except ConfigError as err:
        # gunicorn prints a RuntimeError from here as one "Error: ..." line and exits 1.
        raise RuntimeError(f"prefork_lb configuration: {err}") from None
    if server.cfg.header_map == "dangerous":
        # Then "Transfer_Encoding" fills the same environ key as
        # "Transfer-Encoding": the balancer could frame the body upstream
        # differently from how gunicorn framed it from the client.
        raise RuntimeError(
            "prefork_lb configuration: header_map 'dangerous' lets Transfer_Encoding "
            "stand in for Transfer-Encoding; use 'drop' (the default) or 'refuse'"
        )
    try:
        _declare_extensions(settings)
    except ExtensionStartError as err:
        raise RuntimeError(f"prefork_lb {err}") from None
    settings = _with_sticky_secret(_with_demo_backends(server, settings), running="")
    for warning in doubtful_settings(settings):
        server.log.warning("prefork_lb configuration: %s", warning)
    try:
        # Before the fork: workers start with the addresses DNS gives now.
        slots = resolve_at_start(settings, server.log)
    except DnsStartError as err:
        raise RuntimeError(f"prefork_lb configuration: {err}") from None
    state = shared.install(settings, slots)
    _load_runtime_state(state)
    hash_rings(settings)  # built once here, inherited by every worker (DNS pools': shared)
    for index, backend in enumerate(state.current_backends()):
        if not backend.dns:
            server.log.info("prefork_lb: backend %s", backend.url)
        elif index in slots:
            server.log.info("prefork_lb: backend %s (dns %s)", backend.url, backend.dns)


def on_reload(server: Any) -> None:
    """On HUP, before the new workers are forked: give them the settings as they are now.

    Settings from the file are read again; environment variables are those
    the master started with. If the new settings are not valid, the running
    ones stay (a bad edit must not take the balancer down).
    """
    source = os.environ.get(CONFIG_FILE_ENV) or "the environment"
    old = shared.installed().settings
    try:
        settings = load_config(os.environ)
    except ConfigError as err:
        server.log.error(_RELOAD_FAILED, err)
        return
    except Exception as err:
        # A bug in reading them must not take a running balancer down either.
        server.log.exception(_RELOAD_FAILED, f"unexpected error: {err!r}")
        return
    try:
        _declare_extensions(settings)
        settings = _with_demo_backends(server, settings)
        settings = _with_sticky_secret(settings, running=old.sticky_secret)
        slots = resolve_at_start(settings, server.log, running_addresses(shared.installed()))
        state = shared.reinstall(settings, slots=slots)
        _load_runtime_state(state)
        hash_rings(settings)
    except DnsStartError as err:
        server.log.error(_RELOAD_FAILED, err)
        return
    except Exception as err:
        # Whatever it is, the master must keep serving with what it has.
        server.log.exception(_RELOAD_FAILED, f"cannot set up the new shared state: {err}")
        return
    for warning in doubtful_settings(settings):
        server.log.warning("prefork_lb configuration: %s", warning)
    server.log.info(
        "prefork_lb: reloaded settings from %s: %s", source, describe_changes(old, settings)
    )


def _load_runtime_state(state: shared.SharedState) -> None:
    """Apply the ``state_file``'s drain, maint and weights (a bad file is logged, never fatal).

    A DNS address is named ``ip:port``: saved states of addresses DNS gave
    the master now apply at once, the others wait for their address.
    """
    settings = state.settings
    if not settings.state_file:
        return
    shown = state.shown()
    names = tuple(
        backend.name if shown is None or shown[index] else ""
        for index, backend in enumerate(state.current_backends())
    )
    pending = state.pending_states if settings.dns_groups else None
    load_state(settings.state_file, names, state.health, pending)


_RELOAD_FAILED = "prefork_lb: reload failed, keeping the running settings: %s"


def _with_sticky_secret(settings: Settings, *, running: str) -> Settings:
    """The settings with a sticky secret if a pool needs one and none is set.

    Made here, in the master, so that every worker signs with the same one;
    on a reload the running one is kept (cookies already out stay valid).
    """
    if settings.sticky_secret or not any(p.sticky_cookie for p in effective_pools(settings)):
        return settings
    return replace(settings, sticky_secret=running or secrets.token_urlsafe(32))


def _declare_extensions(settings: Settings) -> None:
    """Check that the extensions import; make the shared memory they declare (kept on HUP)."""
    declared = check_in_child(settings.extensions)
    shared.extension_memory().declare(
        counters=declared.counters, limiters=declared.limiters, extensions=settings.extensions
    )


def _with_demo_backends(server: Any, settings: Settings) -> Settings:
    """The settings, with the demo backends (started once, on first need) if none are listed."""
    global _demo  # noqa: PLW0603 - the master's handle on the demo process
    if settings.backends:
        return settings
    if _demo is None:
        _demo = start_demo_backends()
        server.log.info(
            "prefork_lb: no backends configured, started %d demo backends", len(_demo.backends)
        )
    demo = tuple(inherit_settings(backend, settings) for backend in _demo.backends)
    return replace(settings, backends=demo)


def describe_changes(old: Settings, new: Settings) -> str:
    """What a reload changed, in one line: backends added, removed, re-weighted; settings."""
    before = {backend.url: backend for backend in old.backends}
    after = {backend.url: backend for backend in new.backends}
    kept = [url for url in after if url in before]
    changes = [
        ("added", [url for url in after if url not in before]),
        ("removed", [url for url in before if url not in after]),
        (
            "re-weighted",
            [
                f"{url} {before[url].weight}->{after[url].weight}"
                for url in kept
                if before[url].weight != after[url].weight
            ],
        ),
        (
            "with other options changed",
            [
                url
                for url in kept
                if replace(before[url], weight=1) != replace(after[url], weight=1)
            ],
        ),
    ]
    backends = [f"{label} [{', '.join(urls)}]" for label, urls in changes if urls]
    if [url for url in before if url in after] != kept:
        backends.append("reordered")
    parts = [f"backends {', '.join(backends)}"] if backends else []
    settings = [
        field.name
        for field in fields(Settings)
        if field.name not in ("backends", "sources")
        and getattr(old, field.name) != getattr(new, field.name)
    ]
    if settings:
        parts.append(f"settings changed [{', '.join(settings)}]")
    return "; ".join(parts) or "no change"


def when_ready(server: Any) -> None:
    """Once listening, tell a demo user where to point curl."""
    if _demo is None:
        return
    for listener in server.LISTENERS:
        server.log.info(
            "prefork_lb demo: try  for i in 1 2 3 4 5 6; do curl -s %s/; done", listener
        )


def pre_fork(server: Any, worker: Any) -> None:
    """Give the worker about to be forked its row for in-flight counts."""
    live = [getattr(other, "prefork_lb_slot", None) for other in server.WORKERS.values()]
    for slot in shared.release_orphaned_slots(live):
        server.log.warning("prefork_lb: freed slot %d of a worker gone without child_exit", slot)
    worker.prefork_lb_slot = shared.assign_worker_slot()
    if worker.prefork_lb_slot is None:
        server.log.warning(
            "prefork_lb: more than %d workers; the next one's in-flight requests are not "
            "counted (least_conn and the admin figures miss them)",
            shared.InFlightTable.SLOTS,
        )


def child_exit(server: Any, worker: Any) -> None:
    """A worker has exited (or was killed): its in-flight requests are over."""
    shared.release_worker_slot(getattr(worker, "prefork_lb_slot", None))


def post_worker_init(worker: Any) -> None:
    """Say when a worker has loaded the app and handles signals: it is serving from now on."""
    worker.log.info("prefork_lb: worker %d ready", worker.pid)


def on_exit(server: Any) -> None:
    """Stop the demo backends with the master."""
    if _demo is not None:
        _demo.stop()

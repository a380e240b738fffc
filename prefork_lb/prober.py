"""Active health checks, run by exactly one worker at a time.

Every worker starts a ``HealthProber``; each one waits for the prober lease
(a record lock the kernel releases when its holder dies, see
``shared.HealthTable.try_lease``). The worker that holds it probes every
backend that has checks enabled, each at its own interval, and writes the
results to the shared health table, so every worker sees them. If that
worker dies, another takes the lease within half an interval and probing
goes on.

A probe is ``GET <health_path>`` on a fresh connection (as HAProxy does: a
pooled connection would hide a backend that stopped accepting), passing when
the status is in ``health_status`` within ``health_timeout``. An ``https://``
backend's certificate is checked as for requests (``backend_tls_options``).
"""

from __future__ import annotations

import logging
import os
import random
import ssl
from typing import Any

import gevent
from urllib3 import connection_from_url
from urllib3.exceptions import HTTPError
from urllib3.util import Timeout

from prefork_lb.config import Backend
from prefork_lb.runtime import AdminState
from prefork_lb.selector import Selector
from prefork_lb.shared import HealthTable
from prefork_lb.upstream import os_reason

log = logging.getLogger("gunicorn.error").getChild("prefork_lb")
USER_AGENT = "prefork_lb-health-check"


class HealthProber:
    """Waits for the prober lease, then checks every backend that asks for it."""

    def __init__(self, selector: Selector, table: HealthTable, tls_options: dict[str, Any]) -> None:
        self._selector = selector
        self._table = table
        self._tls_options = tls_options  # for https backends, from backend_tls_options()
        self._checked = [
            (index, backend)
            for index, backend in enumerate(selector.backends)
            if backend.check.enabled
        ]

    def start(self) -> gevent.Greenlet[[], None] | None:
        """Start waiting for the lease in the background (nothing to do without checks)."""
        if not self._checked:
            return None
        return gevent.spawn(self._run)

    def _run(self) -> None:
        poll = min(backend.check.interval for _, backend in self._checked) / 2
        while not self._table.try_lease():
            gevent.sleep(poll * random.uniform(0.8, 1.0))  # noqa: S311 - jitter, not secrecy
        log.info("worker %d now runs the health checks", os.getpid())
        probes = [gevent.spawn(self._probe_forever, index, b) for index, b in self._checked]
        gevent.joinall(probes)

    def _probe_forever(self, index: int, backend: Backend) -> None:
        while True:
            if self._selector.health()[index].admin == AdminState.MAINT:
                # In maintenance: not probed (the backend may be mid-deploy).
                gevent.sleep(backend.check.interval)
                continue
            if backend.dns:
                # A DNS slot: probe the address it holds now, if any.
                now = self._selector.backends[index]
                if not self._selector.present(index):
                    gevent.sleep(backend.check.interval)
                    continue
            else:
                now = backend
            try:
                passed, reason = self.probe(now)
                if now.url == self._selector.backends[index].url:  # still its address
                    self._selector.check_done(index, passed=passed, reason=reason)
            except Exception:
                # A bug here must not end this backend's checks for good while
                # this worker keeps the lease.
                log.exception("health check of %s failed unexpectedly", backend.url)
            gevent.sleep(backend.check.interval)

    def probe(self, backend: Backend) -> tuple[bool, str]:
        """Check one backend once: whether it passed, and if not, why."""
        check = backend.check
        # A pool of its own per probe: a fresh connection, closed afterwards.
        pool = connection_from_url(
            backend.url,
            maxsize=1,
            retries=False,
            timeout=Timeout(connect=check.timeout, read=check.timeout),
            **(self._tls_options if backend.scheme == "https" else {}),
        )
        try:
            with gevent.Timeout(check.timeout):
                response = pool.request(
                    "GET",
                    check.path,
                    headers={"Host": backend.authority, "User-Agent": USER_AGENT},
                    redirect=False,
                    preload_content=False,
                )
                response.close()
        except gevent.Timeout:
            return False, f"no answer in {check.timeout:g} s"
        except (HTTPError, OSError, ssl.SSLError) as err:
            return False, os_reason(err) or type(err).__name__
        finally:
            pool.close()
        low, high = check.status
        return low <= response.status <= high, f"status {response.status}"

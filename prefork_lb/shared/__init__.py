"""Cross-process state: made once in the gunicorn master, inherited by every worker.

This package is the one owner of memory shared between workers: it
allocates, lays out and names every cross-process array, and nothing outside
it indexes them. One concern per module:

- ``counter``: the rotation counter, a kill-safe ``lseek`` fetch-and-add;
- ``health_table``: every backend's health under a record lock, and the
  prober lease;
- ``in_flight``: requests in flight and open client connections, one row per
  worker;
- ``admission``: the lock that admits requests to backends with
  ``max_conns``, the pools' waiting rooms and their tickets;
- ``stats``: responses, errors, retries and latency, one row per worker;
- ``extension_memory``: the shared counters and rate limiters extensions
  declare, and their error counts;
- ``addresses``: the addresses found through DNS, in fixed slots, the hash
  tables built over them, and the resolving lease;
- ``pending_states``: the ``state_file``'s states of DNS addresses not in the
  balancer yet, waiting for DNS to give them;
- ``figures``: one typed, read-only ``BackendFigures`` per backend, every
  figure under its name, for whoever shows them;
- ``handover``: the master installs the state (and reinstalls it on HUP),
  hands each worker its slot, and workers attach to what it installed.
"""

from prefork_lb.shared.addresses import DNS_FAILURE_REASONS, AddressTable, DnsFigures
from prefork_lb.shared.admission import AdmissionTable
from prefork_lb.shared.counter import RotationCounter
from prefork_lb.shared.extension_memory import (
    ExtensionMemory,
    RateLimiter,
    RateLimiterTable,
    SharedCounter,
    extension_memory,
)
from prefork_lb.shared.figures import BackendFigures, BalancerFigures, Figures, PoolFigures
from prefork_lb.shared.handover import (
    SharedState,
    assign_worker_slot,
    install,
    installed,
    reinstall,
    release_orphaned_slots,
    release_worker_slot,
    worker_slot,
)
from prefork_lb.shared.health_table import HealthTable, ProberLease
from prefork_lb.shared.in_flight import InFlightTable
from prefork_lb.shared.pending_states import PendingStates
from prefork_lb.shared.stats import (
    LATENCY_BUCKETS,
    STATUS_CLASSES,
    BackendStats,
    StatsTable,
    subtract_row,
)

__all__ = [
    "DNS_FAILURE_REASONS",
    "LATENCY_BUCKETS",
    "STATUS_CLASSES",
    "AddressTable",
    "AdmissionTable",
    "BackendFigures",
    "BackendStats",
    "BalancerFigures",
    "DnsFigures",
    "ExtensionMemory",
    "Figures",
    "HealthTable",
    "InFlightTable",
    "PendingStates",
    "PoolFigures",
    "ProberLease",
    "RateLimiter",
    "RateLimiterTable",
    "RotationCounter",
    "SharedCounter",
    "SharedState",
    "StatsTable",
    "assign_worker_slot",
    "extension_memory",
    "install",
    "installed",
    "reinstall",
    "release_orphaned_slots",
    "release_worker_slot",
    "subtract_row",
    "worker_slot",
]

"""The phases of a cluster run, in order, each returning its figures for the report.

1. throughput through HAProxy with 1, 2, then 3 instances in service;
2. SIGKILL of one instance's whole process group under load, then its restart;
3. a rolling HUP of every instance under load, one at a time;
4. hash keys sent through each instance alone and through HAProxy.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from scripts.bench.cluster import analysis
from scripts.bench.cluster.cluster import Cluster
from scripts.bench.cluster.plan import FRONT_PORT, INSTANCE_PORT
from scripts.bench.cluster.services import exited, wait_until, workers_of


@dataclass(frozen=True, slots=True)
class Timing:
    """How long each phase loads the cluster."""

    throughput_s: float  # per instance count
    warm_s: float  # load before the kill / the first HUP
    after_s: float  # load after the last event
    connections: int
    keys: int

    @classmethod
    def choose(cls, quick: bool, connections: int) -> Timing:
        """Short phases for --quick (the test), longer ones otherwise."""
        if quick:
            return cls(throughput_s=2, warm_s=1, after_s=1, connections=connections, keys=24)
        return cls(throughput_s=10, warm_s=3, after_s=3, connections=connections, keys=100)


def _names(cluster: Cluster) -> dict[str, str]:
    return {host.address: host.short for host in cluster.layout.of_role("instance")}


def measure_throughput(cluster: Cluster, timing: Timing, wrk: str | None) -> list[dict[str, Any]]:
    """Requests per second through HAProxy with 1, 2 and 3 instances in service.

    With ``wrk`` (its path), wrk makes the load, and who served is HAProxy's count of
    connections per instance; without, the Python driver, which counts requests.
    """
    rows = []
    instances = cluster.layout.of_role("instance")
    for count in range(1, len(instances) + 1):
        cluster.set_in_service(count)
        name = f"in-service-{count}"
        if wrk is not None:
            before = cluster.haproxy_status()
            result = cluster.run_wrk(wrk, timing.connections, timing.throughput_s, name)
            after = cluster.haproxy_status()
            rows.append(
                {
                    "instances": count,
                    "load": "wrk",
                    "requests_per_s": round(result.requests_per_s, 1),
                    "requests": result.requests,
                    "failed": result.error_count,
                    "connections_by": {
                        host.short: int(after[host.short]["stot"]) - int(before[host.short]["stot"])
                        for host in instances
                    },
                    "p50_ms": result.p50_ms,
                    "p99_ms": result.p99_ms,
                }
            )
            continue
        load = cluster.start_load(timing.connections, timing.throughput_s + 30, name)
        time.sleep(timing.throughput_s)
        requests = load.finish()
        rows.append(
            {
                "instances": count,
                "load": "python",
                "requests_per_s": round(analysis.throughput(requests), 1),
                "requests": len(requests),
                "failed": len(analysis.failures(requests)),
                "served_by": analysis.served_by(requests, _names(cluster)),
            }
        )
    return rows


def kill_one(cluster: Cluster, timing: Timing, victim_number: int = 2) -> dict[str, Any]:
    """SIGKILL one instance (master and workers) under load; how HAProxy and clients took it."""
    victim = cluster.layout.of_role("instance")[victim_number - 1]
    service = cluster.services[victim.short]
    load = cluster.start_load(timing.connections, timing.warm_s + 60, "kill")
    time.sleep(timing.warm_s)
    before = cluster.haproxy_status()[victim.short]
    processes = {service.pid, *workers_of(service.pid)}
    killed_at = time.monotonic()
    service.kill_group(signal.SIGKILL)
    # Dead when none of its processes runs any more: its listening socket is closed then.
    wait_until(lambda: all(map(exited, processes)), "the killed instance gone", 10, 0.002)
    gone_at = time.monotonic()
    detect_s = cluster.wait_haproxy_status(victim, "DOWN", timeout_s=30)
    at_down = cluster.haproxy_status()[victim.short]
    time.sleep(timing.after_s)
    requests = load.finish()
    after = cluster.haproxy_status()[victim.short]
    service.process.wait(10)
    held = analysis.connections_held(requests, victim.address, killed_at)
    while_dying = analysis.unanswered_connections(requests, killed_at, gone_at) - held
    last = analysis.last_served(requests, victim.address)

    restarted_at = time.monotonic()
    booted = cluster.booted(victim)  # the restarted instance appends to the same log
    cluster.start_instance(victim)
    cluster.wait_instance_ready(victim, booted_before=booted)
    cluster.wait_haproxy_status(victim, "UP")
    up_s = time.monotonic() - restarted_at
    # New connections through HAProxy (round robin): the restarted instance takes its share.
    fresh = [cluster.get(cluster.layout.front.address, FRONT_PORT, "/") for _ in range(6)]
    return {
        "instance": victim.short,
        "requests": len(requests),
        "connections": timing.connections,
        "held_connections": len(held),
        "dying_s": round(gone_at - killed_at, 3),
        "killed_at": killed_at,  # CLOCK_MONOTONIC, as the load's records
        "gone_at": gone_at,
        "accepted_while_dying": len(while_dying),
        "failed": len(analysis.failures(requests)),
        "failed_on_held": analysis.failed_on(requests, held | while_dying, killed_at),
        "failure_reasons": sorted({r.error for r in analysis.failures(requests)}),
        "detect_s": round(detect_s, 3),
        "detection_bound_s": cluster.checks.detection_bound_s,
        "last_served_after_kill_s": None if last is None else round(last - killed_at, 3),
        "served_after_kill": analysis.served_after(requests, victim.address, killed_at),
        "haproxy_connect_errors": int(after["econ"] or 0) - int(before["econ"] or 0),
        "haproxy_redispatched": int(after["wredis"] or 0) - int(before["wredis"] or 0),
        # Connections HAProxy gave the instance once it had marked it DOWN.
        "haproxy_attempts_after_down": int(after["stot"] or 0) - int(at_down["stot"] or 0),
        "served_by": analysis.served_by(requests, _names(cluster)),
        "restart_to_up_s": round(up_s, 3),
        "restarted_served_fresh": sum(
            1 for a in fresh if a.status == 200 and a.peer == victim.address
        ),
        "fresh_connections": len(fresh),
    }


def rolling_hup(cluster: Cluster, timing: Timing) -> dict[str, Any]:
    """HUP each instance in turn under load, waiting until it is ready again before the next."""
    load = cluster.start_load(timing.connections, timing.warm_s + 120, "hup")
    time.sleep(timing.warm_s)
    before = cluster.haproxy_status()
    steps = []
    for host in cluster.layout.of_role("instance"):
        service = cluster.services[host.short]
        old_workers = workers_of(service.pid)
        booted = cluster.booted(host)
        started = time.monotonic()
        os.kill(service.pid, signal.SIGHUP)
        cluster.wait_instance_ready(host, booted_before=booted, replacing=old_workers)
        cluster.wait_haproxy_status(host, "UP")
        steps.append({"instance": host.short, "ready_s": round(time.monotonic() - started, 3)})
    time.sleep(timing.after_s)
    requests = load.finish()
    after = cluster.haproxy_status()
    return {
        "requests": len(requests),
        # Times HAProxy's checks took an instance out while it reloaded.
        "marked_down": sum(int(after[n]["chkdown"]) - int(before[n]["chkdown"]) for n in after),
        "failed": len(analysis.failures(requests)),
        "failure_reasons": sorted({r.error for r in analysis.failures(requests)}),
        "steps": steps,
        "served_by": analysis.served_by(requests, _names(cluster)),
    }


def hash_agreement(cluster: Cluster, timing: Timing) -> dict[str, Any]:
    """Which backend each key reaches through each instance alone and through HAProxy."""
    instances = cluster.layout.of_role("instance")
    names = _names(cluster)
    keys = [f"user-{n}" for n in range(timing.keys)]
    seen: dict[str, dict[str, str]] = {key: {} for key in keys}
    front_instances: dict[str, int] = {}
    for key in keys:
        for host in instances:
            seen[key][host.short] = cluster.backend_for_key(
                host.address, INSTANCE_PORT, key
            ).backend
        # A new connection each time: HAProxy's round robin hands each to the next instance.
        answer = cluster.backend_for_key(cluster.layout.front.address, FRONT_PORT, key)
        seen[key]["haproxy"] = answer.backend
        served = names.get(answer.peer, answer.peer)
        front_instances[served] = front_instances.get(served, 0) + 1
    disagree = {key: where for key, where in seen.items() if len(set(where.values())) != 1}
    return {
        "keys": len(keys),
        "agree": len(keys) - len(disagree),
        "disagree": disagree,
        "backends_used": len({backend for where in seen.values() for backend in where.values()}),
        "haproxy_sent_keys_to": dict(sorted(front_instances.items())),
        "sample": {key: seen[key]["haproxy"] for key in keys[:6]},
    }

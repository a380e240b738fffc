"""A cluster run's figures as a person reads them."""

from __future__ import annotations

from typing import Any


def _served(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def render(result: dict[str, Any]) -> str:
    """The table printed at the end of a run."""
    run = result["run"]
    lines = [
        f"prefork_lb cluster on one machine ({run['cores']} cores): 3 backends ({run['backends']}),"
        f" 3 instances x {run['workers']} workers, HAProxy {run['haproxy_mode']};"
        f" load: {run['connections']} keep-alive connections ({run['load']});"
        f" load average {run['load_average']:.1f} at start",
        "",
        "Throughput through HAProxy",
        "  in service   req/s      failed   load     served by",
    ]
    for row in result["throughput"]:
        if "served_by" in row:
            served = f"{_served(row['served_by'])} requests"
        else:
            served = f"{_served(row['connections_by'])} connections"
        lines.append(
            f"  {row['instances']:>10}   {row['requests_per_s']:>8,.0f}   {row['failed']:>6}"
            f"   {row['load']:<6}   {served}"
        )
    kill = result["kill"]
    lines += [
        "",
        f"SIGKILL of {kill['instance']} (master and workers) under load",
        f"  client connections it held        {kill['held_connections']} of {kill['connections']},"
        f" and {kill['accepted_while_dying']} it accepted in the {kill['dying_s'] * 1000:.0f} ms"
        " its processes took to die",
        f"  failed requests                   {kill['failed']}"
        f" (on those connections: {kill['failed_on_held']})",
        f"  HAProxy marked it DOWN after      {kill['detect_s']:.3f} s"
        f" (fall x inter = {kill['detection_bound_s']:g} s)",
        f"  connections HAProxy re-dispatched {kill['haproxy_redispatched']}"
        f" (connect errors {kill['haproxy_connect_errors']});"
        f" it gave it {kill['haproxy_attempts_after_down']} once DOWN",
        f"  requests it served after the kill {kill['served_after_kill']}",
        f"  restarted, UP again after         {kill['restart_to_up_s']:.3f} s;"
        f" {kill['restarted_served_fresh']} of {kill['fresh_connections']}"
        " new connections went to it",
    ]
    hup = result["rolling_hup"]
    steps = ", ".join(f"{step['instance']} {step['ready_s']:.1f} s" for step in hup["steps"])
    lines += [
        "",
        "Rolling HUP under load, one instance at a time",
        f"  requests {hup['requests']:,}, failed {hup['failed']}; ready again: {steps};"
        f" HAProxy marked an instance DOWN {hup['marked_down']} times",
    ]
    hashing = result["hashing"]
    lines += [
        "",
        f'hash_key = "header:X-User": {hashing["keys"]} keys through lb1, lb2, lb3 alone and'
        " through HAProxy",
        f"  same backend everywhere: {hashing['agree']} of {hashing['keys']} keys;"
        f" {hashing['backends_used']} backends used;"
        f" through HAProxy the keys went to {_served(hashing['haproxy_sent_keys_to'])}",
    ]
    return "\n".join(lines)

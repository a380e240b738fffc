"""scripts/cluster's reading of a run: throughput, who served, what a killed one held, the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.bench.cluster.analysis import (
    Request,
    connections_held,
    failed_on,
    failures,
    last_served,
    served_after,
    served_by,
    throughput,
    unanswered_connections,
)
from scripts.bench.cluster.haproxy_api import parse_show_stat
from scripts.bench.cluster.report import render

SAMPLES = Path(__file__).parent / "cluster_samples"
LB1, LB2 = "198.18.0.21", "198.18.0.22"
NAMES = {LB1: "lb1", LB2: "lb2"}


def ok(sent: float, loop: int, peer: str, connection: int = 1) -> Request:
    """A request answered 0.1 s after it was sent, by ``peer``."""
    return Request(sent, sent + 0.1, loop, connection, True, peer, "be1", "")


def failed(sent: float, loop: int, connection: int = 1) -> Request:
    """A request whose connection closed 0.1 s after it was sent."""
    return Request(sent, sent + 0.1, loop, connection, False, "", "", "closed before a response")


# Loop 0 on lb1, loops 1 and 2 on lb2; lb2 is killed at 2.05 (in flight: 1 and 2); each
# of those makes a new connection (serial 2), which lb1 answers.
RUN = [
    ok(1.0, 0, LB1),
    ok(1.0, 1, LB2),
    ok(1.0, 2, LB2),
    ok(2.0, 0, LB1),
    failed(2.0, 1),
    failed(2.0, 2),
    ok(3.0, 1, LB1, connection=2),
    ok(3.0, 2, LB1, connection=2),
]


def test_a_killed_instance_held_the_connections_it_last_answered() -> None:
    """The connections whose last answer before the kill came from lb2 are the ones it held."""
    assert connections_held(RUN, LB2, 2.05) == {(1, 1), (2, 1)}
    assert connections_held(RUN, LB1, 2.05) == {(0, 1)}


def test_a_connection_that_failed_before_the_moment_is_not_held() -> None:
    """A connection whose last request failed was closed: nobody holds it."""
    assert connections_held(RUN, LB2, 2.5) == set()


def test_failures_are_counted_on_the_held_connections_after_the_kill() -> None:
    """Both failures came on lb2's connections after the kill; none before it."""
    assert failed_on(RUN, {(1, 1), (2, 1)}, 2.05) == 2
    assert failed_on(RUN, {(1, 1), (2, 1)}, 2.2) == 0
    assert failed_on(RUN, {(1, 2), (2, 2)}, 2.05) == 0
    assert len(failures(RUN)) == 2


def test_a_new_connection_that_never_got_an_answer_while_the_instance_died_is_counted() -> None:
    """A connection opened between the kill and the death and only ever failed is the dying
    instance's; one opened later, or answered, is not."""
    run = [
        *RUN,
        failed(2.06, 3, connection=1),  # opened while lb2 died: its accept queue took it
        failed(2.3, 4, connection=1),  # opened after lb2 was gone
        ok(2.07, 5, LB1, connection=1),  # opened while it died, answered by lb1
    ]
    assert unanswered_connections(run, 2.05, 2.1) == {(3, 1)}


def test_served_by_names_every_instance_even_with_no_answers() -> None:
    """Successful requests per instance, with zero for an instance that served none."""
    assert served_by(RUN, {**NAMES, "198.18.0.23": "lb3"}) == {"lb1": 4, "lb2": 2, "lb3": 0}


def test_throughput_counts_successes_over_the_whole_span() -> None:
    """6 successes from 1.0 to 3.1 s: 6 / 2.1 requests per second; nothing for no requests."""
    assert throughput(RUN) == pytest.approx(6 / 2.1)
    assert throughput([]) == 0.0


def test_after_the_kill_the_instance_served_nothing() -> None:
    """lb2's last answer is the one before the kill, and it served none after."""
    assert last_served(RUN, LB2) == pytest.approx(1.1)
    assert served_after(RUN, LB2, 2.05) == 0
    assert last_served(RUN, "198.18.0.23") is None


def test_records_read_back_from_the_drivers_json() -> None:
    """A driver record (a JSON list) becomes the same Request."""
    record = [1.5, 1.6, 3, 2, True, LB1, "be2", ""]
    assert Request.from_record(record) == Request(1.5, 1.6, 3, 2, True, LB1, "be2", "")


def test_show_stat_gives_each_servers_row() -> None:
    """HAProxy's `show stat` CSV (captured from HAProxy 2.6) gives a row per server of a backend."""
    text = (SAMPLES / "show_stat.csv").read_text()
    rows = parse_show_stat(text, "instances")
    assert sorted(rows) == ["lb1", "lb2"]
    assert rows["lb1"]["status"] == "DOWN"
    assert rows["lb2"]["status"] == "no check"
    assert rows["lb1"]["wredis"] == "0"


def test_show_stat_refuses_other_text() -> None:
    """An error message in place of the CSV is a ValueError saying what it got."""
    with pytest.raises(ValueError, match="not the output of 'show stat'"):
        parse_show_stat("Unknown command.\n", "instances")


def test_the_table_shows_every_phase_of_a_real_run() -> None:
    """A real run's JSON (the README's sample) renders to the table with each phase's figures."""
    document = json.loads((SAMPLES / "run.json").read_text())
    table = render(document)
    assert "           3      1,708        0   wrk      lb1 8, lb2 9, lb3 8 connections" in table
    assert "8 of 24, and 2 it accepted in the 26 ms its processes took to die" in table
    assert "failed requests                   10 (on those connections: 10)" in table
    assert "requests 12,972, failed 0" in table
    assert "same backend everywhere: 100 of 100 keys" in table

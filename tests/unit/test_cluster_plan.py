"""scripts/cluster's layout: names carry the run, fit Linux's limits, tell stale runs apart."""

from __future__ import annotations

import pytest

from scripts.bench.cluster.plan import make_layout, run_of, stale_namespaces

LAYOUT = make_layout(4194304, "ab12")


def test_every_namespace_carries_the_run_prefix() -> None:
    """Every namespace of a run starts with plbc-PID-TAG-, the switch's too."""
    names = LAYOUT.namespaces()
    assert len(names) == 9
    assert all(name.startswith("plbc-4194304-ab12-") for name in names)
    assert len(set(names)) == len(names)


def test_interface_names_fit_in_fifteen_characters() -> None:
    """Linux refuses interface names over 15 characters, even with the largest pid."""
    names = [LAYOUT.bridge]
    for host in LAYOUT.hosts:
        names += [LAYOUT.host_interface(host), LAYOUT.switch_interface(host)]
    assert max(len(name) for name in names) <= 15
    assert all(name.startswith("ab12-") for name in names)


def test_addresses_are_distinct_and_in_the_benchmarking_range() -> None:
    """Each host has its own address in 198.18.0.0/24 (RFC 2544's range, never routed)."""
    addresses = [host.address for host in LAYOUT.hosts]
    assert len(set(addresses)) == len(addresses)
    assert all(address.startswith("198.18.0.") for address in addresses)
    assert [h.short for h in LAYOUT.of_role("instance")] == ["lb1", "lb2", "lb3"]


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        pytest.param("plbc-123-ab12-lb1", ("plbc-123-ab12", 123), id="instance"),
        pytest.param("plbc-9-0000-sw", ("plbc-9-0000", 9), id="switch"),
        pytest.param("plbc-123-ab12", None, id="no-host"),
        pytest.param("plbc-x-ab12-lb1", None, id="pid-not-a-number"),
        pytest.param("plbc-123-AB12-lb1", None, id="tag-not-lower-hex"),
        pytest.param("someone-elses", None, id="other"),
    ],
)
def test_run_of_reads_the_creating_pid(namespace: str, expected: tuple[str, int] | None) -> None:
    """A namespace's name gives back its run's prefix and pid; anything else gives None."""
    assert run_of(namespace) == expected


def test_only_namespaces_of_dead_runs_are_stale() -> None:
    """A live run's namespaces and other people's namespaces are never swept."""
    names = ["plbc-10-aaaa-lb1", "plbc-10-aaaa-sw", "plbc-11-bbbb-lb1", "mine", "plbc-ha"]
    assert stale_namespaces(names, lambda pid: pid == 11) == ["plbc-10-aaaa-lb1", "plbc-10-aaaa-sw"]


def test_a_tag_must_be_four_hex_digits() -> None:
    """A tag that would not parse back is refused when the layout is made."""
    with pytest.raises(ValueError, match="four hex digits"):
        make_layout(1, "xyz!")

"""The directory: DNS slots seen with their address, re-read only when the table changes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prefork_lb.config import load_config
from prefork_lb.directory import Directory, dns_rings
from prefork_lb.shared.addresses import AddressTable
from prefork_lb.slots import EMPTY, Slot, SlotState


@pytest.fixture
def table() -> Iterator[AddressTable]:
    """An address table for one listed backend and two slots."""
    made = AddressTable(3, 1)
    yield made
    made.close()


SETTINGS = load_config(
    {
        "PREFORK_LB_BACKENDS": "http://10.0.0.1:80",
        "PREFORK_LB_DNS": "api.internal:8080",
        "PREFORK_LB_DNS_SLOTS": "2",
    }
)


def test_a_slot_is_its_template_until_an_address_fills_it(table: AddressTable) -> None:
    """An EMPTY slot is not present; once published it is ip:port with the address's weight."""
    directory = Directory(SETTINGS.backends, table)
    assert [directory.present(i) for i in range(3)] == [True, False, False]
    table.publish({2: Slot(SlotState.ACTIVE, "10.0.0.7", 8080, 5, True)})
    assert directory.refresh()
    backend = directory[2]
    assert (backend.url, backend.name, backend.host, backend.port) == (
        "http://10.0.0.7:8080",
        "10.0.0.7:8080",
        "10.0.0.7",
        8080,
    )
    assert (backend.weight, backend.backup, backend.dns) == (5, True, "api.internal:8080")
    assert directory[0] == SETTINGS.backends[0]
    assert directory.index_of("10.0.0.7:8080") == 2


def test_the_directory_rereads_only_when_the_generation_changes(table: AddressTable) -> None:
    """refresh() is a no-op until a publish; an emptied slot stops being present."""
    directory = Directory(SETTINGS.backends, table)
    assert not directory.refresh()
    table.publish({1: Slot(SlotState.ACTIVE, "10.0.0.8", 8080)})
    assert directory.refresh()
    assert not directory.refresh()
    table.publish({1: EMPTY})
    assert directory.refresh()
    assert not directory.present(1)


def test_without_dns_sources_the_directory_never_reads_the_table(table: AddressTable) -> None:
    """With only listed backends nothing can change: refresh() never looks at the table."""
    listed = load_config({"PREFORK_LB_BACKENDS": "http://10.0.0.1:80"}).backends
    directory = Directory(listed, table)
    table.publish({0: Slot(SlotState.ACTIVE, "10.0.0.8", 8080)})
    assert not directory.refresh()
    assert not directory.follows_dns


def test_source_figures_count_failures_by_reason(table: AddressTable) -> None:
    """Failures are counted by reason (an unknown one as error); resolved sets the gauges."""
    table.count_failure(0, "timeout")
    table.count_failure(0, "timeout")
    table.count_failure(0, "weird")
    table.resolved(0, 3, 1234.5)
    figures = table.figures(0)
    assert (figures.failures["timeout"], figures.failures["error"]) == (2, 1)
    assert (figures.addresses, figures.last_resolved) == (3, 1234.5)


def test_a_hash_table_over_dns_addresses_depends_on_the_set_not_the_slots() -> None:
    """The same addresses in other slots give the same table; it is shared through the table."""
    hashed = load_config(
        {
            "PREFORK_LB_DNS": "api.internal:8080",
            "PREFORK_LB_DNS_SLOTS": "3",
            "PREFORK_LB_POLICY": "hash",
        }
    )
    one = Slot(SlotState.ACTIVE, "10.0.0.1", 8080)
    two = Slot(SlotState.ACTIVE, "10.0.0.2", 8080)
    draining = Slot(SlotState.DRAINING, "10.0.0.3", 8080)
    first = dns_rings(hashed, [one, two, EMPTY])
    second = dns_rings(hashed, [draining, two, one])
    assert set(first) == {0}
    entries = first[0]
    assert entries is not None
    # Backend indexes differ with the slots; the addresses behind each entry do not.
    by_address = {0: "10.0.0.1", 1: "10.0.0.2"}
    moved = {1: "10.0.0.2", 2: "10.0.0.1"}
    assert [by_address[i] for i in entries] == [moved[i] for i in second[0] or ()]
    table = AddressTable(3, 1, 1)
    try:
        table.publish({0: one, 1: two}, first)
        assert table.ring(0) == entries
        table.publish({}, {0: None})
        assert table.ring(0) is None
    finally:
        table.close()

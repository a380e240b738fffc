"""The ctl command's pure parts: the status table and its argument parsing."""

from __future__ import annotations

import pytest

from prefork_lb.ctl import _parser, status_table


def test_status_table_aligns_one_line_per_backend() -> None:
    """status prints a header and one aligned line per backend."""
    table = status_table(
        [
            {
                "name": "web-1",
                "state": "up",
                "admin_state": "drain",
                "weight": 5,
                "in_flight": 2,
                "tunnels_open": 1,
                "url": "http://10.0.0.1:80",
            },
            {
                "name": "a-much-longer-name",
                "state": "down",
                "admin_state": "ready",
                "weight": 1,
                "in_flight": 0,
                "tunnels_open": 0,
                "url": "http://10.0.0.2:80",
            },
        ]
    )
    lines = table.splitlines()
    assert [line.split() for line in lines] == [
        ["NAME", "HEALTH", "ADMIN", "WEIGHT", "IN_FLIGHT", "TUNNELS", "URL"],
        ["web-1", "up", "drain", "5", "2", "1", "http://10.0.0.1:80"],
        ["a-much-longer-name", "down", "ready", "1", "0", "0", "http://10.0.0.2:80"],
    ]
    assert lines[1].index("up") == lines[0].index("HEALTH")


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-command"),
        pytest.param(["drain"], id="no-name"),
        pytest.param(["weight", "web-1", "five"], id="bad-weight"),
        pytest.param(["frobnicate", "web-1"], id="unknown-command"),
    ],
)
def test_bad_usage_exits_2(argv: list[str]) -> None:
    """A command line ctl cannot read is exit status 2 with argparse's message."""
    with pytest.raises(SystemExit) as caught:
        _parser().parse_args(argv)
    assert caught.value.code == 2

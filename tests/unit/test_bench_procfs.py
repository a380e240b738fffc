"""Reading /proc for the load test: stat lines, status fields, process trees (captured text)."""

from __future__ import annotations

import pytest

from scripts.bench.procfs import (
    ProcessStat,
    children,
    parse_stat,
    parse_status_kib,
    process_tree,
)

# Captured on this machine: an nginx worker, a process whose command name was
# set to "a) b (c", and PID 1.
NGINX_WORKER = (
    "16563 (nginx) S 16560 16560 16560 0 -1 4194624 559 0 1 0 18 118 0 0 20 0 1 0 38703 "
    "13717504 1399 18446744073709551615 94315823247360 94315824030849 140720522964528 0 0 0 0 "
    "1073745920 402745863 1 0 0 17 1 0 0 0 0 0 94315824265296 94315824366368 94316336345088 "
    "140720522971771 140720522971871 140720522971871 140720522973160 0\n"
)
ODD_NAME = (
    "17238 (a) b (c) R 17236 17236 2689 0 -1 4194304 169 0 0 0 0 0 0 0 20 0 1 0 39884 4464640 "
    "790 18446744073709551615 94060000362496 94060001151901 140732246021968 0 0 0 0 4 65536 0 0 "
    "0 17 0 0 0 0 0 0 94060001385200 94060001433444 94060226187264 140732246026917 "
    "140732246026996 140732246026996 140732246028266 0"
)
INIT = (
    "1 (process_api) S 0 0 0 0 -1 4194560 25793 971088 0 619 38 218 4160 3210 10 -10 40 0 26 "
    "55541760 3482 18446744073709551615 1 1 0 0 0 0 0 4096 1256 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 "
    "0 0 0"
)
# Made up in the same shape (a worker that exited, not yet reaped), cut after the fields used.
ZOMBIE = "4242 (gunicorn) Z 4200 4200 4200 0 -1 4227084 0 0 0 0 7 3 0 0 20 0 1 0 0 0 0"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(NGINX_WORKER, ProcessStat(16563, "S", 16560, 18 + 118), id="nginx-worker"),
        pytest.param(ODD_NAME, ProcessStat(17238, "R", 17236, 0), id="name-with-parentheses"),
        # Children's times (cutime 4160, cstime 3210) are not the process's own.
        pytest.param(INIT, ProcessStat(1, "S", 0, 38 + 218), id="pid-1-own-time-only"),
        pytest.param(ZOMBIE, ProcessStat(4242, "Z", 4200, 10), id="zombie"),
    ],
)
def test_parse_stat(line: str, expected: ProcessStat) -> None:
    """State, parent and utime+stime are read after the last parenthesis, whatever the name."""
    assert parse_stat(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("", id="empty"),
        pytest.param("16563 nginx S 16560", id="no-parentheses"),
        pytest.param("16563 (nginx) S 16560 16560", id="cut-short"),
    ],
)
def test_parse_stat_rejects_other_text(line: str) -> None:
    """Text that is not a whole stat line raises ValueError rather than giving wrong figures."""
    with pytest.raises(ValueError, match="stat"):
        parse_stat(line)


NGINX_STATUS = "Name:\tnginx\nVmPeak:\t   13400 kB\nVmHWM:\t    5808 kB\nVmRSS:\t    5808 kB\n"


@pytest.mark.parametrize(
    ("field", "kib"),
    [
        pytest.param("VmRSS", 5808, id="rss"),
        pytest.param("VmHWM", 5808, id="peak"),
        pytest.param("VmSwap", 0, id="absent"),
        pytest.param("Vm", 0, id="prefix-is-not-a-field"),
    ],
)
def test_parse_status_kib(field: str, kib: int) -> None:
    """A kB field of /proc/PID/status is read by its whole name; an absent one is 0."""
    assert parse_status_kib(NGINX_STATUS, field) == kib


# A gunicorn master (100) with two workers, one of which forked a helper; and strangers.
PROCESSES = [
    ProcessStat(1, "S", 0, 5),
    ProcessStat(100, "S", 1, 2),
    ProcessStat(102, "S", 100, 300),
    ProcessStat(101, "R", 100, 250),
    ProcessStat(103, "S", 102, 7),
    ProcessStat(200, "S", 1, 9),
]


@pytest.mark.parametrize(
    ("root", "pids"),
    [
        pytest.param(100, [100, 101, 102, 103], id="master-workers-grandchild"),
        pytest.param(101, [101], id="leaf"),
        pytest.param(999, [], id="gone"),
    ],
)
def test_process_tree(root: int, pids: list[int]) -> None:
    """A tree is its root, then its descendants level by level; a process that is gone has none."""
    assert [stat.pid for stat in process_tree(root, PROCESSES)] == pids


@pytest.mark.parametrize(
    ("parent", "pids"),
    [
        pytest.param(100, [101, 102], id="workers-in-order"),
        pytest.param(101, [], id="none"),
    ],
)
def test_children(parent: int, pids: list[int]) -> None:
    """Only direct children count, sorted by PID."""
    assert children(parent, PROCESSES) == pids

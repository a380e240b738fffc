"""Extensions' shared counters and rate-limiter tables, made in the master before fork.

Extensions declare the names they use (``shared_counters`` and
``rate_limiters`` on the extension's class); the master makes one of each
at start (and any new ones on HUP), and every worker forked afterwards
shares them. Both kinds are exact across workers and safe against a worker
killed at any instant:

- a ``SharedCounter`` is the file offset of an unlinked file shared through
  one open file description, as the rotation counter is: ``lseek`` is a
  fetch-and-add under the kernel's position lock, with no lock in user space;
- a ``RateLimiterTable`` is a set-associative table of token buckets in an
  anonymous shared mapping. A bucket changes under a POSIX record lock on
  one byte per set, which the kernel drops when its holder dies, taken
  without blocking (``LOCK_NB``, yielding between attempts: in a worker
  ``time.sleep`` is gevent's, so the hub never blocks) and held for a few
  microseconds, never across I/O. Each slot carries a CRC: a slot torn by a
  kill mid-write reads as a full bucket, as if the key had never been seen.

The worker's extension-errors counts (for the metrics) are shared counters
too, one per extension and phase.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from prefork_lb.shared.counter import shm_dir
from prefork_lb.token_bucket import Bucket, Decision, check_rate, is_full, take

PHASES = ("on_request", "on_upstream_request", "on_response", "on_complete")


class SharedCounter:
    """A counter every process forked after its creation adds to, exactly, with no lock."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._file = tempfile.TemporaryFile(prefix="prefork_lb-counter-", dir=shm_dir())  # noqa: SIM115
        self._fd = self._file.fileno()

    def add(self, n: int = 1) -> int:
        """Add ``n`` (may be negative, not below 0: ``ValueError``); return the new value."""
        try:
            return os.lseek(self._fd, n, os.SEEK_CUR)
        except OSError as err:
            if err.errno == errno.EINVAL:
                raise ValueError(f"shared counter {self.name!r} cannot go below 0") from None
            raise

    @property
    def value(self) -> int:
        """The value now."""
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def __repr__(self) -> str:
        return f"<SharedCounter {self.name!r} = {self.value}>"

    def close(self) -> None:
        """Release the file (in this process only)."""
        self._file.close()


class RateLimiterTable:
    """Token buckets by key, shared by every worker: ``KEYS`` keys at most.

    The table has ``sets`` sets of ``WAYS`` slots; a key lives in the set its
    hash names. When all slots of a set hold busy keys, the one seen longest
    ago is forgotten (its next request finds a full bucket).
    """

    WAYS = 8
    KEYS = 65536
    # Key hash, tokens, stamp, CRC-32 of the three: 32 bytes with padding.
    _SLOT = struct.Struct("<QddI4x")
    _SET = _SLOT.size * WAYS

    def __init__(self, name: str, keys: int = KEYS) -> None:
        self.name = name
        self.sets = max(1, keys // self.WAYS)
        self._memory = mmap.mmap(-1, self._SET * self.sets, flags=mmap.MAP_SHARED)
        # Record locks are per process and file: nothing else may open this one.
        self._lock_file = tempfile.TemporaryFile(prefix="prefork_lb-limiter-", dir=shm_dir())  # noqa: SIM115
        self._lock_fd = self._lock_file.fileno()

    def take(
        self, key: str, *, rate: float, burst: float, now: float, cost: float = 1.0
    ) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket at ``now``, exactly across workers."""
        check_rate(rate, burst)
        code = _key_code(key)
        index = code % self.sets
        self._lock(index)
        try:
            slot, bucket = self._find(index, code, rate=rate, burst=burst, now=now)
            decision = take(bucket, rate=rate, burst=burst, now=now, cost=cost)
            self._write(slot, code, decision.bucket)
        finally:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_UN, 1, index)
        return decision

    def _find(
        self, index: int, code: int, *, rate: float, burst: float, now: float
    ) -> tuple[int, Bucket | None]:
        """The slot for ``code`` in set ``index`` and its bucket (None: a full one)."""
        start = index * self._SET
        raw = self._memory[start : start + self._SET]
        slots = list(self._SLOT.iter_unpack(raw))
        size = self._SLOT.size
        for i, (held, tokens, stamp, crc) in enumerate(slots):
            if held == code:
                if crc != zlib.crc32(raw[i * size : i * size + 24]):
                    return start + i * size, None  # torn by a killed writer: a full bucket
                return start + i * size, Bucket(tokens, stamp)
        free, oldest, oldest_stamp = -1, 0, float("inf")
        for i, (held, tokens, stamp, crc) in enumerate(slots):
            if (
                held == 0
                or crc != zlib.crc32(raw[i * size : i * size + 24])
                or is_full(Bucket(tokens, stamp), rate=rate, burst=burst, now=now)
            ):
                free = i  # empty, torn, or idle long enough to be the same as no bucket
                break
            if stamp < oldest_stamp:
                oldest, oldest_stamp = i, stamp
        return start + (free if free >= 0 else oldest) * size, None

    def _write(self, offset: int, code: int, bucket: Bucket) -> None:
        head = struct.pack("<Qdd", code, bucket.tokens, bucket.stamp)
        self._memory[offset : offset + self._SLOT.size] = self._SLOT.pack(
            code, bucket.tokens, bucket.stamp, zlib.crc32(head)
        )

    def _lock(self, index: int) -> None:
        """Take set ``index``'s record lock without ever blocking in the kernel."""
        attempts = 0
        while True:
            try:
                fcntl.lockf(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, index)
                return
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            attempts += 1
            # Another process holds it for microseconds; in a worker this is
            # gevent's sleep, which lets this worker's other greenlets run.
            time.sleep(0 if attempts < 50 else 0.0005)

    def close(self) -> None:
        """Release the memory and the lock file (in this process only)."""
        self._memory.close()
        self._lock_file.close()


def _key_code(key: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1  # 0 marks an empty slot


@dataclass(slots=True)
class ExtensionMemory:
    """Every shared counter and rate limiter the extensions declared, by name."""

    counters: dict[str, SharedCounter] = field(default_factory=dict)
    limiters: dict[str, RateLimiterTable] = field(default_factory=dict)
    # (extension, phase) -> how many times that phase raised, over all workers.
    errors: dict[tuple[str, str], SharedCounter] = field(default_factory=dict)

    def declare(
        self, *, counters: Iterable[str], limiters: Iterable[str], extensions: Iterable[str]
    ) -> None:
        """In the master, before forking: make what is declared and not made yet."""
        for name in counters:
            if name not in self.counters:
                self.counters[name] = SharedCounter(name)
        for name in limiters:
            if name not in self.limiters:
                self.limiters[name] = RateLimiterTable(name)
        for extension in extensions:
            for phase in PHASES:
                if (extension, phase) not in self.errors:
                    self.errors[extension, phase] = SharedCounter(f"{extension} {phase}")

    def close(self) -> None:
        """Release everything (in this process only)."""
        for counter in [*self.counters.values(), *self.errors.values()]:
            counter.close()
        for table in self.limiters.values():
            table.close()


_memory = ExtensionMemory()


def extension_memory() -> ExtensionMemory:
    """This process's extension memory (made by the master, inherited by workers)."""
    return _memory


class RateLimiter:
    """One rate limiter's buckets, at ``rate`` tokens a second and ``burst`` at most."""

    def __init__(self, table: RateLimiterTable, rate: float, burst: float) -> None:
        check_rate(rate, burst)
        self.name = table.name
        self.rate = float(rate)
        self.burst = float(burst)
        self._table = table

    def take(self, key: str, tokens: float = 1.0, *, now: float | None = None) -> Decision:
        """Take ``tokens`` from ``key``'s bucket: ``.allowed``, and ``.retry_after`` seconds."""
        at = time.monotonic() if now is None else now
        return self._table.take(key, rate=self.rate, burst=self.burst, now=at, cost=tokens)

    def __repr__(self) -> str:
        return f"<RateLimiter {self.name!r} {self.rate:g}/s burst {self.burst:g}>"

"""Which events a keyed partition has already counted, exactly, in a few bytes of memory each.

An event is known by a 128-bit BLAKE2b digest of (`tenant_id`, `id`) (a false match is a
2^-128 event, not a rounding error), with a 32-bit digest of its content, to tell a
producer's retry from a conflicting copy. Digests are kept in sorted, immutable runs
grouped by the UTC day of the event, so a day leaving retention drops whole runs; where
runs live is the `RunStore`'s business (memory here, files on local disk in the worker,
see `streams.dedup_runs`). Memory holds only a split-block Bloom filter over every digest
(16 bits, 2 bytes, each), the digests not yet written to a run, and the stores' indexes:
most lookups end at the filter, and only its few positives search the runs.

Pure: no I/O of its own, no clock.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from pulse.schemas.events import Event, EventRow

ENTRY = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("content", "<u4")])
"""One digest in a run (20 bytes); the run says which day it belongs to."""
JOURNAL_ENTRY = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("content", "<u4"), ("day", "<i4")])
"""One new digest as the journal carries it (24 bytes)."""

_FILTER = struct.Struct("<QQI")
_encode = msgspec.msgpack.Encoder().encode
U64 = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]


def id_digest(tenant_id: str, event_id: str) -> bytes:
    """16-byte identity of an event; `\\x00` cannot occur in a tenant id, so it separates."""
    return hashlib.blake2b(
        f"{tenant_id}\x00{event_id}".encode(errors="surrogatepass"), digest_size=16
    ).digest()


def id_digests(rows: Iterable[EventRow]) -> bytes:
    """`id_digest` of each event (its fields, `tenant_id` and `id` first), concatenated:
    a poll's, in one call.

    Each digest starts from a copy of one unkeyed 16-byte BLAKE2b state rather than a
    new one: the same bytes, a quarter less CPU (0.53 -> 0.41 µs an event), as the
    parameter block is set up once."""
    empty = hashlib.blake2b(digest_size=16)
    out = []
    for r in rows:
        h = empty.copy()
        h.update(f"{r[0]}\x00{r[1]}".encode(errors="surrogatepass"))
        out.append(h.digest())
    return b"".join(out)


def content_digest(event: Event | EventRow) -> int:
    """A 32-bit digest of an event's normalized content: what tells a producer's retry
    (the same content) from a conflicting copy. An `Event` and the tuple of its fields
    encode to the same bytes (it is `array_like`), so both give the same digest."""
    return zlib.crc32(_encode(event))


def content_digests(rows: Iterable[EventRow]) -> list[int]:
    """`content_digest` of each event's fields, at once."""
    crc32, encode = zlib.crc32, _encode
    return [crc32(encode(r)) for r in rows]


def halves(digests: bytes) -> tuple[U64, U64]:
    """Concatenated 16-byte digests -> their high and low 64-bit halves."""
    pairs = np.frombuffer(digests, "<u8").reshape(-1, 2)
    return np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])


def keyed_partition(digest: bytes, partitions: int) -> int:
    """The keyed partition that deduplicates (and counts) the event of `digest`.

    The top 16 bits of the high half; the Bloom filter uses the rest, so the filter of
    a partition stays uniform although all its digests share this choice.
    """
    return (int.from_bytes(digest[:8], "little") >> 48) % partitions


def keyed_partitions(digests: bytes, partitions: int) -> npt.NDArray[np.int64]:
    """`keyed_partition` of each of the concatenated 16-byte `digests`, at once."""
    high = np.frombuffer(digests, "<u8")[0::2]
    return ((high >> np.uint64(48)) % np.uint64(partitions)).astype(np.int64)


def unique_digests(hi: U64, lo: U64) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """`np.unique` of the digests (hi, lo) with `return_index` and `return_inverse`:
    the first position of each distinct digest (in digest order), and each position's
    distinct digest. A stable two-key sort, twenty times quicker than `np.unique` over
    a structured array."""
    order = np.lexsort((lo, hi))
    sorted_hi, sorted_lo = hi[order], lo[order]
    starts = np.empty(len(order), bool)
    starts[:1] = True
    starts[1:] = (sorted_hi[1:] != sorted_hi[:-1]) | (sorted_lo[1:] != sorted_lo[:-1])
    inverse = np.empty(len(order), np.intp)
    inverse[order] = np.cumsum(starts) - 1
    return order[starts], inverse


def sort_entries(entries: npt.NDArray[np.void]) -> npt.NDArray[np.void]:
    """By high half: digests sharing it (1 in 2^64 per pair) `find_sorted` tells apart.
    Stable, so that two sorted runs concatenated are merged in linear time."""
    return entries[np.argsort(entries["hi"], kind="stable")]


def find_sorted(run_hi: U64, run_lo: U64, hi: U64, lo: U64) -> npt.NDArray[np.int64]:
    """Index of each (hi, lo) in a run sorted by `hi`, or -1."""
    n = len(run_hi)
    at = np.searchsorted(run_hi, hi)
    inside = at < n
    safe = np.where(inside, at, 0)
    same_hi = inside & (run_hi[safe] == hi)
    hit = same_hi & (run_lo[safe] == lo)
    result = np.where(hit, safe, -1).astype(np.int64)
    # Two digests sharing their high 64 bits (about 1 in 2^64 per pair) sit next to
    # each other; look past the first for the rare query that lands there.
    for i in np.flatnonzero(same_hi & ~hit):
        j = int(safe[i]) + 1
        while j < n and run_hi[j] == hi[i]:
            if run_lo[j] == lo[i]:
                result[i] = j
                break
            j += 1
    return result


class Bloom:
    """A split-block Bloom filter (Parquet's layout) over digests, 2 bytes per key.

    A key picks one 256-bit block from the low 48 bits of its high half and sets one bit
    in each of the block's eight 32-bit words from 5-bit slices of its low half: the
    digests are uniform already, so nothing is hashed again. At 16 bits per key about
    one absent key in a thousand is a false positive; a false positive costs a search of
    the runs, never a wrong answer.
    """

    BITS_PER_KEY = 16
    _SHIFTS = np.arange(8, dtype=np.uint64) * np.uint64(5)
    _PAIRS = np.arange(4, dtype=np.int64)

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 1024)
        self.blocks = self._blocks(self.capacity)
        self.words = np.zeros(self.blocks * 8, "<u4")
        self.keys = 0

    @classmethod
    def _blocks(cls, capacity: int) -> int:
        return -(-max(capacity, 1024) * cls.BITS_PER_KEY // 256)

    @property
    def nbytes(self) -> int:
        return int(self.words.nbytes)

    def _slots(self, hi: U64, lo: U64) -> tuple[npt.NDArray[np.int64], U64]:
        """The block's words two by two (as the filter's 64-bit view), and the bits each
        key sets in them: half the scattered reads and writes of one word at a time,
        which is what a filter rebuilt from millions of digests spends its time on."""
        block = ((hi & np.uint64((1 << 48) - 1)) % np.uint64(self.blocks)).astype(np.int64)
        index = block[:, None] * 4 + self._PAIRS[None, :]
        bits = (lo[:, None] >> self._SHIFTS[None, :]).astype(np.uint32) & np.uint32(31)
        masks = np.left_shift(np.uint32(1), bits).astype("<u4", copy=False)
        return index, masks.view("<u8")

    def add(self, hi: U64, lo: U64) -> None:
        words = self.words.view("<u8")
        for start in range(0, len(hi), 65_536):
            index, masks = self._slots(hi[start:start + 65_536], lo[start:start + 65_536])
            index, masks = index.ravel(), masks.ravel()
            # A fancy `|=` keeps one write per repeated word; redo the few lost ones.
            while len(index):
                words[index] |= masks
                lost = (words[index] & masks) != masks
                index, masks = index[lost], masks[lost]
        self.keys += len(hi)

    def to_bytes(self) -> bytes:
        """A copy of the filter (with its capacity and key count), to save beside a
        checkpoint: loading it back is a copy, where rebuilding reads every run."""
        return _FILTER.pack(self.capacity, self.keys, zlib.crc32(self.words.data)) + \
            self.words.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Bloom | None:
        """The filter `to_bytes` wrote, or None if `data` is not one, whole."""
        if len(data) < _FILTER.size:
            return None
        capacity, keys, crc = _FILTER.unpack_from(data)
        words = np.frombuffer(data, np.uint8, offset=_FILTER.size)
        if cls._blocks(capacity) * 32 != len(words) or zlib.crc32(words.data) != crc:
            return None
        bloom = cls(capacity)
        bloom.words, bloom.keys = words.view("<u4").copy(), keys
        return bloom

    def contains(self, hi: U64, lo: U64) -> Bools:
        if not len(hi):
            return np.zeros(0, bool)
        index, masks = self._slots(hi, lo)
        return np.asarray(((self.words.view("<u8")[index] & masks) == masks).all(axis=1))


@dataclass(frozen=True)
class Run:
    """A sorted, immutable run of one day's digests, wherever its store keeps it."""

    day: int
    name: str
    count: int
    crc: int
    """zlib.crc32 of its entries' bytes: a run read back is checked against it."""


class RunStore(Protocol):
    """Where runs live; the seen-set never touches their bytes except through this."""

    def write(self, day: int, entries: npt.NDArray[np.void]) -> Run: ...

    def read(self, run: Run) -> npt.NDArray[np.void]: ...

    def find(self, run: Run, hi: U64, lo: U64) -> tuple[Bools, npt.NDArray[np.uint32]]:
        """(found, stored content) of each digest in `run`."""
        ...

    def delete(self, run: Run) -> None: ...


def run_crc(entries: npt.NDArray[np.void]) -> int:
    return zlib.crc32(np.ascontiguousarray(entries).view(np.uint8).data)


class MemoryRuns:
    """Runs held in memory: for tests and for tools that need no files."""

    _made = 0

    def __init__(self) -> None:
        self._runs: dict[str, npt.NDArray[np.void]] = {}

    def write(self, day: int, entries: npt.NDArray[np.void]) -> Run:
        MemoryRuns._made += 1  # names unique in the process, as files' are everywhere
        run = Run(day, f"m{MemoryRuns._made}", len(entries), run_crc(entries))
        self._runs[run.name] = entries
        return run

    def adopt(self, run: Run, entries: npt.NDArray[np.void]) -> None:
        """Hold a run written elsewhere (a checkpoint's)."""
        self._runs[run.name] = entries

    def read(self, run: Run) -> npt.NDArray[np.void]:
        return self._runs[run.name]

    def find(self, run: Run, hi: U64, lo: U64) -> tuple[Bools, npt.NDArray[np.uint32]]:
        entries = self._runs[run.name]
        at = find_sorted(entries["hi"], entries["lo"], hi, lo)
        found = at >= 0
        content = np.zeros(len(hi), np.uint32)
        content[found] = entries["content"][at[found]]
        return found, content

    def delete(self, run: Run) -> None:
        self._runs.pop(run.name, None)


_RECENT = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("content", "<u4"), ("day", "<i4")])


class SeenSet:
    """Digests of counted events: chunks of the newest, sorted runs of the rest, a filter.

    New digests are kept as small sorted chunks (one per batch, no Python object per
    digest); once there are `spill` of them they are written as one run per day, and
    runs of a day are merged like a binary counter, so a digest is rewritten a
    logarithmic number of times and a day holds few runs. Runs are sorted by the high
    half alone: `find_sorted` tells digests sharing it apart.

    The filter starts with room for `capacity` digests and doubles as it fills: a small
    filter is rebuilt from the runs in milliseconds, where starting every partition at
    2^20 digests (2 MiB) cost an 8-partition worker 14 MiB before it held anything
    (`pulse bench peers`).
    """

    def __init__(self, store: RunStore, spill: int = 65_536, capacity: int = 1 << 17) -> None:
        self.store = store
        self.spill = spill
        self._recent: list[npt.NDArray[np.void]] = []
        """Sorted chunks (`_RECENT`) not yet in a run."""
        self._recent_count = 0
        self._runs: dict[int, list[Run]] = {}
        self._bloom = Bloom(capacity)
        self._stale = 0
        """Keys still in the filter whose day has expired."""

    def __len__(self) -> int:
        return sum(r.count for runs in self._runs.values() for r in runs) + self._recent_count

    # ---- asking --------------------------------------------------------------------

    def lookup(self, hi: U64, lo: U64, days: npt.NDArray[np.int32]
               ) -> tuple[Bools, npt.NDArray[np.uint32]]:
        """(seen before, its stored content digest) for each digest.

        A copy's own day is searched first (an exact copy has the same `occurred_at`);
        only a digest not found there is looked for in every other day, which is what
        finds a conflicting copy with another time.
        """
        found = np.zeros(len(hi), bool)
        content = np.zeros(len(hi), np.uint32)
        maybe = np.flatnonzero(self._bloom.contains(hi, lo))
        if not len(maybe):
            return found, content
        for chunk in self._recent:
            todo = maybe[~found[maybe]]
            if not len(todo):
                return found, content
            at = find_sorted(chunk["hi"], chunk["lo"], hi[todo], lo[todo])
            hit = at >= 0
            found[todo[hit]] = True
            content[todo[hit]] = chunk["content"][at[hit]]
        searching = maybe[~found[maybe]]
        if len(searching):
            self._search_runs(searching, hi, lo, days, found, content)
        return found, content

    def _search_runs(self, todo: npt.NDArray[np.int64], hi: U64, lo: U64,
                     days: npt.NDArray[np.int32], found: Bools,
                     content: npt.NDArray[np.uint32]) -> None:
        own_days = days[todo]
        for day in np.unique(own_days).tolist():
            self._search_day(day, todo[own_days == day], hi, lo, found, content)
        for day in self._runs:
            if found[todo].all():
                return
            rest = todo[~found[todo] & (days[todo] != day)]
            if len(rest):
                self._search_day(day, rest, hi, lo, found, content)

    def _search_day(self, day: int, which: npt.NDArray[np.int64], hi: U64, lo: U64,
                    found: Bools, content: npt.NDArray[np.uint32]) -> None:
        for run in self._runs.get(day, ()):
            which = which[~found[which]]
            if not len(which):
                return
            hit, stored = self.store.find(run, hi[which], lo[which])
            found[which[hit]] = True
            content[which[hit]] = stored[hit]

    # ---- changing ------------------------------------------------------------------

    def add(self, hi: U64, lo: U64, contents: npt.NDArray[np.uint32],
            days: npt.NDArray[np.int32]) -> None:
        """Add digests known to be absent (and distinct among themselves)."""
        if not len(hi):
            return
        self._grow(len(hi))
        self._bloom.add(hi, lo)
        chunk = np.empty(len(hi), _RECENT)
        chunk["hi"], chunk["lo"], chunk["content"], chunk["day"] = hi, lo, contents, days
        self._recent.append(chunk[np.argsort(chunk["hi"])])
        self._recent_count += len(chunk)
        if self._recent_count >= self.spill:
            self.flush()

    def add_entries(self, entries: npt.NDArray[np.void]) -> None:
        """Add journal entries (`JOURNAL_ENTRY`) known to be absent: a journal fold."""
        self.add(entries["hi"], entries["lo"], entries["content"], entries["day"])

    def flush(self) -> None:
        """Write every recent digest into runs (before a checkpoint names the runs)."""
        if not self._recent:
            return
        recent = np.concatenate(self._recent)
        self._recent, self._recent_count = [], 0
        for day in np.unique(recent["day"]).tolist():
            mine = recent[recent["day"] == day]
            entries = np.empty(len(mine), ENTRY)
            entries["hi"], entries["lo"], entries["content"] = mine["hi"], mine["lo"], \
                mine["content"]
            self._add_run(day, sort_entries(entries))

    def _add_run(self, day: int, entries: npt.NDArray[np.void]) -> None:
        runs = self._runs.setdefault(day, [])
        runs.append(self.store.write(day, entries))
        while len(runs) >= 2 and runs[-2].count <= runs[-1].count:
            last, before = runs.pop(), runs.pop()
            merged = sort_entries(np.concatenate([self.store.read(before),
                                                  self.store.read(last)]))
            runs.append(self.store.write(day, merged))
            self.store.delete(before)
            self.store.delete(last)

    def expire(self, min_day: int) -> None:
        """Forget events of UTC days before `min_day` (outside retention): whole runs."""
        for day in [d for d in self._runs if d < min_day]:
            for run in self._runs.pop(day):
                self._stale += run.count
                self.store.delete(run)
        kept = [chunk[chunk["day"] >= min_day] for chunk in self._recent]
        self._stale += self._recent_count - sum(len(c) for c in kept)
        self._recent = [c for c in kept if len(c)]
        self._recent_count = sum(len(c) for c in self._recent)
        if self._stale > max(len(self), 1 << 16):
            self._rebuild_filter(self._bloom.capacity)

    def _grow(self, adding: int) -> None:
        if self._bloom.keys + adding > self._bloom.capacity:
            self._rebuild_filter(max(2 * self._bloom.capacity, 2 * (len(self) + adding)))

    def _rebuild_filter(self, capacity: int) -> None:
        bloom = Bloom(capacity)
        for runs in self._runs.values():
            for run in runs:
                entries = self.store.read(run)
                bloom.add(np.ascontiguousarray(entries["hi"]), np.ascontiguousarray(entries["lo"]))
        for chunk in self._recent:
            bloom.add(np.ascontiguousarray(chunk["hi"]), np.ascontiguousarray(chunk["lo"]))
        self._bloom, self._stale = bloom, 0

    # ---- checkpoints ---------------------------------------------------------------

    def runs(self) -> list[Run]:
        """Every run, after `flush`: what a checkpoint names."""
        return [run for day in sorted(self._runs) for run in self._runs[day]]

    def restore(self, runs: Iterable[Run], saved_filter: bytes | None = None) -> None:
        """Take over the runs a checkpoint named (the store must hold them), and the filter
        saved with it if it is whole (else it is rebuilt from the runs)."""
        self._recent, self._recent_count, self._runs = [], 0, {}
        runs = list(runs)
        for run in runs:
            self._runs.setdefault(run.day, []).append(run)
        bloom = None if saved_filter is None else Bloom.from_bytes(saved_filter)
        if bloom is not None and bloom.keys >= len(self):
            self._bloom, self._stale = bloom, bloom.keys - len(self)
        else:
            self._rebuild_filter(max(self._bloom.capacity, 2 * sum(r.count for r in runs)))

    def filter_bytes(self) -> bytes:
        """The filter as `restore` takes it back (after `flush`, it covers the runs)."""
        return self._bloom.to_bytes()

    def memory_bytes(self) -> int:
        """What this set holds in memory: the filter and the recent chunks."""
        return self._bloom.nbytes + _RECENT.itemsize * self._recent_count

    def disk_bytes(self) -> int:
        return ENTRY.itemsize * sum(r.count for runs in self._runs.values() for r in runs)


def journal_entries(hi: U64, lo: U64, contents: npt.NDArray[np.uint32],
                    days: npt.NDArray[np.int32]) -> bytes:
    out = np.empty(len(hi), JOURNAL_ENTRY)
    out["hi"], out["lo"], out["content"], out["day"] = hi, lo, contents, days
    return out.tobytes()


def entries_from_journal(data: bytes) -> npt.NDArray[np.void]:
    return np.frombuffer(data, JOURNAL_ENTRY)
